"""Classifier architectures and the name registry (``create("wrn_34_10", num_classes=10)``)."""

from .adapters import adapt
from .base import Classifier, Normalize
from .registry import accepts, available, check_name, create, examples, named, register, unregister

# Importing the architecture modules registers them.
from . import mobilenetv2, preact_resnet, small_cnn, vgg, wide_resnet  # noqa: E402,F401  isort: skip

__all__ = ["accepts", "adapt", "Classifier", "Normalize", "available", "check_name", "create", "examples", "named",
           "register", "unregister"]
