"""Evaluation metrics: pure functions of labels, assignments, posteriors and codes.

Clustering: accuracy under the best one-to-one map (Hungarian, scipy's linear_sum_assignment),
NMI and ARI (scikit-learn), the confusion matrix.  Information: the empirical I(x; y) over a
whole set, Proposition 1's bounds on I(x; z_k) (eqs. 4 and 5), the quantities of Figure 1(a)
and which z dimensions are active.
"""

from __future__ import annotations


import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from imae.latent import categorical_entropy


def _as_int_array(values, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer classes")
        arr = arr.astype(np.int64)
    return arr


def confusion_matrix(labels, assignments) -> np.ndarray:
    """Counts ``C[a, l]`` of items assigned to cluster ``a`` with true label ``l`` (ids re-indexed)."""
    labels = _as_int_array(labels, "labels")
    assignments = _as_int_array(assignments, "assignments")
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
    return float(normalized_mutual_info_score(_as_int_array(labels, "labels"), _as_int_array(assignments, "assignments")))


def ari(labels, assignments) -> float:
    """Adjusted Rand index (scikit-learn)."""
    return float(adjusted_rand_score(_as_int_array(labels, "labels"), _as_int_array(assignments, "assignments")))


def mutual_information_xy(y_prob: torch.Tensor) -> float:
    """Empirical I(x; y) in nats over a whole set: H(mean_n p(y|x_n)) - mean_n H(p(y|x_n)) (eq. 7)."""
    log_p = torch.log(y_prob.double())
    marginal = y_prob.double().mean(dim=0)
    return float(categorical_entropy(torch.log(marginal)) - categorical_entropy(log_p).mean())


def latent_statistics(z_mean: torch.Tensor, z_logvar: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-dimension Var_x[mu_k(x)], E_x[sigma_k^2(x)] and E_x[log sigma_k^2(x)] (Figure 1(a))."""
    mean, logvar = z_mean.double(), z_logvar.double()
    return {
        "var_mean": mean.var(dim=0, unbiased=False).numpy(),
        "mean_var": logvar.exp().mean(dim=0).numpy(),
        "mean_logvar": logvar.mean(dim=0).numpy(),
    }


def mi_xz_upper_bound(z_mean: torch.Tensor, z_logvar: torch.Tensor) -> np.ndarray:
    """Proposition 1, eq. 4: I(x; z_k) <= 1/2 log(E[sigma_k^2] + Var[mu_k]) - 1/2 E[log sigma_k^2]."""
    s = latent_statistics(z_mean, z_logvar)
    return 0.5 * np.log(s["mean_var"] + s["var_mean"]) - 0.5 * s["mean_logvar"]


def mi_xz_lower_bound(z_mean: torch.Tensor, z_logvar: torch.Tensor) -> np.ndarray:
    """Proposition 1, eq. 5: I(x; z_k) >= 1/2 log(1 + Var[mu_k] / E[sigma_k^2]) (z_k Gaussian)."""
    s = latent_statistics(z_mean, z_logvar)
    return 0.5 * np.log1p(s["var_mean"] / s["mean_var"])


def active_dimensions(z_mean: torch.Tensor, z_logvar: torch.Tensor, threshold_nats: float = 0.1) -> np.ndarray:
    """Indices k whose Proposition-1 lower bound on I(x; z_k) exceeds ``threshold_nats``."""
    return np.flatnonzero(mi_xz_lower_bound(z_mean, z_logvar) > threshold_nats)


def mean_bce_nats(probs_or_logits: torch.Tensor, x: torch.Tensor, logits: bool = True) -> float:
    """Bernoulli negative log-likelihood in nats per image, summed over pixels, averaged over images."""
    f = torch.nn.functional
    if logits:
        bce = f.binary_cross_entropy_with_logits(probs_or_logits.double(), x.double(), reduction="none")
    else:
        bce = f.binary_cross_entropy(probs_or_logits.double(), x.double(), reduction="none")
    return float(bce.sum(dim=1).mean())


__all__ = [
    "active_dimensions", "ari", "cluster_accuracy", "confusion_matrix", "latent_statistics",
    "mean_bce_nats", "mi_xz_lower_bound", "mi_xz_upper_bound", "mutual_information_xy", "nmi",
]
