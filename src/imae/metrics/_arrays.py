"""Input checks shared by the metrics: representations ``[N, K]`` and integer factors ``[N, J]``.

Every metric accepts numpy arrays, torch tensors or nested lists, with one row per item.  A
problem with the input (wrong rank, mismatched lengths, non-finite codes, non-integer factors)
raises ``ValueError`` with a message that names the argument and its shape.
"""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(values) -> np.ndarray:
    """A numpy view of a tensor (moved to the CPU) or array-like, dtype kept."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def as_int_array(values, name: str) -> np.ndarray:
    """A one-dimensional array of integer classes (integer-valued floats are accepted)."""
    arr = to_numpy(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer classes")
        arr = arr.astype(np.int64)
    return arr


def as_codes(codes, name: str = "codes", min_dims: int = 1) -> np.ndarray:
    """``[N, K]`` finite floating-point codes; the floating dtype is kept (float32 stays float32).

    Keeping the dtype matters for the histogram MIG: ``np.histogram`` computes its bin edges in
    the dtype of the data, and disentanglement_lib discretises the float32 codes it is given.
    """
    arr = to_numpy(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, K] array (one row per item, one column per "
                         f"code dimension), got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name} has no rows; give at least one item")
    if arr.shape[1] < min_dims:
        raise ValueError(f"{name} has {arr.shape[1]} column(s); this metric needs at least {min_dims} "
                         "code dimensions")
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}[{bad[0]}, {bad[1]}] is {arr[bad[0], bad[1]]}; codes must be finite")
    return arr


def as_factors(factors, n: int | None = None, name: str = "factors") -> np.ndarray:
    """``[N, J]`` int64 ground-truth factor classes; a 1-D array is one factor.

    ``n``: the number of rows the codes have, checked against the factors.
    """
    arr = to_numpy(factors)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, J] array of integer factor classes (one row per "
                         f"item, one column per factor), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has no columns; give at least one factor")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) \
                or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer factor classes (e.g. the index of each factor's "
                             f"value), got dtype {arr.dtype} with non-integer entries")
    arr = arr.astype(np.int64, copy=False)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} have {arr.shape[0]} rows but the codes have {n}; give one row of "
                         "factors per coded item")
    return arr


def check_num(value, name: str, minimum: int) -> int:
    """An integer argument of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def draw_rows(n: int, counts: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Disjoint random row sets of the given sizes from ``range(n)`` (``default_rng(seed)``).

    When ``n`` is smaller than ``sum(counts)``, every row is used and the sizes are scaled down
    in proportion (each at least one row), so a small data set still gives a train/test split.
    """
    total = sum(counts)
    rng = np.random.default_rng(seed)
    if n >= total:
        order = rng.choice(n, size=total, replace=False)
    else:
        if n < len(counts):
            raise ValueError(f"need at least {len(counts)} items for this metric, got {n}")
        order = rng.permutation(n)
        scaled = [max(1, int(round(c * n / total))) for c in counts[:-1]]
        scaled = [min(s, n - (len(counts) - 1)) for s in scaled]
        counts = (*scaled, n - sum(scaled))
        if counts[-1] < 1:
            raise ValueError(f"need more items for this metric, got {n}")
    out, start = [], 0
    for c in counts:
        out.append(order[start : start + c])
        start += c
    return out
