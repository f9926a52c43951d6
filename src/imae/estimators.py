"""Minibatch estimators of the terms the objectives are assembled from.

Each function is pure: tensors in, a tensor out, no module state.  Equation numbers refer to
Zhang, Zhao & Balzano, "Information Maximization Auto-Encoding" (2018); other terms cite their
source.  Shapes: ``M`` is the batch size, ``K`` the dimension of z, ``C`` the number of
categories of y, ``N`` the size of the data set the batch was drawn from.

Every estimator accepts leading dimensions before the batch dimension: an ensemble of E models
passes ``[E, M, K]`` and gets one value per member ``[E]`` (the batch axis is always ``-2`` of a
per-sample tensor, and ``-1`` of a per-sample scalar).  Scalar hyper-parameters (``prior_std``,
``eps``) may be tensors of shape ``[E]``, one value per member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from imae.latent import LOG_2PI, categorical_entropy, categorical_kl, gaussian_log_density

TC_ESTIMATORS = ("mws", "mss")


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E[log q(x | y, z)] for a Bernoulli decoder: summed over pixels, averaged over the batch.

    The reconstruction term of eq. 8 (and of eq. 2).  ``logits`` are the decoder's pre-sigmoid
    outputs; ``x`` holds pixel intensities in [0, 1] (grey levels act as soft targets).
    Computed with ``binary_cross_entropy_with_logits``, which is stable in log-space.
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return -bce.sum(dim=-1).mean(dim=-1)


def gaussian_kl_to_prior(mean: torch.Tensor, logvar: torch.Tensor, prior_std: float = 1.0) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, prior_std^2)) per sample, summed over dimensions: ``[M]``.

    Closed form 0.5 * sum_k (s_k^2/r^2 + m_k^2/r^2 - 1 - log s_k^2 + log r^2).
    """
    prior_logvar = 2.0 * torch.log(per_member(prior_std, mean))
    ratio = torch.exp(logvar - prior_logvar)
    kl = 0.5 * (ratio + mean.pow(2) * torch.exp(-prior_logvar) - 1.0 - logvar + prior_logvar)
    return kl.sum(dim=-1)


def categorical_kl_to_uniform(log_probs: torch.Tensor) -> torch.Tensor:
    """KL(p || uniform over C) = log C - H(p) per sample: ``[M]``."""
    return math.log(log_probs.shape[-1]) - categorical_entropy(log_probs)


def batch_marginal_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """H( (1/M) sum_m p(y | x_m) ): entropy of the batch-averaged class distribution (eq. 7, first term).

    The average is formed in log-space by a logsumexp over the batch.
    """
    log_marginal = torch.logsumexp(log_probs, dim=-2) - math.log(log_probs.shape[-2])
    return categorical_entropy(log_marginal)


def batch_conditional_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """(1/M) sum_m H( p(y | x_m) ): the mean entropy of the class posteriors (eq. 7, second term)."""
    return categorical_entropy(log_probs).mean(dim=-1)


def discrete_mutual_information(log_probs: torch.Tensor) -> torch.Tensor:
    """Minibatch mutual information between x and y, eq. 7.

    I_hat(x; y) = H( (1/M) sum_m p(y | x_m) ) - (1/M) sum_m H( p(y | x_m) ).
    """
    return batch_marginal_entropy(log_probs) - batch_conditional_entropy(log_probs)


def pairwise_gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_ik | x_j) for every sample i and posterior j of a batch: ``[M, M, K]``.

    Written as ``c_jk + d_ijk * (d_ijk * h_jk)`` with d = z_i - mu_j, h = -1/(2 sigma^2) and
    c = -(log 2 pi + log sigma^2)/2, so only three passes touch the M x M x K tensor (the
    constants are computed on the M x K posteriors).  Leading dimensions broadcast.
    """
    half_precision = (-0.5 * torch.exp(-logvar)).unsqueeze(-3)
    constant = (-0.5 * (LOG_2PI + logvar)).unsqueeze(-3)
    diff = z.unsqueeze(-2) - mean.unsqueeze(-3)
    return torch.addcmul(constant, diff, diff * half_precision)


def log_importance_weights(batch_size: int, dataset_size: int, estimator: str, device=None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """log w_ij of the minibatch estimators of the aggregate posterior q(z_i) = sum_j w_ij q(z_i | x_j).

    ``"mws"`` (minibatch weighted sampling, Chen et al. 2018, eq. S6): w_ij = 1 / (N M) for all j.
    ``"mss"`` (minibatch stratified sampling, Chen et al. 2018, App. C.2): z_i was drawn from
    q(z | x_i), so its own posterior gets w_ii = 1 / N and the other M - 1 batch members, a
    uniform sample of the remaining N - 1 points, share the rest: w_ij = (N - 1) / (N (M - 1)).
    The MSS weights of each row sum to 1 (for M >= 2), so with M = N it is exact.
    """
    m, n = batch_size, dataset_size
    if n < m:
        raise ValueError(f"dataset_size ({n}) must be at least the batch size ({m})")
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), device=device, dtype=dtype)
    if estimator == "mss":
        if m == 1:
            return torch.full((1, 1), -math.log(n), device=device, dtype=dtype)
        log_w = torch.full((m, m), math.log(n - 1) - math.log(n * (m - 1)), device=device, dtype=dtype)
        log_w.fill_diagonal_(-math.log(n))
        return log_w
    raise ValueError(f"unknown TC estimator {estimator!r}; use one of {TC_ESTIMATORS}")


@dataclass
class AggregateLogDensity:
    """Minibatch estimates of the aggregate posterior at the batch's own samples.

    ``joint[i]`` = log q(z_i), ``marginals[i, k]`` = log q(z_ik), where q(z) = E_x q(z | x).
    """

    joint: torch.Tensor
    marginals: torch.Tensor


def aggregate_log_density(
    z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, dataset_size: int, estimator: str = "mws"
) -> AggregateLogDensity:
    """log q(z_i) and log q(z_ik) of the aggregate posterior, by MWS or MSS (Chen et al. 2018).

    The joint uses sum_k log q(z_ik | x_j) and the marginals log q(z_ik | x_j), each combined
    with the importance weights of :func:`log_importance_weights` by a logsumexp over j.
    """
    m = z.shape[-2]
    log_q = pairwise_gaussian_log_density(z, mean, logvar)  # [..., M, M, K]
    if estimator == "mws":
        # constant weights 1/(NM): add log w after the logsumexp instead of to every entry
        log_w = -math.log(dataset_size * m)
        if dataset_size < m:
            raise ValueError(f"dataset_size ({dataset_size}) must be at least the batch size ({m})")
        joint = torch.logsumexp(log_q.sum(dim=-1), dim=-1) + log_w
        marginals = torch.logsumexp(log_q, dim=-2) + log_w
    else:
        log_w = log_importance_weights(m, dataset_size, estimator, device=z.device, dtype=z.dtype)
        joint = torch.logsumexp(log_q.sum(dim=-1) + log_w, dim=-1)
        marginals = torch.logsumexp(log_q + log_w.unsqueeze(-1), dim=-2)
    return AggregateLogDensity(joint=joint, marginals=marginals)


def total_correlation(aggregate: AggregateLogDensity) -> torch.Tensor:
    """TC(z) = KL(q(z) || prod_k q(z_k)) ~ (1/M) sum_i [log q(z_i) - sum_k log q(z_ik)].

    The last term of eq. 3 and the gamma-weighted term of eq. 8.
    """
    return (aggregate.joint - aggregate.marginals.sum(dim=-1)).mean(dim=-1)


def marginal_kl_to_prior(aggregate: AggregateLogDensity, z: torch.Tensor, prior_std: float = 1.0) -> torch.Tensor:
    """sum_k KL(q(z_k) || r(z_k)) with r(z_k) = N(0, prior_std^2), on the aggregate marginals.

    Monte Carlo over the batch's samples: sum_k (1/M) sum_i [log q(z_ik) - log r(z_ik)].
    L(z) of eq. 6 is minus this value.  (It is also beta-TCVAE's dimension-wise KL.)
    """
    log_prior = gaussian_log_density(z, torch.zeros((), dtype=z.dtype, device=z.device),
                                     2.0 * torch.log(per_member(prior_std, z)))
    return (aggregate.marginals - log_prior).sum(dim=-1).mean(dim=-1)


def per_member(value, like: torch.Tensor) -> torch.Tensor:
    """A hyper-parameter as a tensor that broadcasts against ``like`` ``[..., M, F]``.

    A Python number becomes a 0-d tensor; a tensor of one value per ensemble member ``[E]`` is
    viewed as ``[E, 1, 1]``.
    """
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t
    if t.dim() != 1 or like.dim() < 3 or t.shape[0] != like.shape[0]:
        raise ValueError(f"per-member value of shape {tuple(t.shape)} does not match a batch of shape {tuple(like.shape)}")
    return t.view(-1, *([1] * (like.dim() - 1)))


def _unit_rows(d: torch.Tensor) -> torch.Tensor:
    """Each example (last axis) scaled to unit L2 norm (a zero row stays zero)."""
    norm = d.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, d / torch.where(norm > 0, norm, torch.ones_like(norm)), d)


def virtual_adversarial_perturbation(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    clean_log_probs: torch.Tensor,
    eps: float,
    xi: float = 1e-6,
    power_iterations: int = 1,
) -> torch.Tensor:
    """r_adv of eq. 9: the direction within the eps-ball that most changes p(y | x).

    Power iteration (Miyato et al.): start from a random unit direction d, take the gradient of
    KL(p(y|x) || p(y|x + xi d)) with respect to d, normalise it per example, repeat; return
    eps * d.  The clean prediction is a constant.  Gradients reach only d, not the parameters.
    """
    clean = clean_log_probs.detach()
    d = _unit_rows(torch.randn_like(x))
    for _ in range(power_iterations):
        d = (xi * d).requires_grad_(True)
        kl = categorical_kl(clean, log_prob_fn(x + d)).sum()
        (grad,) = torch.autograd.grad(kl, d, allow_unused=True)
        d = torch.zeros_like(x) if grad is None else _unit_rows(grad.detach())
    return per_member(eps, d) * d


def virtual_adversarial_loss(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    clean_log_probs: torch.Tensor,
    eps: float,
    xi: float = 1e-6,
    power_iterations: int = 1,
) -> torch.Tensor:
    """The VAT smoothness penalty of eq. 9: (1/M) sum_m KL(p(y|x_m) || p(y|x_m + r_adv,m)).

    ``log_prob_fn`` maps inputs to log p(y | x); the clean prediction is held constant, so the
    gradient flows through the perturbed prediction only.
    """
    r_adv = virtual_adversarial_perturbation(log_prob_fn, x, clean_log_probs, eps, xi, power_iterations)
    return categorical_kl(clean_log_probs.detach(), log_prob_fn(x + r_adv)).mean(dim=-1)


def dataset_aggregate_log_density(
    z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, max_elements: int = 1 << 24
) -> AggregateLogDensity:
    """log q(z_i) and log q(z_ik) with q the mixture of all N posteriors of a data set.

    q(z) = (1/N) sum_n q(z | x_n), evaluated at samples ``z`` ``[S, K]`` against the posteriors
    ``mean``, ``logvar`` ``[N, K]``; chunked over the samples so that at most ``max_elements``
    log-densities are held at once.  This is the full-data estimator of Chen et al. (2018) used
    for evaluation, where the minibatch estimators above are used for training.
    """
    n, k = mean.shape
    chunk = max(1, max_elements // max(1, n * k))
    joints, marginals = [], []
    for start in range(0, z.shape[0], chunk):
        log_q = pairwise_gaussian_log_density(z[start : start + chunk], mean, logvar)  # [c, N, K]
        joints.append(torch.logsumexp(log_q.sum(dim=-1), dim=-1) - math.log(n))
        marginals.append(torch.logsumexp(log_q, dim=-2) - math.log(n))
    return AggregateLogDensity(joint=torch.cat(joints), marginals=torch.cat(marginals))
