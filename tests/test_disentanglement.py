"""Disentanglement metrics (MIG x2, DCI, FactorVAE, SAP) on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from imae import metrics as M
from imae.metrics import _mixture

SIZES = (4, 5, 6)


def _grid(sizes=SIZES, repeats: int = 1) -> np.ndarray:
    """Every combination of the factor values (a full grid), ``repeats`` times: ``[N, J]`` int64."""
    axes = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    grid = np.stack(axes, axis=-1).reshape(-1, len(sizes)).astype(np.int64)
    return np.tile(grid, (repeats, 1))


def _standardised(factors: np.ndarray) -> np.ndarray:
    f = factors.astype(np.float64)
    return (f - f.mean(axis=0)) / f.std(axis=0)


LOGVAR_SMALL = 2 * math.log(0.05)  # posterior std 0.05 of a standardised factor: values well apart


def _chen(codes, factors, logvar=LOGVAR_SMALL, **kw):
    codes = torch.as_tensor(codes, dtype=torch.float64)
    return M.mig_chen_details(codes, torch.full_like(codes, logvar), factors, **kw)


# ----------------------------------------------------------------------------- histogram MIG


def _reference_mig(codes: np.ndarray, factors: np.ndarray, num_bins: int) -> float:
    """disentanglement_lib's recipe, written out with plain numpy and scikit-learn loops."""
    n_codes, n_factors = codes.shape[1], factors.shape[1]
    discretized = np.zeros_like(codes)
    for i in range(n_codes):
        discretized[:, i] = np.digitize(codes[:, i], np.histogram(codes[:, i], num_bins)[1][:-1])
    m = np.zeros((n_codes, n_factors))
    for i in range(n_codes):
        for j in range(n_factors):
            m[i, j] = mutual_info_score(factors[:, j], discretized[:, i])
    h = np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(n_factors)])
    sorted_m = np.sort(m, axis=0)[::-1]
    return float(np.mean((sorted_m[0, :] - sorted_m[1, :]) / h))


@pytest.mark.parametrize("seed", range(6))
def test_histogram_mig_agrees_with_the_disentanglement_lib_recipe(seed):
    rng = np.random.default_rng(seed)
    n, k, j = rng.integers(300, 3000), rng.integers(2, 9), rng.integers(1, 5)
    factors = np.stack([rng.integers(0, rng.integers(2, 12), size=n) for _ in range(j)], axis=1)
    codes = rng.normal(size=(n, k)) * rng.uniform(0.1, 5, size=k)
    for col in range(min(j, k)):  # some informative dimensions, some nonlinear
        codes[:, col] += factors[:, col] ** rng.uniform(0.5, 2.0)
    dtype = np.float32 if seed % 2 else np.float64  # float32 codes keep float32 histogram edges
    codes = codes.astype(dtype)
    num_bins = int(rng.choice([5, 20, 37]))
    expected = _reference_mig(codes, factors, num_bins)
    assert abs(M.mig(codes, factors, num_bins=num_bins) - expected) <= 1e-6
    assert abs(M.mig(torch.from_numpy(codes), torch.from_numpy(factors), num_bins=num_bins) - expected) <= 1e-6
    if num_bins == 20:
        assert abs(M.mig(codes, factors) - expected) <= 1e-6  # 20 bins by default


def test_histogram_discretize_follows_np_histogram_edges():
    codes = np.array([[0.0, 3.0], [0.5, 3.0], [1.0, 3.0], [0.26, 3.0]])
    out = M.histogram_discretize(codes, num_bins=2)
    # edges 0, 0.5, 1: left edges [0, 0.5]; a value on an inner edge goes up, the maximum to the last bin
    np.testing.assert_array_equal(out[:, 0], [1, 2, 2, 1])
    assert len(np.unique(out[:, 1])) == 1  # a constant column is one bin
    assert M.histogram_discretize(np.random.default_rng(0).normal(size=(500, 3))).max() == 20


def test_histogram_discretize_keeps_float32_edges_like_disentanglement_lib():
    """np.histogram computes float32 edges for float32 codes; values on those edges bin differently
    from float64 edges (e.g. float32(0.7) lies below the float64 edge 0.7), so the dtype is kept."""
    values = np.tile(np.linspace(0, 1, 21).astype(np.float32), 3)[:, None]
    recipe = np.digitize(values[:, 0], np.histogram(values[:, 0], 20)[1][:-1])
    np.testing.assert_array_equal(M.histogram_discretize(values)[:, 0], recipe)
    np.testing.assert_array_equal(M.histogram_discretize(torch.from_numpy(values))[:, 0], recipe)
    assert not np.array_equal(M.histogram_discretize(values.astype(np.float64))[:, 0], recipe)


def test_discrete_entropy_and_mutual_info_hand_values():
    f = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_allclose(M.discrete_entropy(f), [math.log(2), math.log(2)])
    m = M.discrete_mutual_info(f, f)  # codes equal to the factors
    np.testing.assert_allclose(m, [[math.log(2), 0.0], [0.0, math.log(2)]], atol=1e-15)


# ----------------------------------------------------------------------------- constructed cases, both MIGs


def test_mig_of_codes_equal_to_the_factors_is_one():
    factors = _grid(repeats=3)
    assert M.mig(factors.astype(float), factors) == pytest.approx(1.0, abs=1e-12)
    assert _chen(_standardised(factors), factors).score == pytest.approx(1.0, abs=1e-3)


def test_mig_is_invariant_to_permuting_and_monotonically_transforming_the_codes():
    factors = _grid(repeats=3)
    codes = factors.astype(float)
    transformed = np.stack([np.exp(codes[:, 2] / 5), 3.0 - 2.0 * codes[:, 0], np.cbrt(codes[:, 1] + 1.0)], axis=1)
    result = M.mig_details(transformed, factors)
    assert result.score == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(result.top, [1, 2, 0])  # the permutation is recovered
    # Chen et al.'s estimator depends on the posterior overlap, which a monotone map of the means
    # with fixed sigma preserves when the values stay well apart
    std = _standardised(factors)
    chen = _chen(np.stack([std[:, 2] * 1.5, -2.0 * std[:, 0], std[:, 1] ** 3 + 2 * std[:, 1]], axis=1), factors)
    assert chen.score == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_array_equal(chen.top, [1, 2, 0])


def test_mig_of_codes_independent_of_the_factors_is_near_zero():
    factors = _grid(repeats=40)  # 4,800 items: small plug-in bias
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(len(factors), 3))
    assert 0.0 <= M.mig(codes, factors) < 0.02
    chen = _chen(codes, factors, logvar=math.log(0.1))
    assert 0.0 <= chen.score < 0.02
    assert np.all(chen.mutual_info < 0.02)


def test_mig_of_duplicated_codes_is_zero():
    factors = _grid(repeats=2)
    codes = np.repeat(_standardised(factors), 2, axis=1)  # every dimension twice
    assert M.mig(codes, factors) == pytest.approx(0.0, abs=1e-12)
    chen = _chen(codes, factors)
    assert abs(chen.score) < 0.01  # each copy gets its own z sample: equal up to Monte Carlo noise
    assert np.all(chen.mutual_info.max(axis=0) > 0.95 * np.log(SIZES))


def test_mig_does_not_penalise_one_code_carrying_two_factors_but_dci_does():
    """c0 = f0 + 4 f1 carries factors 0 and 1 (every pair in its own bin), c1 = f2, c2 noise."""
    factors = _grid(repeats=10)
    rng = np.random.default_rng(1)
    codes = np.stack([factors[:, 0] + 4.0 * factors[:, 1], factors[:, 2], rng.normal(size=len(factors))], axis=1)
    hist = M.mig_details(codes, factors)
    np.testing.assert_array_equal(hist.top, [0, 0, 1])  # c0 is the best code for both factors
    assert hist.score > 0.95  # a gap needs only one code per factor: MIG is blind to the sharing
    chen = _chen(codes / codes.std(axis=0), factors, logvar=2 * math.log(0.02))
    np.testing.assert_array_equal(chen.top, [0, 0, 1])
    assert chen.score > 0.9
    shared = M.dci(codes, factors, num_train=400, num_test=200, seed=0)
    separate = M.dci(factors.astype(float), factors, num_train=400, num_test=200, seed=0)
    assert separate.disentanglement > 0.99
    assert shared.disentanglement < 0.8  # c0's importance is split between two factors
    assert shared.completeness > 0.9  # but each factor still lives in one code
    assert shared.importance[0, 0] > 0.3 and shared.importance[0, 1] > 0.3


def _graded_codes(factors: np.ndarray):
    """Noisy codes from factorised to independent of the factors, in a known order: factors 0
    and 1 rotated into each other by growing angles, then pure noise."""
    std = _standardised(factors)
    rng = np.random.default_rng(2)
    cases = []
    for angle in (0.0, 0.2, 0.4, 0.6, 0.8):
        c, s = math.cos(angle), math.sin(angle)
        mixed = std.copy()
        mixed[:, 0], mixed[:, 1] = c * std[:, 0] - s * std[:, 1], s * std[:, 0] + c * std[:, 1]
        cases.append(mixed + 0.2 * rng.normal(size=std.shape))
    cases.append(rng.normal(size=std.shape))
    return cases


def test_chen_and_histogram_mig_rank_the_constructed_cases_alike():
    factors = _grid(repeats=8)
    cases = _graded_codes(factors) + [np.repeat(_standardised(factors), 2, axis=1)]
    hist = np.array([M.mig(c, factors) for c in cases])
    chen = np.array([_chen(c, factors, logvar=2 * math.log(0.1)).score for c in cases])
    # both estimators decrease strictly along the graded cases; duplicated codes score ~0 under both
    assert np.all(np.diff(hist[:6]) < 0), hist
    assert np.all(np.diff(chen[:6]) < 0), chen
    np.testing.assert_array_equal(np.argsort(hist[:6]), np.argsort(chen[:6]))
    assert hist[6] < 0.01 and chen[6] < 0.01
    assert hist[0] > 0.8 and chen[0] > 0.8 and hist[5] < 0.05 and chen[5] < 0.05


# ----------------------------------------------------------------------------- Chen et al. specifics


def test_mixture_entropy_matches_a_direct_logsumexp():
    from scipy.special import logsumexp

    rng = np.random.default_rng(3)
    mean, logvar = rng.normal(size=(70, 3)), rng.normal(-1, 0.7, size=(70, 3))
    samples = rng.normal(size=(25, 3))
    log_q = -0.5 * ((samples[:, None, :] - mean[None]) ** 2 / np.exp(logvar)[None] + logvar[None] + math.log(2 * math.pi))
    expected = -(logsumexp(log_q, axis=1) - math.log(70)).mean(axis=0)
    got = _mixture.mixture_entropy(torch.tensor(samples), torch.tensor(mean), torch.tensor(logvar), fast=False)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_mixture_entropy_of_identical_components_is_the_gaussian_entropy():
    sigma = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(20_000, 3, generator=g, dtype=torch.float64) * sigma
    mean = torch.zeros(50, 3, dtype=torch.float64)
    logvar = (2 * torch.log(sigma)).expand(50, 3)
    got = _mixture.mixture_entropy(samples, mean, logvar, fast=False)
    expected = 0.5 * torch.log(2 * math.pi * math.e * sigma**2)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=0.02)


def test_the_compiled_kernel_agrees_with_the_float64_path():
    """The float32 kernel that the full dSprites grid uses on a CPU (padding included)."""
    factors = _grid((3, 7), repeats=60)  # 1,260 items: groups of 180 and 420, not multiples of the blocks
    rng = np.random.default_rng(5)
    mean = torch.tensor(_standardised(factors) @ rng.normal(size=(2, 4)) + 0.1 * rng.normal(size=(len(factors), 4)))
    logvar = torch.tensor(rng.normal(-3, 0.5, size=(len(factors), 4)))
    y_prob = torch.softmax(torch.tensor(rng.normal(size=(len(factors), 3))), dim=1)
    args = dict(y_prob=y_prob, n_samples=300, seed=7)
    slow = M.chen_entropies(mean, logvar, factors, fast=False, **args)
    fast = M.chen_entropies(mean, logvar, factors, fast=True, **args)
    if _mixture._compile_failed:
        pytest.skip("torch.compile is not available here (it fell back to the eager path)")
    np.testing.assert_allclose(fast.marginal, slow.marginal, atol=1e-4)
    np.testing.assert_allclose(fast.conditional, slow.conditional, atol=1e-4)
    assert abs(fast.mig().score - slow.mig().score) < 1e-4
    # the joint-density kernel of the total correlation
    slow_tc = M.aggregate_posterior_divergences(mean, logvar, n_samples=500, fast=False)
    fast_tc = M.aggregate_posterior_divergences(mean, logvar, n_samples=500, fast=True)
    assert fast_tc["tc"] == pytest.approx(slow_tc["tc"], abs=1e-4)
    assert fast_tc["marginal_kl"] == pytest.approx(slow_tc["marginal_kl"], abs=1e-4)


def test_aggregate_posterior_divergences_match_the_full_data_estimator():
    from imae import estimators as est

    g = torch.Generator().manual_seed(9)
    mean = torch.randn(300, 4, generator=g, dtype=torch.float64)
    mean[:, 1] = 0.9 * mean[:, 0]  # correlated dimensions: TC > 0
    logvar = torch.randn(300, 4, generator=g, dtype=torch.float64) * 0.3 - 1.0
    for n_samples in (10_000, 50):  # all 300 items, then a random 50 of them as Monte Carlo points
        got = M.aggregate_posterior_divergences(mean, logvar, prior_std=1.5, n_samples=n_samples, seed=3)
        gen = torch.Generator().manual_seed(3)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
        if n_samples < 300:
            z = z[torch.randperm(300, generator=gen)[:n_samples]]
        aggregate = est.dataset_aggregate_log_density(z, mean, logvar)
        assert got["tc"] == pytest.approx(float(est.total_correlation(aggregate)), rel=1e-10)
        assert got["marginal_kl"] == pytest.approx(float(est.marginal_kl_to_prior(aggregate, z, 1.5)), rel=1e-10)
    assert got["tc"] > 0.1


def test_chen_mig_is_reproducible_and_seeded():
    factors = _grid(repeats=2)
    codes = _graded_codes(factors)[1]
    a, b = _chen(codes, factors, seed=3), _chen(codes, factors, seed=3)
    assert a.score == b.score
    assert _chen(codes, factors, seed=4).score != a.score


def test_chen_mig_include_and_factor_sizes_normalisation():
    factors = _grid(repeats=2)
    codes = _standardised(factors)
    sub = _chen(codes, factors, include=(2, 0))
    np.testing.assert_array_equal(sub.factors, [2, 0])
    np.testing.assert_allclose(sub.normaliser, np.log([6, 4]))
    # the normaliser is log(number of values): declaring 12 values for factor 2 scales its gap by log 6 / log 12
    wide = _chen(codes, factors, factor_sizes=(4, 5, 12))
    full = _chen(codes, factors)
    assert wide.gaps[2] == pytest.approx(full.gaps[2] * math.log(6) / math.log(12), rel=1e-9)
    with pytest.raises(ValueError, match="factor_sizes"):
        _chen(codes, factors, factor_sizes=(4, 5, 3))
    with pytest.raises(ValueError, match="include"):
        _chen(codes, factors, include=(0, 3))


def test_hybrid_chen_mig_scores_y_as_a_candidate_latent():
    """y = factor 0 exactly (one-hot); z encodes factors 1 and 2 only."""
    factors = _grid(repeats=2)
    std = _standardised(factors)
    codes = torch.tensor(std[:, 1:])
    logvar = torch.full_like(codes, LOGVAR_SMALL)
    y_prob = torch.nn.functional.one_hot(torch.tensor(factors[:, 0]), SIZES[0]).double()
    ent = M.chen_entropies(codes, logvar, factors, y_prob=y_prob)
    assert ent.marginal[-1] == pytest.approx(math.log(SIZES[0]), abs=1e-12)  # H(y), exact for a categorical
    mi = ent.mutual_info()
    assert mi[-1, 0] == pytest.approx(math.log(SIZES[0]), abs=1e-12)  # I(y; v_0) = H(v_0)
    np.testing.assert_allclose(mi[-1, 1:], 0.0, atol=1e-12)  # y knows nothing of factors 1 and 2
    hybrid = ent.mig()
    assert hybrid.score == pytest.approx(1.0, abs=2e-3)
    assert hybrid.top[0] == 2  # the y candidate (after z_1, z_2)
    without_y = ent.mig(with_y=False)
    assert without_y.gaps[0] < 0.01 and without_y.score < 0.7  # no z dimension encodes factor 0
    assert M.mig_chen(codes, logvar, factors, y_prob=y_prob) == pytest.approx(hybrid.score)


# ----------------------------------------------------------------------------- DCI, FactorVAE, SAP


def test_dci_of_codes_equal_to_the_factors():
    factors = _grid(repeats=4)
    result = M.dci(factors.astype(float), factors, num_train=300, num_test=180, seed=0)
    assert result.disentanglement == pytest.approx(1.0, abs=1e-6)
    assert result.completeness == pytest.approx(1.0, abs=1e-6)
    assert result.informativeness == 1.0 and result.informativeness_train == 1.0
    # a permutation and monotone maps of the codes: trees split on order only
    transformed = np.stack([np.exp(factors[:, 2] / 3.0), -factors[:, 0] ** 3, np.sqrt(factors[:, 1])], axis=1)
    moved = M.dci(transformed, factors, num_train=300, num_test=180, seed=0)
    assert moved.disentanglement == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(np.argmax(moved.importance, axis=0), [1, 2, 0])


def test_dci_of_independent_codes_is_near_zero():
    factors = _grid(repeats=4)
    codes = np.random.default_rng(6).normal(size=(len(factors), 3))
    result = M.dci(codes, factors, num_train=300, num_test=180, seed=0)
    assert result.disentanglement < 0.15 and result.completeness < 0.15
    assert result.informativeness < 0.45  # chance is 1/4, 1/5, 1/6 for the three factors


def test_dci_scores_from_an_importance_matrix_hand_values():
    assert M.disentanglement_score(np.eye(3)) == pytest.approx(1.0, abs=1e-9)
    assert M.completeness_score(np.eye(3)) == pytest.approx(1.0, abs=1e-9)
    uniform = np.ones((3, 3))
    assert M.disentanglement_score(uniform) == pytest.approx(0.0, abs=1e-9)
    # one code spread evenly over two of four factors: 1 - log 2 / log 4 = 0.5
    r = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert M.disentanglement_score(r) == pytest.approx(0.5, abs=1e-9)


def test_factor_vae_score_constructed_cases():
    factors = _grid(repeats=4)
    kw = dict(num_train=600, num_eval=400, num_variance_estimate=480, seed=0)
    perfect = M.factor_vae_score(factors.astype(float), factors, **kw)
    assert perfect.score == 1.0 and perfect.train_accuracy == 1.0 and perfect.num_active_dims == 3
    permuted = M.factor_vae_score(np.exp(factors[:, [2, 0, 1]] / 4.0), factors, **kw)
    assert permuted.score == 1.0
    rng = np.random.default_rng(7)
    independent = M.factor_vae_score(rng.normal(size=(len(factors), 3)), factors, **kw)
    assert independent.score < 0.6
    # one code carrying two factors equally: it can be mapped to only one of them
    std = _standardised(factors)
    shared = np.stack([std[:, 0] + std[:, 1], std[:, 2], rng.normal(size=len(factors))], axis=1)
    assert 0.55 < M.factor_vae_score(shared, factors, **kw).score < 0.75
    # a collapsed (constant) dimension is pruned
    collapsed = np.concatenate([factors.astype(float), np.full((len(factors), 1), 0.3)], axis=1)
    assert M.factor_vae_score(collapsed, factors, **kw).num_active_dims == 3


def test_sap_constructed_cases():
    factors = _grid(repeats=4)
    codes = factors.astype(float)
    discrete = M.sap(codes, factors, num_train=300, num_test=180, seed=0)
    np.testing.assert_array_equal(np.argmax(discrete.score_matrix, axis=0), [0, 1, 2])
    assert discrete.score > 0.1
    continuous = M.sap(codes, factors, num_train=10_000, num_test=1, seed=0, continuous_factors=True)
    assert continuous.score > 0.97  # squared correlation 1 with its own code, ~0 with the others
    duplicated = M.sap(np.repeat(codes, 2, axis=1), factors, num_train=300, num_test=180, seed=0)
    assert duplicated.score == pytest.approx(0.0, abs=1e-12)
    independent = M.sap(np.random.default_rng(8).normal(size=codes.shape), factors, num_train=300, num_test=180,
                        seed=0, continuous_factors=True)
    assert independent.score < 0.05


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call", [
    lambda c, f: M.mig(c, f),
    lambda c, f: M.dci(c, f),
    lambda c, f: M.sap(c, f),
    lambda c, f: M.factor_vae_score(c, f),
    lambda c, f: M.mig_chen(torch.tensor(c), torch.zeros(c.shape, dtype=torch.float64), f),
])
def test_metrics_reject_mismatched_lengths_with_a_clear_message(call):
    codes = np.random.default_rng(0).normal(size=(50, 3))
    factors = _grid()[:40]
    with pytest.raises(ValueError, match="40 rows but the codes have 50"):
        call(codes, factors)


def test_metrics_reject_bad_codes_and_factors():
    factors = _grid()
    codes = _standardised(factors)
    with pytest.raises(ValueError, match="2-D"):
        M.mig(codes[:, 0], factors)
    with pytest.raises(ValueError, match="at least 2"):
        M.mig(codes[:, :1], factors)
    bad = codes.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"codes\[3, 1\]"):
        M.mig(bad, factors)
    with pytest.raises(ValueError, match="integer"):
        M.mig(codes, factors + 0.5)
    with pytest.raises(ValueError, match="single value"):
        M.mig(codes, np.zeros((len(codes), 1), dtype=int))
    with pytest.raises(ValueError, match="same shape"):
        M.mig_chen(torch.tensor(codes), torch.zeros(len(codes), 2), factors)
    with pytest.raises(ValueError, match="probability"):
        M.mig_chen(torch.tensor(codes), torch.zeros(codes.shape), factors, y_prob=torch.ones(len(codes), 2))
    with pytest.raises(ValueError, match="batch_size"):
        M.factor_vae_score(codes, factors, batch_size=1)
