"""Datasets: MNIST and Fashion-MNIST from IDX files, and image folders.

- ``read_idx(path)``: the IDX reader (gzip'd or raw), with every header field checked.
- ``load_dataset(name, split, data_dir)``: the two canonical datasets, downloaded on first
  use from the public mirrors and verified by MD5 of the *decompressed* content.
- ``load_image_folder(root, split)``: ``<root>/<split>/<class>/*.png`` with Pillow.
- ``train_val_split`` (stratified, seeded) and ``iterate_minibatches`` (uint8 -> float32 per batch).

Where data lives: ``data_dir`` argument, else ``$FASTNN_DATA_DIR``, else the per-user cache
folder (``platformdirs.user_cache_dir("fastnn")``). Layout:
``<data_dir>/<dataset>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastnn.common.errors import UserError
from fastnn.common.io import atomic_write

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
MAX_IDX_BYTES = 2 ** 31   # a header promising more data than this is refused before anything is allocated

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# file kind -> (file name, MD5 of the decompressed file)
_MNIST_FILES = {
    "train-images": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}
_FASHION_FILES = {
    "train-images": ("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images": ("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels": ("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple
    files: dict
    mirrors: tuple
    sizes: dict = field(default_factory=lambda: {"train": 60000, "test": 10000})


DATASETS = {
    "mnist": DatasetInfo(
        "mnist", MNIST_CLASSES, _MNIST_FILES,
        # The original yann.lecun.com site refuses downloads; these are the mirrors in use
        # (the first is torchvision's, the second TensorFlow's).
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", FASHION_CLASSES, _FASHION_FILES,
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    ),
}

SPLITS = {"train": "train", "test": "t10k"}


class DataError(UserError, ValueError):
    """A data file that is missing, truncated, corrupt or not what it claims to be."""


class DownloadError(UserError, RuntimeError):
    """Every mirror failed; the message says which files to put where."""


# ---------------------------------------------------------------------- IDX
def _open_content(path: Path):
    """(file object over the decompressed content, is_gzip): gzip is told by its magic bytes."""
    from fastnn.common.io import NotARegularFile, open_regular

    try:
        raw = open_regular(path, "rb")
    except FileNotFoundError:
        raise
    except NotARegularFile as exc:
        raise DataError(f"{path} {exc.strerror}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    raw.seek(0)
    return raw, False


def _read_into(f, buffer: memoryview, piece: int = 1 << 20) -> int:
    """Fill ``buffer`` from ``f`` until it is full or the content ends; returns the bytes read.
    In 1 MiB pieces: GzipFile decompresses a whole request into a temporary bytes object."""
    done = 0
    while done < len(buffer):
        n = f.readinto(buffer[done:done + piece])
        if not n:
            break
        done += n
    return done


def _read_idx_stream(f, source: str, expected_magic: int | None = None, digest=None,
                     expected_dims: tuple | None = None) -> np.ndarray:
    """Parse IDX content read from the binary file ``f`` straight into one uint8 array (no copy of
    the content is held): the header is checked first, then the data is read into place. Every
    check names ``source``. ``digest`` (a hashlib object) is updated with all the content.

    IDX format: 2 zero bytes, a type byte (0x08 = uint8), a rank byte, then rank big-endian
    uint32 sizes, then the data. Only uint8 data is supported. ``expected_dims``: the shape a
    canonical file has, checked from the header before anything is allocated (a small gzip
    file declaring gigabytes is refused at once, not after decompressing them).
    """
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{source}: only {len(head)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", head)[0]
    zero, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise DataError(f"{source}: bad magic number {magic} (0x{magic:08x}); expected "
                        f"{IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels), uint8 IDX")
    if expected_magic is not None and magic != expected_magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(expected_magic, "?")
        raise DataError(f"{source}: magic number {magic}, expected {expected_magic} ({kind} file)")
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{source}: truncated header ({4 + len(sizes)} bytes, need {4 + 4 * ndim})")
    dims = struct.unpack(f">{ndim}I", sizes)
    if expected_dims is not None and tuple(dims) != tuple(expected_dims):
        raise DataError(f"{source}: header says {dims}, the canonical file is {tuple(expected_dims)}; "
                        f"delete the file to download it again")
    expected = int(np.prod(dims, dtype=np.int64))
    if expected > MAX_IDX_BYTES:
        raise DataError(f"{source}: header says {dims} = {expected:,} bytes of data, more than fastnn reads "
                        f"({MAX_IDX_BYTES:,})")
    data = np.empty(expected, dtype=np.uint8)                       # (prod(dims),) filled in place
    found = _read_into(f, memoryview(data))
    trailing = 0
    while chunk := f.read(1 << 16):
        trailing += len(chunk)
    if found != expected or trailing:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: header says {dims} = {expected} bytes of data, file holds "
                        f"{found + trailing}")
    if digest is not None:
        digest.update(head)
        digest.update(sizes)
        digest.update(memoryview(data))
    return data.reshape(dims)


def _read_idx_file(path: Path, expected_magic: int | None = None, digest=None,
                   expected_dims: tuple | None = None) -> np.ndarray:
    """``_read_idx_stream`` over a file, gzip'd or raw; gzip errors become DataError naming the file."""
    f, is_gzip = _open_content(path)
    with f:
        try:
            return _read_idx_stream(f, str(path), expected_magic, digest, expected_dims)
        except (OSError, EOFError, zlib.error) as exc:
            if is_gzip:
                raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
            raise DataError(f"{path}: cannot read ({exc})") from exc


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip'd or raw) into a uint8 array of the header's shape, decompressing
    straight into the array (peak memory: the data once).

    Raises:
        FileNotFoundError: no file at ``path``.
        DataError: corrupt gzip, wrong magic, truncated or over-long data (naming the file).
    """
    return _read_idx_file(Path(path), expected_magic)


def read_images(path) -> np.ndarray:
    """Images (N, rows, cols) uint8 from an IDX3 file. Raises DataError as ``read_idx``."""
    images = read_idx(path, IMAGES_MAGIC)
    if images.ndim != 3:
        raise DataError(f"{path}: images must have 3 dimensions, header has {images.shape}")
    return images


def read_labels(path, num_classes: int = 10) -> np.ndarray:
    """Labels (N,) uint8 from an IDX1 file, each checked to lie in [0, num_classes)."""
    labels = read_idx(path, LABELS_MAGIC)
    if labels.ndim != 1:
        raise DataError(f"{path}: labels must have 1 dimension, header has {labels.shape}")
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{path}: label {int(labels.max())} out of range [0, {num_classes})")
    return labels


# ---------------------------------------------------------------------- locations and download
def default_data_dir() -> Path:
    """``$FASTNN_DATA_DIR`` if set, else the per-user cache folder."""
    env = os.environ.get("FASTNN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("fastnn"))


def resolve_data_dir(data_dir=None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def data_dir_source(data_dir=None) -> str:
    """Where ``resolve_data_dir(data_dir)`` came from, for messages: the option, the
    environment variable, or the default (the user cache folder, when neither is given)."""
    if data_dir:
        return "given with --data-dir"
    if os.environ.get("FASTNN_DATA_DIR"):
        return "from FASTNN_DATA_DIR"
    return "the default: neither --data-dir nor FASTNN_DATA_DIR is set"


def _md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def _download(url: str, timeout: float = 30.0) -> bytes:
    """Fetch ``url`` with a tqdm progress bar; network errors propagate."""
    from tqdm.auto import tqdm
    req = urllib.request.Request(url, headers={"User-Agent": "fastnn (dataset download)"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            while chunk := resp.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def fetch_file(info: DatasetInfo, kind: str, data_dir: Path, source: str | None = None) -> Path:
    """Make sure ``<data_dir>/<dataset>/<file>`` exists, downloading it if missing.

    The download is verified (MD5 of the decompressed content) before it is
    written atomically. ``source`` says where ``data_dir`` came from (``data_dir_source``), for
    the error. Raises DownloadError when every mirror fails.
    """
    filename, md5 = info.files[kind]
    target = data_dir / info.name / filename
    if target.exists():
        return target
    errors = []
    for mirror in info.mirrors:
        url = mirror + filename
        try:
            content = _download(url)
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        try:
            got = _md5(gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content)
        except (OSError, EOFError, zlib.error) as exc:
            errors.append(f"{url}: corrupt download ({exc})")
            continue
        if got != md5:
            errors.append(f"{url}: checksum mismatch (MD5 {got}, expected {md5})")
            continue
        try:
            with atomic_write(target) as f:
                f.write(content)
        except OSError as exc:
            raise DownloadError(f"cannot write {target}: {exc}") from exc
        return target
    missing = [data_dir / info.name / fn for fn, _ in info.files.values() if not (data_dir / info.name / fn).exists()]
    where = f"fastnn looked in {data_dir} ({source or 'the data folder'})" + (
        "" if data_dir.is_dir() else ", which does not exist")
    raise DownloadError(
        f"{info.name} is not in the data folder and could not be downloaded: {where}.\n  " + "\n  ".join(errors) +
        "\nWithout network access, put the canonical IDX files here:\n  " +
        "\n  ".join(str(p) for p in missing) +
        "\nor point fastnn at a folder holding <dataset>/<file>: FASTNN_DATA_DIR=/path/to/folder or --data-dir."
    )


# ---------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    """Images (N, H, W) uint8 and labels (N,) uint8, kept raw; ``class_names`` index the labels."""
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    name: str = ""

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels "
                            f"(images shape {self.images.shape}, labels shape {self.labels.shape})")

    def __len__(self):
        return self.images.shape[0]

    @property
    def num_features(self) -> int:
        return int(np.prod(self.images.shape[1:]))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices) -> "Dataset":
        return Dataset(self.images[indices], self.labels[indices], self.class_names, self.name)

    def features(self, indices=None, dtype=np.float32) -> np.ndarray:
        """Rows as float in [0, 1], (n, D); converts only the rows asked for."""
        imgs = self.images if indices is None else self.images[indices]
        return to_float(imgs, dtype)

    def __repr__(self):
        return f"Dataset({self.name!r}, images={self.images.shape}, classes={self.num_classes})"


def to_float(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 images (n, ...) -> (n, D) float in [0, 1]."""
    n = images.shape[0]
    dtype = np.dtype(dtype)
    return images.reshape(n, -1).astype(dtype) * dtype.type(1.0 / 255.0)   # (n, D)


def load_dataset(name: str = "mnist", split: str = "train", data_dir=None, verify: bool = True) -> Dataset:
    """Load ``split`` ("train" or "test") of ``name`` ("mnist" or "fashion-mnist").

    Files missing from the data folder are downloaded (see module docstring).
    With ``verify``, the decompressed content's MD5 is checked, so a re-compressed copy
    is accepted and a damaged one is not.

    Raises:
        ValueError: unknown dataset or split.
        DownloadError: a file is missing and cannot be downloaded.
        DataError: a file is corrupt, fails its checksum, or images and labels disagree.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    info = DATASETS[name]
    root = resolve_data_dir(data_dir)
    arrays = {}
    for part in ("images", "labels"):
        kind = f"{SPLITS[split]}-{part}"
        path = fetch_file(info, kind, root, data_dir_source(data_dir))
        digest = hashlib.md5() if verify else None
        n = info.sizes[split]
        dims = ((n, 28, 28) if part == "images" else (n,)) if verify else None      # the canonical files' shapes
        arrays[part] = _read_idx_file(path, IMAGES_MAGIC if part == "images" else LABELS_MAGIC, digest, dims)
        if verify:
            got, want = digest.hexdigest(), info.files[kind][1]
            if got != want:
                raise DataError(f"{path}: checksum mismatch (MD5 of decompressed content {got}, expected {want}); "
                                f"delete the file to download it again")
    if arrays["labels"].size and arrays["labels"].max() >= len(info.classes):
        raise DataError(f"{name} {split}: label {int(arrays['labels'].max())} out of range")
    return Dataset(arrays["images"], arrays["labels"], info.classes, f"{name}/{split}")


# ---------------------------------------------------------------------- splits and batches
def train_val_split(labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: ``val_fraction`` of each class goes to validation.

    Returns (train_indices, val_indices), each sorted, int64. Deterministic for a seed.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(val_fraction * idx.size))
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx.astype(np.int64)


def iterate_minibatches(dataset: Dataset, batch_size: int, rng: np.random.Generator | None = None,
                        dtype=np.float32):
    """Yield (X (B, D) float in [0, 1], y (B,) int64) batches; shuffled when ``rng`` is given.

    Only each batch is converted to float, so memory stays at the raw uint8 set.
    The last batch may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield to_float(dataset.images[idx], dtype), dataset.labels[idx].astype(np.int64)
