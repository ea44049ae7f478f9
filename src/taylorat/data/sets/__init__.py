"""The built-in datasets: each module declares its datasets (:class:`~taylorat.data.DatasetSpec`) next to
their loader. Importing this package registers them."""

from . import cifar, digits, mnist, svhn, synthetic

__all__ = ["cifar", "digits", "mnist", "svhn", "synthetic"]
