"""The IDX reader, the downloader and the image-folder loader, on files the tests write themselves."""
from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.error

import numpy as np
import pytest

from fastnn.data import datasets as fdata
from fastnn.data.datasets import (
    DataError,
    DatasetInfo,
    DownloadError,
    fetch_file,
    iterate_minibatches,
    read_idx,
    read_images,
    read_labels,
    train_val_split,
)
from fastnn.data.folders import load_image_folder


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (0x0800 | arr.ndim)
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_good_files(tmp_path, images, compress):
    content = idx_bytes(images)
    path = tmp_path / ("x.gz" if compress else "x")
    path.write_bytes(gzip.compress(content) if compress else content)
    out = read_images(path)
    assert out.shape == (5, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)
    labels = np.array([0, 9, 3], np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_labels(tmp_path / "l"), labels)


def test_truncated_file_names_file_and_counts(tmp_path, images):
    path = tmp_path / "trunc-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:-100])
    with pytest.raises(DataError, match=r"trunc-idx3-ubyte: truncated.*\(5, 28, 28\) = 3920 bytes.*3820"):
        read_images(path)


def test_truncated_gzip(tmp_path, images):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-40])
    with pytest.raises(DataError, match=r"x.gz: corrupt or truncated gzip"):
        read_images(path)


def test_wrong_magic(tmp_path, images):
    path = tmp_path / "bad"
    path.write_bytes(idx_bytes(images, magic=0x12345678))
    with pytest.raises(DataError, match=r"bad: bad magic number"):
        read_idx(path)
    labels_path = tmp_path / "labels-not-images"
    labels_path.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"magic number 2049, expected 2051"):
        read_images(labels_path)


def test_wrong_count_trailing_bytes(tmp_path, images):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(images) + b"\0" * 7)
    with pytest.raises(DataError, match="trailing bytes"):
        read_images(path)


def test_labels_out_of_range(tmp_path):
    path = tmp_path / "l"
    path.write_bytes(idx_bytes(np.array([1, 12], np.uint8)))
    with pytest.raises(DataError, match=r"label 12 out of range \[0, 10\)"):
        read_labels(path)


def test_empty_file(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    with pytest.raises(DataError, match="too short"):
        read_idx(tmp_path / "e")


# ---------------------------------------------------------------- download
def _fake_info(tmp_path, labels):
    content = idx_bytes(labels)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "l.gz").write_bytes(gzip.compress(content))
    md5 = hashlib.md5(content).hexdigest()
    return DatasetInfo("fake", ("a", "b"), {"train-labels": ("l.gz", md5)},
                       ("http://127.0.0.1:9/nothing/", mirror.as_uri() + "/"))


def test_download_tries_mirrors_verifies_and_writes(tmp_path):
    labels = np.array([0, 1, 1], np.uint8)
    info = _fake_info(tmp_path, labels)
    path = fetch_file(info, "train-labels", tmp_path / "data")   # first mirror refuses, second works
    assert path == tmp_path / "data" / "fake" / "l.gz"
    np.testing.assert_array_equal(read_labels(path), labels)


def test_download_checksum_mismatch_and_offline_message(tmp_path, monkeypatch):
    info = _fake_info(tmp_path, np.array([0, 1], np.uint8))
    bad = DatasetInfo(info.name, info.classes, {"train-labels": ("l.gz", "0" * 32)}, info.mirrors)
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        fetch_file(bad, "train-labels", tmp_path / "data")
    assert str(tmp_path / "data" / "fake" / "l.gz") in str(err.value)
    assert not (tmp_path / "data" / "fake" / "l.gz").exists()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(fdata.urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError, match=r"(?s)no network.*put the canonical IDX files here"):
        fetch_file(info, "train-labels", tmp_path / "data2")


def test_offline_error_names_where_it_looked_and_why(tmp_path, monkeypatch):
    """Nothing given: the message names the default cache folder as the default, not an option."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(fdata.urllib.request, "urlopen", offline)
    monkeypatch.delenv("FASTNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))         # platformdirs' user cache on Linux
    with pytest.raises(DownloadError) as err:
        fdata.load_dataset("mnist", "test")
    first = str(err.value).splitlines()[0]
    assert f"looked in {fdata.default_data_dir()} (the default: neither --data-dir nor FASTNN_DATA_DIR is set)" in first
    assert "FASTNN_DATA_DIR=/path/to/folder" in str(err.value)
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DownloadError, match=r"from FASTNN_DATA_DIR\), which does not exist"):
        fdata.load_dataset("mnist", "test")
    with pytest.raises(DownloadError, match=r"given with --data-dir\), which does not exist"):
        fdata.load_dataset("mnist", "test", tmp_path / "given")


def test_load_dataset_rejects_damaged_copy(tmp_path):
    """A file with the right name but other content fails its checksum, naming the file."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for fn, _ in fdata.DATASETS["mnist"].files.values():
        shape = (3, 28, 28) if "images" in fn else (3,)
        (folder / fn).write_bytes(gzip.compress(idx_bytes(np.zeros(shape, np.uint8))))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: header says \(3, 28, 28\), the canonical"):
        fdata.load_dataset("mnist", "train", tmp_path)
    for fn, shape in (("t10k-images-idx3-ubyte.gz", (10000, 28, 28)), ("t10k-labels-idx1-ubyte.gz", (10000,))):
        (folder / fn).write_bytes(gzip.compress(idx_bytes(np.zeros(shape, np.uint8))))   # the right shape
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: checksum mismatch"):
        fdata.load_dataset("mnist", "test", tmp_path)
    ds = fdata.load_dataset("mnist", "train", tmp_path, verify=False)
    assert ds.images.shape == (3, 28, 28)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path))
    assert fdata.resolve_data_dir() == tmp_path
    assert fdata.resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("FASTNN_DATA_DIR")
    assert "fastnn" in str(fdata.resolve_data_dir())


# ---------------------------------------------------------------- image folders
def test_image_folder(tmp_path):
    from PIL import Image, ImageDraw
    for split in ("train",):
        for cls, n in (("cat", 2), ("dog", 3)):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                im = Image.new("RGB", (28, 28) if i else (40, 32), "white")
                ImageDraw.Draw(im).ellipse((4, 4, 20, 20), fill="black")
                im.save(d / f"{i}.png")
            (d / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path, "train")
    assert ds.images.shape == (5, 28, 28) and ds.images.dtype == np.uint8
    assert ds.class_names == ("cat", "dog")
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 1])
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="test"):
        load_image_folder(tmp_path, "test")


# ---------------------------------------------------------------- split and batches
def test_stratified_seeded_split():
    labels = np.repeat(np.arange(10), [100, 200, 50, 80, 90, 100, 110, 120, 130, 140])
    tr, va = train_val_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    for c in range(10):
        n_c = np.sum(labels == c)
        assert np.sum(labels[va] == c) == round(0.2 * n_c)
    tr2, va2 = train_val_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, train_val_split(labels, 0.2, seed=1)[1])


def test_minibatches_convert_per_batch(images):
    ds = fdata.Dataset(images, np.arange(5, dtype=np.uint8) % 2, ("a", "b"))
    batches = list(iterate_minibatches(ds, 2, np.random.default_rng(0)))
    assert [X.shape for X, _ in batches] == [(2, 784), (2, 784), (1, 784)]
    X, y = batches[0]
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0
    seen = np.concatenate([y for _, y in batches])
    assert sorted(seen) == sorted(ds.labels)


def test_real_mnist_statistics(mnist_dir):
    ds = fdata.load_dataset("mnist", "train", mnist_dir)
    assert ds.images.shape == (60000, 28, 28)
    X = ds.features()
    np.testing.assert_allclose([X.mean(), X.std()], [0.1307, 0.3081], atol=1e-4)
    np.testing.assert_array_equal(np.bincount(ds.labels),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


def test_image_folder_refuses_empty_classes_and_takes_many(tmp_path):
    """An empty class folder is refused by name (not a class with no images); 300 classes load
    (labels wider than uint8)."""
    from PIL import Image

    for k in range(300):
        (tmp_path / "train" / f"c{k:03d}").mkdir(parents=True)
        Image.fromarray(np.full((28, 28), k % 256, np.uint8)).save(tmp_path / "train" / f"c{k:03d}" / "a.png")
    ds = load_image_folder(tmp_path, "train")
    assert ds.num_classes == 300 and ds.labels.max() == 299
    (tmp_path / "train" / "c999").mkdir()
    with pytest.raises(DataError, match="class 'c999' has no images"):
        load_image_folder(tmp_path, "train")


def test_a_header_declaring_gigabytes_is_refused_before_reading(tmp_path):
    """A half-megabyte gzip whose header declares 512 x 1024 x 1024 images: refused from the header
    (the canonical shape is known), without decompressing or allocating anything large."""
    import resource
    import struct
    import time

    folder = tmp_path / "mnist"
    folder.mkdir()
    header = struct.pack(">IIII", fdata.IMAGES_MAGIC, 512, 1024, 1024)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1 << 20)))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10000, np.uint8))))
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(DataError, match=r"header says \(512, 1024, 1024\), the canonical file is \(10000, 28, 28\)"):
        fdata.load_dataset("mnist", "test", tmp_path)
    assert time.perf_counter() - t0 < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000                 # kB


def test_an_oversized_image_in_a_folder_is_refused_before_decoding(tmp_path):
    from PIL import Image

    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("1", (9000, 9000)).save(tmp_path / "train" / "a" / "big.png")    # 81 M pixels in a few kB
    with pytest.raises(DataError, match="big.png: 9000 x 9000 pixels is more than 50,000,000"):
        load_image_folder(tmp_path, "train")
