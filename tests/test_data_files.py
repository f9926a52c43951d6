"""Loading the user's own images: .npy / .npz arrays and folders of PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imae.data import load_dataset
from imae.data.files import load_array_file, load_image_folder
from imae.errors import DataError


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_npy_n_h_w_uint8(tmp_path):
    raw = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    data = load_array_file(_save(tmp_path / "x.npy", raw))
    assert data.images.dtype == torch.float32
    assert data.images.shape == (3, 20)
    assert data.image_shape == (4, 5)
    assert torch.allclose(data.images, torch.from_numpy(raw.reshape(3, 20) / 255.0).float())
    assert "255" in data.scaling
    assert data.labels is None


def test_npy_n_h_w_1_and_n_1_h_w(tmp_path):
    raw = np.random.default_rng(0).random((2, 3, 4))
    last = load_array_file(_save(tmp_path / "last.npy", raw[..., None]))
    first = load_array_file(_save(tmp_path / "first.npy", raw[:, None]))
    assert last.image_shape == first.image_shape == (3, 4)
    assert torch.equal(last.images, first.images)


@pytest.mark.parametrize("d, shape", [(16, (4, 4)), (10, (1, 10))])
def test_npy_n_d_float_infers_shape(tmp_path, d, shape):
    raw = np.random.default_rng(1).random((6, d))
    data = load_array_file(_save(tmp_path / "x.npy", raw))
    assert data.image_shape == shape
    assert torch.allclose(data.images, torch.from_numpy(raw).float())
    assert "kept as it is" in data.scaling


def test_float_outside_unit_interval_is_min_max_scaled(tmp_path):
    raw = np.array([[-2.0, 0.0, 2.0, 6.0]])
    data = load_array_file(_save(tmp_path / "x.npy", raw))
    assert torch.allclose(data.images, torch.tensor([[0.0, 0.25, 0.5, 1.0]]))
    assert "min-max" in data.scaling


def test_npz_with_labels(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
    y = np.array([3, 1, 4, 1])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    data = load_array_file(tmp_path / "d.npz")
    assert data.labels.dtype == torch.int64
    assert data.labels.tolist() == [3, 1, 4, 1]
    assert data.image_shape == (3, 3)


def test_npz_only_array_and_unknown_keys(tmp_path):
    np.savez(tmp_path / "one.npz", whatever=np.zeros((2, 4), dtype=np.uint8))
    assert len(load_array_file(tmp_path / "one.npz")) == 2
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4)), b=np.zeros((2, 4)))
    with pytest.raises(DataError, match="images"):
        load_array_file(tmp_path / "two.npz")


def test_bool_becomes_zero_one(tmp_path):
    raw = np.array([[True, False], [False, True]])
    data = load_array_file(_save(tmp_path / "x.npy", raw))
    assert data.images.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert "bool" in data.scaling


def test_uint8_binary_mask_is_kept_as_zero_one(tmp_path):
    data = load_array_file(_save(tmp_path / "x.npy", np.array([[0, 1, 1, 0]], dtype=np.uint8)))
    assert data.images.tolist() == [[0.0, 1.0, 1.0, 0.0]]
    assert "0/1" in data.scaling


def test_int16_divided_by_max(tmp_path):
    raw = np.array([[0, 500, 1000, 250]], dtype=np.int16)
    data = load_array_file(_save(tmp_path / "x.npy", raw))
    assert torch.allclose(data.images, torch.tensor([[0.0, 0.5, 1.0, 0.25]]))
    assert "maximum 1000" in data.scaling


def test_negative_integers_min_max(tmp_path):
    raw = np.array([[-10, 0, 10]], dtype=np.int32)
    data = load_array_file(_save(tmp_path / "x.npy", raw))
    assert torch.allclose(data.images, torch.tensor([[0.0, 0.5, 1.0]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_refused(tmp_path, bad):
    raw = np.zeros((2, 4))
    raw[1, 2] = bad
    with pytest.raises(DataError, match="NaN or infinite"):
        load_array_file(_save(tmp_path / "x.npy", raw))


def test_wrong_rank_is_refused(tmp_path):
    with pytest.raises(DataError, match="N x H x W"):
        load_array_file(_save(tmp_path / "rgb.npy", np.zeros((2, 4, 4, 3))))


def test_labels_file_txt_and_npy(tmp_path):
    images = _save(tmp_path / "x.npy", np.zeros((3, 4)))
    (tmp_path / "y.txt").write_text("2\n0\n1\n")
    assert load_array_file(images, labels=tmp_path / "y.txt").labels.tolist() == [2, 0, 1]
    np.save(tmp_path / "y.npy", np.array([5, 6, 7], dtype=np.int32))
    assert load_array_file(images, labels=tmp_path / "y.npy").labels.tolist() == [5, 6, 7]


def test_label_count_mismatch_names_both_counts(tmp_path):
    images = _save(tmp_path / "x.npy", np.zeros((3, 4)))
    (tmp_path / "y.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match=r"2 labels.*3 images"):
        load_array_file(images, labels=tmp_path / "y.txt")


def test_non_integer_labels_are_refused(tmp_path):
    images = _save(tmp_path / "x.npy", np.zeros((2, 4)))
    (tmp_path / "y.txt").write_text("0.5\n1\n")
    with pytest.raises(DataError, match="whole numbers"):
        load_array_file(images, labels=tmp_path / "y.txt")


@pytest.mark.parametrize("name", ["x.npy", "x.npz"])
def test_corrupt_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not numpy data at all")
    with pytest.raises(DataError) as caught:
        load_array_file(path)
    assert str(path) in str(caught.value)
    assert "numpy.save" in str(caught.value)


def test_truncated_npy_is_a_data_error(tmp_path):
    path = _save(tmp_path / "x.npy", np.zeros((50, 50)))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="corrupt"):
        load_array_file(path)


def _write_pngs(folder: Path, arrays: list[np.ndarray]) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i, array in enumerate(arrays):
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def test_png_folder_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, size=(5, 7), dtype=np.uint8) for _ in range(3)]
    _write_pngs(tmp_path / "pngs", arrays)
    data = load_image_folder(tmp_path / "pngs")
    assert data.image_shape == (5, 7)
    expected = np.stack([a.reshape(-1) for a in arrays]).astype(np.float32) / 255
    assert np.allclose(data.images.numpy(), expected)
    assert data.labels is None


def test_png_folder_rgb_becomes_greyscale(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    _write_pngs(tmp_path / "pngs", [rgb])
    data = load_image_folder(tmp_path / "pngs")
    assert data.image_shape == (4, 4)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    assert np.allclose(data.images.numpy().reshape(4, 4), expected)


def test_png_folder_sixteen_bit_is_not_clipped(tmp_path):
    _write_pngs(tmp_path / "pngs", [np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)])
    data = load_image_folder(tmp_path / "pngs")
    assert np.allclose(data.images.numpy(), [[0.0, 1.0, 32768 / 65535, 1000 / 65535]])


def test_png_folder_mismatched_sizes_names_the_odd_file(tmp_path):
    paths = _write_pngs(
        tmp_path / "pngs", [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)]
    )
    with pytest.raises(DataError, match=paths[2].name):
        load_image_folder(tmp_path / "pngs")


def test_png_folder_empty_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no .png files"):
        load_image_folder(tmp_path / "empty")


def test_png_folder_corrupt_png_names_the_file(tmp_path):
    _write_pngs(tmp_path / "pngs", [np.zeros((4, 4), np.uint8)])
    bad = tmp_path / "pngs" / "zz_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="zz_bad.png"):
        load_image_folder(tmp_path / "pngs")


def test_png_folder_labels_csv_and_labels_argument(tmp_path):
    _write_pngs(tmp_path / "pngs", [np.zeros((3, 3), np.uint8)] * 3)
    (tmp_path / "pngs" / "labels.csv").write_text("filename,label\nimg_02.png,7\nimg_00.png,5\nimg_01.png,6\n")
    assert load_image_folder(tmp_path / "pngs").labels.tolist() == [5, 6, 7]
    (tmp_path / "y.txt").write_text("1\n2\n3\n")
    assert load_image_folder(tmp_path / "pngs", labels=tmp_path / "y.txt").labels.tolist() == [1, 2, 3]


def test_png_folder_labels_csv_missing_rows(tmp_path):
    _write_pngs(tmp_path / "pngs", [np.zeros((3, 3), np.uint8)] * 2)
    (tmp_path / "pngs" / "labels.csv").write_text("img_00.png,1\n")
    with pytest.raises(DataError, match="img_01.png"):
        load_image_folder(tmp_path / "pngs")


def test_load_dataset_dispatches_to_files(tmp_path):
    images = _save(tmp_path / "x.npy", np.ones((2, 9), dtype=np.uint8) * 255)
    (tmp_path / "y.txt").write_text("0\n1\n")
    data = load_dataset(str(images), labels=tmp_path / "y.txt")
    assert data.image_shape == (3, 3)
    assert data.labels.tolist() == [0, 1]
    assert torch.all(data.images == 1.0)

    _write_pngs(tmp_path / "pngs", [np.zeros((2, 2), np.uint8)] * 2)
    folder = load_dataset(tmp_path / "pngs")
    assert folder.images.shape == (2, 4)

    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz")
