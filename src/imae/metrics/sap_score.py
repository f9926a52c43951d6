"""The Separated Attribute Predictability (SAP) score.

Kumar, Sattigeri & Balakrishnan (2018), "Variational Inference of Disentangled Latent Concepts
from Unlabeled Observations", Section 3, as disentanglement_lib computes it (Locatello et al.
2019, ``evaluation/metrics/sap_score.py``):

* score matrix S ``[K, J]``: for discrete factors (disentanglement_lib's study setting), S_kj is
  the test accuracy of a linear SVM (``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")``)
  predicting factor j from code dimension k alone -- a set of thresholds on one number; for
  continuous factors, the squared correlation of c_k and v_j (0 when Var[c_k] <= 1e-12);
* SAP = mean over factors of the gap between the two largest S_kj over k.

Defaults: 10,000 training and 5,000 test items, drawn without replacement with
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from imae.metrics._arrays import as_codes, as_factors, check_num, draw_rows


@dataclass(frozen=True)
class SAPResult:
    """``score`` and the ``[K, J]`` score matrix."""

    score: float
    score_matrix: np.ndarray

    def as_dict(self) -> dict:
        return {"score": self.score, "score_matrix": self.score_matrix.tolist()}


def sap_score_matrix(codes_train, factors_train, codes_test=None, factors_test=None,
                     continuous_factors: bool = False, seed: int = 0) -> np.ndarray:
    """S ``[K, J]``: per code dimension and factor, 1-D linear-SVM test accuracy (discrete factors)
    or squared correlation on the training items (``continuous_factors``)."""
    x = as_codes(codes_train, "codes_train")
    y = as_factors(factors_train, n=x.shape[0], name="factors_train")
    k, j = x.shape[1], y.shape[1]
    single = [col for col in range(j) if np.unique(y[:, col]).size < 2]
    if single:
        raise ValueError(f"factor column(s) {single} take a single value in the training items; drop them")
    s = np.zeros((k, j))
    if continuous_factors:
        for a in range(k):
            for b in range(j):
                cov = np.cov(x[:, a], y[:, b], ddof=1)
                s[a, b] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
        return s
    if codes_test is None or factors_test is None:
        raise ValueError("discrete-factor SAP needs held-out codes_test and factors_test")
    xt = as_codes(codes_test, "codes_test")
    yt = as_factors(factors_test, n=xt.shape[0], name="factors_test")
    if xt.shape[1] != k or yt.shape[1] != j:
        raise ValueError("the train and test sets must have the same code and factor columns")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for a in range(k):
            for b in range(j):
                clf = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                clf.fit(x[:, a : a + 1], y[:, b])
                s[a, b] = np.mean(clf.predict(xt[:, a : a + 1]) == yt[:, b])
    return s


def sap(codes, factors, num_train: int = 10_000, num_test: int = 5_000, seed: int = 0,
        continuous_factors: bool = False) -> SAPResult:
    """SAP of point codes ``[N, K]`` against integer factors ``[N, J]`` (module docstring).

    Works on any representation; with fewer than ``num_train + num_test`` items, all of them
    are used, split in the same proportion.
    """
    x = as_codes(codes, min_dims=2)
    y = as_factors(factors, n=x.shape[0])
    num_train = check_num(num_train, "num_train", 1)
    num_test = check_num(num_test, "num_test", 1)
    train, test = draw_rows(x.shape[0], (num_train, num_test), seed)
    s = sap_score_matrix(x[train], y[train], x[test], y[test], continuous_factors=continuous_factors, seed=seed)
    ordered = np.sort(s, axis=0)
    return SAPResult(score=float(np.mean(ordered[-1] - ordered[-2])), score_matrix=s)


__all__ = ["SAPResult", "sap", "sap_score_matrix"]
