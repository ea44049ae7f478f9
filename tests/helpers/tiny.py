"""A small model and batch in float64 for the loss and minimizer tests (8x8 grey images, 10 classes)."""

import torch

from taylorat import models


def tiny_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).to(dtype).train()


def batch(n=16, dtype=torch.float64, seed=1):
    """``(x, x_adv, y)``: images in [0,1], a perturbation of at most 0.1 kept in [0,1], labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)
    x_adv = (x + 0.1 * (2 * torch.rand(x.shape, generator=g, dtype=dtype) - 1)).clamp(0, 1)
    return x, x_adv, torch.randint(0, 10, (n,), generator=g)
