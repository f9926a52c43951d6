"""Clustering metrics: accuracy under the best one-to-one map, NMI, ARI, the confusion matrix.

Accuracy maps clusters to labels one-to-one so as to maximise the matched count (the
Hungarian algorithm, scipy's ``linear_sum_assignment``), the usual score of unsupervised
clustering (e.g. Hu et al. 2017, IMSAT); NMI and ARI are scikit-learn's.  All of them are
invariant to a relabelling of the clusters.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from imae.metrics._arrays import as_int_array


def confusion_matrix(labels, assignments) -> np.ndarray:
    """Counts ``C[a, l]`` of items assigned to cluster ``a`` with true label ``l`` (ids re-indexed)."""
    labels = as_int_array(labels, "labels")
    assignments = as_int_array(assignments, "assignments")
    if labels.shape != assignments.shape:
        raise ValueError(f"labels {labels.shape} and assignments {assignments.shape} differ in length")
    _, l_idx = np.unique(labels, return_inverse=True)
    _, a_idx = np.unique(assignments, return_inverse=True)
    counts = np.zeros((a_idx.max(initial=-1) + 1, l_idx.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(counts, (a_idx, l_idx), 1)
    return counts


def cluster_accuracy(labels, assignments) -> float:
    """Accuracy of ``assignments`` under the best one-to-one map of clusters to labels.

    The map maximises the matched count (Hungarian algorithm, ``linear_sum_assignment``);
    clusters left unmatched (more clusters than labels) count as errors.
    """
    counts = confusion_matrix(labels, assignments)
    if counts.size == 0:
        raise ValueError("cluster_accuracy needs at least one item")
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def nmi(labels, assignments) -> float:
    """Normalised mutual information (scikit-learn, arithmetic normalisation)."""
    return float(normalized_mutual_info_score(as_int_array(labels, "labels"), as_int_array(assignments, "assignments")))


def ari(labels, assignments) -> float:
    """Adjusted Rand index (scikit-learn)."""
    return float(adjusted_rand_score(as_int_array(labels, "labels"), as_int_array(assignments, "assignments")))


__all__ = ["ari", "cluster_accuracy", "confusion_matrix", "nmi"]
