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


def marginal_kl_to_uniform(log_probs: torch.Tensor) -> torch.Tensor:
    """KL( (1/M) sum_m p(y | x_m) || uniform over C ) = log C - H(batch-averaged p(y)).

    The divergence of the aggregate posterior of y from r(y) (term 3 of Figure 4): InfoVAE's
    y term and beta-TCVAE's dimension-wise KL of y.  The per-sample KL (``categorical_kl_to_uniform``)
    averaged over the batch is this plus the minibatch I(x; y) of eq. 7.
    """
    return math.log(log_probs.shape[-1]) - batch_marginal_entropy(log_probs)


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
    Forward and backward run in :class:`_MinibatchAggregateLogDensity`, which touches the
    M x M x K tensor in fewer passes than autograd would (about 40% less time at M = 256).
    """
    m = z.shape[-2]
    if estimator == "mws":
        if dataset_size < m:
            raise ValueError(f"dataset_size ({dataset_size}) must be at least the batch size ({m})")
        # constant weights 1/(NM): add log w after the logsumexp instead of to every entry
        log_w = -math.log(dataset_size * m)
        joint, marginals = _MinibatchAggregateLogDensity.apply(z, mean, logvar, None)
        return AggregateLogDensity(joint=joint + log_w, marginals=marginals + log_w)
    log_w = log_importance_weights(m, dataset_size, estimator, device=z.device, dtype=z.dtype)
    joint, marginals = _MinibatchAggregateLogDensity.apply(z, mean, logvar, log_w)
    return AggregateLogDensity(joint=joint, marginals=marginals)


class _MinibatchAggregateLogDensity(torch.autograd.Function):
    """(joint, marginals) = logsumexp over j of log w_ij + log q(z_i | x_j), jointly and per dimension.

    With D_ijk = log q(z_ik | x_j) = c_jk + h_jk (z_ik - mu_jk)^2 (h = -1/(2 sigma^2),
    c = -(log 2 pi + log sigma^2)/2), joint_i = logsumexp_j (log w_ij + sum_k D_ijk) and
    marginals_ik = logsumexp_j (log w_ij + D_ijk); ``log_w`` ``[M, M]`` or None for w = 1.

    The backward pass is written out: with G_ijk = g_marginals_ik softmax_j(.)_ijk +
    g_joint_i softmax_j(.)_ij, the gradients are dL/dc_jk = sum_i G, dL/dh_jk = sum_i G d^2,
    dL/dz_ik = 2 sum_j G h d and dL/dmu_jk = -2 sum_i G h d (d = z_ik - mu_jk).  Only the
    difference tensor and the per-dimension softmax weights are kept for it.
    """

    @staticmethod
    def forward(ctx, z, mean, logvar, log_w):
        half_precision = -0.5 * torch.exp(-logvar)  # h_jk
        constant = -0.5 * (LOG_2PI + logvar)  # c_jk
        diff = z.unsqueeze(-2) - mean.unsqueeze(-3)  # [..., i, j, K]
        log_q = torch.addcmul(constant.unsqueeze(-3), diff, diff * half_precision.unsqueeze(-3))
        joint_terms = log_q.sum(dim=-1)  # [..., i, j]
        if log_w is not None:
            joint_terms = joint_terms + log_w
            log_q.add_(log_w.unsqueeze(-1))
        peak = log_q.amax(dim=-2, keepdim=True)
        weights = log_q.sub_(peak).exp_()  # reuses log_q's memory
        total = weights.sum(dim=-2, keepdim=True)
        marginals = (peak + total.log()).squeeze(-2)
        weights.div_(total)  # softmax over j, per (i, k)
        joint = torch.logsumexp(joint_terms, dim=-1)
        joint_weights = torch.softmax(joint_terms, dim=-1)
        ctx.save_for_backward(diff, half_precision, weights, joint_weights)
        return joint, marginals

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_joint, grad_marginals):
        diff, half_precision, weights, joint_weights = ctx.saved_tensors
        g = torch.addcmul((joint_weights * grad_joint.unsqueeze(-1)).unsqueeze(-1),
                          weights, grad_marginals.unsqueeze(-2))  # dL/dD_ijk
        grad_constant = g.sum(dim=-3)
        g.mul_(diff)
        grad_half_precision = (g * diff).sum(dim=-3)
        g.mul_(half_precision.unsqueeze(-3))
        grad_z = 2.0 * g.sum(dim=-2)
        grad_mean = -2.0 * g.sum(dim=-3)
        grad_logvar = grad_half_precision * (-half_precision) - 0.5 * grad_constant
        return grad_z, grad_mean, grad_logvar, None


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


def posterior_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_i | x_i) = sum_k log N(z_ik; mu_ik, sigma_ik^2): each sample under its own posterior, ``[M]``."""
    return gaussian_log_density(z, mean, logvar).sum(dim=-1)


def prior_log_density(z: torch.Tensor, prior_std: float = 1.0) -> torch.Tensor:
    """log r(z_i) = sum_k log N(z_ik; 0, prior_std^2), ``[M]``; ``prior_std`` may be per member ``[E]``."""
    return gaussian_log_density(z, torch.zeros((), dtype=z.dtype, device=z.device),
                                2.0 * torch.log(per_member(prior_std, z))).sum(dim=-1)


def index_code_mutual_information(aggregate: AggregateLogDensity, z: torch.Tensor, mean: torch.Tensor,
                                  logvar: torch.Tensor) -> torch.Tensor:
    """I(x; z) ~ (1/M) sum_i [log q(z_i | x_i) - log q(z_i)]: the index-code MI of Chen et al. (2018).

    The first term of their decomposition
    E_x KL(q(z|x) || r(z)) = I(x; z) + TC(z) + sum_k KL(q(z_k) || r(z_k)),
    with log q(z_i) from :func:`aggregate_log_density`.  Under ``mws`` log q(z_i) carries the
    offset -log N of the weights 1/(NM) (see the README), so this estimate is shifted by +log N,
    TC by +(K - 1) log N and the dimension-wise KL by -K log N: the offsets cancel in the sum,
    which equals :func:`posterior_kl_monte_carlo` exactly for either estimator.
    """
    return (posterior_log_density(z, mean, logvar) - aggregate.joint).mean(dim=-1)


def posterior_kl_monte_carlo(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                             prior_std: float = 1.0) -> torch.Tensor:
    """E_x KL(q(z|x) || r(z)) ~ (1/M) sum_i [log q(z_i | x_i) - log r(z_i)], one sample per x_i.

    The batch estimate that beta-TCVAE's three terms add up to (index-code MI + TC +
    dimension-wise KL); its expectation over z is the batch mean of :func:`gaussian_kl_to_prior`.
    """
    return (posterior_log_density(z, mean, logvar) - prior_log_density(z, prior_std)).mean(dim=-1)


# ----------------------------------------------------------------------------- MMD (InfoVAE)

#: kernels of :func:`maximum_mean_discrepancy`
MMD_KERNELS = ("gaussian", "gaussian_dim2", "imq")


def mmd_kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str = "gaussian", prior_std: float = 1.0) -> torch.Tensor:
    """k(a_i, b_j) for every pair of rows: ``[..., Ma, Mb]`` from ``[..., Ma, K]`` and ``[..., Mb, K]``.

    With s = ``prior_std`` (1 in every preset) and K the dimension:

    - ``"gaussian"``: exp(-||a - b||^2 / (K s^2)), a Gaussian kernel whose bandwidth grows with the
      dimension (2 sigma^2 = K s^2): two independent prior samples are about sqrt(2K) s apart,
      so the kernel stays in its informative range (exp(-2) on average) whatever K is;
    - ``"gaussian_dim2"``: exp(-||a - b||^2 / (K^2 s^2)), what the MMD-VAE reference code
      computes (the mean over dimensions of the squared difference, divided again by K): a
      wider kernel;
    - ``"imq"``: C / (C + ||a - b||^2) with C = 2 K s^2, the inverse multiquadratic kernel of
      Wasserstein auto-encoders (Tolstikhin et al. 2018), heavier-tailed than the Gaussian.

    Squared distances are formed from the differences (not ||a||^2 + ||b||^2 - 2ab), so the
    diagonal of k(a, a) is exactly 1 and no rounding makes a distance negative.
    """
    dim = a.shape[-1]
    sq_dist = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(dim=-1)
    scale = per_member(prior_std, a) ** 2 * dim
    if kernel == "gaussian":
        return torch.exp(-sq_dist / scale)
    if kernel == "gaussian_dim2":
        return torch.exp(-sq_dist / (scale * dim))
    if kernel == "imq":
        c = 2.0 * scale
        return c / (c + sq_dist)
    raise ValueError(f"unknown MMD kernel {kernel!r}; use one of {MMD_KERNELS}")


def maximum_mean_discrepancy(a: torch.Tensor, b: torch.Tensor, kernel: str = "gaussian",
                             prior_std: float = 1.0) -> torch.Tensor:
    """Squared MMD between the samples ``a`` and ``b`` (Gretton et al. 2012), one value per member.

    MMD^2 = mean_ij k(a_i, a_j) + mean_ij k(b_i, b_j) - 2 mean_ij k(a_i, b_j): the biased
    V-statistic (all pairs, the diagonal included), as the MMD-VAE reference computes it.  It is
    the exact squared RKHS distance between the two empirical distributions, so it is never
    negative and is 0 when they coincide; the unbiased U-statistic (diagonal left out) can go
    negative on small batches.  Its bias is (E k(a, a) + E k(b, b) - E k(a, a') - E k(b, b')) / M,
    small against the divergence for the batch sizes used here.  InfoVAE's z term, with ``b``
    drawn from the prior.
    """
    return (mmd_kernel_matrix(a, a, kernel, prior_std).mean(dim=(-2, -1))
            + mmd_kernel_matrix(b, b, kernel, prior_std).mean(dim=(-2, -1))
            - 2.0 * mmd_kernel_matrix(a, b, kernel, prior_std).mean(dim=(-2, -1)))


# ----------------------------------------------------------------------------- schedules (JointVAE)


def linear_capacity(step: int, max_capacity, steps: int, limit: float = math.inf):
    """C(t) = min(C_max * t / T, C_max, limit): JointVAE's capacity (Dupont 2018), rising linearly
    from 0 at step 0 to ``max_capacity`` at step ``steps`` = T and constant afterwards (T = 0:
    C_max from the start); ``limit`` caps it (log K2 for the discrete code, the largest KL a
    K2-way categorical can have from the uniform prior).  ``max_capacity`` may be one value per
    member ``[E]`` (then a tensor ``[E]`` comes back).  Dupont's reference evaluates the ramp after
    incrementing its step counter, i.e. at t + 1: one step ahead of this 0-based schedule.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    fraction = 1.0 if steps <= 0 else min(1.0, step / steps)
    if isinstance(max_capacity, torch.Tensor):
        return torch.clamp(max_capacity * fraction, max=limit)
    return min(max_capacity * fraction, limit)


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
