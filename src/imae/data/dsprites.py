"""dSprites (Matthey et al. 2017): the official npz when present, else a procedural re-rendering.

The data set is the full grid of five factors, 3 x 6 x 40 x 32 x 32 = 737,280 binary 64x64
images (plus a colour factor that is constant, so it is left out here):

* shape, 3 values: official values 1, 2, 3 = square, ellipse, heart; index 0, 1, 2 here;
* scale, 6 values: ``linspace(0.5, 1, 6)``;
* orientation, 40 values: ``linspace(0, 2 pi, 40)`` (both 0 and 2 pi);
* posX, 32 values: ``linspace(0, 1, 32)``;
* posY, 32 values: ``linspace(0, 1, 32)``.

The ``factors`` of a data set are the ``[n, 5]`` indices of these, in this order.

The official file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` holds ``imgs``
(uint8 0/1, ``[737280, 64, 64]``), ``latents_values`` and ``latents_classes`` (``[737280, 6]``,
columns color, shape, scale, orientation, posX, posY) and a pickled ``metadata`` dict.  Its rows
are the grid in row-major order over (color, shape, scale, orientation, posX, posY): posY varies
fastest, so flat index = (((shape * 6 + scale) * 40 + orientation) * 32 + posX) * 32 + posY
(:func:`grid_index`, :func:`factor_grid_indices`).  Put the file under the data root, either
directly or in a ``dsprites/`` folder, and :func:`load_dsprites` uses it.

Without the file, :func:`render_dsprites` re-draws the grid.  It is an approximation of the
official images with exact ground-truth factors.  The geometry was measured on the 320 real
dSprites frames of ``dsprites.gif`` in the official repository (scale, orientation and position
sweeps of all three shapes); with the constants below the re-rendered frames differ from the real
ones in 8 of 16,228 lit square pixels, 44 of 12,592 ellipse pixels and 628 of 24,132 heart pixels
(boundary pixels only).  The measured conventions:

* a pixel (row ``r``, column ``c``) covers ``[c, c + 1] x [r, r + 1]`` and is on when its centre
  ``(c + 0.5, r + 0.5)`` lies inside the shape (no anti-aliasing: the official images are 0/1);
* the shape's reference point sits at ``(16 + 32 * posX, 16 + 32 * posY)``: it sweeps the middle
  half of the frame, posX = 0 near the left edge, posX = 1 near the right, posY = 0 near the top
  and posY = 1 near the bottom (image row grows with posY); every shape stays fully inside the
  64 x 64 frame at every position, scale and orientation;
* the orientation turns the shape counter-clockwise as seen on screen;
* in the shape's own frame (pixels at scale 1, ``u`` to the right, ``v`` downwards at
  orientation 0), divided by ``scale``:

  - square: ``max(|u|, |v|) < 9.6`` (side 19.2: 19 or 20 pixels a side when axis-aligned at
    scale 1, depending on the sub-pixel position, 10 at scale 0.5);
  - ellipse: ``(u / 12.75)^2 + (v / 7.25)^2 < 1``, long axis horizontal at orientation 0;
  - heart, lobes up and tip down: the union of two discs of radius 5.06 centred at
    ``(+-4.57, -4.14)``, the wedge ``v > -0.99, |u| < 0.96 * (8.60 - v)`` and the block
    ``|u| < 4.57, -4.14 < v <= -0.99`` that closes the gap between them.

Orientation index 0 and 39 are both in the grid and draw the same image (0 and 2 pi), as in the
official set; the square (period pi/2) and the ellipse (period pi) repeat within a turn too.

Rendering the full grid (737,280 images, in chunks of 2,048, numpy float32, each shape evaluated
in a 29 x 29 block around its reference point) took 11-14 s on the 2-core machine this was written
on, with a peak resident memory of 3.1 GB: the 3.0 GB uint8 result plus about 0.1 GB of per-chunk
buffers (3.5 GB when the 377 MB packed-bits cache is written as well).  Pass ``cache_dir`` to keep
that cache; reloading it took 0.7 s with the file in the page cache.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from imae.data.dataset import ImageDataset
from imae.errors import DataError

__all__ = [
    "COLOR_VALUE",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "FACTOR_VALUES",
    "GEOMETRY_VERSION",
    "N_IMAGES",
    "OFFICIAL_FILENAME",
    "SHAPE_NAMES",
    "factor_grid_indices",
    "factor_values",
    "find_official_file",
    "grid_index",
    "load_dsprites",
    "render_dsprites",
]

#: Names of the five varying factors, in the order of the ``factors`` columns.
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
#: Number of values of each factor.
FACTOR_SIZES = (3, 6, 40, 32, 32)
#: Number of images in the full grid.
N_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
#: The shape index 0, 1, 2 means:
SHAPE_NAMES = ("square", "ellipse", "heart")
#: The official file name (``co1sh3sc6or40x32y32``: colour 1, shape 3, scale 6, ...).
OFFICIAL_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
IMAGE_SIZE = 64


def _frozen(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    values.setflags(write=False)
    return values


#: The official factor values (``latents_values`` columns 1..5; shape is 1, 2, 3 there).
FACTOR_VALUES: dict[str, np.ndarray] = {
    "shape": _frozen([1.0, 2.0, 3.0]),
    "scale": _frozen(np.linspace(0.5, 1.0, 6)),
    "orientation": _frozen(np.linspace(0.0, 2.0 * np.pi, 40)),
    "posX": _frozen(np.linspace(0.0, 1.0, 32)),
    "posY": _frozen(np.linspace(0.0, 1.0, 32)),
}
#: The constant colour factor of the official set (``latents_values[:, 0]``).
COLOR_VALUE = 1.0

# Strides of the row-major grid: posY fastest.
_STRIDES = np.array(
    [int(np.prod(FACTOR_SIZES[i + 1 :])) for i in range(len(FACTOR_SIZES))], dtype=np.int64
)

# ---- geometry (pixels; see the module docstring) --------------------------------------------
_POS_OFFSET = 16.0  # reference point at posX = 0 / posY = 0
_POS_SPAN = 32.0  # how far it travels from posX = 0 to posX = 1
_SQUARE_HALF_SIDE = 9.6
_ELLIPSE_SEMI_AXES = (12.75, 7.25)  # along u, v
_HEART_LOBE_X = 4.57  # disc centres at (+-x, y)
_HEART_LOBE_Y = -4.14
_HEART_LOBE_RADIUS = 5.06
_HEART_TIP_V = 8.60  # the wedge |u| < slope * (tip - v), for v > top
_HEART_WEDGE_SLOPE = 0.96
_HEART_WEDGE_TOP = -0.99
#: Largest distance of any shape point from its reference point at scale 1.
_MAX_RADIUS = max(
    _SQUARE_HALF_SIDE * np.sqrt(2.0),
    max(_ELLIPSE_SEMI_AXES),
    np.hypot(_HEART_LOBE_X, _HEART_LOBE_Y) + _HEART_LOBE_RADIUS,
    _HEART_TIP_V,
    np.hypot(_HEART_WEDGE_SLOPE * (_HEART_TIP_V - _HEART_WEDGE_TOP), _HEART_WEDGE_TOP),
)
# Every shape is drawn in a _WINDOW x _WINDOW block whose corner is floor(centre) - _HALF_WINDOW:
# the block holds every pixel centre closer than _HALF_WINDOW + 0.5 to the reference point (on
# both sides), and it always lies inside the frame.
_HALF_WINDOW = 14
_WINDOW = 2 * _HALF_WINDOW + 1
assert _MAX_RADIUS < _HALF_WINDOW + 0.5
assert _POS_OFFSET - _HALF_WINDOW >= 0
assert int(_POS_OFFSET + _POS_SPAN) - _HALF_WINDOW + _WINDOW <= IMAGE_SIZE

#: Version of the procedural geometry; part of the cache file name so a change never reuses
#: an old cache.
GEOMETRY_VERSION = 1
_CACHE_NAME = f"dsprites_procedural_v{GEOMETRY_VERSION}_packed.npy"
_CHUNK = 2048


# ---- grid indexing -----------------------------------------------------------------------------


def _as_factor_array(factors, what: str = "factors") -> np.ndarray:
    arr = np.asarray(factors)
    if arr.ndim == 1 and arr.shape[0] == len(FACTOR_SIZES):
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != len(FACTOR_SIZES):
        raise DataError(
            f"{what} must be an [n, {len(FACTOR_SIZES)}] array of indices of "
            f"{', '.join(FACTOR_NAMES)}; got shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise DataError(f"{what} must hold integer factor indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    sizes = np.asarray(FACTOR_SIZES, dtype=np.int64)
    bad = (arr < 0) | (arr >= sizes)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{what}[{row}, {col}] = {arr[row, col]} is out of range: {FACTOR_NAMES[col]} takes "
            f"indices 0..{FACTOR_SIZES[col] - 1}"
        )
    return arr


def grid_index(factors) -> np.ndarray:
    """Flat grid indices (rows of the official file) of ``[n, 5]`` factor indices.

    Row-major over (shape, scale, orientation, posX, posY), posY fastest, which is the official
    order (its leading colour factor has a single value).
    """
    arr = _as_factor_array(factors)
    return arr @ _STRIDES


def factor_grid_indices(index) -> np.ndarray:
    """``[n, 5]`` int64 factor indices of flat grid indices (the inverse of :func:`grid_index`)."""
    idx = np.asarray(index)
    if idx.ndim == 0:
        idx = idx[None]
    if idx.ndim != 1:
        raise DataError(f"grid indices must be a 1-D array, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"grid indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= N_IMAGES):
        raise DataError(f"grid indices must lie in 0..{N_IMAGES - 1}")
    out = np.empty((idx.shape[0], len(FACTOR_SIZES)), dtype=np.int64)
    rest = idx.copy()
    for col in range(len(FACTOR_SIZES) - 1, -1, -1):
        out[:, col] = rest % FACTOR_SIZES[col]
        rest //= FACTOR_SIZES[col]
    return out


def factor_values(factors) -> np.ndarray:
    """``[n, 5]`` float64 official values (``latents_values[:, 1:]``) of factor indices."""
    arr = _as_factor_array(factors)
    return np.stack(
        [FACTOR_VALUES[name][arr[:, col]] for col, name in enumerate(FACTOR_NAMES)], axis=1
    )


# ---- rendering ---------------------------------------------------------------------------------


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points ``(u, v)`` of the shape's own frame (pixels at scale 1) are inside ``shape``."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) < _SQUARE_HALF_SIDE
    if shape == 1:
        a, b = _ELLIPSE_SEMI_AXES
        return (u * (1.0 / a)) ** 2 + (v * (1.0 / b)) ** 2 < 1.0
    au = np.abs(u)
    lobes = (au - _HEART_LOBE_X) ** 2 + (v - _HEART_LOBE_Y) ** 2 < _HEART_LOBE_RADIUS**2
    wedge = (au < _HEART_WEDGE_SLOPE * (_HEART_TIP_V - v)) & (v > _HEART_WEDGE_TOP)
    # The block between the disc centres fills the gap the discs and the wedge leave inside.
    bridge = (au < _HEART_LOBE_X) & (v > _HEART_LOBE_Y) & (v <= _HEART_WEDGE_TOP)
    return lobes | wedge | bridge


def _window_geometry(f: np.ndarray):
    """Per image: window corner (row, col) and the window's pixel centres relative to the shape."""
    scale = FACTOR_VALUES["scale"][f[:, 1]]
    theta = FACTOR_VALUES["orientation"][f[:, 2]]
    cx = _POS_OFFSET + _POS_SPAN * FACTOR_VALUES["posX"][f[:, 3]]
    cy = _POS_OFFSET + _POS_SPAN * FACTOR_VALUES["posY"][f[:, 4]]
    c0 = np.floor(cx).astype(np.int64) - _HALF_WINDOW
    r0 = np.floor(cy).astype(np.int64) - _HALF_WINDOW
    steps = np.arange(_WINDOW, dtype=np.float64) + 0.5
    dx = c0[:, None] + steps[None, :] - cx[:, None]  # [m, W] per column
    dy = r0[:, None] + steps[None, :] - cy[:, None]  # [m, W] per row
    cos = np.cos(theta) / scale
    sin = np.sin(theta) / scale
    return r0, c0, dx, dy, cos, sin


def _render_chunk(f: np.ndarray, out: np.ndarray) -> None:
    """Draw the images of factor rows ``f`` into the zeroed ``out`` ([m, 64, 64] uint8)."""
    m = f.shape[0]
    r0, c0, dx, dy, cos, sin = _window_geometry(f)
    # Counter-clockwise on screen (rows grow downwards): pixel offset (dx, dy) maps to the shape
    # frame by u = (dx cos - dy sin) / scale, v = (dx sin + dy cos) / scale.
    dx = dx.astype(np.float32)
    dy = dy.astype(np.float32)
    cos = cos.astype(np.float32)[:, None]
    sin = sin.astype(np.float32)[:, None]
    mask = np.empty((m, _WINDOW, _WINDOW), dtype=bool)
    shapes = f[:, 0]
    for shape in range(FACTOR_SIZES[0]):
        sel = np.flatnonzero(shapes == shape)
        if sel.size == 0:
            continue
        if sel.size == m:
            sel = slice(None)
        xs, ys, c, s = dx[sel], dy[sel], cos[sel], sin[sel]
        u = (xs * c)[:, None, :] - (ys * s)[:, :, None]
        v = (xs * s)[:, None, :] + (ys * c)[:, :, None]
        mask[sel] = _inside(shape, u, v)
    # Scatter the windows into the frames through flat indices.
    offsets = (np.arange(_WINDOW)[:, None] * IMAGE_SIZE + np.arange(_WINDOW)[None, :]).ravel()
    base = np.arange(m, dtype=np.int64) * IMAGE_SIZE * IMAGE_SIZE + r0 * IMAGE_SIZE + c0
    if not out.flags.c_contiguous:
        raise ValueError("_render_chunk needs a C-contiguous output block")
    flat = out.reshape(-1)
    flat[(base[:, None] + offsets[None, :]).ravel()] = mask.reshape(-1).view(np.uint8)


def render_dsprites(factor_indices, chunk_size: int = _CHUNK) -> np.ndarray:
    """Draw dSprites images procedurally: ``[n, 64, 64]`` uint8 with values 0/1.

    Args:
        factor_indices: ``[n, 5]`` integer indices of (shape, scale, orientation, posX, posY),
            shape 0-based (0 square, 1 ellipse, 2 heart).
        chunk_size: images drawn per vectorised step; it bounds the temporary memory (a few
            tens of kB per image of the chunk).

    The geometry (see the module docstring) approximates the official images; the factors
    are exact.  Each shape is evaluated only in a 29 x 29 block around its reference point,
    which always contains it.
    """
    f = _as_factor_array(factor_indices, "factor_indices")
    n = f.shape[0]
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    step = max(1, int(chunk_size))
    for start in range(0, n, step):
        _render_chunk(f[start : start + step], out[start : start + step])
    return out


def _render_full_grid(pack: bool, chunk_size: int = _CHUNK) -> tuple[np.ndarray, np.ndarray | None]:
    """The full grid as ``[N, 4096]`` uint8, and as packed bits ``[N, 512]`` when ``pack``."""
    images = np.zeros((N_IMAGES, IMAGE_SIZE * IMAGE_SIZE), dtype=np.uint8)
    packed = np.empty((N_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8), dtype=np.uint8) if pack else None
    for start in range(0, N_IMAGES, chunk_size):
        stop = min(N_IMAGES, start + chunk_size)
        block = images[start:stop]
        _render_chunk(factor_grid_indices(np.arange(start, stop)), block.reshape(-1, IMAGE_SIZE, IMAGE_SIZE))
        if packed is not None:
            packed[start:stop] = np.packbits(block, axis=1)
    return images, packed


# ---- cache -------------------------------------------------------------------------------------


def _read_cache(path: Path) -> np.ndarray | None:
    """The packed full grid from ``path``, or ``None`` (with a warning) when it is unusable."""
    try:
        packed = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"ignoring unreadable dSprites cache {path} ({exc}); rendering again")
        return None
    expected = (N_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8)
    if packed.dtype != np.uint8 or packed.shape != expected:
        warnings.warn(
            f"ignoring dSprites cache {path}: shape {packed.shape} dtype {packed.dtype}, "
            f"expected {expected} uint8; rendering again"
        )
        return None
    return packed


def _write_cache(path: Path, packed: np.ndarray) -> None:
    """Write ``packed`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, packed, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---- the official file -------------------------------------------------------------------------


def find_official_file(root: Path | None) -> Path | None:
    """The official npz in ``root`` or ``root/dsprites``, or ``None``."""
    if root is None:
        return None
    root = Path(root).expanduser()
    for candidate in (root / OFFICIAL_FILENAME, root / "dsprites" / OFFICIAL_FILENAME):
        if candidate.is_file():
            return candidate
    return None


def _load_official(path: Path, n_samples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images [n, 4096] uint8 0/1, factors [n, 5] int64, scaling)`` from the official npz."""
    fix = (
        f"download {OFFICIAL_FILENAME} again from https://github.com/deepmind/dsprites-dataset "
        f"and put it at {path}, or remove it to use the procedural rendering"
    )
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure to open means a corrupt file
        raise DataError(f"cannot read the dSprites file {path} ({exc}); {fix}") from exc
    if not hasattr(archive, "files"):
        raise DataError(f"the dSprites file {path} is not an .npz archive; {fix}")
    with archive:
        missing = [key for key in ("imgs", "latents_classes", "latents_values") if key not in archive.files]
        if missing:
            raise DataError(
                f"the dSprites file {path} lacks the array(s) {', '.join(missing)} "
                f"(it has {', '.join(archive.files) or 'nothing'}); {fix}"
            )
        try:
            classes = archive["latents_classes"]
            values = archive["latents_values"]
            imgs = archive["imgs"]
        except Exception as exc:  # noqa: BLE001 - truncated / corrupt member
            raise DataError(f"cannot read the arrays of the dSprites file {path} ({exc}); {fix}") from exc
    n = imgs.shape[0] if imgs.ndim >= 1 else -1
    if imgs.ndim != 3 or imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"'imgs' in the dSprites file {path} has shape {imgs.shape}, expected [N, 64, 64]; {fix}"
        )
    for key, arr in (("latents_classes", classes), ("latents_values", values)):
        if arr.shape != (n, 6):
            raise DataError(
                f"'{key}' in the dSprites file {path} has shape {arr.shape}, expected "
                f"[{n}, 6] (color, shape, scale, orientation, posX, posY); {fix}"
            )
    if n == 0:
        raise DataError(f"the dSprites file {path} holds no images; {fix}")
    if not np.issubdtype(classes.dtype, np.integer):
        if not np.all(np.equal(np.mod(classes, 1), 0)):
            raise DataError(f"'latents_classes' in the dSprites file {path} is not integer; {fix}")
    factors = classes[:, 1:].astype(np.int64)
    sizes = np.asarray(FACTOR_SIZES, dtype=np.int64)
    bad = (factors < 0) | (factors >= sizes)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"'latents_classes' in the dSprites file {path} has {FACTOR_NAMES[col]} index "
            f"{factors[row, col]} in row {row}, outside 0..{FACTOR_SIZES[col] - 1}; {fix}"
        )
    rows = _subset_rows(n, n_samples, seed)
    if rows is not None:
        imgs = imgs[rows]
        factors = factors[rows]
    images = imgs.reshape(imgs.shape[0], IMAGE_SIZE * IMAGE_SIZE)
    if images.dtype == np.bool_:
        images = images.view(np.uint8)
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"'imgs' in the dSprites file {path} has dtype {images.dtype}, expected uint8; {fix}")
    low, top = images.min(), images.max()
    if low < 0 or top > 255:
        raise DataError(
            f"'imgs' in the dSprites file {path} has values in [{low}, {top}], expected 0/1; {fix}"
        )
    if top <= 1:
        if np.issubdtype(images.dtype, np.floating):
            images = images >= 0.5
        return (
            images.astype(np.uint8, copy=False),
            factors,
            "official binary pixels 0/1 kept as uint8; batch() gives float 0.0/1.0",
        )
    return (images >= 128).astype(np.uint8), factors, "official pixels 0..255 thresholded at 128 to 0/1 uint8"


# ---- the loader --------------------------------------------------------------------------------


def _subset_rows(n: int, n_samples: int | None, seed: int) -> np.ndarray | None:
    """Sorted rows drawn without replacement, or ``None`` for all ``n`` rows."""
    if n_samples is None:
        return None
    if n_samples > n:
        raise DataError(f"n_samples = {n_samples} exceeds the {n} dSprites images; use at most {n}")
    if n_samples == n:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=n_samples, replace=False))


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def load_dsprites(
    root: Path | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    source: str = "auto",
) -> ImageDataset:
    """dSprites as an :class:`ImageDataset` of uint8 0/1 pixels ``[n, 4096]``.

    Args:
        root: data folder; the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` is
            looked for in ``root`` and ``root/dsprites``.
        n_samples: ``None`` for the whole grid (737,280 images, 3.0 GB as uint8), else this many
            images drawn without replacement with ``numpy.random.default_rng(seed)`` and kept in
            grid order.  With the official file the same rows are drawn as procedurally.
        seed: seed of that draw.
        cache_dir: folder for a packed-bits cache of the procedurally rendered full grid
            (377 MB): written when the full grid is rendered, then reused (subsets included).
        source: ``"auto"`` (the official file when present, else procedural), ``"official"``
            (the file, or a :class:`DataError` saying where to put it) or ``"procedural"``.

    Returns a data set with ``labels`` = shape index (0 square, 1 ellipse, 2 heart) and
    ``factors`` = ``[n, 5]`` int64 indices of :data:`FACTOR_NAMES`; ``extras["source"]`` is
    ``"official"`` or ``"procedural"``.
    """
    if not isinstance(source, str) or source.lower() not in ("auto", "official", "procedural"):
        raise DataError(f"dSprites source must be 'auto', 'official' or 'procedural', got {source!r}")
    source = source.lower()
    if n_samples is not None:
        n_samples = _check_int(n_samples, "n_samples", 1)
    seed = _check_int(seed, "seed", 0)
    root = None if root is None or str(root) == "" else Path(root).expanduser()

    official = None if source == "procedural" else find_official_file(root)
    if source == "official" and official is None:
        where = (
            f"{root / OFFICIAL_FILENAME} or {root / 'dsprites' / OFFICIAL_FILENAME}"
            if root is not None
            else f"<data root>/{OFFICIAL_FILENAME} and pass that folder as the data root"
        )
        raise DataError(
            f"the official dSprites file was not found; download {OFFICIAL_FILENAME} from "
            f"https://github.com/deepmind/dsprites-dataset and put it at {where}, "
            "or use source='auto' / 'procedural' to render the images"
        )

    extras: dict = {}
    if official is not None:
        images, factors, scaling = _load_official(official, n_samples, seed)
        extras.update(source="official", path=str(official))
    else:
        rows = _subset_rows(N_IMAGES, n_samples, seed)
        images = _procedural_images(rows, cache_dir)
        factors = factor_grid_indices(np.arange(N_IMAGES) if rows is None else rows)
        scaling = "procedurally rendered binary pixels 0/1 kept as uint8; batch() gives float 0.0/1.0"
        extras.update(source="procedural", geometry_version=GEOMETRY_VERSION)

    factors_t = torch.from_numpy(np.ascontiguousarray(factors, dtype=np.int64))
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        image_shape=(IMAGE_SIZE, IMAGE_SIZE),
        labels=factors_t[:, 0].clone(),
        factors=factors_t,
        factor_names=FACTOR_NAMES,
        factor_sizes=FACTOR_SIZES,
        name="dsprites",
        scaling=scaling,
        extras=extras,
    )


def _procedural_images(rows: np.ndarray | None, cache_dir: Path | None) -> np.ndarray:
    """``[n, 4096]`` uint8 rendered images of grid ``rows`` (``None``: all), via the cache if any.

    Only the full grid is written to the cache; a subset is read from an existing cache, else
    rendered on its own.
    """
    cache = None if cache_dir is None else Path(cache_dir).expanduser() / _CACHE_NAME
    if cache is not None and cache.is_file():
        packed = _read_cache(cache)
        if packed is not None:
            chosen = packed if rows is None else packed[rows]
            return np.unpackbits(np.asarray(chosen), axis=1)
    if rows is not None:
        return render_dsprites(factor_grid_indices(rows)).reshape(len(rows), -1)
    images, packed = _render_full_grid(pack=cache is not None)
    if cache is not None:
        _write_cache(cache, packed)
    return images
