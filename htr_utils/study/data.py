"""Data sets as normalised 32x32 float tensors, class-balanced subsets, splits and loaders.

Every data set is decoded by this module's own readers (idx, CIFAR pickles, SVHN .mat)
from files found on disk; torchvision is used only to *download* those files where the
machine is online. Images come back as float32 ``(N, C, 32, 32)``, labels as int64.

Pixel pipeline (as the paper's ``Pad(2) -> ToTensor -> Normalize``): uint8 / 255, then
28x28 images are zero-padded by 2 on every side (so padded pixels are black *before*
normalisation and equal ``-mean / std`` after), then ``(x - mean) / std`` per channel.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from collections.abc import Iterator
from typing import Callable, Sequence

import numpy as np
from scipy.io import loadmat
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

DATASETS: tuple[str, ...] = ("fashionmnist", "mnist", "cifar10", "cifar100", "svhn", "digits")

#: Debian package ``dataset-fashion-mnist`` installs the idx files here.
FASHION_MNIST_SYSTEM_DIR: str = os.environ.get("HTR_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")

# Per-channel (mean, std) in [0, 1] pixel units.
# FashionMNIST / MNIST: the paper's values. CIFAR10 / CIFAR100 / SVHN: the mean and the
# per-pixel std over each training set (e.g. CIFAR10 std 0.247, not the often-copied 0.2023).
# digits: mean 0.5 / std 0.5 after scaling the 0..16 grey levels to [0, 1].
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashionmnist": ((0.5,), (0.5,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "digits": ((0.5,), (0.5,)),
}

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DataUnavailableError(FileNotFoundError):
    """The data set's files are not on disk and could not be downloaded."""


def _check_name(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def num_classes(name: str) -> int:
    """Number of classes of data set ``name``."""
    return 100 if _check_name(name) == "cifar100" else 10


def in_channels(name: str) -> int:
    """Number of image channels of data set ``name`` (1 for greyscale, 3 for colour)."""
    return 3 if _check_name(name) in ("cifar10", "cifar100", "svhn") else 1


# --------------------------------------------------------------------------- readers


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Decode an idx file (``.gz`` or plain) into a uint8 array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an idx file ({len(raw)} bytes)")
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: idx magic number {magic}, expected {expected_magic} "
                         f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'}); "
                         "is this the right file, and not corrupted?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says shape {dims} ({expected} bytes of data) but the file has "
                         f"{len(raw) - header}; the file is truncated or corrupted, fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(dirs: Sequence[Path], basename: str) -> Path | None:
    """First existing ``dir/basename`` or ``dir/basename.gz``."""
    for d in dirs:
        for candidate in (d / basename, d / (basename + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _read_mnist_like(dirs: Sequence[Path], train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "train" if train else "t10k"
    img_path = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        return None
    images = read_idx(img_path, IDX_IMAGES_MAGIC)
    labels = read_idx(lbl_path, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path} holds {images.shape[0]} images but {lbl_path} holds "
                         f"{labels.shape[0]} labels; the two files do not belong together")
    return images[:, None], labels  # (N, 1, 28, 28)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _read_cifar(dirs: Sequence[Path], train: bool, hundred: bool) -> tuple[np.ndarray, np.ndarray] | None:
    if hundred:
        files = ["train"] if train else ["test"]
        label_key = b"fine_labels"
    else:
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key = b"labels"
    for d in dirs:
        paths = [d / f for f in files]
        if not all(p.is_file() for p in paths):
            continue
        xs, ys = [], []
        for p in paths:
            batch = _unpickle(p)
            if b"data" not in batch or label_key not in batch:
                raise ValueError(f"{p}: expected keys b'data' and {label_key!r}, found {sorted(batch)}")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)
    return None


def _read_svhn(dirs: Sequence[Path], train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    path = _find_file(dirs, "train_32x32.mat" if train else "test_32x32.mat")
    if path is None:
        return None
    mat = loadmat(path)
    x = np.transpose(mat["X"], (3, 2, 0, 1))  # (32, 32, 3, N) -> (N, 3, 32, 32)
    y = mat["y"].astype(np.int64).reshape(-1)
    y[y == 10] = 0  # SVHN stores digit 0 as label 10
    return np.ascontiguousarray(x, dtype=np.uint8), y


def _read_digits(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits scaled to [0, 1], bilinearly upsampled to 32x32, split stratified 80/20."""
    # scikit-learn takes about a second to import and only the smoke profile's digits need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_FRACTION,
                                           random_state=DIGITS_SPLIT_SEED, stratify=digits.target)
    idx = torch.as_tensor(np.sort(idx_train if train else idx_test))
    # Bilinear interpolation is a convex combination, so values stay in [0, 1].
    x = F.interpolate(x[idx], size=(32, 32), mode="bilinear", align_corners=False)
    return x, y[idx]


# --------------------------------------------------------------------------- lookup


def fashion_mnist_system_dir() -> Path:
    """Debian's FashionMNIST directory: HTR_FASHION_MNIST_DIR if set now, else FASHION_MNIST_SYSTEM_DIR."""
    return Path(os.environ.get("HTR_FASHION_MNIST_DIR", FASHION_MNIST_SYSTEM_DIR))


def _search_dirs(name: str, root: Path) -> list[Path]:
    """Directories that may hold ``name``'s raw files, in lookup order."""
    sub = root / name
    if name in ("fashionmnist", "mnist"):
        tv = "FashionMNIST" if name == "fashionmnist" else "MNIST"
        dirs = [sub, sub / tv / "raw", root / tv / "raw"]
        if name == "fashionmnist":
            dirs.append(fashion_mnist_system_dir())
        return dirs
    if name == "cifar10":
        return [sub, sub / "cifar-10-batches-py", root / "cifar-10-batches-py"]
    if name == "cifar100":
        return [sub, sub / "cifar-100-python", root / "cifar-100-python"]
    if name == "svhn":
        return [sub, root]
    return []


def _read_raw(name: str, dirs: Sequence[Path], train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    if name in ("fashionmnist", "mnist"):
        return _read_mnist_like(dirs, train)
    if name in ("cifar10", "cifar100"):
        return _read_cifar(dirs, train, hundred=name == "cifar100")
    return _read_svhn(dirs, train)


def _torchvision_download(name: str, root: Path, train: bool) -> None:
    """Let torchvision fetch the official files into ``root/<name>/`` (where the readers look)."""
    import torchvision.datasets as tvd  # heavy to import, and needed only to download a data set once

    target = str(root / name)
    if name == "fashionmnist":
        tvd.FashionMNIST(target, train=train, download=True)
    elif name == "mnist":
        tvd.MNIST(target, train=train, download=True)
    elif name == "cifar10":
        tvd.CIFAR10(target, train=train, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(target, train=train, download=True)
    elif name == "svhn":
        tvd.SVHN(target, split="train" if train else "test", download=True)


EXPECTED_FILES: dict[str, tuple[str, str]] = {
    "fashionmnist": ("train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]",
                     "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"),
    "mnist": ("train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]",
              "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"),
    "cifar10": ("cifar-10-batches-py/data_batch_1..5", "cifar-10-batches-py/test_batch"),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
}


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("HTR_OFFLINE", "").lower() not in ("1", "true", "yes")


def _unavailable_message(name: str, root: Path, dirs: Sequence[Path], train: bool, reason: str) -> str:
    split = "train" if train else "test"
    ways = [f"put the raw files ({EXPECTED_FILES[name][0 if train else 1]}) into {root / name}/ "
            f"(looked in: {', '.join(str(d) for d in dirs)})"]
    if name == "fashionmnist":
        ways.append("install Debian's package dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`), "
                    f"which puts them in {fashion_mnist_system_dir()} (or set HTR_FASHION_MNIST_DIR)")
    ways.append(f"run once on a machine with internet access so torchvision downloads them into {root / name}/ "
                "(download=True, HTR_OFFLINE unset)")
    listed = "\n".join(f"  {i}. {w}" for i, w in enumerate(ways, 1))
    return (f"the {split} split of {name!r} is not available ({reason}). Ways to get it:\n{listed}\n"
            "The 'digits' data set ships with scikit-learn and needs no files.")


def _raw_files_present(name: str, dirs: Sequence[Path], train: bool) -> bool:
    """Whether the raw files of a split are on disk (names only; nothing is read)."""
    if name in ("fashionmnist", "mnist"):
        prefix = "train" if train else "t10k"
        return all(_find_file(dirs, f"{prefix}-{kind}") is not None for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    if name in ("cifar10", "cifar100"):
        files = (["train"] if train else ["test"]) if name == "cifar100" else (
            [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"])
        return any(all((d / f).is_file() for f in files) for d in dirs)
    return _find_file(dirs, "train_32x32.mat" if train else "test_32x32.mat") is not None


def missing_data(name: str, root: str | Path = "data") -> str | None:
    """None if both splits of ``name`` are on disk under ``root`` (digits always are), else what is
    missing and the ways to get it: a plan can skip such runs instead of failing in the middle."""
    name = _check_name(name)
    if name == "digits":
        return None
    root = Path(root)
    dirs = _search_dirs(name, root)
    for train in (True, False):
        if not _raw_files_present(name, dirs, train):
            return _unavailable_message(name, root, dirs, train, "not on disk")
    return None


_CACHE: dict[tuple[str, str, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def clear_cache() -> None:
    """Forget the in-memory copies of decoded data sets."""
    _CACHE.clear()


def _normalise(name: str, x: torch.Tensor) -> torch.Tensor:
    mean, std = NORMALISATION[name]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _to_tensors(name: str, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).to(torch.float32) / 255.0  # copy: buffer may be read-only
    if x.shape[-1] == 28:
        x = F.pad(x, (2, 2, 2, 2))  # black border, as torchvision's Pad(2) on the PIL image
    if x.shape[1:] != (in_channels(name), 32, 32):
        raise ValueError(f"{name}: decoded images have shape {tuple(x.shape[1:])}, "
                         f"expected ({in_channels(name)}, 32, 32)")
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def load_dataset(name: str, root: str | Path = "data", train: bool = True,
                 download: bool | None = None) -> TensorDataset:
    """The ``train`` or test split of ``name`` as a TensorDataset of normalised (N, C, 32, 32) images, int64 labels.

    Files are looked for under ``root`` (and, for FashionMNIST, in Debian's system
    directory); if absent and ``download`` allows it (None: unless the environment sets
    HTR_OFFLINE=1), torchvision downloads them into ``root/<name>/``. Otherwise raises
    DataUnavailableError naming the ways to get them. Decoded tensors are cached in memory
    per (name, root, train) and shared between calls: do not modify them in place.
    """
    name = _check_name(name)
    root = Path(root)
    key = (name, str(root.resolve()), bool(train))
    if key not in _CACHE:
        if name == "digits":
            x, y = _read_digits(train)
        else:
            dirs = _search_dirs(name, root)
            raw = _read_raw(name, dirs, train)
            if raw is None:
                if not _download_allowed(download):
                    raise DataUnavailableError(_unavailable_message(name, root, dirs, train, "download disabled"))
                try:
                    _torchvision_download(name, root, train)
                except Exception as err:  # no network, server down, checksum mismatch, ...
                    raise DataUnavailableError(_unavailable_message(
                        name, root, dirs, train, f"download failed: {type(err).__name__}: {err}")) from err
                raw = _read_raw(name, dirs, train)
                if raw is None:
                    raise DataUnavailableError(_unavailable_message(
                        name, root, dirs, train, "torchvision finished but the files were not found"))
            x, y = _to_tensors(name, *raw)
        _CACHE[key] = (_normalise(name, x), y)
    return TensorDataset(*_CACHE[key])


# --------------------------------------------------------------------------- subsets and loaders


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Int64 labels of every example of ``dataset`` (fast for TensorDataset and Subsets of it)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


def _gather(dataset: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][indices], dataset.tensors[1][indices]
    if isinstance(dataset, Subset):
        inner = torch.as_tensor(dataset.indices, dtype=torch.long)[indices]
        return _gather(dataset.dataset, inner)
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items], dtype=torch.int64)


def class_balanced_subset(dataset: Dataset, examples_per_class: int,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded draw of ``examples_per_class`` examples of every class, as (x, y) tensors sorted by class.

    The paper computes Hessians on such a fixed subset (10 per class). Within a class the
    examples keep their order in ``dataset``.
    """
    labels = dataset_labels(dataset)
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < examples_per_class:
            raise ValueError(f"class {c} has only {len(members)} examples, fewer than the "
                             f"{examples_per_class} asked for; lower examples_per_class")
        pick = members[torch.randperm(len(members), generator=gen)[:examples_per_class]]
        chosen.append(torch.sort(pick).values)
    return _gather(dataset, torch.cat(chosen))


def _stratified_choice(labels: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples drawn per class in proportion to class frequency (largest remainders)."""
    y = labels.numpy()
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / len(y)
    take = np.floor(quota).astype(int)
    rest = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picks))


def subsample(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A stratified, seeded Subset of ``n`` examples (class proportions kept, largest remainders).

    Returns ``dataset`` itself when ``n`` is None or at least ``len(dataset)``.
    """
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise ValueError(f"subsample size must be positive, got {n}")
    return Subset(dataset, _stratified_choice(dataset_labels(dataset), n, seed).tolist())


def validation_split(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """(train, validation) Subsets of ``dataset``; the validation part is a stratified, seeded ``fraction`` of it."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie strictly between 0 and 1, got {fraction}")
    n_val = int(round(fraction * len(dataset)))
    val = _stratified_choice(dataset_labels(dataset), n_val, seed)
    train = np.setdiff1d(np.arange(len(dataset)), val)
    return Subset(dataset, train.tolist()), Subset(dataset, val.tolist())


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                epoch: int | None = None, drop_last: bool = False,
                collate_fn: Callable | None = None) -> DataLoader:
    """A single-process DataLoader whose shuffling is fixed by ``seed`` (and ``epoch``, if given).

    Without ``epoch``, one generator seeded by ``seed`` drives all epochs of this loader.
    With ``epoch``, the order depends only on (seed, epoch), so a run resumed at epoch k
    sees the same batches as an uninterrupted one: build a fresh loader every epoch.
    """
    gen_seed = seed if epoch is None else epoch_seed(seed, epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(gen_seed), collate_fn=collate_fn)


# --------------------------------------------------------------------------- tensor batches (training's hot path)


def epoch_seed(seed: int, epoch: int) -> int:
    """The 32-bit seed of epoch ``epoch``'s batch order: a function of (seed, epoch) only, so a run resumed at
    epoch k draws the same batches as an uninterrupted one (as :func:`make_loader` with ``epoch``)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def epoch_batch_indices(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Positions 0..n-1 in epoch ``epoch``'s order, cut into batches of ``batch_size`` (the last may be smaller).

    The order is ``torch.randperm(n)`` under a generator seeded with :func:`epoch_seed`; nothing else draws from
    that generator, so the order does not depend on how the caller iterates (unlike a DataLoader's, which
    draws a base seed from it every time ``iter`` is called).
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"epoch_batch_indices needs n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    return list(order.split(batch_size))


class IndexedTensors:
    """A TensorDataset (or nested Subsets of one) as its full tensors plus the row index of each example.

    No copy of the images is made: example i is ``x[index[i]]``, so a batch is one gather from the
    shared tensors (faster than a DataLoader's per-example fetch and collate, and the memory of a
    subset stays the index's).
    """

    def __init__(self, dataset: Dataset):
        index = torch.arange(len(dataset))
        while isinstance(dataset, Subset):
            index = torch.as_tensor(dataset.indices, dtype=torch.long)[index]
            dataset = dataset.dataset
        if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
            raise TypeError(f"IndexedTensors: expected a TensorDataset of (images, labels) or Subsets of one, got "
                            f"{type(dataset).__name__}; build data sets with load_dataset / subsample / validation_split")
        self.x, self.y = dataset.tensors
        self.index = None if torch.equal(index, torch.arange(len(self.y))) else index

    def __len__(self) -> int:
        return len(self.y) if self.index is None else len(self.index)

    def batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the examples at ``positions`` (0..len-1), in that order."""
        rows = positions if self.index is None else self.index[positions]
        return self.x[rows], self.y[rows]

    def slices(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All examples in order, ``batch_size`` at a time (views, not copies, where no index is needed)."""
        for start in range(0, len(self), batch_size):
            if self.index is None:
                yield self.x[start:start + batch_size], self.y[start:start + batch_size]
            else:
                yield self.batch(torch.arange(start, min(start + batch_size, len(self))))
