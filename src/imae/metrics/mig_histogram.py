"""Mutual Information Gap, disentanglement_lib's histogram estimator.

MIG (Chen et al. 2018, "Isolating Sources of Disentanglement in Variational Autoencoders",
eq. 9): for each ground-truth factor v_j, the gap between the two code dimensions with the
highest mutual information with it, normalised by the factor's entropy, averaged over factors:

    MIG = (1/J) sum_j [ I(c_{k*(j)}; v_j) - max_{k != k*(j)} I(c_k; v_j) ] / H(v_j),
    k*(j) = argmax_k I(c_k; v_j).

This module is the variant of disentanglement_lib (Locatello et al. 2019,
``evaluation/metrics/mig.py``), which works on any point estimate of a representation (its
study scores the mean representation of 10,000 random points):

1. each code dimension is discretised on its own into ``num_bins`` = 20 equal-width bins
   spanning its observed range: ``np.digitize(c, np.histogram(c, num_bins)[1][:-1])``
   (``_histogram_discretize``), i.e. bin ``b`` = 1..num_bins, the maximum in the last bin;
2. I(c_k; v_j) is the discrete mutual information of the bin indices and the integer factor
   classes, scikit-learn's ``mutual_info_score`` (plug-in estimate from counts, nats);
3. H(v_j) = ``mutual_info_score(v_j, v_j)``, the plug-in entropy of the factor classes.

:func:`mig` reproduces that definition (checked against an independent re-implementation of
the recipe to 1e-6 in the tests).  For the estimator of Chen et al.'s reference code, which
needs the Gaussian posteriors rather than point codes, see :mod:`imae.metrics.mig_posterior`.

Shapes: ``codes`` ``[N, K]`` (one row per item), ``factors`` ``[N, J]`` integer classes.
disentanglement_lib stores them transposed (``[K, N]``); the numbers are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import mutual_info_score

from imae.metrics._arrays import as_codes, as_factors, check_num


@dataclass(frozen=True)
class MIGResult:
    """The pieces of a MIG score.

    Attributes:
        score: the MIG, mean of ``gaps``.
        gaps: ``[J]`` normalised gap of each factor, (top1 - top2) / ``normaliser``.
        mutual_info: ``[L, J]`` I(candidate_l; v_j) in nats (L code dimensions, plus y for a
            hybrid Chen MIG).
        normaliser: ``[J]`` the per-factor normaliser in nats: H(v_j) for the histogram MIG,
            log(number of values of v_j) for Chen et al.'s.
        top: ``[J]`` index of the candidate with the highest mutual information per factor.
        factors: ``[J]`` the factor columns scored.
    """

    score: float
    gaps: np.ndarray
    mutual_info: np.ndarray
    normaliser: np.ndarray
    top: np.ndarray
    factors: np.ndarray

    def as_dict(self) -> dict:
        """JSON-ready values."""
        return {"score": self.score, "gaps": self.gaps.tolist(), "mutual_info": self.mutual_info.tolist(),
                "normaliser": self.normaliser.tolist(), "top": self.top.tolist(), "factors": self.factors.tolist()}


def gap_score(mutual_info: np.ndarray, normaliser: np.ndarray, factors=None) -> MIGResult:
    """MIG from a ``[L, J]`` mutual-information matrix and the ``[J]`` normalisers.

    Sorts each column in decreasing order and averages (top1 - top2) / normaliser over columns.
    """
    mutual_info = np.asarray(mutual_info, dtype=np.float64)
    normaliser = np.asarray(normaliser, dtype=np.float64)
    if mutual_info.ndim != 2 or mutual_info.shape[0] < 2:
        raise ValueError(f"the mutual-information matrix must be [L >= 2, J], got shape {mutual_info.shape}; "
                         "a gap needs at least two candidate code dimensions")
    if normaliser.shape != (mutual_info.shape[1],):
        raise ValueError(f"normaliser has shape {normaliser.shape}, expected ({mutual_info.shape[1]},)")
    ordered = np.sort(mutual_info, axis=0)[::-1]
    gaps = (ordered[0] - ordered[1]) / normaliser
    factors = np.arange(mutual_info.shape[1]) if factors is None else np.asarray(factors)
    return MIGResult(score=float(np.mean(gaps)), gaps=gaps, mutual_info=mutual_info, normaliser=normaliser,
                     top=np.argmax(mutual_info, axis=0), factors=factors)


def histogram_discretize(codes, num_bins: int = 20) -> np.ndarray:
    """``[N, K]`` int64 bin indices 1..num_bins of each code dimension (disentanglement_lib's rule).

    Per column: ``np.digitize(c, np.histogram(c, num_bins)[1][:-1])``, i.e. ``num_bins``
    equal-width bins over [min, max] of that column (a constant column: one bin), values on an
    inner edge go to the upper bin and the maximum to the last bin.  The edges are computed in
    the dtype of ``codes`` (float32 codes keep float32 edges, as in disentanglement_lib).
    """
    num_bins = check_num(num_bins, "num_bins", 1)
    arr = as_codes(codes)
    out = np.empty(arr.shape, dtype=np.int64)
    for k in range(arr.shape[1]):
        column = arr[:, k]
        edges = np.histogram(column, num_bins)[1]
        out[:, k] = np.digitize(column, edges[:-1])
    return out


def discrete_mutual_info(discrete_codes, factors) -> np.ndarray:
    """``[K, J]`` plug-in mutual information (nats) of each discrete code column with each factor.

    ``m[k, j] = sklearn.metrics.mutual_info_score(factors[:, j], discrete_codes[:, k])``.
    """
    codes = as_factors(discrete_codes, name="discrete_codes")
    factors = as_factors(factors, n=codes.shape[0])
    m = np.zeros((codes.shape[1], factors.shape[1]))
    for k in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            m[k, j] = mutual_info_score(factors[:, j], codes[:, k])
    return m


def discrete_entropy(factors) -> np.ndarray:
    """``[J]`` plug-in entropy (nats) of each factor column: ``mutual_info_score(v_j, v_j)``."""
    factors = as_factors(factors)
    return np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])


def mig_details(codes, factors, num_bins: int = 20) -> MIGResult:
    """The histogram MIG with its mutual-information matrix, entropies and per-factor gaps.

    See the module docstring for the definition.  Raises ``ValueError`` for fewer than two code
    dimensions, mismatched lengths, non-finite codes, non-integer factors, or a factor that takes
    a single value (its entropy is 0 and its normalised gap undefined: drop that column).
    """
    arr = as_codes(codes, min_dims=2)
    factors = as_factors(factors, n=arr.shape[0])
    entropy = discrete_entropy(factors)
    constant = np.flatnonzero(entropy <= 0)
    if constant.size:
        raise ValueError(f"factor column(s) {constant.tolist()} take a single value in these {arr.shape[0]} "
                         "items, so MIG's normalisation H(v_j) is 0; drop those columns or use more items")
    m = discrete_mutual_info(histogram_discretize(arr, num_bins), factors)
    return gap_score(m, entropy)


def mig(codes, factors, num_bins: int = 20) -> float:
    """MIG of point codes ``[N, K]`` against integer factors ``[N, J]``, disentanglement_lib's variant.

    Per code dimension, ``num_bins`` equal-width histogram bins; discrete mutual information with
    each factor (scikit-learn's ``mutual_info_score``); per factor the gap between the two most
    informative dimensions divided by the factor's entropy; the mean over factors.  Works on
    any representation (e.g. the posterior means of another library's model).
    """
    return mig_details(codes, factors, num_bins).score


__all__ = ["MIGResult", "discrete_entropy", "discrete_mutual_info", "gap_score", "histogram_discretize", "mig",
           "mig_details"]
