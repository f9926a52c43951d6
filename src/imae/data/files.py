"""The user's own images: a ``.npy`` / ``.npz`` array, or a folder of PNG files.

Scaling to [0, 1] follows one stated rule (kept in :attr:`ImageDataset.scaling`):

* ``bool``: False/True become 0/1;
* ``uint8``: divided by 255 (a uint8 array holding only 0s and 1s, a binary mask, is kept);
* other integers: divided by the array's maximum when that maximum is above 1 and no value is
  negative; 0/1 integers are kept as they are; arrays with negative values are min-max scaled;
* floats already within [0, 1]: kept as they are;
* floats outside [0, 1]: min-max scaled over the whole array, ``(x - min) / (max - min)``.

NaN or infinite values are refused.  PNG images are converted to greyscale (Pillow mode ``L``)
and divided by 255; 16-bit greyscale PNGs are divided by 65535 instead, since converting them
to 8 bits would clip them.

Labels, optional, come from (in this order of precedence) the ``labels`` argument (a ``.npy``
array or a ``.txt`` file with one integer per line, in the order of the images), the
``labels`` / ``y`` / ``y_train`` key of an ``.npz``, or, for a PNG folder, a ``labels.csv`` file
in that folder with one ``filename,label`` row per image (a header row is allowed).
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from imae.data.dataset import ImageDataset
from imae.errors import DataError

#: ``.npz`` keys tried, in order, for the images and for the labels.
IMAGE_KEYS = ("images", "x", "x_train", "imgs")
LABEL_KEYS = ("labels", "y", "y_train")

#: The file in a PNG folder that may give each image's label.
FOLDER_LABELS_FILE = "labels.csv"

_NUMPY_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")

__all__ = ["load_array_file", "load_image_folder", "scale_to_unit"]


# --------------------------------------------------------------------------------------------
# Array files
# --------------------------------------------------------------------------------------------


def load_array_file(path: Path, labels: str | os.PathLike | None = None) -> ImageDataset:
    """Images from a ``.npy`` array or an ``.npz`` archive, scaled to [0, 1].

    Args:
        path: a ``.npy`` file holding ``N x H x W``, ``N x H x W x 1``, ``N x 1 x H x W`` or
            ``N x D`` numbers, or an ``.npz`` whose images are under ``images``, ``x``,
            ``x_train`` or ``imgs`` (or its only array), with optional labels under
            ``labels``, ``y`` or ``y_train``.
        labels: optional ``.npy`` / ``.txt`` file with one integer label per image; it takes
            precedence over labels stored in the ``.npz``.

    Raises:
        DataError: for an unreadable file, a wrong shape or dtype, NaN/inf values, or a label
            count that differs from the image count.
    """
    path = Path(path)
    array, stored_labels = _read_array_file(path)
    images, image_shape = _flatten_images(array, path)
    n = images.shape[0]
    pixels, scaling = scale_to_unit(images, path)
    if labels is not None:
        label_tensor = _read_labels_file(Path(labels), n, path)
    elif stored_labels is not None:
        label_tensor = _as_labels(stored_labels, n, f"the labels in {path}", path)
    else:
        label_tensor = None
    return ImageDataset(
        images=torch.from_numpy(pixels),
        image_shape=image_shape,
        labels=label_tensor,
        name=path.stem,
        scaling=scaling,
        extras={"source": str(path)},
    )


def _read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The image array and the labels array (or None) stored in ``path``."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path} is not a .npy or .npz file; save your images with numpy.save")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # also a .npy saved under an .npz name
            return loaded, None
        with loaded as archive:
            return _pick_npz_arrays(archive, path)
    except DataError:
        raise
    except _NUMPY_READ_ERRORS as error:
        raise DataError(
            f"cannot read {path} ({type(error).__name__}: {error}); the file is corrupt or not "
            "a numpy array: write it again with numpy.save / numpy.savez (no pickled objects)"
        ) from None


def _require_ndarray(loaded: object, path: Path) -> np.ndarray:
    if not isinstance(loaded, np.ndarray):
        raise DataError(f"{path} does not hold a numpy array; write it with numpy.save")
    return loaded


def _pick_npz_arrays(archive: np.lib.npyio.NpzFile, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The images (by the first known key, or the only array) and the labels of an npz."""
    keys = list(archive.files)
    image_key = next((k for k in IMAGE_KEYS if k in keys), None)
    if image_key is None:
        others = [k for k in keys if k not in LABEL_KEYS]
        if len(others) != 1:
            raise DataError(
                f"{path} holds the arrays {keys} and none is named {' / '.join(IMAGE_KEYS)}; "
                "save the images under the key 'images' (numpy.savez(file, images=...))"
            )
        image_key = others[0]
    label_key = next((k for k in LABEL_KEYS if k in keys), None)
    images = archive[image_key]
    labels = None if label_key is None else archive[label_key]
    return images, labels


def _flatten_images(array: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """``[N, D]`` rows and the ``(H, W)`` of one image, from any accepted layout."""
    shape = array.shape
    if array.ndim == 4 and shape[3] == 1:
        array = array[..., 0]
    elif array.ndim == 4 and shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 3:
        image_shape = (int(array.shape[1]), int(array.shape[2]))
    elif array.ndim == 2:
        image_shape = _infer_image_shape(int(array.shape[1]))
    else:
        raise DataError(
            f"{path} holds an array of shape {shape}; expected N x H x W, N x H x W x 1 or "
            "N x D greyscale images (convert colour images to greyscale first)"
        )
    if array.shape[0] == 0 or image_shape[0] * image_shape[1] == 0:
        raise DataError(f"{path} holds no images (shape {shape}); check that the file is the right one")
    return array.reshape(array.shape[0], -1), image_shape


def _infer_image_shape(d: int) -> tuple[int, int]:
    """A square ``(H, H)`` when ``d`` is a perfect square, else ``(1, d)``."""
    side = math.isqrt(d)
    return (side, side) if side * side == d else (1, d)


def scale_to_unit(values: np.ndarray, path: Path | str = "the data") -> tuple[np.ndarray, str]:
    """``values`` as float32 in [0, 1] by the module's stated rule, and the rule applied.

    Raises:
        DataError: for non-numeric or complex values, NaN/inf, or a constant float array
            outside [0, 1] (which min-max scaling cannot map).
    """
    kind = values.dtype.kind
    if kind == "b":
        return values.astype(np.float32), "booleans: False/True -> 0/1"
    if kind not in "uif":
        raise DataError(
            f"{path} holds values of type {values.dtype}; expected numbers (bool, integer or "
            "float pixels)"
        )
    if values.dtype == np.uint8 and values.size and values.max() > 1:
        return values.astype(np.float32) / np.float32(255), "uint8 divided by 255"
    if kind == "f" and not np.isfinite(values).all():
        raise DataError(
            f"{path} contains NaN or infinite values; replace them (e.g. numpy.nan_to_num) "
            "before loading"
        )
    low, high = values.min().item(), values.max().item()
    if kind in "ui" and low >= 0:
        if high <= 1:
            return values.astype(np.float32), f"{values.dtype} 0/1 values kept as they are"
        return values.astype(np.float32) / np.float32(high), f"{values.dtype} divided by its maximum {high}"
    if kind == "f" and low >= 0 and high <= 1:
        return values.astype(np.float32), f"{values.dtype} already within [0, 1], kept as it is"
    if high == low:
        raise DataError(
            f"every value in {path} equals {low}, outside [0, 1]; min-max scaling cannot map a "
            "constant array: check the file, or scale it to [0, 1] yourself"
        )
    scaled = (values.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return scaled, f"{values.dtype} min-max scaled: (x - {low}) / ({high} - {low})"


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _read_labels_file(labels_path: Path, n: int, images_source: Path) -> torch.Tensor:
    """One int64 label per image from a ``.npy`` or ``.txt`` file."""
    suffix = labels_path.suffix.lower()
    if not labels_path.is_file():
        raise DataError(f"labels file {labels_path} does not exist; check the path")
    try:
        if suffix == ".npy":
            values = _require_ndarray(np.load(labels_path, allow_pickle=False), labels_path)
        elif suffix == ".txt":
            values = np.loadtxt(labels_path, dtype=np.float64, ndmin=1, comments="#")
        else:
            raise DataError(
                f"labels file {labels_path} must be a .npy array or a .txt file with one "
                "integer per line"
            )
    except DataError:
        raise
    except _NUMPY_READ_ERRORS as error:
        raise DataError(
            f"cannot read labels file {labels_path} ({type(error).__name__}: {error}); write "
            "one integer label per line (.txt) or save a 1-D integer array with numpy.save (.npy)"
        ) from None
    return _as_labels(values, n, f"labels file {labels_path}", images_source)


def _as_labels(values: np.ndarray, n: int, what: str, images_source: Path) -> torch.Tensor:
    """Check that ``values`` are ``n`` whole numbers and return them as int64."""
    values = np.asarray(values)
    if values.ndim == 2 and 1 in values.shape:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise DataError(f"{what} has shape {values.shape}; give a 1-D list of one label per image")
    if values.shape[0] != n:
        raise DataError(
            f"{what} has {values.shape[0]} labels but {images_source} has {n} images; "
            "give exactly one label per image, in the same order"
        )
    if values.dtype.kind not in "buif" or (
        values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all())
    ):
        raise DataError(f"{what} holds non-integer values; labels must be whole numbers (class ids)")
    return torch.from_numpy(values.astype(np.int64))


# --------------------------------------------------------------------------------------------
# PNG folders
# --------------------------------------------------------------------------------------------


def load_image_folder(path: Path, labels: str | os.PathLike | None = None) -> ImageDataset:
    """Every ``*.png`` in ``path`` (sorted by file name) as greyscale images in [0, 1].

    Args:
        path: a folder of PNG files that all have the same size.  Sub-folders are ignored.
        labels: optional ``.npy`` / ``.txt`` file with one integer label per image, in file-name
            order.  Without it, a ``labels.csv`` in the folder with ``filename,label`` rows (a
            header row is allowed) gives the labels when present.

    Raises:
        DataError: for an empty folder, an unreadable PNG, images of different sizes, or labels
            that do not match the images.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist; check the path")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise DataError(f"{path} holds no .png files; put your images there as PNG files")
    pixels, image_shape, scaling = _read_pngs(files)
    if labels is not None:
        label_tensor = _read_labels_file(Path(labels), len(files), path)
    elif (path / FOLDER_LABELS_FILE).is_file():
        label_tensor = _read_folder_labels(path / FOLDER_LABELS_FILE, files)
    else:
        label_tensor = None
    return ImageDataset(
        images=torch.from_numpy(pixels),
        image_shape=image_shape,
        labels=label_tensor,
        name=path.name or "images",
        scaling=scaling,
        extras={"source": str(path), "files": [p.name for p in files]},
    )


def _read_pngs(files: list[Path]) -> tuple[np.ndarray, tuple[int, int], str]:
    """All images as ``[N, H*W]`` float32 rows, their common ``(H, W)``, and the scaling."""
    first, first_rule = _read_png(files[0])
    image_shape = (int(first.shape[0]), int(first.shape[1]))
    pixels = np.empty((len(files), first.size), dtype=np.float32)
    pixels[0] = first.reshape(-1)
    rules = {first_rule}
    for row, file in enumerate(files[1:], start=1):
        image, rule = _read_png(file)
        if image.shape != image_shape:
            raise DataError(
                f"{file} is {image.shape[1]}x{image.shape[0]} pixels (W x H) but {files[0].name} "
                f"is {image_shape[1]}x{image_shape[0]}; resize the images to one size or move "
                "the odd one out of the folder"
            )
        pixels[row] = image.reshape(-1)
        rules.add(rule)
    return pixels, image_shape, "; ".join(sorted(rules))


def _read_png(file: Path) -> tuple[np.ndarray, str]:
    """One PNG as a float32 ``[H, W]`` greyscale array in [0, 1], and the scaling applied."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                grey = np.asarray(image, dtype=np.float32) / np.float32(65535)
                return np.clip(grey, 0.0, 1.0), "16-bit greyscale PNG divided by 65535"
            grey = np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255)
            return grey, "PNG converted to greyscale (Pillow mode L) and divided by 255"
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise DataError(
            f"cannot read image {file} ({type(error).__name__}: {error}); the file is corrupt "
            "or not a PNG: save it again as PNG or remove it from the folder"
        ) from None


def _read_folder_labels(csv_path: Path, files: list[Path]) -> torch.Tensor:
    """Labels of ``files`` from ``filename,label`` rows of ``csv_path``."""
    by_name = _parse_labels_csv(csv_path)
    missing = [p.name for p in files if p.name not in by_name]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{csv_path} gives no label for {len(missing)} of {len(files)} images ({shown}); "
            "add one 'filename,label' row per image, or delete the file to load without labels"
        )
    return torch.tensor([by_name[p.name] for p in files], dtype=torch.int64)


def _parse_labels_csv(csv_path: Path) -> dict[str, int]:
    """``{filename: label}`` from a CSV of ``filename,label`` rows (first row may be a header)."""
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"cannot read {csv_path} ({type(error).__name__}: {error}); write it as UTF-8 text "
            "with one 'filename,label' row per image"
        ) from None
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=1):
        try:
            name, value = (cell.strip() for cell in row)
            labels[name] = int(value)
        except ValueError:
            if line == 1:
                continue  # a header row such as "filename,label"
            raise DataError(
                f"{csv_path} row {line} is {row!r}; each row must be 'filename,label' with an "
                "integer label"
            ) from None
    return labels
