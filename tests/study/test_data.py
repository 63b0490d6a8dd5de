"""Data loading through the real readers on tiny files in every on-disk format, subsets, splits, loaders."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from htr_utils.study import data

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
REAL_DOWNLOAD = data._torchvision_download


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real system directory, no downloads, and a fresh in-memory cache for every test."""
    empty = tmp_path / "empty_system_dir"
    empty.mkdir()
    monkeypatch.setenv("HTR_FASHION_MNIST_DIR", str(empty))

    def no_download(name, root, train):
        raise ConnectionError("network disabled in tests")

    monkeypatch.setattr(data, "_torchvision_download", no_download)
    data.clear_cache()
    yield
    data.clear_cache()


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = True) -> None:
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist_like(folder: Path, n: int, seed: int, compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, 2051, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 2049, compress)
    return images, labels


@pytest.mark.parametrize("name,mean,std,subdir,compress", [
    ("fashionmnist", 0.5, 0.5, "fashionmnist", True),
    ("fashionmnist", 0.5, 0.5, "FashionMNIST/raw", False),
    ("mnist", 0.1307, 0.3081, "mnist", True),
    ("mnist", 0.1307, 0.3081, "MNIST/raw", True),
])
def test_idx_datasets_are_padded_and_normalised(tmp_path, name, mean, std, subdir, compress):
    images, labels = _write_mnist_like(tmp_path / subdir, n=12, seed=1, compress=compress)
    ds = data.load_dataset(name, root=tmp_path, train=True, download=False)
    x, y = ds.tensors
    assert x.shape == (12, 1, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    # Padding is black before normalisation: -mean/std after it.
    frame = torch.ones(32, 32, dtype=torch.bool)
    frame[2:30, 2:30] = False
    border = x[:, 0][:, frame]
    assert torch.allclose(border, torch.full_like(border, -mean / std))
    # Interior pixel (i, j) of the 28x28 image sits at (i + 2, j + 2).
    expected = (images[3, 5, 7] / 255.0 - mean) / std
    assert x[3, 0, 7, 9].item() == pytest.approx(expected, abs=1e-6)
    expected = (images[-1] / 255.0 - mean) / std
    assert torch.allclose(x[-1, 0, 2:30, 2:30], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    assert len(data.load_dataset(name, root=tmp_path, train=False, download=False)) == 12


def test_fashionmnist_system_dir_is_used(tmp_path, monkeypatch):
    system = tmp_path / "debian"
    _write_mnist_like(system, n=10, seed=2)
    monkeypatch.setenv("HTR_FASHION_MNIST_DIR", str(system))
    ds = data.load_dataset("fashionmnist", root=tmp_path / "data", download=False)
    assert len(ds) == 10


def test_idx_reader_rejects_wrong_magic_and_truncation(tmp_path):
    path = tmp_path / "x.gz"
    _write_idx(path, np.zeros((2, 28, 28), np.uint8), 2051)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(path, 2049)
    raw = gzip.decompress(path.read_bytes())[:-5]
    (tmp_path / "short").write_bytes(raw)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short", 2051)


def test_mismatched_idx_pair_is_rejected(tmp_path):
    folder = tmp_path / "mnist"
    _write_mnist_like(folder, n=4, seed=0)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), 2049)
    with pytest.raises(ValueError, match="do not belong together"):
        data.load_dataset("mnist", root=tmp_path, download=False)


def _cifar_batch(n: int, seed: int, label_key: bytes, num_classes: int) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return {b"data": flat, label_key: [int(v) for v in rng.integers(0, num_classes, n)]}, flat


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    flats, labels = [], []
    for i in range(1, 6):
        batch, flat = _cifar_batch(3, seed=i, label_key=b"labels", num_classes=10)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
        flats.append(flat)
        labels += batch[b"labels"]
    test_batch, _ = _cifar_batch(4, seed=9, label_key=b"labels", num_classes=10)
    (folder / "test_batch").write_bytes(pickle.dumps(test_batch))

    x, y = data.load_dataset("cifar10", root=tmp_path, download=False).tensors
    assert x.shape == (15, 3, 32, 32) and y.tolist() == labels
    mean, std = data.NORMALISATION["cifar10"]
    flat = flats[1][0]  # first image of data_batch_2 is the 4th example; layout is R plane, G plane, B plane
    for c in range(3):
        expected = (flat[c * 1024 + 5 * 32 + 6] / 255.0 - mean[c]) / std[c]
        assert x[3, c, 5, 6].item() == pytest.approx(expected, abs=1e-5)
    assert len(data.load_dataset("cifar10", root=tmp_path, train=False, download=False)) == 4


def test_cifar100_pickles_use_fine_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    train, _ = _cifar_batch(6, seed=0, label_key=b"fine_labels", num_classes=100)
    train[b"coarse_labels"] = [0] * 6
    (folder / "train").write_bytes(pickle.dumps(train))
    test, _ = _cifar_batch(2, seed=1, label_key=b"fine_labels", num_classes=100)
    (folder / "test").write_bytes(pickle.dumps(test))
    x, y = data.load_dataset("cifar100", root=tmp_path, download=False).tensors
    assert x.shape == (6, 3, 32, 32) and y.tolist() == train[b"fine_labels"]
    assert data.num_classes("cifar100") == 100 and data.in_channels("cifar100") == 3


def test_svhn_mat_maps_label_10_to_0(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    folder = tmp_path / "svhn"
    folder.mkdir()
    X = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    savemat(folder / "train_32x32.mat", {"X": X, "y": np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)})
    savemat(folder / "test_32x32.mat", {"X": X[..., :2], "y": np.array([[3], [10]], dtype=np.uint8)})
    x, y = data.load_dataset("svhn", root=tmp_path, download=False).tensors
    assert x.shape == (5, 3, 32, 32)
    assert y.tolist() == [0, 1, 2, 0, 9]
    mean, std = data.NORMALISATION["svhn"]
    assert x[4, 2, 7, 11].item() == pytest.approx((X[7, 11, 2, 4] / 255.0 - mean[2]) / std[2], abs=1e-5)
    assert data.load_dataset("svhn", root=tmp_path, train=False, download=False).tensors[1].tolist() == [3, 0]


@pytest.mark.parametrize("download", [False, None, True])
def test_missing_fashionmnist_names_the_three_ways(tmp_path, download):
    with pytest.raises(data.DataUnavailableError) as info:
        data.load_dataset("fashionmnist", root=tmp_path / "nothing", download=download)
    message = str(info.value)
    assert str(tmp_path / "nothing" / "fashionmnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "torchvision" in message
    assert isinstance(info.value, FileNotFoundError)
    if download is not False:
        assert "network disabled in tests" in message


def test_offline_env_disables_download(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(data, "_torchvision_download", lambda *a: called.append(a))
    monkeypatch.setenv("HTR_OFFLINE", "1")
    with pytest.raises(data.DataUnavailableError, match="download disabled"):
        data.load_dataset("mnist", root=tmp_path, download=None)
    assert called == []


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="fashionmnist, mnist, cifar10"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="valid names"):
        data.num_classes("nope")


def test_digits_offline():
    train = data.load_dataset("digits", train=True)
    test = data.load_dataset("digits", train=False)
    x, y = train.tensors
    assert x.shape[1:] == (1, 32, 32) and x.dtype == torch.float32
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert set(y.tolist()) == set(range(10)) == set(test.tensors[1].tolist())
    assert x.min().item() == pytest.approx(-1.0) and x.max().item() <= 1.0 + 1e-6
    assert data.num_classes("digits") == 10 and data.in_channels("digits") == 1
    assert data.load_dataset("digits").tensors[0] is x  # cached


def _toy_dataset(counts: list[int]) -> torch.utils.data.TensorDataset:
    y = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    y = y[perm]
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    return torch.utils.data.TensorDataset(x, y)


def test_class_balanced_subset():
    ds = _toy_dataset([30, 25, 40])
    x, y = data.class_balanced_subset(ds, 10, seed=0)
    assert y.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert torch.equal(ds.tensors[1][x[:, 0, 0, 0].long()], y)  # x is the example that carries label y
    x2, _ = data.class_balanced_subset(ds, 10, seed=0)
    assert torch.equal(x, x2)
    x3, _ = data.class_balanced_subset(ds, 10, seed=1)
    assert not torch.equal(x, x3)
    with pytest.raises(ValueError, match="class 1 has only 25"):
        data.class_balanced_subset(ds, 26)
    # Works through a Subset too.
    _, ys = data.class_balanced_subset(torch.utils.data.Subset(ds, list(range(60))), 3, seed=0)
    assert torch.bincount(ys).tolist() == [3, 3, 3]


def test_subsample_is_stratified_and_seeded():
    ds = _toy_dataset([100, 50, 150])
    sub = data.subsample(ds, 60, seed=0)
    assert len(sub) == 60
    assert torch.bincount(data.dataset_labels(sub)).tolist() == [20, 10, 30]
    assert sub.indices == data.subsample(ds, 60, seed=0).indices
    assert sub.indices != data.subsample(ds, 60, seed=1).indices
    assert data.subsample(ds, None) is ds and data.subsample(ds, 10_000) is ds


def test_validation_split_partitions_the_training_set():
    ds = _toy_dataset([100, 50, 150])
    train, val = data.validation_split(ds, 0.2, seed=3)
    assert len(val) == 60 and len(train) == 240
    assert set(train.indices).isdisjoint(val.indices)
    assert sorted(train.indices + val.indices) == list(range(300))
    assert torch.bincount(data.dataset_labels(val)).tolist() == [20, 10, 30]
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.validation_split(ds, 1.0)


def test_make_loader_is_deterministic():
    ds = _toy_dataset([20, 20])

    def order(loader):
        return torch.cat([x[:, 0, 0, 0] for x, _ in loader]).tolist()

    a, b = data.make_loader(ds, 8, shuffle=True, seed=5), data.make_loader(ds, 8, shuffle=True, seed=5)
    assert order(a) == order(b)
    assert order(a) != order(data.make_loader(ds, 8, shuffle=True, seed=6))
    assert order(data.make_loader(ds, 8, shuffle=False)) == ds.tensors[0][:, 0, 0, 0].tolist()
    # With an epoch, the order depends on (seed, epoch) only.
    e3 = order(data.make_loader(ds, 8, seed=5, epoch=3))
    assert e3 == order(data.make_loader(ds, 8, seed=5, epoch=3))
    assert e3 != order(data.make_loader(ds, 8, seed=5, epoch=4))


@pytest.mark.skipif(not (SYSTEM_FASHION / "train-labels-idx1-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (`make setup` installs it)")
def test_real_fashionmnist(monkeypatch, tmp_path):
    monkeypatch.setenv("HTR_FASHION_MNIST_DIR", str(SYSTEM_FASHION))
    train = data.load_dataset("fashionmnist", root=tmp_path, download=False)
    test = data.load_dataset("fashionmnist", root=tmp_path, train=False, download=False)
    assert train.tensors[0].shape == (60000, 1, 32, 32) and len(test) == 10000
    assert torch.bincount(train.tensors[1]).tolist() == [6000] * 10
    assert torch.bincount(test.tensors[1]).tolist() == [1000] * 10
    assert train.tensors[0][:, :, :2].eq(-1.0).all()  # padded rows: black, normalised by 0.5 / 0.5
    x, y = data.class_balanced_subset(train, 10, seed=0)
    assert x.shape == (100, 1, 32, 32) and torch.bincount(y).tolist() == [10] * 10


def test_torchvision_failure_becomes_data_unavailable(tmp_path, monkeypatch):
    """The real download helper: a torchvision error surfaces as DataUnavailableError."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(data, "_torchvision_download", REAL_DOWNLOAD)  # undo the fixture's stub

    def offline(*args, **kwargs):
        raise RuntimeError("simulated: no route to host")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(data.DataUnavailableError, match="simulated: no route to host"):
        data.load_dataset("mnist", root=tmp_path, download=True)


def test_epoch_batch_indices_are_a_seeded_permutation():
    batches = data.epoch_batch_indices(50, 16, seed=5, epoch=3)
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    order = torch.cat(batches)
    assert sorted(order.tolist()) == list(range(50))
    assert torch.equal(order, torch.cat(data.epoch_batch_indices(50, 16, seed=5, epoch=3)))
    assert not torch.equal(order, torch.cat(data.epoch_batch_indices(50, 16, seed=5, epoch=4)))
    assert not torch.equal(order, torch.cat(data.epoch_batch_indices(50, 16, seed=6, epoch=3)))
    with pytest.raises(ValueError, match="batch_size"):
        data.epoch_batch_indices(50, 0, seed=5, epoch=3)


def test_indexed_tensors_gather_what_the_dataset_holds():
    ds = _toy_dataset([20, 20, 20])
    train, val = data.validation_split(ds, 0.25, seed=1)
    nested = data.subsample(train, 20, seed=2)
    for d in (ds, train, val, nested):
        held = data.IndexedTensors(d)
        assert len(held) == len(d)
        pos = torch.tensor([len(d) - 1, 0, 3])
        x, y = held.batch(pos)
        for k, i in enumerate(pos.tolist()):
            assert torch.equal(x[k], d[i][0]) and int(y[k]) == int(d[i][1])
        xs = torch.cat([x for x, _ in held.slices(7)])
        assert torch.equal(xs, torch.stack([d[i][0] for i in range(len(d))]))
    with pytest.raises(TypeError, match="TensorDataset"):
        data.IndexedTensors([(torch.zeros(1), 0)])
