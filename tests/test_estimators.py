"""Every estimator of :mod:`imae.estimators` (and the log-space helpers of :mod:`imae.latent`)
against a closed form or a brute-force computation on small tensors.

Equation numbers refer to Zhang, Zhao & Balzano, "Information Maximization Auto-Encoding".
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from imae import estimators as est
from imae.config import ObjectiveConfig
from imae.latent import categorical_entropy, categorical_kl
from imae.nets import Decoder, Encoder, frozen_batchnorm_stats
from imae.objectives import HybridAutoencoder, IMAEObjective

F64 = torch.float64
NEG_INF = float("-inf")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _log_probs(rows) -> torch.Tensor:
    """log of a probability table given as nested lists (exact zeros become -inf)."""
    return torch.log(torch.tensor(rows, dtype=F64))


# ----------------------------------------------------------------------------- closed-form KLs


@pytest.mark.parametrize("prior_std", [1.0, 2.5])
def test_gaussian_kl_to_prior_matches_torch_distributions(prior_std):
    g = _gen(1)
    mean = torch.randn(7, 5, generator=g, dtype=F64) * 2.0
    logvar = torch.randn(7, 5, generator=g, dtype=F64)
    got = est.gaussian_kl_to_prior(mean, logvar, prior_std)
    posterior = Normal(mean, torch.exp(0.5 * logvar))
    prior = Normal(torch.zeros_like(mean), torch.full_like(mean, prior_std))
    expected = kl_divergence(posterior, prior).sum(dim=-1)
    assert got.shape == (7,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prior_std", [1.0, 2.5])
def test_gaussian_kl_to_prior_is_zero_at_the_prior(prior_std):
    mean = torch.zeros(3, 4, dtype=F64)
    logvar = torch.full((3, 4), 2.0 * math.log(prior_std), dtype=F64)
    torch.testing.assert_close(est.gaussian_kl_to_prior(mean, logvar, prior_std), torch.zeros(3, dtype=F64))


def test_categorical_kl_to_uniform_matches_sum_formula():
    g = _gen(2)
    probs = torch.softmax(torch.randn(6, 5, generator=g, dtype=F64) * 3.0, dim=-1)
    expected = (probs * torch.log(probs * 5)).sum(dim=-1)
    torch.testing.assert_close(est.categorical_kl_to_uniform(probs.log()), expected, rtol=1e-12, atol=1e-12)
    # uniform -> 0, one-hot -> log C
    torch.testing.assert_close(est.categorical_kl_to_uniform(torch.full((1, 5), -math.log(5), dtype=F64)),
                               torch.zeros(1, dtype=F64), rtol=0, atol=1e-14)
    one_hot = _log_probs([[0.0, 1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(est.categorical_kl_to_uniform(one_hot), torch.tensor([math.log(5)], dtype=F64))


def test_categorical_entropy_hand_cases():
    log_p = _log_probs([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    h = categorical_entropy(log_p)
    assert torch.isfinite(h).all()
    expected = [math.log(4), math.log(2), 0.0, -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))]
    torch.testing.assert_close(h, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-14)
    assert h[2].item() == 0.0  # one-hot: 0 log 0 = 0 exactly


def test_categorical_kl_hand_cases():
    one_hot = _log_probs([[1.0, 0.0, 0.0]])
    q = _log_probs([[0.2, 0.3, 0.5]])
    # KL(one-hot || q) = -log q_0, finite although p has zeros
    kl = categorical_kl(one_hot, q)
    assert torch.isfinite(kl).all()
    torch.testing.assert_close(kl, torch.tensor([-math.log(0.2)], dtype=F64))
    # KL(p || p) = 0 with zeros in p (both logs -inf): no NaN
    p0 = _log_probs([[0.5, 0.5, 0.0]])
    assert categorical_kl(p0, p0).item() == 0.0
    # a 2-class hand case
    got = categorical_kl(_log_probs([[0.5, 0.5]]), _log_probs([[0.25, 0.75]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=F64))


def test_bernoulli_log_likelihood_matches_hand_formula():
    g = _gen(3)
    logits = torch.randn(6, 10, generator=g, dtype=F64) * 3.0
    x = torch.rand(6, 10, generator=g, dtype=F64)
    x[0, :5] = 0.0
    x[1, :5] = 1.0
    s = torch.sigmoid(logits)
    per_pixel = x * torch.log(s) + (1 - x) * torch.log(1 - s)
    expected = per_pixel.sum(dim=1).mean()
    got = est.bernoulli_log_likelihood(logits, x)
    assert got.dim() == 0
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- eq. 7


def test_discrete_mi_uniform_rows_is_zero():
    log_p = torch.full((9, 4), -math.log(4), dtype=F64)
    torch.testing.assert_close(est.discrete_mutual_information(log_p), torch.tensor(0.0, dtype=F64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 4, 7])
def test_discrete_mi_balanced_one_hot_is_log_c(n_classes):
    eye = torch.eye(n_classes, dtype=F64)
    log_p = torch.log(torch.cat([eye, eye, eye]))  # 3 rows per class, -inf off the diagonal
    mi = est.discrete_mutual_information(log_p)
    assert torch.isfinite(mi)
    torch.testing.assert_close(mi, torch.tensor(math.log(n_classes), dtype=F64))


def test_discrete_mi_identical_one_hot_rows_is_zero():
    log_p = torch.log(torch.tensor([[0.0, 1.0, 0.0]], dtype=F64).repeat(5, 1))
    mi = est.discrete_mutual_information(log_p)
    assert torch.isfinite(mi)
    assert mi.item() == pytest.approx(0.0, abs=1e-14)


def test_discrete_mi_two_by_two_hand_case():
    p1, p2 = (0.9, 0.1), (0.2, 0.8)
    marginal = (0.55, 0.45)

    def h(p):
        return -sum(v * math.log(v) for v in p)

    expected = h(marginal) - 0.5 * (h(p1) + h(p2))
    log_p = _log_probs([p1, p2])
    torch.testing.assert_close(est.discrete_mutual_information(log_p), torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(est.batch_marginal_entropy(log_p), torch.tensor(h(marginal), dtype=F64))
    torch.testing.assert_close(est.batch_conditional_entropy(log_p),
                               torch.tensor(0.5 * (h(p1) + h(p2)), dtype=F64))


def test_discrete_mi_is_marginal_minus_conditional_entropy():
    g = _gen(4)
    log_p = torch.log_softmax(torch.randn(11, 5, generator=g, dtype=F64) * 2, dim=-1)
    mi = est.discrete_mutual_information(log_p)
    assert mi.item() == est.batch_marginal_entropy(log_p).item() - est.batch_conditional_entropy(log_p).item()
    assert 0.0 <= mi.item() <= math.log(5)


# ----------------------------------------------------------------------------- aggregate posterior


def _posterior_batch(m: int, k: int, seed: int, dtype=F64):
    g = _gen(seed)
    mean = torch.randn(m, k, generator=g, dtype=dtype)
    logvar = torch.randn(m, k, generator=g, dtype=dtype) * 0.5 - 1.0
    z = mean + torch.exp(0.5 * logvar) * torch.randn(m, k, generator=g, dtype=dtype)
    return z, mean, logvar


def test_pairwise_gaussian_log_density_matches_double_loop():
    z, mean, logvar = _posterior_batch(5, 3, seed=5)
    got = est.pairwise_gaussian_log_density(z, mean, logvar)
    assert got.shape == (5, 5, 3)
    expected = torch.empty(5, 5, 3, dtype=F64)
    for i in range(5):
        for j in range(5):
            expected[i, j] = Normal(mean[j], torch.exp(0.5 * logvar[j])).log_prob(z[i])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_log_importance_weights_mws_are_constant():
    for m, n in [(1, 1), (4, 10), (8, 8), (16, 60000)]:
        log_w = est.log_importance_weights(m, n, "mws")
        assert log_w.shape == (m, m)
        torch.testing.assert_close(log_w.double(), torch.full((m, m), -math.log(n * m), dtype=F64),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("m,n", [(2, 2), (2, 5), (4, 10), (16, 60000), (7, 7)])
def test_log_importance_weights_mss_rows_sum_to_one(m, n):
    log_w = est.log_importance_weights(m, n, "mss").double()
    assert log_w.shape == (m, m)
    torch.testing.assert_close(log_w.exp().sum(dim=1), torch.ones(m, dtype=F64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_w.diagonal(), torch.full((m,), -math.log(n), dtype=F64),
                               rtol=1e-6, atol=1e-6)


def test_log_importance_weights_single_item_batch():
    """M = 1 is special-cased: both estimators give w = 1/N (MSS has no other batch member to carry the
    remaining (N - 1)/N of the mass, so that row does not sum to 1)."""
    for estimator in ("mws", "mss"):
        log_w = est.log_importance_weights(1, 5, estimator)
        assert log_w.shape == (1, 1)
        assert log_w.item() == pytest.approx(-math.log(5), abs=1e-6)


def test_log_importance_weights_mss_with_full_batch_is_exact_mixture():
    n = 9
    log_w = est.log_importance_weights(n, n, "mss").double()
    torch.testing.assert_close(log_w, torch.full((n, n), -math.log(n), dtype=F64), rtol=1e-6, atol=1e-6)


def test_log_importance_weights_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown TC estimator"):
        est.log_importance_weights(4, 10, "bogus")
    with pytest.raises(ValueError, match="at least the batch size"):
        est.log_importance_weights(10, 4, "mss")
    with pytest.raises(ValueError):
        est.log_importance_weights(10, 4, "mws")


def _brute_force_mixture(z, mean, logvar):
    """log (1/N) sum_j q(z_i | x_j), jointly and per dimension, by explicit loops."""
    n, k = mean.shape
    joint = torch.empty(z.shape[0], dtype=F64)
    marg = torch.empty(z.shape[0], k, dtype=F64)
    for i in range(z.shape[0]):
        comps = [Normal(mean[j], torch.exp(0.5 * logvar[j])).log_prob(z[i]) for j in range(n)]  # [K] each
        stacked = torch.stack(comps)  # [N, K]
        joint[i] = torch.log(torch.exp(stacked.sum(dim=1)).sum() / n)
        marg[i] = torch.log(torch.exp(stacked).sum(dim=0) / n)
    return joint, marg


def test_aggregate_log_density_mss_full_batch_is_exact_mixture():
    z, mean, logvar = _posterior_batch(6, 3, seed=6)
    agg = est.aggregate_log_density(z, mean, logvar, dataset_size=6, estimator="mss")
    joint, marg = _brute_force_mixture(z, mean, logvar)
    torch.testing.assert_close(agg.joint, joint, rtol=0, atol=1e-6)
    torch.testing.assert_close(agg.marginals, marg, rtol=0, atol=1e-6)


def test_aggregate_log_density_mws_full_batch_is_exact_mixture_minus_log_n():
    """MWS with M = N has the known constant offset -log N: its weights are 1/(N M) = 1/N^2, not 1/N."""
    n = 6
    z, mean, logvar = _posterior_batch(n, 3, seed=7)
    agg = est.aggregate_log_density(z, mean, logvar, dataset_size=n, estimator="mws")
    joint, marg = _brute_force_mixture(z, mean, logvar)
    torch.testing.assert_close(agg.joint, joint - math.log(n), rtol=0, atol=1e-6)
    torch.testing.assert_close(agg.marginals, marg - math.log(n), rtol=0, atol=1e-6)


def test_aggregate_log_density_keeps_float64_precision():
    z, mean, logvar = _posterior_batch(6, 3, seed=6)
    agg = est.aggregate_log_density(z, mean, logvar, dataset_size=6, estimator="mss")
    joint, marg = _brute_force_mixture(z, mean, logvar)
    torch.testing.assert_close(agg.joint, joint, rtol=0, atol=1e-12)
    torch.testing.assert_close(agg.marginals, marg, rtol=0, atol=1e-12)


def _autograd_aggregate(z, mean, logvar, dataset_size, estimator):
    """The aggregate log-density written with plain autograd ops, as the reference for the
    hand-written backward of ``aggregate_log_density``."""
    log_q = est.pairwise_gaussian_log_density(z, mean, logvar)
    log_w = est.log_importance_weights(z.shape[-2], dataset_size, estimator, dtype=z.dtype)
    joint = torch.logsumexp(log_q.sum(dim=-1) + log_w, dim=-1)
    marginals = torch.logsumexp(log_q + log_w.unsqueeze(-1), dim=-2)
    return joint, marginals


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("shape", [(7, 3), (2, 5, 4)])
def test_aggregate_log_density_gradients_match_autograd(estimator, shape):
    """The written-out backward equals autograd's gradient of the same formula, for single
    models [M, K] and ensembles [E, M, K], under arbitrary upstream gradients."""
    g = _gen(11)
    inputs = [torch.randn(shape, generator=g, dtype=F64) * s for s in (1.5, 1.0, 1.0)]
    up_joint = torch.randn(shape[:-1], generator=g, dtype=F64)
    up_marg = torch.randn(shape, generator=g, dtype=F64)
    results = []
    for fn in (lambda *a: tuple(vars(est.aggregate_log_density(*a, 50, estimator)).values()),
               lambda *a: _autograd_aggregate(*a, 50, estimator)):
        leaves = [t.clone().requires_grad_() for t in inputs]
        joint, marginals = fn(*leaves)
        grads = torch.autograd.grad((joint * up_joint).sum() + (marginals * up_marg).sum(), leaves)
        results.append((joint, marginals, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_aggregate_log_density_passes_gradcheck():
    z, mean, logvar = (t.requires_grad_() for t in _posterior_batch(5, 2, seed=12))

    def tc_and_marginals(z, mean, logvar):
        agg = est.aggregate_log_density(z, mean, logvar, dataset_size=20, estimator="mss")
        return est.total_correlation(agg), agg.marginals

    assert torch.autograd.gradcheck(tc_and_marginals, (z, mean, logvar))


def test_marginal_kl_to_prior_on_a_known_mixture():
    """All posteriors N(0, s^2): the aggregate marginal is N(0, s^2), so sum_k KL(q(z_k)||r(z_k)) is K times
    the closed form.  MSS with M = N is exact up to Monte Carlo error; MWS is that minus K log N."""
    s, r, k, n = 0.7, 1.3, 3, 3000
    gen = _gen(8)
    mean = torch.zeros(n, k)
    logvar = torch.full((n, k), 2.0 * math.log(s))
    z = s * torch.randn(n, k, generator=gen)
    closed = k * (math.log(r / s) + s * s / (2 * r * r) - 0.5)
    # Monte Carlo std of the estimate: sqrt(K * 2 * (0.5 (s^2/r^2 - 1))^2 / N) ~ 0.016
    mc_std = math.sqrt(k * 2 * (0.5 * (s * s / (r * r) - 1)) ** 2 / n)
    kl_mss = est.marginal_kl_to_prior(est.aggregate_log_density(z, mean, logvar, n, "mss"), z, prior_std=r)
    assert abs(kl_mss.item() - closed) < 4 * mc_std
    kl_mws = est.marginal_kl_to_prior(est.aggregate_log_density(z, mean, logvar, n, "mws"), z, prior_std=r)
    assert kl_mws.item() == pytest.approx(kl_mss.item() - k * math.log(n), abs=1e-4)


# ----------------------------------------------------------------------------- total correlation


def _two_dim_posteriors(mean_fn, sigma, n=2000, seed=9):
    g = _gen(seed)
    a, b = torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    mean = mean_fn(a, b)
    logvar = torch.full_like(mean, 2.0 * math.log(sigma))
    z = mean + sigma * torch.randn(mean.shape, generator=g, dtype=F64)
    return z, mean, logvar


def test_total_correlation_is_zero_for_a_product_mixture():
    """Means on a Cartesian grid {a_i} x {b_j} with constant sigma: the mixture factorises exactly."""
    g = _gen(10)
    a, b = torch.randn(30, generator=g, dtype=F64), torch.randn(40, generator=g, dtype=F64)
    mean = torch.cartesian_prod(a, b)
    logvar = torch.full_like(mean, 2.0 * math.log(0.1))
    z = mean + 0.1 * torch.randn(mean.shape, generator=g, dtype=F64)
    tc = est.total_correlation(est.dataset_aggregate_log_density(z, mean, logvar))
    assert abs(tc.item()) < 1e-10


def test_total_correlation_independent_factors_is_near_zero():
    """Means (a_n, b_n) with a, b iid N(0, 1).  The empirical mixture of N = 2000 narrow Gaussians is itself
    slightly 'clumpy' (its true TC is > 0 and shrinks as N sigma^2 grows): about 0.06 nats at sigma = 0.1,
    about 0.015 at sigma = 0.2.  sigma = 0.2 keeps this finite-N effect well below the 0.05 tolerance."""
    z, mean, logvar = _two_dim_posteriors(lambda a, b: torch.stack([a, b], dim=1), sigma=0.2)
    tc = est.total_correlation(est.dataset_aggregate_log_density(z, mean, logvar))
    assert abs(tc.item()) < 0.05


def test_total_correlation_correlated_gaussian_matches_closed_form():
    sigma = 0.1
    z, mean, logvar = _two_dim_posteriors(lambda a, c: torch.stack([a, a + 0.3 * c], dim=1), sigma=sigma)
    # cov(z) = [[1 + s^2, 1], [1, 1.09 + s^2]] including the posterior noise
    rho2 = 1.0 / ((1.0 + sigma**2) * (1.09 + sigma**2))
    closed = -0.5 * math.log(1.0 - rho2)
    tc = est.total_correlation(est.dataset_aggregate_log_density(z, mean, logvar))
    assert tc.item() == pytest.approx(closed, rel=0.10)


def test_total_correlation_mss_full_batch_agrees_with_dataset_estimator():
    z, mean, logvar = _two_dim_posteriors(lambda a, c: torch.stack([a, a + 0.3 * c], dim=1), sigma=0.1, n=1500)
    full = est.dataset_aggregate_log_density(z, mean, logvar)
    mss = est.aggregate_log_density(z, mean, logvar, dataset_size=z.shape[0], estimator="mss")
    torch.testing.assert_close(mss.joint, full.joint, rtol=0, atol=1e-6)
    torch.testing.assert_close(mss.marginals, full.marginals, rtol=0, atol=1e-6)
    assert est.total_correlation(mss).item() == pytest.approx(est.total_correlation(full).item(), abs=1e-6)


def test_dataset_aggregate_log_density_is_independent_of_chunking():
    z, mean, logvar = _posterior_batch(120, 4, seed=11)
    reference = est.dataset_aggregate_log_density(z, mean, logvar)
    for max_elements in (1, 4 * 120 * 7, 4 * 120 * 64 + 5, 10**9):
        got = est.dataset_aggregate_log_density(z, mean, logvar, max_elements=max_elements)
        assert torch.equal(got.joint, reference.joint)
        assert torch.equal(got.marginals, reference.marginals)
    # samples other than the posteriors' own, and against the brute force
    z_other = torch.randn(5, 4, generator=_gen(12), dtype=F64)
    got = est.dataset_aggregate_log_density(z_other, mean[:8], logvar[:8], max_elements=64)
    joint, marg = _brute_force_mixture(z_other, mean[:8], logvar[:8])
    torch.testing.assert_close(got.joint, joint, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.marginals, marg, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- VAT (eq. 9)


def _linear_softmax(d: int, c: int, seed: int, scale: float = 1.0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(d, c).double()
    with torch.no_grad():
        lin.weight.mul_(scale)
    return lin


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.5])
def test_vat_perturbation_rows_have_norm_eps(eps):
    lin = _linear_softmax(12, 4, seed=0, scale=3.0)

    def f(x):
        return torch.log_softmax(lin(x), dim=-1)

    x = torch.rand(9, 12, generator=_gen(13), dtype=F64)
    torch.manual_seed(1)
    r = est.virtual_adversarial_perturbation(f, x, f(x), eps)
    assert r.shape == x.shape
    torch.testing.assert_close(r.norm(dim=1), torch.full((9,), eps, dtype=F64), rtol=0, atol=1e-5)

    # an ensemble batch [E, M, D] with one eps per member: the norm is per example and member
    x_ens = torch.stack([x, x.flip(0)])
    eps_ens = torch.tensor([eps, 2 * eps], dtype=F64)
    r_ens = est.virtual_adversarial_perturbation(f, x_ens, f(x_ens), eps_ens, power_iterations=2)
    assert r_ens.shape == x_ens.shape
    torch.testing.assert_close(r_ens.norm(dim=-1), eps_ens[:, None].expand(2, 9), rtol=0, atol=1e-5)


def _kl_hessian(f, x0: torch.Tensor) -> torch.Tensor:
    """Hessian at r = 0 of r -> KL(p(y|x0) || p(y|x0 + r)) (one example, brute force)."""
    clean = f(x0.unsqueeze(0)).detach()

    def kl(r):
        return categorical_kl(clean, f((x0 + r).unsqueeze(0))).sum()

    return torch.autograd.functional.hessian(kl, torch.zeros_like(x0))


def _kl_at(f, x, r):
    return categorical_kl(f(x).detach(), f(x + r))


def test_vat_hessian_is_the_fisher_of_the_softmax():
    lin = _linear_softmax(6, 3, seed=2, scale=2.0)

    def f(x):
        return torch.log_softmax(lin(x), dim=-1)

    x0 = torch.rand(6, generator=_gen(14), dtype=F64)
    h = _kl_hessian(f, x0)
    p = f(x0.unsqueeze(0)).exp()[0].detach()
    w = lin.weight.detach()
    torch.testing.assert_close(h, w.T @ (torch.diag(p) - torch.outer(p, p)) @ w, rtol=1e-10, atol=1e-12)


def test_vat_two_classes_one_power_iteration_finds_the_top_eigenvector():
    """With C = 2 the KL's Hessian in r has rank 1, so one power iteration is exact."""
    d, eps = 10, 0.5
    lin = _linear_softmax(d, 2, seed=3, scale=3.0)

    def f(x):
        return torch.log_softmax(lin(x), dim=-1)

    x = torch.rand(5, d, generator=_gen(15), dtype=F64)
    torch.manual_seed(4)
    r = est.virtual_adversarial_perturbation(f, x, f(x), eps, xi=1e-6, power_iterations=1)
    for m in range(5):
        evals, evecs = torch.linalg.eigh(_kl_hessian(f, x[m]))
        v = evecs[:, -1]
        assert abs(torch.dot(r[m], v).item()) / eps > 1 - 1e-6
        v_signed = torch.sign(torch.dot(r[m], v)) * v
        kl_adv = _kl_at(f, x[m : m + 1], r[m : m + 1]).item()
        kl_top = _kl_at(f, x[m : m + 1], eps * v_signed.unsqueeze(0)).item()
        assert kl_adv == pytest.approx(kl_top, rel=1e-6)


def test_vat_perturbation_beats_random_directions_and_matches_top_eigenvector():
    d, c, eps, m_count = 30, 4, 0.3, 6
    lin = _linear_softmax(d, c, seed=5, scale=4.0)

    def f(x):
        return torch.log_softmax(lin(x), dim=-1)

    x = torch.rand(m_count, d, generator=_gen(16), dtype=F64)
    torch.manual_seed(6)
    r1 = est.virtual_adversarial_perturbation(f, x, f(x), eps, xi=1e-6, power_iterations=1)
    torch.manual_seed(6)
    r_many = est.virtual_adversarial_perturbation(f, x, f(x), eps, xi=1e-6, power_iterations=50)
    kl_adv1 = _kl_at(f, x, r1)
    kl_adv = _kl_at(f, x, r_many)

    # random directions of the same norm, 50 per example
    g = _gen(17)
    kl_rand = torch.stack([
        _kl_at(f, x, eps * torch.nn.functional.normalize(torch.randn(m_count, d, generator=g, dtype=F64), dim=1))
        for _ in range(50)
    ]).mean(dim=0)
    assert (kl_adv1 > 5 * kl_rand).all(), (kl_adv1 / kl_rand)
    assert (kl_adv > 5 * kl_rand).all(), (kl_adv / kl_rand)

    for m in range(m_count):
        evals, evecs = torch.linalg.eigh(_kl_hessian(f, x[m]))
        v = evecs[:, -1]
        # power iteration converges to the top eigenvector (up to the sign, which it inherits from d) ...
        cos = torch.dot(r_many[m], v).item() / eps
        assert abs(cos) > 0.999
        # ... and the KL there matches the KL along that eigenvector
        kl_top = _kl_at(f, x[m : m + 1], math.copysign(eps, cos) * v.unsqueeze(0)).item()
        assert kl_adv[m].item() == pytest.approx(kl_top, rel=0.02)
        # a single power iteration already gets most of the way there
        assert kl_adv1[m].item() > 0.5 * kl_top


def test_vat_perturbation_does_not_touch_parameter_gradients():
    lin = _linear_softmax(8, 3, seed=7)

    def f(x):
        return torch.log_softmax(lin(x), dim=-1)

    x = torch.rand(4, 8, generator=_gen(18), dtype=F64)
    est.virtual_adversarial_perturbation(f, x, f(x), 1.0, power_iterations=3)
    assert all(p.grad is None for p in lin.parameters())


def _small_mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()


def test_vat_loss_holds_the_clean_prediction_constant():
    net = _small_mlp(8)

    def f(x):
        return torch.log_softmax(net(x), dim=-1)

    x = torch.rand(10, 8, generator=_gen(19), dtype=F64)
    params = list(net.parameters())

    torch.manual_seed(123)
    loss = est.virtual_adversarial_loss(f, x, f(x), eps=1.0, xi=1e-6)
    grads = torch.autograd.grad(loss, params)

    torch.manual_seed(123)
    r_adv = est.virtual_adversarial_perturbation(f, x, f(x), eps=1.0, xi=1e-6)
    clean = f(x)
    reference = categorical_kl(clean.detach(), f(x + r_adv)).mean()
    ref_grads = torch.autograd.grad(reference, params)

    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    assert loss.item() > 0
    for g_got, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-12)

    # sanity: letting the gradient flow through the clean prediction would give something else
    undetached = categorical_kl(f(x), f(x + r_adv)).mean()
    other = torch.autograd.grad(undetached, params)
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-8) for a, b in zip(other, ref_grads))


def test_vat_loss_is_zero_for_a_model_constant_in_x():
    lin = _linear_softmax(8, 3, seed=9)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([0.3, -1.0, 2.0], dtype=F64))

    def f(x):
        return torch.log_softmax(lin(x), dim=-1)

    x = torch.rand(5, 8, generator=_gen(20), dtype=F64)
    loss = est.virtual_adversarial_loss(f, x, f(x), eps=1.0)
    assert loss.item() == 0.0
    r = est.virtual_adversarial_perturbation(f, x, f(x), eps=1.0)
    assert torch.isfinite(r).all()


def test_vat_loss_is_zero_for_a_function_that_ignores_x():
    bias = torch.tensor([0.3, -1.0, 2.0], dtype=F64, requires_grad=True)

    def f(x):
        return torch.log_softmax(bias.expand(x.shape[0], -1), dim=-1)

    x = torch.rand(5, 8, generator=_gen(21), dtype=F64)
    assert est.virtual_adversarial_loss(f, x, f(x), eps=1.0).item() == 0.0


def test_vat_perturbation_float32_default_xi_follows_the_exact_power_iterate():
    """A default-initialised MNIST-sized encoder in float32 (the training dtype) with the config's default xi:
    r_adv must point along the exact one-step power iterate H d (computed in float64 from the same d)."""
    cfg = ObjectiveConfig()
    torch.manual_seed(0)
    enc = Encoder(784, [256, 512], 10, 10, batchnorm=False)
    enc64 = Encoder(784, [256, 512], 10, 10, batchnorm=False).double()
    enc64.load_state_dict({k: v.double() for k, v in enc.state_dict().items()})
    x = torch.rand(32, 784, generator=_gen(22))

    torch.manual_seed(1)
    r32 = est.virtual_adversarial_perturbation(enc.class_log_probs, x, enc.class_log_probs(x), 1.0, xi=cfg.vat_xi)
    torch.manual_seed(1)
    d0 = torch.nn.functional.normalize(torch.randn_like(x), dim=1).double()  # the same start direction

    x64 = x.double()
    clean = enc64.class_log_probs(x64).detach()
    d = (1e-7 * d0).requires_grad_(True)
    (grad,) = torch.autograd.grad(categorical_kl(clean, enc64.class_log_probs(x64 + d)).sum(), d)
    exact = torch.nn.functional.normalize(grad, dim=1)

    cos = (r32.double() * exact).sum(dim=1)  # r32 has norm eps = 1
    assert cos.mean().item() > 0.9, cos
    torch.testing.assert_close(r32.norm(dim=1), torch.ones(32), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- BatchNorm freezing


def _bn_net(momentum=0.1):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6, momentum=momentum), torch.nn.ReLU(),
                               torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4, momentum=momentum))


def _bn_state(net):
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
            for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_frozen_batchnorm_stats_leaves_running_statistics_untouched(momentum):
    net = _bn_net(momentum).train()
    x = torch.randn(16, 5, generator=_gen(23)) * 3 + 1
    net(x)  # make the running stats non-trivial
    before = _bn_state(net)
    with frozen_batchnorm_stats(net):
        out = net(x + 0.5)
        net(x * 2)
    assert out.requires_grad
    for (mean0, var0, n0), (mean1, var1, n1) in zip(before, _bn_state(net)):
        assert torch.equal(mean0, mean1)
        assert torch.equal(var0, var1)
        assert torch.equal(n0, n1)
    assert all(m.momentum == momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d))

    net(x + 0.5)  # outside the block the statistics move again
    for (mean0, var0, n0), (mean1, var1, n1) in zip(before, _bn_state(net)):
        assert not torch.equal(mean0, mean1)
        assert not torch.equal(var0, var1)
        assert n1.item() == n0.item() + 1


def test_frozen_batchnorm_stats_restores_momentum_after_an_exception():
    net = _bn_net(0.3).train()
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_batchnorm_stats(net):
            net(torch.randn(4, 5))
            raise RuntimeError("boom")
    assert all(m.momentum == 0.3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d))


def test_frozen_batchnorm_stats_uses_the_batch_statistics_in_train_mode():
    """Inside the block a train-mode pass still normalises with the (perturbed) batch's own statistics."""
    net = _bn_net().train()
    x = torch.randn(16, 5, generator=_gen(24))
    with torch.no_grad():
        expected = net(x)
    net2 = _bn_net().train()
    with torch.no_grad(), frozen_batchnorm_stats(net2):
        got = net2(x)
    torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------- the IMAE objective (eq. 8)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    enc = Encoder(16, [8], 3, 4, batchnorm=True)
    dec = Decoder(16, [8], 3, 4)
    return HybridAutoencoder(enc, dec)


@pytest.mark.parametrize("tc_estimator", ["mws", "mss"])
def test_imae_objective_gradients_reach_every_parameter(tc_estimator):
    nets = _tiny_model()
    nets.train()
    cfg = ObjectiveConfig(tc_estimator=tc_estimator)
    objective = IMAEObjective(cfg, dataset_size=100)
    x = torch.rand(12, 16, generator=_gen(25))
    loss, terms = objective(nets, x)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in nets.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert (p.grad != 0).any(), name


@pytest.mark.parametrize("mu", [1.0, 4.0])
def test_imae_objective_terms_add_up(mu):
    nets = _tiny_model(1)
    cfg = ObjectiveConfig(beta=2.5, gamma=7.0, marginal_entropy_weight=mu, prior_std=1.5)
    objective = IMAEObjective(cfg, dataset_size=100)
    x = torch.rand(12, 16, generator=_gen(26))
    loss, terms = objective(nets, x)
    assert set(terms) >= {"loss", "recon", "L_y", "mi_y", "vat", "L_z", "tc"}
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    expected = -(terms["recon"] + cfg.beta * terms["L_y"] + cfg.beta * terms["L_z"] - cfg.gamma * terms["tc"])
    torch.testing.assert_close(loss, expected)
    assert terms["loss"] is loss or torch.equal(terms["loss"], loss)
    assert terms["vat"].item() >= 0
    assert 0 <= terms["mi_y"].item() <= math.log(4) + 1e-6
    # L_y = mu H(y) - H(y|x) - VAT and mi_y = H(y) - H(y|x) (eq. 7), so L_y = mi_y + (mu - 1) H(y) - VAT
    if mu == 1.0:
        torch.testing.assert_close(terms["L_y"], terms["mi_y"] - terms["vat"])
    else:
        h_marginal = (terms["L_y"] + terms["vat"] - terms["mi_y"]) / (mu - 1.0)
        assert 0 <= h_marginal.item() <= math.log(4) + 1e-5  # a valid entropy over 4 classes
        assert h_marginal.item() >= terms["mi_y"].item() - 1e-5  # H(y) >= I(x; y)


def test_imae_objective_l_y_matches_estimators_directly():
    """Recompute H(y) and H(y|x) from the encoder's class probabilities (deterministic given x in train
    mode: BatchNorm uses the batch's statistics) and check L_y = mu H(y) - H(y|x) - vat with mu = 4."""
    nets = _tiny_model(2)
    cfg = ObjectiveConfig(marginal_entropy_weight=4.0)
    x = torch.rand(12, 16, generator=_gen(27))
    state = {k: v.clone() for k, v in nets.state_dict().items()}
    _, terms = IMAEObjective(cfg, dataset_size=100)(nets, x)
    nets.load_state_dict(state)  # undo the running-statistics update of that pass
    with torch.no_grad():
        log_probs = torch.log_softmax(nets.encoder(x)[2], dim=-1)
    h = est.batch_marginal_entropy(log_probs)
    hc = est.batch_conditional_entropy(log_probs)
    torch.testing.assert_close(terms["mi_y"].detach(), h - hc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["L_y"].detach(), 4.0 * h - hc - terms["vat"].detach(), rtol=1e-5, atol=1e-6)


def test_imae_objective_without_vat_has_zero_vat_term():
    nets = _tiny_model(3)
    cfg = ObjectiveConfig(vat_eps=0.0, marginal_entropy_weight=1.0)
    _, terms = IMAEObjective(cfg, dataset_size=100)(nets, torch.rand(12, 16, generator=_gen(28)))
    assert terms["vat"].item() == 0.0
    torch.testing.assert_close(terms["L_y"], terms["mi_y"])


# ----------------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_estimators_with_a_member_dimension_equal_each_member_alone(estimator):
    """[E, M, K] inputs give one value per member, equal to running each member on its own."""
    g = _gen(21)
    e, m, k, c, d = 3, 6, 4, 5, 7
    z, mean = torch.randn(e, m, k, generator=g, dtype=F64), torch.randn(e, m, k, generator=g, dtype=F64)
    logvar = torch.randn(e, m, k, generator=g, dtype=F64) * 0.3
    log_probs = torch.log_softmax(torch.randn(e, m, c, generator=g, dtype=F64), dim=-1)
    logits, x = torch.randn(e, m, d, generator=g, dtype=F64), torch.rand(e, m, d, generator=g, dtype=F64)
    prior_std = torch.tensor([1.0, 0.5, 2.0], dtype=F64)

    agg = est.aggregate_log_density(z, mean, logvar, 50, estimator)
    batched = {
        "recon": est.bernoulli_log_likelihood(logits, x),
        "h_marginal": est.batch_marginal_entropy(log_probs),
        "h_conditional": est.batch_conditional_entropy(log_probs),
        "mi": est.discrete_mutual_information(log_probs),
        "tc": est.total_correlation(agg),
        "kl": est.marginal_kl_to_prior(agg, z, prior_std),
    }
    for i in range(e):
        agg_i = est.aggregate_log_density(z[i], mean[i], logvar[i], 50, estimator)
        alone = {
            "recon": est.bernoulli_log_likelihood(logits[i], x[i]),
            "h_marginal": est.batch_marginal_entropy(log_probs[i]),
            "h_conditional": est.batch_conditional_entropy(log_probs[i]),
            "mi": est.discrete_mutual_information(log_probs[i]),
            "tc": est.total_correlation(agg_i),
            "kl": est.marginal_kl_to_prior(agg_i, z[i], float(prior_std[i])),
        }
        for name, value in alone.items():
            assert batched[name].shape == (e,), name
            torch.testing.assert_close(batched[name][i], value, msg=name)


def test_per_member_rejects_a_mismatched_member_count():
    with pytest.raises(ValueError, match="per-member value"):
        est.per_member(torch.ones(2), torch.zeros(3, 4, 5))
