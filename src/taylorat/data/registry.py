"""Dataset registry: ``load(name, data_dir, download, **options) -> Dataset``.

Real datasets are read through torchvision (CIFAR-10/100, SVHN, MNIST,
Fashion-MNIST), with MNIST-style folders of raw IDX files also read directly.
``digits`` (scikit-learn's bundled handwritten digits) and ``synthetic``
(generated) need no files at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import torch

from ..common import InputError
from .dataset import Dataset, DatasetNotFoundError
from .idx import find_idx_files, load_idx_folder, missing_idx_files

__all__ = ["load", "available", "geometry", "train_size", "locate", "DEBIAN_FASHION_MNIST_DIR"]

#: where the Debian package ``dataset-fashion-mnist`` installs the four IDX files
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_PROBE_TIMEOUT_S = 3.0
_DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


# --------------------------------------------------------------------- helpers
def _reachable(urls: list[str], timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to any of ``urls``' hosts opens within ``timeout``.

    Runs in a daemon thread so that a stalled DNS lookup cannot hang the caller.
    """
    targets = []
    for url in urls:
        parts = urlsplit(url)
        if parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            targets.append((parts.hostname, port))
    if not targets:
        return False
    ok = threading.Event()

    def probe() -> None:
        for host, port in targets:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    ok.set()
                    return
            except OSError:
                continue

    t = threading.Thread(target=probe, name="taylorat-net-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return ok.is_set()


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _try_download(fetch: Callable[[], Any], urls: list[str]) -> tuple[Any, str | None]:
    """Run ``fetch()`` (a torchvision constructor with download=True).

    Returns ``(result, None)`` or ``(None, reason)``; never raises for network
    trouble and never prints a traceback. torchvision's own chatter on stdout
    (e.g. "Failed to download (trying next)") is swallowed; its progress bar
    on stderr is left alone.
    """
    if not _reachable(urls):
        return None, "no network"
    sink = io.StringIO()
    try:
        with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S), contextlib.redirect_stdout(sink):
            return fetch(), None
    except Exception as e:  # noqa: BLE001 - any download failure means "not available"
        msg = str(e).strip().splitlines()
        return None, (msg[0] if msg else type(e).__name__)


class _DataDir(type(Path())):  # type: ignore[misc]
    """A Path that remembers how the caller spelled it (``./data`` stays ``./data``)."""

    shown: str = ""


def _data_dir(p: str | os.PathLike) -> Path:
    shown = os.fspath(p)
    d = _DataDir(os.path.expanduser(shown))
    d.shown = shown
    return d


def _not_found(name: str, data_dir: Path, download: bool, reason: str | None, what: str) -> DatasetNotFoundError:
    data_dir = getattr(data_dir, "shown", "") or str(data_dir)
    if not download:
        how = "and download=False"
    elif reason == "no network":
        how = "and could not be downloaded (no network)"
    else:
        how = "and could not be downloaded" + (f" ({reason})" if reason else "")
    msg = f"{name} not found in {data_dir} {how}: put {what} in {data_dir}, or {DatasetNotFoundError.GENERIC}"
    return DatasetNotFoundError(" ".join(msg.split()))  # guarantee one line


def _check_options(name: str, options: dict[str, Any], accepted: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        acc = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise InputError(
            f"unknown option(s) for dataset '{name}': {', '.join(unknown)}; accepted options: {acc}"
        )
    return {**accepted, **options}


def _labels(t: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(t), dtype=torch.int64).contiguous()


def _nhwc_to_nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.uint8).transpose(0, 3, 1, 2)))


# ------------------------------------------------------------- torchvision sets
def _load_cifar(name: str, data_dir: Path, download: bool, options: dict[str, Any]) -> Dataset:
    _check_options(name, options, {})
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    archive, folder = cls.filename, cls.base_folder
    what = f"{archive} (or the extracted {folder}/)"
    source = "disk"

    def make(dl: bool):
        return cls(root=str(data_dir), train=True, download=dl), cls(root=str(data_dir), train=False, download=dl)

    try:
        train, test = make(False)
    except RuntimeError:
        # The archive may be present but not yet extracted: torchvision's
        # "download" then only checks its md5 and extracts, with no network.
        has_archive = (data_dir / archive).is_file()
        if not (download or has_archive):
            raise _not_found(name, data_dir, download, None, what) from None
        if has_archive:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    res, reason = make(True), None
            except Exception as e:  # noqa: BLE001 - corrupt archive, then no network
                res, reason = None, (str(e).strip().splitlines() or [type(e).__name__])[0]
            source = "archive"
        else:
            res, reason = _try_download(lambda: make(True), [cls.url])
            source = "downloaded"
        if res is None:
            raise _not_found(name, data_dir, download, reason, what) from None
        train, test = res
    return Dataset(
        name=name,
        train_x=_nhwc_to_nchw(train.data),
        train_y=_labels(train.targets),
        test_x=_nhwc_to_nchw(test.data),
        test_y=_labels(test.targets),
        num_classes=10 if name == "cifar10" else 100,
        crop=True,
        flip=True,
        info={
            "source": str(data_dir / folder),
            "obtained": source,
            "reader": f"torchvision.datasets.{cls.__name__}",
            "n_train": len(train.targets),
            "n_test": len(test.targets),
        },
    )


def _load_svhn(name: str, data_dir: Path, download: bool, options: dict[str, Any]) -> Dataset:
    _check_options(name, options, {})
    import torchvision.datasets as tvd

    files = [tvd.SVHN.split_list[s][1] for s in ("train", "test")]
    what = " and ".join(files)

    def make(dl: bool):
        return (
            tvd.SVHN(root=str(data_dir), split="train", download=dl),
            tvd.SVHN(root=str(data_dir), split="test", download=dl),
        )

    source = "disk"
    try:
        train, test = make(False)
    except RuntimeError:
        if not download:
            raise _not_found(name, data_dir, download, None, what) from None
        res, reason = _try_download(lambda: make(True), [tvd.SVHN.split_list["train"][0]])
        if res is None:
            raise _not_found(name, data_dir, download, reason, what) from None
        train, test = res
        source = "downloaded"
    return Dataset(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(train.data, dtype=np.uint8)),
        train_y=_labels(train.labels),
        test_x=torch.from_numpy(np.ascontiguousarray(test.data, dtype=np.uint8)),
        test_y=_labels(test.labels),
        num_classes=10,
        crop=True,
        flip=False,  # flipped digits are different digits
        info={
            "source": str(data_dir),
            "obtained": source,
            "reader": "torchvision.datasets.SVHN",
            "n_train": len(train.labels),
            "n_test": len(test.labels),
        },
    )


def _load_mnist_like(name: str, data_dir: Path, download: bool, options: dict[str, Any]) -> Dataset:
    _check_options(name, options, {})
    import torchvision.datasets as tvd

    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    raw = data_dir / cls.__name__ / "raw"
    # Raw IDX files (gzipped or not) straight in data_dir (the Debian package
    # layout) or in torchvision's <data_dir>/<Class>/raw/; for fashion_mnist
    # then the system-wide copy of Debian's dataset-fashion-mnist package;
    # only then a download.
    folders = [data_dir, raw]
    for f in folders:  # a folder with some of the files is a mistake to report, not to work around
        missing = missing_idx_files(f)
        if missing:
            raise DatasetNotFoundError(f"{name} in {getattr(data_dir, 'shown', '') or f} is incomplete: "
                                       f"{', '.join(missing)} missing; put all four IDX files there")
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST_DIR)
    found_in = next((f for f in folders if find_idx_files(f) is not None), None)
    if found_in is not None:
        train_x, train_y, test_x, test_y, _files = load_idx_folder(found_in)
        return _mnist_dataset(name, train_x, train_y, test_x, test_y, str(found_in), "idx files")

    what = (
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz (or uncompressed)"
    )
    if not download:
        raise _not_found(name, data_dir, download, None, what) from None

    def make():
        return cls(root=str(data_dir), train=True, download=True), cls(root=str(data_dir), train=False, download=True)

    res, reason = _try_download(make, list(cls.mirrors))
    if res is None:
        raise _not_found(name, data_dir, download, reason, what) from None
    train, test = res
    return _mnist_dataset(
        name,
        train.data.to(torch.uint8).unsqueeze(1).contiguous(),
        _labels(train.targets),
        test.data.to(torch.uint8).unsqueeze(1).contiguous(),
        _labels(test.targets),
        str(raw),
        "downloaded",
    )


def _mnist_dataset(name, train_x, train_y, test_x, test_y, source: str, obtained: str) -> Dataset:
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        crop=False,
        flip=False,
        info={
            "source": source,
            "obtained": obtained,
            "n_train": int(train_x.shape[0]),
            "n_test": int(test_x.shape[0]),
        },
    )


# ------------------------------------------------------------ built-in sets
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


def _load_digits(name: str, data_dir: Path, download: bool, options: dict[str, Any]) -> Dataset:
    _check_options(name, options, {})
    from sklearn.datasets import load_digits

    from .splits import holdout_indices

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    x = torch.from_numpy(np.rint(images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = holdout_indices(y, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    return Dataset(
        name=name,
        train_x=x[train_idx].contiguous(),
        train_y=y[train_idx].contiguous(),
        test_x=x[test_idx].contiguous(),
        test_y=y[test_idx].contiguous(),
        num_classes=10,
        crop=False,
        flip=False,
        info={
            "source": "sklearn.datasets.load_digits (bundled with scikit-learn)",
            "scaling": "round(v * 255 / 16)",
            "split": f"stratified, seed {DIGITS_SPLIT_SEED}, test {DIGITS_TEST_SIZE} of {len(y)}",
            "n_train": int(train_idx.numel()),
            "n_test": int(test_idx.numel()),
        },
    )


_SYNTHETIC_DEFAULTS = {
    "n_train": 512,
    "n_test": 256,
    "num_classes": 10,
    "channels": 3,
    "image_size": 32,
    "seed": 0,
}


def _load_synthetic(name: str, data_dir: Path, download: bool, options: dict[str, Any]) -> Dataset:
    opts = _check_options(name, options, _SYNTHETIC_DEFAULTS)
    for k, lo in (("n_train", 1), ("n_test", 1), ("num_classes", 2), ("channels", 1), ("image_size", 1)):
        v = opts[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"synthetic option {k} must be an integer >= {lo}, got {v!r}")
        opts[k] = int(v)
    opts["seed"] = int(opts["seed"])
    k, c, s = opts["num_classes"], opts["channels"], opts["image_size"]
    g = torch.Generator().manual_seed(opts["seed"])
    # Low-frequency class templates (a coarse random grid, smoothly upsampled):
    # they survive small crops/flips, so the task stays learnable with augmentation.
    coarse = max(2, s // 8)
    grid = torch.rand((k, c, coarse, coarse), generator=g)
    templates = torch.nn.functional.interpolate(grid, size=(s, s), mode="bilinear", align_corners=False)
    templates = (templates - templates.amin(dim=(1, 2, 3), keepdim=True)) / (
        templates.amax(dim=(1, 2, 3), keepdim=True) - templates.amin(dim=(1, 2, 3), keepdim=True) + 1e-8
    )

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n, dtype=torch.int64) % k  # balanced: counts differ by <= 1
        y = y[torch.randperm(n, generator=g)]
        noise = torch.rand((n, c, s, s), generator=g)
        x = 0.6 * templates[y] + 0.4 * noise
        return torch.round(x * 255).clamp_(0, 255).to(torch.uint8).contiguous(), y

    train_x, train_y = make(opts["n_train"])
    test_x, test_y = make(opts["n_test"])
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=k,
        crop=True,
        flip=True,
        pad=max(1, min(4, s // 8)),
        info={
            "source": "generated (0.6 * class template + 0.4 * uniform noise)",
            "options": dict(opts),
            "n_train": opts["n_train"],
            "n_test": opts["n_test"],
        },
    )


# -------------------------------------------------------------------- registry
_LOADERS: dict[str, Callable[[str, Path, bool, dict[str, Any]], Dataset]] = {
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "digits": _load_digits,
    "fashion_mnist": _load_mnist_like,
    "mnist": _load_mnist_like,
    "svhn": _load_svhn,
    "synthetic": _load_synthetic,
}


def available() -> list[str]:
    """Names accepted by :func:`load`, sorted."""
    return sorted(_LOADERS)


# (channels, image size, classes) of each dataset, and its number of training images, known without reading it
_GEOMETRY = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "svhn": (3, 32, 10), "mnist": (1, 28, 10),
             "fashion_mnist": (1, 28, 10), "digits": (1, 8, 10)}
_TRAIN_SIZE = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "mnist": 60_000, "fashion_mnist": 60_000,
               "digits": 1_437}


def _key(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise InputError(f"unknown dataset '{name}'; available: {', '.join(available())}")
    return key


def geometry(name: str, **options: Any) -> tuple[int, int, int]:
    """``(channels, image_size, num_classes)`` of a dataset, without reading its files."""
    key = _key(name)
    if key == "synthetic":
        o = {**_SYNTHETIC_DEFAULTS, **options}
        return int(o["channels"]), int(o["image_size"]), int(o["num_classes"])
    return _GEOMETRY[key]


def train_size(name: str, **options: Any) -> int:
    """How many training images the dataset has (before any hold-out), without reading it."""
    key = _key(name)
    return int({**_SYNTHETIC_DEFAULTS, **options}["n_train"]) if key == "synthetic" else _TRAIN_SIZE[key]


def locate(name: str, data_dir: str | os.PathLike = "./data", download: bool = True) -> str:
    """Where :func:`load` would find the dataset, in words, without reading it (for dry runs).

    ``on disk: PATH``, ``built in``, ``not on disk: will download to DIR``; a dataset that is
    neither on disk nor downloadable raises the same one-line :class:`DatasetNotFoundError` as
    :func:`load` would.
    """
    key, d = _key(name), _data_dir(data_dir)
    if key in ("digits", "synthetic"):
        return "built in (no files)"
    import torchvision.datasets as tvd

    if key in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if key == "cifar10" else tvd.CIFAR100
        if (d / cls.base_folder).is_dir():
            return f"on disk: {d / cls.base_folder}"
        if (d / cls.filename).is_file():
            return f"on disk: {d / cls.filename} (extracted on first use)"
        urls, what = [cls.url], f"{cls.filename} (or the extracted {cls.base_folder}/)"
    elif key == "svhn":
        files = [tvd.SVHN.split_list[s][1] for s in ("train", "test")]
        if all((d / f).is_file() for f in files):
            return f"on disk: {d}"
        urls, what = [tvd.SVHN.split_list["train"][0]], " and ".join(files)
    else:
        cls = tvd.MNIST if key == "mnist" else tvd.FashionMNIST
        folders = [d, d / cls.__name__ / "raw"] + ([DEBIAN_FASHION_MNIST_DIR] if key == "fashion_mnist" else [])
        for f in folders[:2]:
            missing = missing_idx_files(f)
            if missing:
                raise DatasetNotFoundError(f"{key} in {f} is incomplete: {', '.join(missing)} missing; put all four "
                                           "IDX files there")
        found = next((f for f in folders if find_idx_files(f) is not None), None)
        if found is not None:
            return f"on disk: {found}"
        urls, what = list(cls.mirrors), "the four IDX files (train/t10k images and labels)"
    if not download:
        raise _not_found(key, d, False, None, what)
    if not _reachable(urls):
        raise _not_found(key, d, True, "no network", what)
    return f"not on disk: will download to {getattr(d, 'shown', d)}"


def load(name: str, data_dir: str | os.PathLike = "./data", download: bool = True, **options: Any) -> Dataset:
    """Load dataset ``name`` as uint8 NCHW tensors.

    Args:
        name: one of :func:`available` (case-insensitive, ``-`` accepted for ``_``).
        data_dir: folder with the dataset's files (ignored by ``digits`` and
            ``synthetic``). For ``mnist``/``fashion_mnist`` it may also hold the
            four IDX files directly; ``fashion_mnist`` falls back to
            ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
        download: try to download missing files (skipped quickly without network).
        **options: dataset-specific options (only ``synthetic`` has any).

    Raises:
        ValueError: unknown name or option.
        DatasetNotFoundError: files missing and not downloadable (one-line message).
        DatasetFormatError: a data file is corrupt or truncated.
    """
    key = _key(name)
    return _LOADERS[key](key, _data_dir(data_dir), bool(download), dict(options))
