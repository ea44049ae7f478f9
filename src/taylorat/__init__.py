"""taylorat: randomized adversarial training via Taylor expansion (Jin et al., CVPR 2023)."""

__version__ = "0.1.0"
