"""MNIST / Fashion-MNIST from small IDX files and Keras-style npz files written by the tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from imae.data import load_dataset
from imae.data.mnist import IDX_FILES, load_mnist
from imae.errors import DataError

N_TRAIN, N_TEST = 5, 3


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file holding the unsigned-byte ``array`` (magic 0x0000080<ndim>, big-endian dims)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_split(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n, dtype=np.uint8)


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": make_split(0, N_TRAIN), "test": make_split(1, N_TEST)}


def write_idx_folder(folder: Path, splits, gz: bool = False) -> None:
    """The four IDX files of ``splits`` in ``folder``, gzipped when ``gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        for name, array in zip(IDX_FILES[split], (images, labels)):
            data = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
            else:
                (folder / name).write_bytes(data)


def check(data, images: np.ndarray, labels: np.ndarray, name: str = "mnist") -> None:
    assert data.image_shape == (28, 28)
    assert data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    assert data.name == name
    expected = images.reshape(len(images), -1).astype(np.float32) / 255
    assert np.array_equal(data.images.numpy(), expected)
    assert data.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("gz", [False, True])
def test_plain_and_gzipped_idx_in_root(tmp_path, splits, gz):
    write_idx_folder(tmp_path, splits, gz=gz)
    check(load_mnist(tmp_path, split="train"), *splits["train"])
    check(load_mnist(tmp_path, split="test"), *splits["test"])


def test_split_all_concatenates_train_then_test(tmp_path, splits):
    write_idx_folder(tmp_path / "mnist", splits, gz=True)
    data = load_mnist(tmp_path, split="all")
    images = np.concatenate([splits["train"][0], splits["test"][0]])
    labels = np.concatenate([splits["train"][1], splits["test"][1]])
    check(data, images, labels)


@pytest.mark.parametrize(
    "variant, subfolder", [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("fashion-mnist", "fashion-mnist/raw")]
)
def test_torchvision_and_raw_layouts(tmp_path, splits, variant, subfolder):
    write_idx_folder(tmp_path / subfolder, splits, gz=True)
    check(load_mnist(tmp_path, variant=variant, split="test"), *splits["test"], name=variant)


@pytest.mark.parametrize("variant, file_name", [("mnist", "mnist.npz"), ("fashion-mnist", "fashion-mnist.npz")])
def test_keras_npz(tmp_path, splits, variant, file_name):
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    np.savez(tmp_path / file_name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    check(load_mnist(tmp_path, variant=variant, split="train"), x_train, y_train, name=variant)
    check(load_mnist(tmp_path, variant=variant, split="test"), x_test, y_test, name=variant)


def test_keras_npz_missing_keys(tmp_path, splits):
    np.savez(tmp_path / "mnist.npz", x_train=splits["train"][0])
    with pytest.raises(DataError, match="y_train"):
        load_mnist(tmp_path)


def test_truncated_file_says_delete_and_download(tmp_path, splits):
    write_idx_folder(tmp_path, splits)
    images = tmp_path / IDX_FILES["train"][0]
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError) as caught:
        load_mnist(tmp_path)
    message = str(caught.value)
    assert str(images) in message
    assert "truncated or corrupt" in message
    assert "imae data download mnist --root" in message


def test_truncated_gzip_is_a_data_error(tmp_path, splits):
    write_idx_folder(tmp_path, splits, gz=True)
    labels = tmp_path / f"{IDX_FILES['test'][1]}.gz"
    labels.write_bytes(labels.read_bytes()[:15])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_mnist(tmp_path, split="test")


def test_bad_magic_is_a_data_error(tmp_path, splits):
    write_idx_folder(tmp_path, splits)
    labels = tmp_path / IDX_FILES["train"][1]
    data = bytearray(labels.read_bytes())
    data[3] = 0x03  # an images magic number in a labels file
    labels.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"magic number 0x00000803, expected 0x00000801"):
        load_mnist(tmp_path)


def test_image_label_count_mismatch(tmp_path, splits):
    write_idx_folder(tmp_path, {"train": (splits["train"][0], splits["train"][1][:-1])})
    with pytest.raises(DataError, match=f"{N_TRAIN} images but .* {N_TRAIN - 1} labels"):
        load_mnist(tmp_path)


def test_missing_lists_where_it_looked(tmp_path):
    with pytest.raises(DataError) as caught:
        load_mnist(tmp_path, variant="fashion-mnist")
    message = str(caught.value)
    for place in ("fashion-mnist", str(Path("FashionMNIST") / "raw"), "fashion-mnist.npz"):
        assert place in message
    assert "imae data download fashion-mnist --root" in message
    assert "--data-root" in message


def test_bad_variant_and_split(tmp_path):
    with pytest.raises(DataError, match="variant"):
        load_mnist(tmp_path, variant="kmnist")
    with pytest.raises(DataError, match="split"):
        load_mnist(tmp_path, split="validation")


def test_load_dataset_dispatches_to_mnist(tmp_path, splits):
    write_idx_folder(tmp_path / "FashionMNIST" / "raw", splits)
    data = load_dataset("fashion_mnist", root=tmp_path, split="test")
    check(data, *splits["test"], name="fashion-mnist")
