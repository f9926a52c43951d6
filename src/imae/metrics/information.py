"""Information diagnostics of a hybrid code: I(x; y), Proposition 1's bounds on I(x; z_k), the
quantities of Figure 1(a), active dimensions, the total correlation and marginal KL of the
aggregate posterior, and the reconstruction likelihood.

Equation numbers refer to Zhang, Zhao & Balzano, "Information Maximization Auto-Encoding"
(2018).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from imae.latent import categorical_entropy


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


def aggregate_posterior_divergences(z_mean: torch.Tensor, z_logvar: torch.Tensor, prior_std: float = 1.0,
                                    n_samples: int = 10_000, seed: int = 0, fast: bool | None = None,
                                    progress: bool = False, device=None) -> dict[str, float]:
    """Total correlation TC(z) and sum_k KL(q(z_k) || r(z_k)) of the aggregate posterior, full-data estimates.

    q(z) = (1/N) sum_n q(z | x_n) is the mixture of all N posteriors (no minibatch offsets).  One
    z_n ~ q(z | x_n) is drawn per item with ``torch.Generator().manual_seed(seed)``; with more than
    ``n_samples`` items a random ``n_samples`` of them (drawn next from the same generator) are
    the Monte Carlo points, as in Chen et al.'s full-data estimators, so the cost stays
    ``n_samples x N x K`` on large sets (the dSprites grid).  Then

        TC = mean_s [log q(z_s) - sum_k log q(z_sk)],
        KL_marginal = sum_k mean_s [log q(z_sk) - log r(z_sk)],   r = N(0, prior_std^2)

    (the last term of eq. 3 and minus L(z) of eq. 6).  ``device``: where the N x n_samples
    log-densities are computed (default: the device of ``z_mean``); ``fast`` as in
    :func:`imae.metrics.mig_posterior.chen_entropies`.
    """
    from imae.metrics._mixture import mixture_log_densities

    mean, logvar = z_mean.double().cpu(), z_logvar.double().cpu()
    generator = torch.Generator().manual_seed(seed)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, dtype=torch.float64)
    if z.shape[0] > n_samples:
        z = z[torch.randperm(z.shape[0], generator=generator)[:n_samples]]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=z.shape[0] * mean.shape[0], desc="total correlation", unit="pair", unit_scale=True,
                   dynamic_ncols=True)
    try:
        device = torch.device(device) if device is not None else z_mean.device
        joint, marginals = mixture_log_densities(z.to(device), mean.to(device), logvar.to(device), fast=fast,
                                                 progress=bar)
        joint, marginals = joint.cpu(), marginals.cpu()
    finally:
        if bar is not None:
            bar.close()
    log_prior = -0.5 * (math.log(2 * math.pi) + 2 * math.log(prior_std) + z**2 / prior_std**2)
    return {"tc": float((joint - marginals.sum(dim=1)).mean()),
            "marginal_kl": float((marginals - log_prior).mean(dim=0).sum())}


def mean_bce_nats(probs_or_logits: torch.Tensor, x: torch.Tensor, logits: bool = True) -> float:
    """Bernoulli negative log-likelihood in nats per image, summed over pixels, averaged over images.

    Computed in the floating dtype of ``probs_or_logits`` (float32 decoder outputs stay float32:
    ten times faster than float64 on the 3 billion pixels of the dSprites grid, with a relative
    error near 1e-7); the per-image sums are averaged in float64.
    """
    f = torch.nn.functional
    if not probs_or_logits.is_floating_point():
        probs_or_logits = probs_or_logits.double()
    x = x.to(probs_or_logits.dtype)
    if logits:
        bce = f.binary_cross_entropy_with_logits(probs_or_logits, x, reduction="none")
    else:
        bce = f.binary_cross_entropy(probs_or_logits, x, reduction="none")
    return float(bce.sum(dim=1).double().mean())


__all__ = [
    "active_dimensions", "aggregate_posterior_divergences", "latent_statistics", "mean_bce_nats", "mi_xz_lower_bound", "mi_xz_upper_bound",
    "mutual_information_xy",
]
