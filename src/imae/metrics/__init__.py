"""Evaluation metrics: pure functions of representations, posteriors, labels and factors.

=====================  =========================================================================
module                 what
=====================  =========================================================================
``clustering``         accuracy under the best one-to-one map (Hungarian), NMI, ARI, confusion
``information``        I(x; y), Proposition 1's bounds on I(x; z_k), Figure 1(a)'s statistics,
                       active dimensions, TC and marginal KL, reconstruction likelihood
``mig_histogram``      MIG, disentanglement_lib's histogram estimator on point codes: ``mig``
``mig_posterior``      MIG, Chen et al.'s (2018) estimator on Gaussian posteriors (the paper's):
                       ``mig_chen``
``dci_scores``         Eastwood & Williams's (2018) disentanglement, completeness, informativeness:
                       ``dci``
``factor_vae``         Kim & Mnih's (2018) FactorVAE score: ``factor_vae_score``
``sap_score``          Kumar et al.'s (2018) SAP score: ``sap``
=====================  =========================================================================

(The modules are named apart from the functions, so ``imae.metrics.mig`` is the function.)
The disentanglement metrics take a representation ``[N, K]`` (numpy or torch; from any model)
and integer ground-truth factors ``[N, J]``; those that sample do so with a ``seed``.  Each
module's docstring gives the definition and the reference it follows.
"""

from __future__ import annotations

from imae.metrics.clustering import ari, cluster_accuracy, confusion_matrix, nmi
from imae.metrics.dci_scores import DCIResult, completeness_score, dci, disentanglement_score, importance_matrix
from imae.metrics.factor_vae import FactorVAEResult, factor_vae_score
from imae.metrics.information import (
    active_dimensions,
    aggregate_posterior_divergences,
    latent_statistics,
    mean_bce_nats,
    mi_xz_lower_bound,
    mi_xz_upper_bound,
    mutual_information_xy,
)
from imae.metrics.mig_histogram import (
    MIGResult,
    discrete_entropy,
    discrete_mutual_info,
    gap_score,
    histogram_discretize,
    mig,
    mig_details,
)
from imae.metrics.mig_posterior import ChenEntropies, chen_entropies, mig_chen, mig_chen_details
from imae.metrics.sap_score import SAPResult, sap, sap_score_matrix

__all__ = [
    "ChenEntropies", "DCIResult", "FactorVAEResult", "MIGResult", "SAPResult",
    "active_dimensions", "aggregate_posterior_divergences", "ari", "chen_entropies", "cluster_accuracy", "completeness_score", "confusion_matrix",
    "dci", "discrete_entropy", "discrete_mutual_info", "disentanglement_score", "factor_vae_score", "gap_score",
    "histogram_discretize", "importance_matrix", "latent_statistics", "mean_bce_nats", "mi_xz_lower_bound",
    "mi_xz_upper_bound", "mig", "mig_chen", "mig_chen_details", "mig_details", "mutual_information_xy", "nmi",
    "sap", "sap_score_matrix",
]
