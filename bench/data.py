"""Data sets by name, decoded once into uint8 tensors and cached on disk.

Where the files come from, in order:

1. an explicit root (``--data-dir`` or ``BENCH_DATA_DIR``) holding torchvision's raw
   layout (``MNIST/raw``, ``FashionMNIST/raw``, ``cifar-10-batches-py``) or, for
   CIFAR-10, an image-folder tree ``CIFAR-10-images/{train,test}/<class>/``;
2. torchvision's own download into ``<cache>/downloads``.

Each decoded split is saved as ``<cache>/tensors/<key>.pt`` (uint8 NCHW images, int64
labels), written to a temporary file and renamed so an interrupted run never leaves
half a cache. ``<cache>`` is ``BENCH_CACHE_DIR`` or ``~/.cache/bench``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .models import InputShape

__all__ = [
    "DATASETS",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "Split",
    "cache_dir",
    "check_dataset_name",
    "dataset_info",
    "load_dataset",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(RuntimeError):
    """Data that cannot be found or read; the message says which file or where it looked."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: InputShape
    classes: tuple[str, ...]
    description: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("mnist", InputShape(1, 28, 10), tuple(map(str, range(10))), "MNIST digits, 60,000 + 10,000, 28x28 grey"),
        DatasetInfo(
            "fashion-mnist",
            InputShape(1, 28, 10),
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            "Fashion-MNIST, 60,000 + 10,000, 28x28 grey",
        ),
        DatasetInfo("cifar10", InputShape(3, 32, 10), CIFAR10_CLASSES, "CIFAR-10, 50,000 + 10,000, 32x32 RGB"),
        DatasetInfo(
            "cifar2",
            InputShape(3, 32, 2),
            ("airplane", "bird"),
            "CIFAR-10's airplane and bird classes relabelled 0/1, 10,000 + 2,000",
        ),
    ]
}
IMAGEFOLDER_PREFIX = "imagefolder:"
# Photos of mixed sizes are centre-cropped to a square and resized to this (pixels).
DEFAULT_FOLDER_SIZE = 64


@dataclasses.dataclass
class Split:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def digest(self) -> str:
        """sha256 (16 hex digits) of the exact decoded pixels, labels and shape: two copies of a
        data set that differ in one pixel (a JPEG re-encoding, another subset) differ here."""
        key = id(self.images), id(self.labels)
        if getattr(self, "_digest_key", None) != key:
            h = hashlib.sha256(repr((tuple(self.images.shape), str(self.images.dtype))).encode())
            h.update(self.images.contiguous().numpy().tobytes())
            h.update(self.labels.contiguous().numpy().tobytes())
            self._digest, self._digest_key = h.hexdigest()[:16], key
        return self._digest


@dataclasses.dataclass
class DataSplits:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]  # per channel, of the train split, in [0, 1] pixel units
    std: tuple[float, ...]
    source: str  # where the pixels came from, for logs and reports


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "bench")


def default_data_dir() -> Path | None:
    root = os.environ.get("BENCH_DATA_DIR")
    return Path(root) if root else None


def check_dataset_name(name: str) -> None:
    """Raise ``DataError`` naming the accepted data sets unless ``name`` is one (no files are read)."""
    if name in DATASETS:
        return
    if name.startswith(IMAGEFOLDER_PREFIX):
        root = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        missing = [sub for sub in ("train", "test") if not (root / sub).is_dir()]
        if missing:
            raise DataError(
                f"data set {name!r}: {root} needs train/<class>/ and test/<class>/ folders; missing: {', '.join(missing)}"
            )
        return
    raise DataError(
        f"unknown data set {name!r}; accepted: {', '.join(DATASETS)}, or imagefolder:<path> "
        "(a folder with train/<class>/* and test/<class>/*)"
    )


def dataset_info(name: str) -> DatasetInfo:
    """Shape and classes of a data set, reading at most one image (for ``imagefolder:``)."""
    check_dataset_name(name)
    if name in DATASETS:
        return DATASETS[name]
    root = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
    classes = _folder_classes(root / "train")
    first = next(_folder_files(root / "train", classes))[0]
    image = _decode(first, None)
    size = image.shape[-1] if image.shape[-1] == image.shape[-2] else DEFAULT_FOLDER_SIZE
    return DatasetInfo(name, InputShape(3, size, len(classes)), classes, f"image folder {root}")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    val_from_test: bool = False,
    max_train_samples: int | None = None,
    val_fold: int = 0,
) -> DataSplits:
    """Train / val / test splits of ``name`` as uint8 tensors plus train-split statistics.

    ``val`` is a seeded hold-out of ``val_fraction`` of train, so a search never sees
    test; ``val_from_test=True`` uses the test split as val, the book's convention.
    ``val_fold``: which block of the seeded order is val (0: the first): with one seed, folds are
    disjoint, so a search's confirmation (fold 1) measures val on images its trials (fold 0) never saw.
    ``max_train_samples`` keeps a seeded random subset of the (remaining) train split.
    """
    info = dataset_info(name)
    train, test, source = _load_raw(info, Path(data_dir) if data_dir else default_data_dir())
    generator = torch.Generator().manual_seed(seed)
    if val_from_test:
        val = test
    else:
        order = torch.randperm(len(train), generator=generator)
        n_val = int(round(len(train) * val_fraction))
        if not 0 < n_val < len(train):
            raise DataError(
                f"val_fraction={val_fraction} of {len(train):,} train images leaves {n_val:,} for val; "
                "choose a fraction that leaves at least one image on each side"
            )
        if (val_fold + 1) * n_val >= len(train):
            raise DataError(f"val_fold={val_fold} of {n_val:,}-image folds does not fit in {len(train):,} train "
                            f"images; accepted: 0 to {len(train) // n_val - 2}")
        held = order[val_fold * n_val:(val_fold + 1) * n_val]
        rest = torch.cat([order[:val_fold * n_val], order[(val_fold + 1) * n_val:]])
        val, train = train.subset(held), train.subset(rest)
    if max_train_samples is not None and max_train_samples < len(train):
        train = train.subset(torch.randperm(len(train), generator=generator)[:max_train_samples])
    mean, std = _channel_stats(train.images)
    return DataSplits(info, train, val, test, mean, std, source)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Exact mean/std from a 256-bin histogram per channel: no float copy of the data set.
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * (values - mean) ** 2).sum() / (n - 1)
        means.append(mean.item())
        stds.append(var.sqrt().item())
    return tuple(means), tuple(stds)


# ---------------------------------------------------------------------------- sources


def _load_raw(info: DatasetInfo, root: Path | None) -> tuple[Split, Split, str]:
    """(train, test, source description) from the first place that has the files."""
    if info.name.startswith(IMAGEFOLDER_PREFIX):  # the folder is its own source
        folder = Path(info.name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        reader = lambda: _read_folder(folder, info.classes, info.shape.size)  # noqa: E731
        return (*_cached(info.name, _folder_listing(folder, info.classes), reader), str(folder))
    downloads = cache_dir() / "downloads"
    looked: list[str] = []
    for base in [p for p in (root, downloads) if p is not None]:
        found = _find_layout(info, base)
        if found is not None:
            reader, files, source = found
            return (*_cached(info.name, files, reader), source)
        looked.append(str(base))
    try:
        _download(info, downloads)
    except Exception as exc:  # offline, DNS, HTTP errors: all mean "not here"
        raise DataError(
            f"data set {info.name!r} not found. Looked in: {', '.join(looked)} (for {_expected_layout(info)}), "
            f"then tried torchvision's download into {downloads}, which failed: {exc}. "
            "Set BENCH_DATA_DIR (or pass --data-dir) to a folder holding that layout."
        ) from exc
    found = _find_layout(info, downloads)
    if found is None:
        raise DataError(f"torchvision's download into {downloads} did not produce {_expected_layout(info)}")
    reader, files, source = found
    return (*_cached(info.name, files, reader), source)


def _expected_layout(info: DatasetInfo) -> str:
    if info.name == "mnist":
        return "MNIST/raw/*-ubyte"
    if info.name == "fashion-mnist":
        return "FashionMNIST/raw/*-ubyte"
    if info.name in ("cifar10", "cifar2"):
        return "cifar-10-batches-py/ or CIFAR-10-images/{train,test}/<class>/"
    return "train/<class>/ and test/<class>/"


Reader = Callable[[], tuple[Split, Split]]


def _find_layout(info: DatasetInfo, base: Path) -> tuple[Reader, list[Path], str] | None:
    """A reader for ``info`` under ``base``, the files it depends on, and a description."""
    if info.name in ("mnist", "fashion-mnist"):
        raw = base / ("MNIST" if info.name == "mnist" else "FashionMNIST") / "raw"
        names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        files = [raw / n for n in names]
        if not all(f.is_file() for f in files):
            return None
        return (lambda: (_read_idx_pair(files[0], files[1]), _read_idx_pair(files[2], files[3]))), files, str(raw)
    wanted = info.classes if info.name == "cifar2" else None
    if info.name in ("cifar10", "cifar2"):
        batches = base / "cifar-10-batches-py"
        if (batches / "test_batch").is_file():
            files = [batches / f"data_batch_{i}" for i in range(1, 6)] + [batches / "test_batch"]
            return (lambda: _read_cifar_batches(files, wanted)), files, f"{batches} (original CIFAR-10 pixels)"
        folder = base / "CIFAR-10-images"
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            classes = wanted or CIFAR10_CLASSES
            files = _folder_listing(folder, classes)
            source = f"{folder} (image files; JPEG-re-encoded copies are not pixel-identical to CIFAR-10)"
            return (lambda: _read_folder(folder, classes, info.shape.size)), files, source
        return None
    return None


def _download(info: DatasetInfo, downloads: Path) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar2": tvd.CIFAR10}[info.name]
    downloads.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(root=str(downloads), train=train, download=True)


# ---------------------------------------------------------------------------- the cache


def _cached(name: str, files: list[Path], reader: Reader) -> tuple[Split, Split]:
    """Decode through ``reader`` once; afterwards load the saved tensors (well under a second)."""
    fingerprint = hashlib.sha256()
    for f in files:
        st = f.stat()
        fingerprint.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[-40:]
    path = cache_dir() / "tensors" / f"{safe}-{fingerprint.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            return Split(saved["train_images"], saved["train_labels"]), Split(saved["test_images"], saved["test_labels"])
        except Exception:  # a cache from another version or a damaged disk: decode again
            path.unlink(missing_ok=True)
    train, test = reader()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(
            {
                "train_images": train.images,
                "train_labels": train.labels,
                "test_images": test.images,
                "test_labels": test.labels,
            },
            tmp,
        )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return train, test


# ---------------------------------------------------------------------------- readers


def _read_idx(path: Path, magic: int) -> np.ndarray:
    data = path.read_bytes()
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file (expected magic number {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: truncated or damaged IDX file: {len(data)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_pair(images_path: Path, labels_path: Path) -> Split:
    images = _read_idx(images_path, 2051)
    labels = _read_idx(labels_path, 2049)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _read_cifar_batches(files: list[Path], wanted: tuple[str, ...] | None) -> tuple[Split, Split]:
    # CIFAR-10's official python format is a pickle, which torchvision reads the same way.
    def read(paths: list[Path]) -> Split:
        images, labels = [], []
        for path in paths:
            try:
                with path.open("rb") as f:
                    batch = pickle.load(f, encoding="latin1")
                images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch["labels"], dtype=np.int64))
            except Exception as exc:
                raise DataError(f"{path}: cannot read CIFAR-10 batch: {exc}") from exc
        return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))

    train, test = read(files[:-1]), read(files[-1:])
    if wanted is None:
        return train, test
    return _select_classes(train, wanted), _select_classes(test, wanted)


def _select_classes(split: Split, wanted: tuple[str, ...]) -> Split:
    """Keep the ``wanted`` CIFAR-10 classes, relabelled 0..len(wanted)-1 in that order."""
    ids = torch.tensor([CIFAR10_CLASSES.index(c) for c in wanted])
    keep = torch.isin(split.labels, ids)
    relabel = torch.full((len(CIFAR10_CLASSES),), -1, dtype=torch.int64)
    relabel[ids] = torch.arange(len(wanted))
    return Split(split.images[keep], relabel[split.labels[keep]])


def _folder_classes(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    return classes


def _folder_files(root: Path, classes: tuple[str, ...]):
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise DataError(f"{folder}: class folder missing (classes: {', '.join(classes)})")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                yield f, label


def _folder_listing(folder: Path, classes: tuple[str, ...]) -> list[Path]:
    return [f for sub in ("train", "test") for f, _ in _folder_files(folder / sub, classes)]


def _decode(path: Path, size: int | None) -> torch.Tensor:
    """One image file as uint8 3xHxW; centre-cropped and resized to ``size`` if it differs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
            if size is not None and image.size != (size, size):
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image: {exc}") from exc
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def _read_folder(folder: Path, classes: tuple[str, ...], size: int) -> tuple[Split, Split]:
    def read(root: Path) -> Split:
        files = list(_folder_files(root, classes))
        if not files:
            raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {', '.join(classes)}")
        images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
        for i, (f, _) in enumerate(files):
            images[i] = _decode(f, size)
        return Split(images, torch.tensor([label for _, label in files], dtype=torch.int64))

    return read(folder / "train"), read(folder / "test")
