"""Data sets as in-memory tensors: the embedded digits, MNIST / Fashion-MNIST, dSprites, user files.

``load_dataset(name_or_path, ...)`` is the one entry point; it returns an
:class:`~imae.data.dataset.ImageDataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from imae.data.dataset import ImageDataset
from imae.errors import DataError

#: Names ``load_dataset`` knows, with a one-line description each.
KNOWN_DATASETS = {
    "digits": "scikit-learn's 1,797 8x8 handwritten digits, shipped inside the package (default)",
    "mnist": "MNIST from IDX files (gzipped or not) or a Keras-style mnist.npz under --data-root",
    "fashion-mnist": "Fashion-MNIST from IDX files (gzipped or not) or a fashion-mnist.npz under --data-root",
    "dsprites": "dSprites: the official npz under --data-root if present, else rendered procedurally",
}

__all__ = ["ImageDataset", "KNOWN_DATASETS", "load_dataset"]


def load_dataset(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    split: str = "train",
    labels: str | os.PathLike | None = None,
    **options,
) -> ImageDataset:
    """Load a data set by name or from a file/folder of the user's.

    Args:
        name_or_path: one of :data:`KNOWN_DATASETS`, or a path to a ``.npy`` / ``.npz`` array of
            images (``N x H x W`` or ``N x D``) or a folder of PNG images.
        root: folder holding the files of a named data set (MNIST, Fashion-MNIST, dSprites).
        split: ``"train"``, ``"test"`` or ``"all"`` for data sets that have splits.
        labels: optional path to a ``.npy`` / ``.txt`` file with one integer label per image,
            for the user's own data.
        options: extra options of the named loader (e.g. ``n_samples`` for dSprites).
    """
    key = str(name_or_path)
    lowered = key.lower().replace("_", "-")
    if lowered == "digits":
        _no_options("digits", options)
        from imae.data.digits import load_digits

        return load_digits()
    if lowered in ("mnist", "fashion-mnist"):
        _no_options(lowered, options)
        from imae.data.mnist import load_mnist

        return load_mnist(_root_or_default(root), variant=lowered, split=split)
    if lowered == "dsprites":
        from imae.data.dsprites import load_dsprites

        return load_dsprites(root=None if root is None else Path(root).expanduser(), **options)

    path = Path(key).expanduser()
    if path.is_dir():
        _no_options("an image folder", options)
        from imae.data.files import load_image_folder

        return load_image_folder(path, labels=labels)
    if path.suffix.lower() in (".npy", ".npz"):
        _no_options("an array file", options)
        if not path.exists():
            raise DataError(f"data file {path} does not exist; check the path")
        from imae.data.files import load_array_file

        return load_array_file(path, labels=labels)
    raise DataError(
        f"unknown data set {key!r}: use one of {', '.join(KNOWN_DATASETS)}, "
        "or the path of a .npy/.npz array or a folder of PNG images"
    )


def _root_or_default(root: str | os.PathLike | None) -> Path:
    if root is None or str(root) == "":
        return Path("~/data").expanduser()
    return Path(root).expanduser()


def _no_options(what: str, options: dict) -> None:
    if options:
        raise DataError(
            f"options {sorted(options)} do not apply to {what}; remove them"
        )
