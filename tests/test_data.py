"""Tests for taylorat.data: registry, IDX reader, splits and the device loader."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import taylorat.data as D
from taylorat.data import (
    DATASETS,
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSpec,
    DeviceLoader,
    available,
    holdout_split,
    load,
    prepare,
    register_dataset,
    stratified_subset,
    unregister_dataset,
)
from taylorat.data import fetch as downloads
from taylorat.data.idx import load_idx_folder, read_idx
from taylorat.data.sets import mnist
from taylorat.data.splits import holdout_indices

ALL = ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "svhn", "synthetic"]


# ------------------------------------------------------------------ helpers
def id_images(n: int, c: int = 3, s: int = 8) -> torch.Tensor:
    """uint8 images whose first two pixels of channel 0 encode the example index."""
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)
    ids = torch.arange(n)
    x[:, 0, 0, 0] = (ids // 256).to(torch.uint8)
    x[:, 0, 0, 1] = (ids % 256).to(torch.uint8)
    return x


def decode_ids(x_float: torch.Tensor) -> torch.Tensor:
    u = torch.round(x_float * 255).to(torch.int64)
    return u[:, 0, 0, 0] * 256 + u[:, 0, 0, 1]


def make_dataset(n_train: int = 300, n_test: int = 50, k: int = 5) -> Dataset:
    return Dataset(
        name="ids",
        train_x=id_images(n_train),
        train_y=torch.arange(n_train) % k,
        test_x=id_images(n_test),
        test_y=torch.arange(n_test) % k,
        num_classes=k,
        crop=True,
        flip=True,
    )


# ----------------------------------------------------------------- registry
def test_available_lists_all():
    assert available() == ALL


def test_unknown_dataset_message():
    with pytest.raises(ValueError) as e:
        load("x")
    assert str(e.value) == (
        "unknown dataset 'x'; available: cifar10, cifar100, digits, fashion_mnist, mnist, svhn, synthetic"
    )


@pytest.mark.parametrize("name", ["synthetic", "digits", "cifar10", "fashion_mnist"])
def test_unknown_option_message(name, tmp_path):
    with pytest.raises(ValueError) as e:
        load(name, data_dir=tmp_path, bogus=1)
    msg = str(e.value)
    assert "\n" not in msg and "bogus" in msg and "accepted options" in msg
    if name == "synthetic":
        for opt in ["n_train", "n_test", "num_classes", "channels", "image_size", "seed"]:
            assert opt in msg


def test_digits_shapes_split_values():
    ds = load("digits", data_dir="/definitely/not/here")  # data_dir ignored
    assert ds.name == "digits" and ds.num_classes == 10
    assert tuple(ds.train_x.shape) == (1437, 1, 8, 8)
    assert tuple(ds.test_x.shape) == (360, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.is_contiguous() and ds.test_x.is_contiguous()
    assert ds.in_channels == 1 and ds.image_size == 8
    assert not ds.crop and not ds.flip
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(torch.unique(torch.cat([ds.train_x, ds.test_x])).tolist()) <= allowed
    assert int(ds.train_x.max()) == 255 and int(ds.train_x.min()) == 0
    # stratified: per-class test counts are proportional (360/1797 ~ 20%)
    from sklearn.datasets import load_digits

    full = torch.as_tensor(load_digits().target).bincount(minlength=10)
    test_counts = ds.test_y.bincount(minlength=10)
    assert torch.equal(test_counts + ds.train_y.bincount(minlength=10), full)
    exact = full.double() * 360 / 1797
    assert bool(((test_counts.double() - exact).abs() < 1).all())
    # deterministic
    ds2 = load("digits")
    assert torch.equal(ds.train_x, ds2.train_x) and torch.equal(ds.test_y, ds2.test_y)
    assert "digits" in ds.describe() and "\n" not in ds.describe()


def test_synthetic_deterministic_and_options():
    a, b = load("synthetic"), load("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert tuple(a.train_x.shape) == (512, 3, 32, 32) and tuple(a.test_x.shape) == (256, 3, 32, 32)
    assert a.crop and a.flip and a.num_classes == 10
    counts = a.train_y.bincount(minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    c = load("synthetic", seed=1)
    assert not torch.equal(a.train_x, c.train_x)
    d = load("synthetic", n_train=40, n_test=20, num_classes=4, channels=1, image_size=16, seed=3)
    assert tuple(d.train_x.shape) == (40, 1, 16, 16) and tuple(d.test_x.shape) == (20, 1, 16, 16)
    assert d.num_classes == 4 and set(d.train_y.tolist()) == {0, 1, 2, 3}
    assert d.info["options"]["seed"] == 3
    with pytest.raises(ValueError):
        load("synthetic", num_classes=1)


def test_synthetic_is_learnable():
    ds = load("synthetic")
    xtr, xte = ds.train_x.float().flatten(1), ds.test_x.float().flatten(1)
    means = torch.stack([xtr[ds.train_y == k].mean(0) for k in range(ds.num_classes)])
    pred = torch.cdist(xte, means).argmin(1)
    assert (pred == ds.test_y).float().mean() > 0.9


def test_dataset_validates_and_describes():
    ds = make_dataset()
    line = ds.describe()
    assert "\n" not in line and "300 train" in line and "crop+flip" in line
    with pytest.raises(ValueError):
        Dataset("bad", ds.train_x.float(), ds.train_y, ds.test_x, ds.test_y, 5, False, False)
    with pytest.raises(ValueError):
        Dataset("bad", ds.train_x, ds.train_y.int(), ds.test_x, ds.test_y, 5, False, False)
    nc = ds.train_x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels_last view
    assert Dataset("ok", nc, ds.train_y, ds.test_x, ds.test_y, 5, False, False).train_x.is_contiguous()


# --------------------------------------------------------- missing datasets
def _assert_one_line_not_found(exc: BaseException, shown_dir: str, file_hint: str):
    msg = str(exc)
    assert isinstance(exc, DatasetNotFoundError) and isinstance(exc, FileNotFoundError)
    assert "\n" not in msg
    assert shown_dir in msg and file_hint in msg and DatasetNotFoundError.GENERIC in msg  # each command words it


def test_missing_cifar10_raises_fast(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as e:
        load("cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - t0 < 10
    _assert_one_line_not_found(e.value, str(tmp_path), "cifar-10-python.tar.gz")
    assert e.value.__suppress_context__  # no chained network traceback


def test_missing_with_download_disabled(tmp_path):
    for name, hint in [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python.tar.gz"),
        ("svhn", "train_32x32.mat"),
        ("mnist", "train-images-idx3-ubyte.gz"),
    ]:
        with pytest.raises(DatasetNotFoundError) as e:
            load(name, data_dir=tmp_path, download=False)
        _assert_one_line_not_found(e.value, str(tmp_path), hint)
        assert "download=False" in str(e.value)


def test_failed_download_is_one_line_even_when_host_looks_reachable(tmp_path, monkeypatch):
    # Pretend the probe succeeded so torchvision really tries (and fails) to download.
    monkeypatch.setattr(downloads, "reachable", lambda urls, timeout=0: True)
    monkeypatch.setattr(downloads, "DOWNLOAD_SOCKET_TIMEOUT_S", 2.0)
    t0 = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as e:
        load("cifar10", data_dir=tmp_path)
    assert time.monotonic() - t0 < 15
    _assert_one_line_not_found(e.value, str(tmp_path), "cifar-10-python.tar.gz")


def test_a_registered_dataset_is_one_declaration(tmp_path):
    def load_toy(data_dir, download, size=8):
        x, y = torch.zeros(6, 1, size, size, dtype=torch.uint8), torch.arange(6) % 3
        return Dataset("toy", x[:4], y[:4], x[4:], y[4:], num_classes=3, crop=False, flip=False)

    spec = DatasetSpec("toy", geometry=lambda o: (1, o["size"], 3), train_size=4, loader=load_toy,
                       options={"size": 8})
    assert register_dataset(spec) is spec
    try:
        assert available() == sorted([*ALL, "toy"]) and "TOY" in DATASETS
        assert tuple(load("Toy", data_dir=tmp_path / "none", size=4).train_x.shape) == (4, 1, 4, 4)
        assert D.geometry("toy") == (1, 8, 3) and D.geometry("toy", size=6) == (1, 6, 3) and D.train_size("toy") == 4
        assert D.locate("toy", tmp_path / "none", download=False) == "built in (no files)"
        bad_option = r"^unknown option\(s\) for dataset 'toy': bogus; accepted options: size=8$"
        with pytest.raises(ValueError, match=bad_option):
            load("toy", bogus=1)
        with pytest.raises(ValueError, match="^dataset 'toy' is already registered$"):
            register_dataset(spec)
        with pytest.raises(ValueError, match=r"^unknown dataset 'tooy'; available: .*, toy; did you mean 'toy'\?$"):
            load("tooy")
    finally:
        unregister_dataset("toy")
    assert available() == ALL
    with pytest.raises(ValueError, match="must be lowercase with _ "):
        register_dataset(DatasetSpec("Toy-Set", geometry=(1, 8, 3), train_size=4, loader=load_toy))


def test_built_in_declarations_agree_with_what_loads_and_with_torchvision():
    import torchvision.datasets as tvd

    for name, options in (("digits", {}), ("synthetic", {}), ("synthetic", {"channels": 1, "n_train": 30})):
        ds = load(name, **options)
        assert D.geometry(name, **options) == (ds.in_channels, ds.image_size, ds.num_classes)
        assert D.train_size(name, **options) == ds.n_train
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        spec = DATASETS.get(name)
        assert spec.urls == (cls.url,) and cls.filename in spec.files and cls.base_folder in spec.files
    svhn = DATASETS.get("svhn")
    assert svhn.urls == (tvd.SVHN.split_list["train"][0],)
    assert all(tvd.SVHN.split_list[s][1] in svhn.files for s in ("train", "test"))
    assert DATASETS.get("mnist").urls == tuple(tvd.MNIST.mirrors)
    assert DATASETS.get("fashion_mnist").urls == tuple(tvd.FashionMNIST.mirrors)


def test_locate_says_where_without_reading(tmp_path, monkeypatch):
    assert D.locate("digits", tmp_path) == "built in (no files)"
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert D.locate("cifar10", tmp_path) == f"on disk: {tmp_path / 'cifar-10-batches-py'}"
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"")
    archive = tmp_path / "cifar-100-python.tar.gz"
    assert D.locate("cifar100", tmp_path) == f"on disk: {archive} (extracted on first use)"
    for f in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / f).write_bytes(b"")
    assert D.locate("svhn", tmp_path) == f"on disk: {tmp_path}"
    _write_idx_folder(tmp_path / "m" / "MNIST" / "raw", gz=True)
    assert D.locate("mnist", tmp_path / "m") == f"on disk: {tmp_path / 'm' / 'MNIST' / 'raw'}"
    empty = str(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError) as e:
        D.locate("mnist", empty, download=False)
    _assert_one_line_not_found(e.value, empty, "train-images-idx3-ubyte.gz")
    monkeypatch.setattr(downloads, "reachable", lambda urls, timeout=0: False)
    with pytest.raises(DatasetNotFoundError, match=r"could not be downloaded \(no network\)"):
        D.locate("svhn", empty)
    monkeypatch.setattr(downloads, "reachable", lambda urls, timeout=0: bool(urls))
    assert D.locate("cifar10", empty) == f"not on disk: will download to {empty}"


def test_cifar_conversion_through_torchvision_api(tmp_path, monkeypatch):
    """CIFAR .data is NHWC numpy; it must become contiguous uint8 NCHW tensors."""
    import torchvision.datasets as tvd

    rng = np.random.default_rng(0)
    data = {True: rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
            False: rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)}

    class FakeCIFAR10:
        filename, base_folder, url = tvd.CIFAR10.filename, tvd.CIFAR10.base_folder, tvd.CIFAR10.url

        def __init__(self, root, train, download):
            self.data = data[train]
            self.targets = list(range(len(self.data)))

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    ds = load("cifar10", data_dir=tmp_path)
    assert tuple(ds.train_x.shape) == (6, 3, 32, 32) and ds.train_x.is_contiguous()
    assert torch.equal(ds.train_x[2, 1], torch.from_numpy(data[True][2, :, :, 1]))
    assert torch.equal(ds.test_y, torch.arange(4)) and ds.crop and ds.flip and ds.num_classes == 10


# --------------------------------------------------------------- IDX format
def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 + arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _write_idx_folder(folder: Path, gz: bool, n_train=12, n_test=5, size=6):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        _write(folder / name, _idx_bytes(a), gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_valid(tmp_path, gz):
    arrays = _write_idx_folder(tmp_path, gz)
    train_x, train_y, test_x, test_y, _ = load_idx_folder(tmp_path)
    assert tuple(train_x.shape) == (12, 1, 6, 6) and train_x.dtype == torch.uint8
    assert np.array_equal(train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test_y.numpy(), arrays["t10k-labels-idx1-ubyte"]) and test_y.dtype == torch.int64
    for name in ("mnist", "fashion_mnist"):
        ds = load(name, data_dir=tmp_path, download=False)
        assert ds.n_train == 12 and ds.n_test == 5 and ds.in_channels == 1
        assert not ds.crop and not ds.flip and ds.info["source"] == str(tmp_path)


def test_idx_in_torchvision_raw_layout(tmp_path):
    _write_idx_folder(tmp_path / "MNIST" / "raw", gz=True)
    ds = load("mnist", data_dir=tmp_path, download=False)
    assert ds.n_train == 12


def test_idx_wrong_magic(tmp_path):
    # an images magic number where labels are expected
    p = _write(tmp_path / "labels", _idx_bytes(np.arange(5), magic=2051), gz=True)
    with pytest.raises(DatasetFormatError) as e:
        read_idx(p, expected_magic=2049)
    assert str(p) in str(e.value) and "magic" in str(e.value) and "\n" not in str(e.value)
    # not an IDX file at all
    q = _write(tmp_path / "junk", b"\x12\x34\x56\x78" + bytes(20), gz=False)
    with pytest.raises(DatasetFormatError) as e:
        read_idx(q)
    assert str(q) in str(e.value) and "\n" not in str(e.value)
    # inside a dataset folder, a swapped file is reported by name
    _write_idx_folder(tmp_path / "ds", gz=False)
    bad = tmp_path / "ds" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(_idx_bytes(np.zeros((5, 6, 6))))
    with pytest.raises(DatasetFormatError) as e:
        load("fashion_mnist", data_dir=tmp_path / "ds")
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated(tmp_path, gz):
    payload = _idx_bytes(np.zeros((4, 6, 6)))[:-7]
    p = _write(tmp_path / "imgs", payload, gz)
    with pytest.raises(DatasetFormatError) as e:
        read_idx(p, expected_magic=2051)
    assert str(p) in str(e.value) and "truncated" in str(e.value) and "\n" not in str(e.value)


def test_idx_truncated_gzip_stream(tmp_path):
    _write_idx_folder(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DatasetFormatError) as e:
        load("mnist", data_dir=tmp_path, download=False)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_fashion_mnist_falls_back_to_system_copy(tmp_path, monkeypatch):
    system = tmp_path / "system"
    _write_idx_folder(system, gz=True)
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST_DIR", system)
    monkeypatch.chdir(tmp_path)  # the default ./data is empty
    ds = load("fashion_mnist", download=False)  # no folder given: ./data, then the system copy
    assert ds.n_train == 12 and ds.info["source"] == str(system)
    with pytest.raises(DatasetNotFoundError):  # a folder given explicitly must hold the files
        load("fashion_mnist", data_dir=tmp_path / "empty", download=False)
    with pytest.raises(DatasetNotFoundError):  # mnist has no system copy
        load("mnist", download=False)


def test_try_download_swallows_chatter(monkeypatch, capsys):
    monkeypatch.setattr(downloads, "reachable", lambda urls, timeout=0: True)

    def fetch():
        print("Downloading http://example.invalid/x")
        return 42

    def boom():
        print("Failed to download (trying next):")
        raise RuntimeError("Error downloading x:\nTried a, got:\nHTTP 404")

    assert downloads.try_download(fetch, ["http://example.invalid/"]) == (42, None)
    assert downloads.try_download(boom, ["http://example.invalid/"]) == (None, "Error downloading x:")
    assert capsys.readouterr().out == ""
    monkeypatch.undo()
    assert downloads.try_download(fetch, []) == (None, "no network")


DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    ds = load("fashion_mnist", data_dir=DEBIAN_FMNIST)
    assert tuple(ds.train_x.shape) == (60000, 1, 28, 28) and tuple(ds.test_x.shape) == (10000, 1, 28, 28)
    assert ds.num_classes == 10 and ds.train_y.dtype == torch.int64
    assert torch.equal(ds.train_y.bincount(), torch.full((10,), 6000))
    assert torch.equal(ds.test_y.bincount(), torch.full((10,), 1000))


# -------------------------------------------------------------------- splits
def test_stratified_subset_balance_and_determinism():
    y = torch.arange(1000) % 10
    y = y[torch.randperm(1000, generator=torch.Generator().manual_seed(5))]
    for n in (10, 55, 123, 999):
        idx = stratified_subset(y, n, seed=0)
        assert idx.dtype == torch.int64 and idx.numel() == n
        assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == n
        counts = y[idx].bincount(minlength=10)
        assert int(counts.max() - counts.min()) <= 1
        assert torch.equal(idx, stratified_subset(y, n, seed=0))
    assert not torch.equal(stratified_subset(y, 100, 0), stratified_subset(y, 100, 1))
    # imbalanced: proportional (floor or ceil of the exact share)
    yi = torch.cat([torch.zeros(600), torch.ones(300), torch.full((100,), 2)]).long()
    counts = yi[stratified_subset(yi, 101, 3)].bincount(minlength=3)
    exact = torch.tensor([60.6, 30.3, 10.1])
    assert int(counts.sum()) == 101 and bool(((counts - exact).abs() < 1).all())
    with pytest.raises(ValueError):
        stratified_subset(y, 1001, 0)
    with pytest.raises(ValueError):
        stratified_subset(y, 9, 0)


def test_holdout_split_disjoint_and_deterministic():
    x = id_images(250)
    y = torch.arange(250) % 7
    tr, ho = holdout_indices(y, 40, seed=2)
    assert tr.numel() == 210 and ho.numel() == 40
    assert set(tr.tolist()).isdisjoint(ho.tolist())
    assert sorted(tr.tolist() + ho.tolist()) == list(range(250))
    tr2, ho2 = holdout_indices(y, 40, seed=2)
    assert torch.equal(tr, tr2) and torch.equal(ho, ho2)
    train_x, train_y, hold_x, hold_y = holdout_split(x, y, 40, seed=2)
    assert torch.equal(train_x, x[tr]) and torch.equal(hold_y, y[ho])
    ids_tr = set(decode_ids(train_x.float() / 255).tolist())
    ids_ho = set(decode_ids(hold_x.float() / 255).tolist())
    assert ids_tr.isdisjoint(ids_ho) and len(ids_tr | ids_ho) == 250
    counts = hold_y.bincount(minlength=7)
    assert int(counts.max() - counts.min()) <= 1
    a = holdout_split(x, y, 40, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a, holdout_split(x, y, 40, seed=2)))
    train_x, train_y, hold_x, hold_y = holdout_split(x, y, 0, seed=2)
    assert tuple(hold_x.shape) == (0, 3, 8, 8) and tuple(hold_y.shape) == (0,)
    assert torch.equal(train_x, x)


def test_prepare():
    ds = make_dataset()
    p = prepare(ds, train_subset=100, holdout=50, seed=1)
    assert p.info == {
        "dataset": "ids", "train_subset": 100, "holdout": 50, "seed": 1,
        "n_train": 100, "n_holdout": 50, "n_test": 50,
    }
    assert p.train_x.shape[0] == 100 and p.holdout_x.shape[0] == 50 and p.test_x.shape[0] == 50
    ids_tr = set(decode_ids(p.train_x.float() / 255).tolist())
    ids_ho = set(decode_ids(p.holdout_x.float() / 255).tolist())
    assert ids_tr.isdisjoint(ids_ho)
    # labels travel with their images
    assert torch.equal(p.train_y, decode_ids(p.train_x.float() / 255) % 5)
    # the hold-out does not depend on the training subset size
    q = prepare(ds, train_subset=None, holdout=50, seed=1)
    assert torch.equal(p.holdout_x, q.holdout_x) and q.info["n_train"] == 250
    assert ids_tr <= set(decode_ids(q.train_x.float() / 255).tolist())
    # deterministic
    r = prepare(ds, train_subset=100, holdout=50, seed=1)
    assert torch.equal(p.train_x, r.train_x)
    assert p.num_classes == 5 and p.crop and p.flip
    with pytest.raises(ValueError):
        prepare(ds, train_subset=260, holdout=50, seed=1)


# -------------------------------------------------------------------- loader
def _collect(loader, epoch):
    return [(x.clone(), y.clone()) for x, y in loader.batches(epoch)]


def test_loader_replay_and_epochs_differ():
    x, y = id_images(100), torch.arange(100) % 10
    ld = DeviceLoader(x, y, 32, torch.device("cpu"), shuffle=True, crop=True, flip=True, seed=3)
    a, b = _collect(ld, 5), _collect(ld, 5)
    assert len(a) == len(ld) == 4
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    # a fresh loader with the same seed replays too (exact resume)
    ld2 = DeviceLoader(x, y, 32, "cpu", shuffle=True, crop=True, flip=True, seed=3)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, _collect(ld2, 5)))
    c = _collect(ld, 6)
    assert not torch.equal(torch.cat([p[1] for p in a]), torch.cat([p[1] for p in c])) or not torch.equal(
        torch.cat([p[0] for p in a]), torch.cat([p[0] for p in c])
    )
    assert not torch.equal(ld.plan(5).order, ld.plan(6).order)
    other_seed = DeviceLoader(x, y, 32, "cpu", seed=4)
    assert not torch.equal(ld.plan(5).order, other_seed.plan(5).order)


def test_loader_covers_each_example_once_and_labels_match():
    n = 103
    x, y = id_images(n), (torch.arange(n) * 7) % 10
    ld = DeviceLoader(x, y, 16, "cpu", shuffle=True, seed=0)
    for epoch in (0, 1):
        xs, ys = zip(*ld.batches(epoch))
        ids = decode_ids(torch.cat(xs))
        assert sorted(ids.tolist()) == list(range(n))
        assert torch.equal(torch.cat(ys), y[ids])
        assert ids.tolist() != list(range(n))  # shuffled
        assert torch.equal(torch.cat(xs), x[ids].float() / 255)


def test_loader_eval_in_order_and_len():
    n = 50
    x, y = id_images(n), torch.arange(n) % 10
    ld = DeviceLoader(x, y, 16, "cpu", shuffle=False)
    assert len(ld) == 4 and ld.num_examples == n
    xs, ys = zip(*ld.batches(0))
    assert [b.shape[0] for b in xs] == [16, 16, 16, 2]
    assert torch.equal(torch.cat(xs), x.float() / 255) and torch.equal(torch.cat(ys), y)
    assert sum(1 for _ in ld) == 4  # plain iteration
    dl = DeviceLoader(x, y, 16, "cpu", shuffle=False, drop_last=True)
    assert len(dl) == 3 and [b[0].shape[0] for b in dl.batches(0)] == [16, 16, 16]
    assert len(DeviceLoader(x, y, 25, "cpu", drop_last=True)) == 2
    assert len(DeviceLoader(x, y, 25, "cpu")) == 2
    assert len(DeviceLoader(x, y, 64, "cpu", drop_last=True)) == 0


def test_loader_values_dtype_and_channels_last():
    x, y = id_images(40), torch.arange(40) % 10
    for fmt in (torch.contiguous_format, torch.channels_last):
        ld = DeviceLoader(x, y, 16, "cpu", crop=True, flip=True, memory_format=fmt)
        for xb, yb in ld.batches(0):
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64
            assert xb.device.type == "cpu" and tuple(xb.shape[1:]) == (3, 8, 8)
            assert float(xb.min()) >= 0.0 and float(xb.max()) <= 1.0
            assert xb.is_contiguous(memory_format=fmt)
            if fmt is torch.channels_last:
                assert not xb.is_contiguous()
    with pytest.raises(ValueError):
        DeviceLoader(x, y, 16, "cpu", memory_format=torch.preserve_format)


def _reference(x_u8, plan, pad, positions):
    """Slow per-example reference: zero-pad, crop at the plan's offset, then flip."""
    out = []
    for pos in positions:
        img = x_u8[int(plan.order[pos])]
        if plan.offsets is not None:
            padded = torch.zeros(img.shape[0], img.shape[1] + 2 * pad, img.shape[2] + 2 * pad, dtype=torch.uint8)
            padded[:, pad : pad + img.shape[1], pad : pad + img.shape[2]] = img
            r, c = int(plan.offsets[pos, 0]), int(plan.offsets[pos, 1])
            img = padded[:, r : r + img.shape[1], c : c + img.shape[2]]
        if plan.flips is not None and bool(plan.flips[pos]):
            img = img.flip(-1)
        out.append(img.float() / 255)
    return torch.stack(out)


@pytest.mark.parametrize("crop,flip", [(True, False), (False, True), (True, True)])
def test_loader_augmentation_matches_reference(crop, flip):
    n, pad = 70, 3
    x, y = id_images(n, c=2, s=10), torch.arange(n) % 10
    ld = DeviceLoader(x, y, 32, "cpu", shuffle=True, crop=crop, flip=flip, pad=pad, seed=11)
    plan = ld.plan(2)
    got = torch.cat([b for b, _ in ld.batches(2)])
    labels = torch.cat([lab for _, lab in ld.batches(2)])
    assert torch.equal(labels, y[plan.order])
    positions = [0, 1, 5, 31, 32, 33, 50, 69]
    assert torch.equal(got[positions], _reference(x, plan, pad, positions))
    if crop:
        off = plan.offsets
        assert int(off.min()) >= 0 and int(off.max()) <= 2 * pad
        assert len(set(map(tuple, off.tolist()))) > 10  # offsets vary per example
    if flip:
        assert 0 < int(plan.flips.sum()) < n  # some flipped, some not


def test_loader_crop_is_a_zero_padded_window():
    """Independent of the plan: each cropped image is some window of the padded image."""
    n, pad, s = 12, 2, 6
    x, y = id_images(n, c=1, s=s), torch.zeros(n, dtype=torch.long)
    x[:, 0, 0, :2] = 255  # keep pixels non-zero so the window is identifiable
    ld = DeviceLoader(x, y, n, "cpu", shuffle=False, crop=True, pad=pad, seed=1)
    (xb, _), = list(ld.batches(0))
    xb_u8 = torch.round(xb * 255).to(torch.uint8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(n):
        windows = [
            padded[i, :, r : r + s, c : c + s] for r in range(2 * pad + 1) for c in range(2 * pad + 1)
        ]
        assert any(torch.equal(xb_u8[i], w) for w in windows)


def test_loader_flip_flips():
    x, y = id_images(64, s=6), torch.zeros(64, dtype=torch.long)
    ld = DeviceLoader(x, y, 64, "cpu", shuffle=False, flip=True, seed=0)
    (xb, _), = list(ld.batches(0))
    flips = ld.plan(0).flips
    ref = torch.where(flips[:, None, None, None], x.flip(-1), x).float() / 255
    assert torch.equal(xb, ref)
    assert 0 < int(flips.sum()) < 64


def test_to_float():
    x = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    f = D.to_float(x)
    assert f.dtype == torch.float32 and torch.allclose(f, torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]))
    assert D.to_float(x, torch.channels_last).is_contiguous(memory_format=torch.channels_last)


def test_shards_of_a_global_batch_reassemble_it_and_resume_skips_batches():
    from taylorat.data import DeviceLoader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (23, 1, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.arange(23)
    loader = DeviceLoader(images, labels, batch_size=8, crop=True, flip=True, pad=2, seed=4)
    whole = list(loader.batches(3))
    for world in (1, 2, 3):
        shards = [list(loader.shard_batches(3, r, world)) for r in range(world)]
        for k, (x, y) in enumerate(whole):
            parts = [shards[r][k] for r in range(world)]
            assert torch.equal(torch.cat([p[0] for p in parts]), x)
            assert torch.equal(torch.cat([p[1] for p in parts]), y)
            assert [p[2][2] for p in parts] == [len(y)] * world
            assert [p[2][0] for p in parts] == [sum(len(q[1]) for q in parts[:r]) for r in range(world)]
    resumed = list(loader.batches(3, start=2))
    assert len(resumed) == len(whole) - 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, whole[2:]))


def test_partial_idx_folder_is_reported_not_worked_around(tmp_path):
    from taylorat.data import DatasetNotFoundError, load

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DatasetNotFoundError, match=r"is incomplete: t10k-images-idx3-ubyte.gz, "
                                                   r"t10k-labels-idx1-ubyte.gz missing"):
        load("fashion_mnist", tmp_path, download=False)
