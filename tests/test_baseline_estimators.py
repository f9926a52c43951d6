"""The estimator terms the baselines add (beta-VAE, InfoVAE, JointVAE, beta-TCVAE), each against
a closed form or a brute-force computation on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from imae import estimators as est
from imae.latent import gaussian_prior_sample

F64 = torch.float64


def _prior(std: float) -> Normal:
    """N(0, std^2) with float64 parameters (a Python float would make them float32)."""
    return Normal(torch.tensor(0.0, dtype=F64), torch.tensor(std, dtype=F64))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _posteriors(m: int, k: int, seed: int):
    g = _gen(seed)
    mean = torch.randn(m, k, generator=g, dtype=F64)
    logvar = torch.randn(m, k, generator=g, dtype=F64) * 0.5 - 0.5
    z = mean + torch.exp(0.5 * logvar) * torch.randn(m, k, generator=g, dtype=F64)
    return z, mean, logvar


# ----------------------------------------------------------------------------- KL of the batch-averaged p(y)


def test_marginal_kl_to_uniform_matches_the_sum_formula():
    probs = torch.softmax(torch.randn(9, 5, generator=_gen(1), dtype=F64) * 2.0, dim=-1)
    p_bar = probs.mean(dim=0)
    expected = (p_bar * torch.log(p_bar * 5)).sum()
    torch.testing.assert_close(est.marginal_kl_to_uniform(probs.log()), expected)


def test_marginal_kl_to_uniform_hand_cases():
    # balanced one-hot rows: the batch average is uniform -> 0, although every row is far from uniform
    one_hot = torch.log(torch.eye(4, dtype=F64))
    assert est.marginal_kl_to_uniform(one_hot).item() == pytest.approx(0.0, abs=1e-12)
    # identical one-hot rows: the average is one-hot -> log C
    same = torch.log(torch.tensor([[1.0, 0.0, 0.0]] * 5, dtype=F64))
    assert est.marginal_kl_to_uniform(same).item() == pytest.approx(math.log(3), abs=1e-12)


def test_mean_kl_to_uniform_is_mutual_information_plus_marginal_kl():
    """(1/M) sum_m KL(p(y|x_m) || u) = I_hat(x; y) + KL(p_bar || u), exactly (beta-TCVAE's y split)."""
    log_probs = torch.log_softmax(torch.randn(3, 11, 6, generator=_gen(2), dtype=F64) * 2.0, dim=-1)
    lhs = est.categorical_kl_to_uniform(log_probs).mean(dim=-1)
    rhs = est.discrete_mutual_information(log_probs) + est.marginal_kl_to_uniform(log_probs)
    assert lhs.shape == (3,)
    torch.testing.assert_close(lhs, rhs)


# ----------------------------------------------------------------------------- MMD


def _kernel_by_hand(a, b, kernel, s):
    d2 = float(((a - b) ** 2).sum())
    k = a.shape[0]
    if kernel == "gaussian":
        return math.exp(-d2 / (k * s * s))
    if kernel == "gaussian_dim2":
        return math.exp(-d2 / (k * k * s * s))
    c = 2.0 * k * s * s
    return c / (c + d2)


@pytest.mark.parametrize("kernel", est.MMD_KERNELS)
@pytest.mark.parametrize("prior_std", [1.0, 1.7])
def test_mmd_matches_a_double_loop(kernel, prior_std):
    g = _gen(3)
    a = torch.randn(6, 3, generator=g, dtype=F64)
    b = torch.randn(5, 3, generator=g, dtype=F64) * 1.5 + 0.3

    def mean_k(u, v):
        return sum(_kernel_by_hand(ui, vj, kernel, prior_std) for ui in u for vj in v) / (len(u) * len(v))

    expected = mean_k(a, a) + mean_k(b, b) - 2.0 * mean_k(a, b)
    got = est.maximum_mean_discrepancy(a, b, kernel, prior_std)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_mmd_two_points_by_hand():
    a = torch.tensor([[0.0, 0.0]], dtype=F64)
    b = torch.tensor([[1.0, 1.0]], dtype=F64)  # ||a - b||^2 = 2, K = 2
    assert est.maximum_mean_discrepancy(a, b, "gaussian").item() == pytest.approx(2 - 2 * math.exp(-1.0))
    assert est.maximum_mean_discrepancy(a, b, "gaussian_dim2").item() == pytest.approx(2 - 2 * math.exp(-0.5))
    assert est.maximum_mean_discrepancy(a, b, "imq").item() == pytest.approx(2 - 2 * 4 / 6)


@pytest.mark.parametrize("kernel", est.MMD_KERNELS)
def test_mmd_is_zero_for_identical_samples_and_positive_otherwise(kernel):
    a = torch.randn(20, 4, generator=_gen(4), dtype=F64)
    assert est.maximum_mean_discrepancy(a, a.clone(), kernel).item() == pytest.approx(0.0, abs=1e-14)
    assert est.maximum_mean_discrepancy(a, a[torch.randperm(20, generator=_gen(5))], kernel).item() == pytest.approx(0.0, abs=1e-14)
    for seed in range(5):  # the V-statistic is a squared RKHS norm: never negative
        b = torch.randn(20, 4, generator=_gen(10 + seed), dtype=F64)
        assert est.maximum_mean_discrepancy(a, b, kernel).item() > 0


def test_mmd_gaussian_kernel_matches_the_closed_form_for_two_gaussians():
    """For a ~ N(mu_a, s_a^2 I), b ~ N(mu_b, s_b^2 I) and k = exp(-||u||^2 / h), E k = (1 + 2v/h)^(-K/2)
    exp(-||m||^2 / (h + 2v)) with u = a - b ~ N(m, v I).  The V-statistic's expectation keeps the
    diagonal: (1/M) * 1 + (1 - 1/M) E k(a, a') for each within-sample term."""
    k, m, h = 2, 1500, 2.0  # "gaussian" with prior_std 1: h = K
    g = _gen(6)
    mu_b = torch.tensor([0.8, 0.0], dtype=F64)
    a = torch.randn(m, k, generator=g, dtype=F64)
    b = mu_b + 1.5 * torch.randn(m, k, generator=g, dtype=F64)

    def expected_k(mean_sq, v):
        return (1 + 2 * v / h) ** (-k / 2) * math.exp(-mean_sq / (h + 2 * v))

    k_aa, k_bb, k_ab = expected_k(0.0, 2.0), expected_k(0.0, 2 * 2.25), expected_k(0.64, 1.0 + 2.25)
    expected = (1 / m + (1 - 1 / m) * k_aa) + (1 / m + (1 - 1 / m) * k_bb) - 2 * k_ab
    got = est.maximum_mean_discrepancy(a, b, "gaussian").item()
    assert expected > 0.05
    assert got == pytest.approx(expected, abs=0.004)  # the "gaussian_dim2" kernel gives 0.091 here


def test_mmd_gradient_is_finite_at_coinciding_points():
    a = torch.zeros(4, 3, dtype=F64, requires_grad=True)
    est.maximum_mean_discrepancy(a, torch.ones(4, 3, dtype=F64)).backward()
    assert torch.isfinite(a.grad).all()


def test_mmd_rejects_an_unknown_kernel():
    with pytest.raises(ValueError, match="unknown MMD kernel"):
        est.maximum_mean_discrepancy(torch.zeros(2, 2), torch.zeros(2, 2), "rbf")


# ----------------------------------------------------------------------------- capacity schedule


def test_linear_capacity_rises_linearly_and_stops_at_its_maximum():
    assert est.linear_capacity(0, 5.0, 100) == 0.0
    assert est.linear_capacity(25, 5.0, 100) == pytest.approx(1.25)
    assert est.linear_capacity(100, 5.0, 100) == pytest.approx(5.0)
    assert est.linear_capacity(10_000, 5.0, 100) == pytest.approx(5.0)
    assert est.linear_capacity(3, 5.0, 0) == 5.0  # no ramp
    # the discrete capacity is capped at log K2
    assert est.linear_capacity(10, 5.0, 100) == pytest.approx(0.5)
    assert est.linear_capacity(50, 5.0, 100, limit=math.log(3)) == pytest.approx(math.log(3))
    with pytest.raises(ValueError):
        est.linear_capacity(-1, 5.0, 100)


def test_linear_capacity_per_member():
    c = est.linear_capacity(50, torch.tensor([2.0, 10.0]), 100, limit=math.log(10))
    torch.testing.assert_close(c, torch.tensor([1.0, math.log(10)]))


# ----------------------------------------------------------------------------- beta-TCVAE decomposition


def test_posterior_and_prior_log_densities_match_torch_distributions():
    z, mean, logvar = _posteriors(7, 3, 7)
    torch.testing.assert_close(est.posterior_log_density(z, mean, logvar),
                               Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1))
    torch.testing.assert_close(est.prior_log_density(z, 2.0), _prior(2.0).log_prob(z).sum(-1))


def _mixture_log_density(z, mean, logvar):
    """log (1/N) sum_n q(z_i | x_n), by a double loop."""
    rows = []
    for i in range(z.shape[0]):
        logs = torch.stack([Normal(mean[n], torch.exp(0.5 * logvar[n])).log_prob(z[i]).sum() for n in range(mean.shape[0])])
        rows.append(torch.logsumexp(logs, 0) - math.log(mean.shape[0]))
    return torch.stack(rows)


def test_index_code_mi_with_the_whole_data_set_is_the_exact_mixture_estimate():
    """MSS with M = N uses the exact mixture q(z) = (1/N) sum_n q(z|x_n); MWS is the same plus log N."""
    z, mean, logvar = _posteriors(8, 3, 8)
    own = Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    expected = (own - _mixture_log_density(z, mean, logvar)).mean()
    mss = est.index_code_mutual_information(est.aggregate_log_density(z, mean, logvar, 8, "mss"), z, mean, logvar)
    torch.testing.assert_close(mss, expected)
    mws = est.index_code_mutual_information(est.aggregate_log_density(z, mean, logvar, 8, "mws"), z, mean, logvar)
    torch.testing.assert_close(mws, expected + math.log(8))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("prior_std", [1.0, 0.7])
def test_mi_tc_and_dimension_wise_kl_sum_to_the_batch_kl_estimate(estimator, prior_std):
    """Chen et al.'s decomposition on a batch: I(x;z) + TC(z) + sum_k KL(q(z_k)||r) equals
    (1/M) sum_i [log q(z_i|x_i) - log r(z_i)] exactly, for either estimator (the MWS offsets cancel)."""
    z, mean, logvar = _posteriors(10, 4, 9)
    agg = est.aggregate_log_density(z, mean, logvar, 1000, estimator)
    total = (est.index_code_mutual_information(agg, z, mean, logvar) + est.total_correlation(agg)
             + est.marginal_kl_to_prior(agg, z, prior_std))
    by_hand = (Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1) - _prior(prior_std).log_prob(z).sum(-1)).mean()
    torch.testing.assert_close(total, by_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(est.posterior_kl_monte_carlo(z, mean, logvar, prior_std), by_hand, rtol=1e-12, atol=1e-12)


def test_posterior_kl_monte_carlo_is_unbiased_for_the_closed_form_kl():
    g = _gen(11)
    mean = torch.randn(1, 3, generator=g, dtype=F64).expand(20000, 3)
    logvar = (torch.randn(1, 3, generator=g, dtype=F64) * 0.5).expand(20000, 3)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(20000, 3, generator=g, dtype=F64)
    mc = est.posterior_kl_monte_carlo(z, mean, logvar, 1.3)
    exact = est.gaussian_kl_to_prior(mean[:1], logvar[:1], 1.3)[0]
    assert mc.item() == pytest.approx(exact.item(), abs=0.03)


# ----------------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_new_estimators_with_a_member_dimension_equal_each_member_alone(estimator):
    g = _gen(12)
    e, m, k, c = 3, 6, 4, 5
    z, mean = torch.randn(e, m, k, generator=g, dtype=F64), torch.randn(e, m, k, generator=g, dtype=F64)
    logvar = torch.randn(e, m, k, generator=g, dtype=F64) * 0.3
    prior = torch.randn(e, m, k, generator=g, dtype=F64)
    log_probs = torch.log_softmax(torch.randn(e, m, c, generator=g, dtype=F64), dim=-1)
    prior_std = torch.tensor([1.0, 0.5, 2.0], dtype=F64)

    agg = est.aggregate_log_density(z, mean, logvar, 50, estimator)
    batched = {
        "kl_y_marginal": est.marginal_kl_to_uniform(log_probs),
        "mi_z": est.index_code_mutual_information(agg, z, mean, logvar),
        "kl_mc": est.posterior_kl_monte_carlo(z, mean, logvar, prior_std),
        "kl_z": est.gaussian_kl_to_prior(mean, logvar, prior_std).mean(-1),
        **{f"mmd_{kern}": est.maximum_mean_discrepancy(z, prior, kern, prior_std) for kern in est.MMD_KERNELS},
    }
    for i in range(e):
        agg_i = est.aggregate_log_density(z[i], mean[i], logvar[i], 50, estimator)
        s = float(prior_std[i])
        alone = {
            "kl_y_marginal": est.marginal_kl_to_uniform(log_probs[i]),
            "mi_z": est.index_code_mutual_information(agg_i, z[i], mean[i], logvar[i]),
            "kl_mc": est.posterior_kl_monte_carlo(z[i], mean[i], logvar[i], s),
            "kl_z": est.gaussian_kl_to_prior(mean[i], logvar[i], s).mean(-1),
            **{f"mmd_{kern}": est.maximum_mean_discrepancy(z[i], prior[i], kern, s) for kern in est.MMD_KERNELS},
        }
        for name, value in alone.items():
            assert batched[name].shape == (e,), name
            torch.testing.assert_close(batched[name][i], value, msg=name)


def test_gaussian_prior_sample_shape_and_scale():
    like = torch.zeros(2, 4000, 3)
    torch.manual_seed(0)
    s = gaussian_prior_sample(like, torch.tensor([0.5, 2.0]).view(2, 1, 1))
    assert s.shape == like.shape
    stds = s.std(dim=(1, 2))
    assert stds[0].item() == pytest.approx(0.5, rel=0.05)
    assert stds[1].item() == pytest.approx(2.0, rel=0.05)
    assert abs(s.mean().item()) < 0.05
