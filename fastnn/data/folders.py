"""Folders of your own images as a ``Dataset``: ``<root>/<split>/<class>/*.png`` (or jpg, bmp,
...), or ``<root>/<class>/*`` with a fixed stratified test split; each image read and prepared
as MNIST's were (``fastnn.data.images``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastnn.data.datasets import SPLITS, DataError, Dataset, train_val_split

__all__ = ["FOLDER_SPLIT_SEED", "FOLDER_TEST_FRACTION", "folder_has_splits", "load_folder_dataset",
           "load_image_folder"]


def load_image_folder(root, split: str | None = "train", size=(28, 28), class_names=None) -> Dataset:
    """Load ``<root>/<split>/<class>/*.png`` (or jpg, bmp, ...) as grayscale uint8 images;
    ``split`` None: ``<root>/<class>/*.png``.

    Classes are the sub-folder names, sorted (or ``class_names``, giving the label order).
    Each file is read as ``predict`` reads one, as it would be shown (``fastnn.data.images``: EXIF
    orientation, transparency on white, only the formats fastnn decodes, at most 50 Mpixels),
    then resized to ``size`` (rows, cols) with Pillow.

    Raises:
        FileNotFoundError: no ``<root>/<split>`` folder.
        DataError: no class folders, a class folder with no images, more than 65,535 classes,
            a file that is not a regular file or not an image fastnn reads, an oversized image
            (each named).
    """
    from PIL import Image

    from fastnn.data.images import IMAGE_SUFFIXES, ImageError, as_gray, read_image
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"no folder {base} (expected layout <root>/<split>/<class>/*.png)")
    found = sorted(p.name for p in base.iterdir() if p.is_dir())
    classes = list(class_names) if class_names is not None else found
    if not classes:
        raise DataError(f"{base}: no class sub-folders")
    if len(classes) > np.iinfo(np.uint16).max:
        raise DataError(f"{base}: {len(classes)} class folders; at most {np.iinfo(np.uint16).max} are supported")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = [p for p in sorted((base / cls).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()] \
            if (base / cls).is_dir() else []
        if not files:
            raise DataError(f"{base / cls}: class {cls!r} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            f"add some or remove the folder")
        for p in files:
            try:
                with read_image(p) as im:
                    gray = Image.fromarray(np.round(as_gray(im) * 255).astype(np.uint8))
                if gray.size != (size[1], size[0]):
                    gray = gray.resize((size[1], size[0]), Image.BILINEAR)
                images.append(np.asarray(gray, dtype=np.uint8))
            except ImageError as exc:
                raise DataError(f"{p}: {exc}") from exc
            except OSError as exc:
                raise DataError(f"{p}: cannot read it ({exc.strerror or exc})") from exc
            labels.append(label)
    label_type = np.uint8 if len(classes) <= 256 else np.uint16
    return Dataset(np.stack(images), np.array(labels, dtype=label_type), tuple(classes),
                   f"{Path(root).resolve().name}/{split or 'all'}")


FOLDER_TEST_FRACTION = 0.2   # the test split made of a folder without train/ and test/ folders
FOLDER_SPLIT_SEED = 0        # fixed: train and evaluate must draw the same test images


def folder_has_splits(root) -> bool:
    """Whether an image folder holds ``train/`` and ``test/`` split folders (else class folders)."""
    return (Path(root) / "train").is_dir() and (Path(root) / "test").is_dir()


def load_folder_dataset(root, split: str, size=(28, 28)) -> Dataset:
    """``split`` ("train" or "test") of an image folder of either layout, as many course
    datasets come: ``<root>/{train,test}/<class>/*.png``, or ``<root>/<class>/*.png`` with no
    split, from which a stratified test split of ``FOLDER_TEST_FRACTION`` of each class is made
    (seed ``FOLDER_SPLIT_SEED``, the same on every call, so train and evaluate agree). Class
    names are the folder names, sorted; images are grayscale uint8 resized to ``size``.

    Raises:
        ValueError: unknown split. FileNotFoundError: ``root`` is not a folder.
        DataError: as ``load_image_folder``; a class with too few images to split.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"no folder {root} (expected class folders <root>/<class>/*.png, or "
                                f"<root>/train/<class>/ and <root>/test/<class>/)")
    if folder_has_splits(root):
        train = load_image_folder(root, "train", size)
        return train if split == "train" else load_image_folder(root, "test", size, class_names=train.class_names)
    full = load_image_folder(root, None, size)
    counts = np.bincount(full.labels, minlength=len(full.class_names))
    if counts.min() < 2:
        raise DataError(f"{root}: class {full.class_names[int(np.argmin(counts))]!r} has {counts.min()} image; "
                        f"splitting off a test set needs at least 2 per class")
    train_idx, test_idx = train_val_split(full.labels, FOLDER_TEST_FRACTION, FOLDER_SPLIT_SEED)
    part = full.subset(train_idx if split == "train" else test_idx)
    part.name = f"{Path(root).resolve().name}/{split}"
    return part
