"""dSprites: grid indexing, the procedural renderer's geometry, and loading the official npz."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from imae.data import load_dataset
from imae.data import dsprites as ds
from imae.data.dsprites import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    FACTOR_VALUES,
    N_IMAGES,
    OFFICIAL_FILENAME,
    factor_grid_indices,
    factor_values,
    grid_index,
    load_dsprites,
    render_dsprites,
)
from imae.errors import DataError

SQUARE, ELLIPSE, HEART = 0, 1, 2
MID = 16  # a central position index


def _render(rows) -> np.ndarray:
    return render_dsprites(np.asarray(rows, dtype=np.int64)).astype(bool)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(img)
    return float(cols.mean()), float(rows.mean())


# ---- constants and indexing ---------------------------------------------------------------------


def test_constants_match_the_official_grid():
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "posX", "posY")
    assert FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert N_IMAGES == 737_280
    assert [len(FACTOR_VALUES[name]) for name in FACTOR_NAMES] == list(FACTOR_SIZES)
    np.testing.assert_allclose(FACTOR_VALUES["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert FACTOR_VALUES["orientation"][0] == 0.0
    assert FACTOR_VALUES["orientation"][-1] == pytest.approx(2 * np.pi)
    assert FACTOR_VALUES["posX"][-1] == 1.0
    np.testing.assert_array_equal(factor_values([[2, 5, 39, 31, 0]]), [[3.0, 1.0, 2 * np.pi, 1.0, 0.0]])


def test_grid_index_round_trip_and_official_order():
    rng = np.random.default_rng(0)
    flat = np.concatenate([[0, N_IMAGES - 1], rng.integers(0, N_IMAGES, size=5000)])
    factors = factor_grid_indices(flat)
    assert factors.shape == (flat.size, 5) and factors.dtype == np.int64
    np.testing.assert_array_equal(grid_index(factors), flat)
    np.testing.assert_array_equal(factors[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(factors[1], np.array(FACTOR_SIZES) - 1)
    # posY varies fastest, then posX, ... (the official notebook: index 1 is posY 1, 32 is posX 1)
    np.testing.assert_array_equal(factor_grid_indices(np.array([1, 32, 1024])),
                                  [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0]])
    assert grid_index([1, 0, 0, 0, 0])[0] == 6 * 40 * 32 * 32
    every = factor_grid_indices(np.arange(0, N_IMAGES, 997))
    assert (np.diff(grid_index(every)) > 0).all()


def test_bad_indices_raise_data_error():
    with pytest.raises(DataError):
        factor_grid_indices(np.array([N_IMAGES]))
    with pytest.raises(DataError):
        grid_index([[0, 6, 0, 0, 0]])
    with pytest.raises(DataError):
        render_dsprites(np.zeros((2, 4), dtype=np.int64))


# ---- the renderer -------------------------------------------------------------------------------


def test_render_is_binary_with_the_right_shape():
    rng = np.random.default_rng(1)
    factors = factor_grid_indices(rng.choice(N_IMAGES, size=300, replace=False))
    images = render_dsprites(factors, chunk_size=64)
    assert images.shape == (300, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) <= {0, 1}
    assert (images.reshape(300, -1).sum(1) >= 40).all()  # every sprite is drawn
    np.testing.assert_array_equal(images, render_dsprites(factors))  # chunking changes nothing


def _reference_render(factors: np.ndarray, pad: int = 32) -> np.ndarray:
    """Brute force: evaluate every pixel centre of a canvas padded by ``pad`` on every side."""
    size = 64 + 2 * pad
    centres = np.arange(size, dtype=np.float64) - pad + 0.5
    out = np.zeros((len(factors), size, size), dtype=bool)
    for i, (shape, scale_i, orient_i, x_i, y_i) in enumerate(factors):
        scale = FACTOR_VALUES["scale"][scale_i]
        theta = FACTOR_VALUES["orientation"][orient_i]
        dx = centres[None, :] - (16 + 32 * FACTOR_VALUES["posX"][x_i])
        dy = centres[:, None] - (16 + 32 * FACTOR_VALUES["posY"][y_i])
        u = (dx * np.cos(theta) - dy * np.sin(theta)) / scale
        v = (dx * np.sin(theta) + dy * np.cos(theta)) / scale
        out[i] = ds._inside(int(shape), u, v)
    return out


def test_windowed_render_matches_brute_force_and_nothing_leaves_the_frame():
    rng = np.random.default_rng(2)
    extremes = np.array([[s, 5, o, x, y] for s in range(3) for o in range(0, 40, 3)
                         for x in (0, 31) for y in (0, 31)])
    factors = np.concatenate([extremes, factor_grid_indices(rng.choice(N_IMAGES, 200, replace=False))])
    big = _reference_render(factors)
    inner = big[:, 32:96, 32:96]
    assert big.sum() == inner.sum(), "a shape reaches outside the 64x64 frame"
    mismatch = (inner != render_dsprites(factors).astype(bool)).reshape(len(factors), -1).sum(1)
    assert mismatch.max() <= 1  # float32 vs float64 at a boundary at most
    assert mismatch.sum() <= 5


def test_shapes_stay_inside_the_frame_at_extreme_positions():
    rows = [[s, 5, o, x, y] for s in range(3) for o in (0, 5, 13) for x, y in
            [(0, 0), (31, 31), (0, 31), (31, 0), (MID, MID)]]
    images = _render(rows).reshape(3, 3, 5, 64, 64)
    border = images.copy()
    border[..., 1:-1, 1:-1] = False
    assert not border.any(), "a sprite touches the border of the frame"
    areas = images.sum((-1, -2)).astype(float)
    # no pixel is cut: the area at the corners is that of the centre up to rasterisation (a
    # sub-pixel shift turns the axis-aligned 19.2-pixel square into 19 or 20 pixels a side)
    np.testing.assert_allclose(areas[..., :4], np.repeat(areas[..., 4:], 4, axis=-1), rtol=0.12)
    for s in range(3):
        left, middle = _render([[s, 5, 0, 0, MID], [s, 5, 0, 15, MID]]).sum((1, 2))
        assert abs(int(left) - int(middle)) <= 0.12 * middle


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_centroid_moves_right_with_posx_and_down_with_posy(shape):
    along_x = _render([[shape, 3, 0, x, MID] for x in range(32)])
    along_y = _render([[shape, 3, 0, MID, y] for y in range(32)])
    cx = np.array([_centroid(img)[0] for img in along_x])
    cy = np.array([_centroid(img)[1] for img in along_y])
    assert (np.diff(cx) > 0).all() and (np.diff(cy) > 0).all()
    # posX = 0 sits near the left edge, posX = 1 near the right edge; likewise posY vertically
    assert cx[0] < 20 and cx[-1] > 44 and cy[0] < 20 and cy[-1] > 44
    # the other coordinate stays put
    assert np.ptp([_centroid(img)[1] for img in along_x]) < 0.75
    assert np.ptp([_centroid(img)[0] for img in along_y]) < 0.75


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_area_grows_with_scale_roughly_quadratically(shape):
    rows = [[shape, s, o, MID, MID] for o in (0, 7, 20) for s in range(6)]
    areas = _render(rows).sum((1, 2)).reshape(3, 6).astype(float)
    assert (np.diff(areas, axis=1) > 0).all()
    per_unit = areas / FACTOR_VALUES["scale"] ** 2
    assert per_unit.max() / per_unit.min() < 1.25
    assert areas[:, -1].mean() / areas[:, 0].mean() == pytest.approx(4.0, rel=0.2)


def test_square_rotated_a_quarter_turn_covers_the_same_pixels():
    for pos in [(MID, MID), (0, 0), (7, 22)]:
        for scale in (0, 5):
            a, b = _render([[SQUARE, scale, 0, *pos], [SQUARE, scale, 10, *pos]])
            assert (a & b).sum() / (a | b).sum() > 0.9
    # a quarter turn of the ellipse swaps its axes
    flat, upright = _render([[ELLIPSE, 5, 0, MID, MID], [ELLIPSE, 5, 10, MID, MID]])
    (r0, c0), (r1, c1) = np.nonzero(flat), np.nonzero(upright)
    assert np.ptp(c0) > 1.5 * np.ptp(r0) and np.ptp(r1) > 1.5 * np.ptp(c1)


def test_orientation_turns_counter_clockwise_on_screen():
    upright, turned = _render([[HEART, 5, 0, MID, MID], [HEART, 5, 10, MID, MID]])
    # the lobes (the heavier half) are above the reference point at 0 and left of it at ~90 deg
    ref = 16 + 32 * FACTOR_VALUES["posX"][MID] - 0.5
    assert _centroid(upright)[1] < ref - 1
    assert _centroid(turned)[0] < ref - 1


def test_the_three_shapes_differ():
    for scale, orient in [(5, 0), (2, 7), (0, 23)]:
        images = _render([[s, scale, orient, MID, MID] for s in range(3)])
        for i in range(3):
            for j in range(i + 1, 3):
                assert (images[i] ^ images[j]).sum() > 0.2 * (images[i] | images[j]).sum()


# ---- load_dsprites: procedural ----------------------------------------------------------------


def test_subsets_are_reproducible_and_consistent():
    a = load_dsprites(n_samples=64, seed=3)
    b = load_dataset("dsprites", n_samples=64, seed=3)
    c = load_dsprites(n_samples=64, seed=4)
    assert a.extras["source"] == "procedural"
    assert a.images.shape == (64, 4096) and a.images.dtype == torch.uint8
    assert a.image_shape == (64, 64) and a.name == "dsprites"
    assert a.factor_names == FACTOR_NAMES and a.factor_sizes == FACTOR_SIZES
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert not torch.equal(a.factors, c.factors)
    flat = grid_index(a.factors.numpy())
    assert (np.diff(flat) > 0).all()  # drawn without replacement, kept in grid order
    expected = np.sort(np.random.default_rng(3).choice(N_IMAGES, size=64, replace=False))
    np.testing.assert_array_equal(flat, expected)
    assert torch.equal(a.labels, a.factors[:, 0])
    np.testing.assert_array_equal(a.images.numpy().reshape(64, 64, 64), render_dsprites(a.factors.numpy()))
    batch = a.batch(slice(0, 8))
    assert batch.dtype == torch.float32 and set(batch.unique().tolist()) <= {0.0, 1.0}


def test_bad_options_raise_data_error(tmp_path):
    with pytest.raises(DataError):
        load_dsprites(n_samples=0)
    with pytest.raises(DataError):
        load_dsprites(n_samples=N_IMAGES + 1)
    with pytest.raises(DataError):
        load_dsprites(n_samples=10, source="bogus")
    with pytest.raises(DataError, match=OFFICIAL_FILENAME):
        load_dsprites(root=tmp_path, n_samples=10, source="official")
    with pytest.raises(DataError, match=OFFICIAL_FILENAME):
        load_dsprites(root=None, n_samples=10, source="official")


def test_cache_round_trip_and_an_unusable_cache_is_ignored(tmp_path):
    packed = np.arange(24, dtype=np.uint8).reshape(3, 8)
    path = tmp_path / "sub" / "cache.npy"
    ds._write_cache(path, packed)
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.npy"]  # no temp file left
    with pytest.warns(UserWarning, match="ignoring"):
        assert ds._read_cache(path) is None  # wrong shape for the full grid
    bad = tmp_path / ds._CACHE_NAME
    bad.write_bytes(b"not a numpy file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dsprites(n_samples=5, seed=0, cache_dir=tmp_path)
    assert any("ignoring" in str(w.message) for w in caught)
    assert torch.equal(data.images, load_dsprites(n_samples=5, seed=0).images)


# ---- load_dsprites: the official file ------------------------------------------------------------


def _fake_official(folder, n=10, **override):
    rng = np.random.default_rng(5)
    flat = np.sort(rng.choice(N_IMAGES, size=n, replace=False))
    factors = factor_grid_indices(flat)
    classes = np.concatenate([np.zeros((n, 1), dtype=np.int64), factors], axis=1)
    values = np.concatenate([np.ones((n, 1)), factor_values(factors)], axis=1)
    arrays = {
        "imgs": (rng.random((n, 64, 64)) < 0.1).astype(np.uint8),
        "latents_classes": classes,
        "latents_values": values,
        "metadata": np.array({"latents_sizes": np.array([1, 3, 6, 40, 32, 32])}, dtype=object),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / OFFICIAL_FILENAME
    np.savez(path, **arrays)
    return path, arrays


def test_fake_official_npz_loads_through_load_dataset(tmp_path):
    path, arrays = _fake_official(tmp_path)
    data = load_dataset("dsprites", root=tmp_path)
    assert data.extras["source"] == "official" and data.extras["path"] == str(path)
    assert data.images.shape == (10, 4096) and data.images.dtype == torch.uint8
    np.testing.assert_array_equal(data.images.numpy(), arrays["imgs"].reshape(10, -1))
    np.testing.assert_array_equal(data.factors.numpy(), arrays["latents_classes"][:, 1:])
    assert torch.equal(data.labels, data.factors[:, 0])
    assert data.factors.dtype == torch.int64
    sub = load_dataset("dsprites", root=tmp_path, n_samples=4, seed=1)
    rows = np.sort(np.random.default_rng(1).choice(10, size=4, replace=False))
    np.testing.assert_array_equal(sub.images.numpy(), arrays["imgs"][rows].reshape(4, -1))
    # also found in root/dsprites, and ignored when the procedural source is asked for
    nested = tmp_path / "nested"
    _fake_official(nested / "dsprites")
    assert load_dsprites(root=nested, source="official").extras["source"] == "official"
    assert load_dsprites(root=tmp_path, n_samples=3, source="procedural").extras["source"] == "procedural"


def test_corrupt_official_npz_raises_data_error(tmp_path):
    (tmp_path / OFFICIAL_FILENAME).write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=OFFICIAL_FILENAME):
        load_dataset("dsprites", root=tmp_path)

    missing = tmp_path / "missing"
    _fake_official(missing, latents_classes=None)
    with pytest.raises(DataError, match="latents_classes"):
        load_dsprites(root=missing)

    wrong_shape = tmp_path / "shape"
    _fake_official(wrong_shape, imgs=np.zeros((10, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="imgs"):
        load_dsprites(root=wrong_shape)

    wrong_rows = tmp_path / "rows"
    _fake_official(wrong_rows, latents_values=np.zeros((9, 6)))
    with pytest.raises(DataError, match="latents_values"):
        load_dsprites(root=wrong_rows)

    out_of_range = tmp_path / "range"
    classes = np.zeros((10, 6), dtype=np.int64)
    classes[3, 1] = 3  # shape index 3 does not exist (0-based)
    _fake_official(out_of_range, latents_classes=classes)
    with pytest.raises(DataError, match="shape"):
        load_dsprites(root=out_of_range)
