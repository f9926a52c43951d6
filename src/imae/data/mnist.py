"""MNIST and Fashion-MNIST from the original IDX files (plain or gzipped) or a Keras-style npz.

Where the files are looked for, in order, under ``root``:

1. ``root/`` itself,
2. ``root/<variant>/`` (where ``imae data download`` puts them),
3. ``root/MNIST/raw/`` or ``root/FashionMNIST/raw/`` (torchvision's layout),
4. ``root/<variant>/raw/``,
5. a Keras-style ``mnist.npz`` / ``fashion-mnist.npz`` (keys ``x_train``, ``y_train``,
   ``x_test``, ``y_test``) in ``root/`` or ``root/<variant>/``.

A folder counts when it holds both the images file and the labels file of the requested split,
each as ``NAME`` or ``NAME.gz`` (the plain file wins when both exist).
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from imae.data.dataset import ImageDataset
from imae.errors import DataError

VARIANTS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test", "all")

#: The IDX file names of each split: (images, labels).
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: IDX magic numbers: two zero bytes, the type code (0x08 = unsigned byte), the number of dims.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_NPZ_NAMES = {"mnist": ("mnist.npz",), "fashion-mnist": ("fashion-mnist.npz", "fashion_mnist.npz")}
_NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
_SCALING = "uint8 grey levels divided by 255"

__all__ = ["load_mnist", "read_idx", "IDX_FILES", "VARIANTS"]


def load_mnist(root: Path, variant: str = "mnist", split: str = "train") -> ImageDataset:
    """MNIST or Fashion-MNIST as float32 pixels in [0, 1] with int64 labels.

    Args:
        root: the data folder (see the module docstring for where files are looked for).
        variant: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000 images), ``"test"`` (10,000) or ``"all"`` (train then test).

    Raises:
        DataError: for an unknown variant or split, files that cannot be found (the message
            lists where it looked), or a truncated / corrupt file.
    """
    variant = _check_choice(variant.lower().replace("_", "-"), VARIANTS, "variant")
    split = _check_choice(split.lower(), SPLITS, "split")
    root = Path(root).expanduser()
    parts = ("train", "test") if split == "all" else (split,)
    loaded = [_load_split(root, variant, part) for part in parts]
    images = np.concatenate([x for x, _ in loaded]) if len(loaded) > 1 else loaded[0][0]
    labels = np.concatenate([y for _, y in loaded]) if len(loaded) > 1 else loaded[0][1]
    if images.ndim != 3 or len({x.shape[1:] for x, _ in loaded}) != 1:
        raise DataError(
            f"the {variant} train and test images under {root} have different sizes; "
            "delete the files and download them again"
        )
    n, h, w = images.shape
    return ImageDataset(
        images=torch.from_numpy(images.reshape(n, h * w).astype(np.float32) / np.float32(255)),
        image_shape=(h, w),
        labels=torch.from_numpy(labels.astype(np.int64)),
        name=variant,
        scaling=_SCALING,
        extras={"split": split},
    )


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise DataError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
    return value


# --------------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------------


def candidate_folders(root: Path, variant: str) -> list[Path]:
    """The folders searched for IDX files, in order."""
    return [
        root,
        root / variant,
        root / _TORCHVISION_FOLDER[variant] / "raw",
        root / variant / "raw",
    ]


def _npz_candidates(root: Path, variant: str) -> list[Path]:
    return [folder / name for folder in (root, root / variant) for name in _NPZ_NAMES[variant]]


def _load_split(root: Path, variant: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, H, W] uint8, labels [N] uint8)`` of one split, from the first match."""
    image_name, label_name = IDX_FILES[split]
    for folder in candidate_folders(root, variant):
        image_file = _existing(folder, image_name)
        label_file = _existing(folder, label_name)
        if image_file is not None and label_file is not None:
            return _load_idx_pair(image_file, label_file, variant, root)
    for npz in _npz_candidates(root, variant):
        if npz.is_file():
            return _load_keras_npz(npz, split, variant, root)
    raise _not_found(root, variant, split)


def _existing(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists first, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _not_found(root: Path, variant: str, split: str) -> DataError:
    image_name, label_name = IDX_FILES[split]
    places = [str(folder) for folder in candidate_folders(root, variant)]
    places += [str(npz) for npz in _npz_candidates(root, variant)]
    return DataError(
        f"{variant} ({split} split) not found: looked for {image_name}[.gz] and {label_name}[.gz] "
        f"in {', '.join(places[:4])}, and for a Keras-style npz at {', '.join(places[4:])}. "
        f"Download it with `imae data download {variant} --root {root}`, or pass "
        "`--data-root DIR` pointing at the folder that holds the files"
    )


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def _corrupt(path: Path, variant: str, root: Path, why: str) -> DataError:
    return DataError(
        f"{path} is truncated or corrupt ({why}); delete it and download again with "
        f"`imae data download {variant} --root {root}`"
    )


def _load_idx_pair(
    image_file: Path, label_file: Path, variant: str, root: Path
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(image_file, IMAGES_MAGIC, variant=variant, root=root)
    labels = read_idx(label_file, LABELS_MAGIC, variant=variant, root=root)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{image_file} has {images.shape[0]} images but {label_file} has {labels.shape[0]} "
            f"labels; the two files come from different downloads: delete both and download "
            f"again with `imae data download {variant} --root {root}`"
        )
    return images, labels


def read_idx(path: Path, magic: int, variant: str = "mnist", root: Path | None = None) -> np.ndarray:
    """The unsigned-byte array stored in the IDX file ``path`` (plain or gzipped).

    Args:
        path: the file.
        magic: the expected magic number, :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`; its
            last byte is the number of dimensions.
        variant, root: used in the error message's download command.

    Raises:
        DataError: when the magic number is wrong or the byte count differs from the header.
    """
    root = path.parent if root is None else root
    data = _read_bytes(path, variant, root)
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise _corrupt(path, variant, root, f"{len(data)} bytes, shorter than the {header}-byte header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise _corrupt(path, variant, root, f"magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise _corrupt(
            path, variant, root, f"the header promises {expected} bytes for shape {dims}, the file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path, variant: str, root: Path) -> bytes:
    """The (decompressed) contents of ``path``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise _corrupt(path, variant, root, f"bad gzip data: {error}") from None
    except OSError as error:
        raise DataError(
            f"cannot read {path} ({error.strerror or error}); check its permissions, or delete it "
            f"and download again with `imae data download {variant} --root {root}`"
        ) from None


# --------------------------------------------------------------------------------------------
# Keras-style npz
# --------------------------------------------------------------------------------------------


def _load_keras_npz(path: Path, split: str, variant: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split from a Keras ``mnist.npz``-style archive."""
    x_key, y_key = _NPZ_KEYS[split]
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in (x_key, y_key) if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks the keys {missing} (it has {archive.files}); a Keras-style "
                    "npz holds x_train, y_train, x_test, y_test: download the data with "
                    f"`imae data download {variant} --root {root}` instead"
                )
            images, labels = archive[x_key], archive[y_key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, AttributeError) as error:
        raise _corrupt(path, variant, root, f"{type(error).__name__}: {error}") from None
    return _check_npz_arrays(images, labels, path, variant, root)


def _check_npz_arrays(
    images: np.ndarray, labels: np.ndarray, path: Path, variant: str, root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Validate the shapes and value range of arrays read from a Keras npz."""
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise _corrupt(
            path, variant, root, f"images of shape {images.shape} and labels of shape {labels.shape}"
        )
    if images.dtype.kind not in "ui" or (images.size and (images.min() < 0 or images.max() > 255)):
        raise _corrupt(path, variant, root, f"images of type {images.dtype}, expected uint8 grey levels")
    return images.astype(np.uint8, copy=False), labels
