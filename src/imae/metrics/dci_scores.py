"""Disentanglement, Completeness and Informativeness (DCI).

Eastwood & Williams (2018), "A Framework for the Quantitative Evaluation of Disentangled
Representations", with the gradient-boosted-tree regressor choice of disentanglement_lib
(Locatello et al. 2019, ``evaluation/metrics/dci.py``):

* for each factor j, a ``sklearn.ensemble.GradientBoostingClassifier`` (default settings)
  predicts the integer factor class from the code; its ``feature_importances_`` form column j
  of the importance matrix R ``[K, J]`` (R_kj: how much code k matters for factor j);
* disentanglement of code k: D_k = 1 - H_J(P_k.), with P_kj = R_kj / sum_j R_kj and H_J the
  entropy with logarithm base J (so D_k is in [0, 1]); the score is sum_k rho_k D_k with the
  weights rho_k = sum_j R_kj / sum_kj R_kj;
* completeness of factor j: C_j = 1 - H_K(P_.j), P_kj = R_kj / sum_k R_kj, base K; the score is
  the mean of C_j weighted by sum_k R_kj / sum_kj R_kj;
* informativeness: the accuracy of the classifiers on held-out points, averaged over factors
  (disentanglement_lib's ``informativeness_test``; also the training accuracy).

As in disentanglement_lib, 1e-11 is added to R before the entropies (so a zero row is
uniform) and an all-zero R is weighted uniformly.  Defaults: 10,000 training and 5,000 test
points, disentanglement_lib's counts.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from imae.metrics._arrays import as_codes, as_factors, check_num, draw_rows

_EPS = 1e-11


@dataclass(frozen=True)
class DCIResult:
    """DCI scores; ``importance`` is R ``[K, J]``."""

    disentanglement: float
    completeness: float
    informativeness: float
    informativeness_train: float
    importance: np.ndarray

    def as_dict(self) -> dict:
        return {"disentanglement": self.disentanglement, "completeness": self.completeness,
                "informativeness": self.informativeness, "informativeness_train": self.informativeness_train,
                "importance": self.importance.tolist()}


def _normalised_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """Entropy (log base ``base``) of ``p`` normalised to sum 1 along ``axis`` (as scipy.stats.entropy)."""
    p = p / p.sum(axis=axis, keepdims=True)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=axis) / np.log(base)


def _weighted_specificity(r: np.ndarray, axis: int) -> float:
    """sum_i rho_i (1 - H(R_i / sum R_i)) over the rows (axis=1) or columns (axis=0) of R."""
    per_item = 1.0 - _normalised_entropy(r + _EPS, axis=axis, base=r.shape[axis])
    weights = np.ones_like(r) if r.sum() == 0 else r
    return float(np.sum(per_item * weights.sum(axis=axis) / weights.sum()))


def disentanglement_score(importance) -> float:
    """sum_k rho_k (1 - H_J(R_k. / sum_j R_kj)) for an importance matrix R ``[K, J]``."""
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"importance must be [K, J >= 2], got shape {r.shape}")
    return _weighted_specificity(r, axis=1)


def completeness_score(importance) -> float:
    """sum_j rho_j (1 - H_K(R_.j / sum_k R_kj)) for an importance matrix R ``[K, J]``."""
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"importance must be [K >= 2, J], got shape {r.shape}")
    return _weighted_specificity(r, axis=0)


def _fit_one(codes_train, target_train, codes_test, target_test, seed):
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=seed)
    model.fit(codes_train, target_train)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(codes_train) == target_train)),
            float(np.mean(model.predict(codes_test) == target_test)))


def importance_matrix(codes_train, factors_train, codes_test, factors_test, seed: int = 0,
                      n_jobs: int | None = None, progress: bool = False) -> tuple[np.ndarray, float, float]:
    """R ``[K, J]`` from one gradient-boosted classifier per factor; mean train and test accuracy.

    The J fits run in ``n_jobs`` threads (default: the CPU count; scikit-learn's tree building
    releases the GIL), with ``random_state=seed``, so the result does not depend on ``n_jobs``.
    """
    x_tr = as_codes(codes_train, "codes_train")
    y_tr = as_factors(factors_train, n=x_tr.shape[0], name="factors_train")
    x_te = as_codes(codes_test, "codes_test")
    y_te = as_factors(factors_test, n=x_te.shape[0], name="factors_test")
    if x_te.shape[1] != x_tr.shape[1] or y_te.shape[1] != y_tr.shape[1]:
        raise ValueError("the train and test sets must have the same code and factor columns")
    single = [j for j in range(y_tr.shape[1]) if np.unique(y_tr[:, j]).size < 2]
    if single:
        raise ValueError(f"factor column(s) {single} take a single value in the training points; a classifier "
                         "needs at least two classes: drop those columns")
    jobs = n_jobs or os.cpu_count() or 1
    tasks = [(x_tr, y_tr[:, j], x_te, y_te[:, j], seed) for j in range(y_tr.shape[1])]
    # the factors with the most classes (most trees) first, so that the threads finish together
    order = sorted(range(len(tasks)), key=lambda j: -np.unique(y_tr[:, j]).size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc="DCI gradient-boosted trees", unit="factor", dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks)))) as pool:
            futures = {j: pool.submit(_fit_one, *tasks[j]) for j in order}
            for f in as_completed(futures.values()):
                f.result()
                if bar is not None:
                    bar.update(1)
            results = [futures[j].result() for j in range(len(tasks))]
    finally:
        if bar is not None:
            bar.close()
    r = np.stack([imp for imp, _, _ in results], axis=1)
    return r, float(np.mean([a for _, a, _ in results])), float(np.mean([a for _, _, a in results]))


def dci(codes, factors, num_train: int = 10_000, num_test: int = 5_000, seed: int = 0,
        n_jobs: int | None = None, progress: bool = False) -> DCIResult:
    """DCI of point codes ``[N, K]`` against integer factors ``[N, J]`` (module docstring).

    Draws ``num_train`` training and ``num_test`` test items without replacement with
    ``numpy.random.default_rng(seed)`` (when there are fewer than ``num_train + num_test`` items,
    all of them, split in the same proportion).  Works on any representation.  With a single
    factor the disentanglement (entropy over factors, base J = 1) is undefined and reported as nan.
    """
    x = as_codes(codes, min_dims=2)
    y = as_factors(factors, n=x.shape[0])
    num_train = check_num(num_train, "num_train", 1)
    num_test = check_num(num_test, "num_test", 1)
    train, test = draw_rows(x.shape[0], (num_train, num_test), seed)
    r, acc_train, acc_test = importance_matrix(x[train], y[train], x[test], y[test], seed=seed, n_jobs=n_jobs,
                                               progress=progress)
    return DCIResult(disentanglement=disentanglement_score(r) if r.shape[1] >= 2 else float("nan"),
                     completeness=completeness_score(r), informativeness=acc_test,
                     informativeness_train=acc_train, importance=r)


__all__ = ["DCIResult", "completeness_score", "dci", "disentanglement_score", "importance_matrix"]
