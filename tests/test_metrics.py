"""Evaluation metrics of :mod:`imae.metrics` against hand-computed values and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imae import metrics

LABELS = [0, 0, 1, 1, 2, 2]
ASSIGN = [1, 1, 0, 0, 0, 2]


# ----------------------------------------------------------------------------- clustering


def test_cluster_accuracy_hand_case():
    # best map: cluster 1 -> label 0 (2 hits), cluster 0 -> label 1 (2), cluster 2 -> label 2 (1)
    assert metrics.cluster_accuracy(LABELS, ASSIGN) == pytest.approx(5 / 6)


def test_cluster_accuracy_is_invariant_to_relabelling_clusters():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=200)
    assignments = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 6, size=200))
    reference = metrics.cluster_accuracy(labels, assignments)
    for _ in range(6):
        perm = rng.permutation(6)
        assert metrics.cluster_accuracy(labels, perm[assignments]) == pytest.approx(reference, abs=1e-15)
        # arbitrary (non-contiguous) cluster ids too
        ids = rng.choice(1000, size=6, replace=False)
        assert metrics.cluster_accuracy(labels, ids[assignments]) == pytest.approx(reference, abs=1e-15)


def test_cluster_accuracy_of_a_relabelled_perfect_clustering_is_one():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, size=300)
    for _ in range(3):
        perm = rng.permutation(7) + 10
        assert metrics.cluster_accuracy(labels, perm[labels]) == 1.0


def test_cluster_accuracy_with_more_clusters_than_labels_counts_unmatched_as_errors():
    assert metrics.cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.5)
    # clusters 0 -> 0 (2 hits) and 2 -> 1 (2 hits); clusters 1 and 3 are left unmatched
    assert metrics.cluster_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 2, 2, 3]) == pytest.approx(4 / 6)


def test_cluster_accuracy_with_fewer_clusters_than_labels():
    assert metrics.cluster_accuracy([0, 1, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.5)


def test_cluster_accuracy_accepts_torch_and_numpy():
    expected = 5 / 6
    assert metrics.cluster_accuracy(torch.tensor(LABELS), torch.tensor(ASSIGN)) == pytest.approx(expected)
    assert metrics.cluster_accuracy(np.array(LABELS), np.array(ASSIGN)) == pytest.approx(expected)
    assert metrics.cluster_accuracy(torch.tensor(LABELS), np.array(ASSIGN)) == pytest.approx(expected)
    # integer-valued floats are classes too
    assert metrics.cluster_accuracy(np.array(LABELS, dtype=float), torch.tensor(ASSIGN, dtype=torch.float32)) \
        == pytest.approx(expected)


def test_cluster_accuracy_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.cluster_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        metrics.cluster_accuracy([], [])
    with pytest.raises(ValueError):
        metrics.cluster_accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError):
        metrics.cluster_accuracy(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))


def test_nmi_and_ari_of_a_relabelled_perfect_clustering_are_one():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, size=500)
    relabelled = (rng.permutation(6) + 3)[labels]
    assert metrics.nmi(labels, relabelled) == pytest.approx(1.0)
    assert metrics.ari(labels, relabelled) == pytest.approx(1.0)
    assert metrics.nmi(torch.tensor(labels), torch.tensor(relabelled)) == pytest.approx(1.0)
    assert metrics.ari(torch.tensor(labels), torch.tensor(relabelled)) == pytest.approx(1.0)


def test_nmi_and_ari_of_independent_assignments_are_near_zero():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, size=5000)
    assignments = rng.integers(0, 10, size=5000)
    assert 0 <= metrics.nmi(labels, assignments) < 0.02
    assert abs(metrics.ari(labels, assignments)) < 0.01


def test_nmi_and_ari_reject_mismatched_lengths():
    with pytest.raises(ValueError):
        metrics.nmi([0, 1, 1], [0, 1])
    with pytest.raises(ValueError):
        metrics.ari([0, 1, 1], [0, 1])


def test_confusion_matrix_hand_case():
    counts = metrics.confusion_matrix(LABELS, ASSIGN)
    # rows: clusters 0, 1, 2; columns: labels 0, 1, 2
    np.testing.assert_array_equal(counts, [[0, 2, 1], [2, 0, 0], [0, 0, 1]])
    assert counts.sum() == len(LABELS)


def test_confusion_matrix_reindexes_ids():
    counts = metrics.confusion_matrix([5, 5, 9, 9, 9], torch.tensor([7, 3, 7, 7, 3]))
    # clusters (3, 7) x labels (5, 9)
    np.testing.assert_array_equal(counts, [[1, 1], [1, 2]])
    with pytest.raises(ValueError):
        metrics.confusion_matrix([0, 1], [0, 1, 2])


# ----------------------------------------------------------------------------- I(x; y)


def test_mutual_information_xy_uniform_is_zero():
    assert metrics.mutual_information_xy(torch.full((20, 5), 0.2)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_mutual_information_xy_balanced_one_hot_is_log_c(n_classes):
    probs = torch.eye(n_classes).repeat(4, 1)  # exact zeros everywhere off the diagonal
    mi = metrics.mutual_information_xy(probs)
    assert math.isfinite(mi)
    assert mi == pytest.approx(math.log(n_classes), abs=1e-12)


def test_mutual_information_xy_hand_case():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])

    def h(p):
        return -sum(v * math.log(v) for v in p if v > 0)

    expected = h([0.45, 0.15, 0.4]) - 0.5 * (h([0.9, 0.1]) + h([0.2, 0.8]))
    assert metrics.mutual_information_xy(probs) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- Proposition 1


def _hand_bounds(mean: np.ndarray, logvar: np.ndarray):
    """Eqs. 4 and 5 with numpy: population variance of the means over the data set."""
    mean = mean.astype(np.float64)
    logvar = logvar.astype(np.float64)
    var2 = np.exp(logvar)
    e_sigma2 = var2.mean(axis=0)
    var_mu = ((mean - mean.mean(axis=0)) ** 2).mean(axis=0)
    e_logsigma2 = logvar.mean(axis=0)
    upper = 0.5 * np.log(e_sigma2 + var_mu) - 0.5 * e_logsigma2
    lower = 0.5 * np.log(1.0 + var_mu / e_sigma2)
    return upper, lower


def _constructed_code(n=400, seed=0):
    rng = np.random.default_rng(seed)
    mean = np.stack([
        rng.normal(0, 2.0, n),  # informative
        rng.normal(0, 0.3, n),  # weakly informative
        np.full(n, 0.7),  # constant mean: no information
        rng.uniform(-1, 1, n),  # uniform spread
    ], axis=1)
    logvar = np.stack([
        rng.normal(-4.0, 0.5, n),
        rng.normal(-1.0, 0.8, n),
        np.zeros(n),
        rng.normal(-2.0, 1.5, n),
    ], axis=1)
    return mean, logvar


def test_mi_bounds_match_hand_formulas():
    mean, logvar = _constructed_code()
    upper, lower = _hand_bounds(mean, logvar)
    got_upper = metrics.mi_xz_upper_bound(torch.tensor(mean), torch.tensor(logvar))
    got_lower = metrics.mi_xz_lower_bound(torch.tensor(mean), torch.tensor(logvar))
    np.testing.assert_allclose(got_upper, upper, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_lower, lower, rtol=1e-10, atol=1e-12)
    # float32 inputs are promoted to float64 internally
    got32 = metrics.mi_xz_upper_bound(torch.tensor(mean, dtype=torch.float32), torch.tensor(logvar, dtype=torch.float32))
    np.testing.assert_allclose(got32, upper, rtol=1e-5, atol=1e-5)


def test_mi_upper_bound_dominates_lower_bound():
    rng = np.random.default_rng(4)
    for _ in range(20):
        n, k = rng.integers(2, 200), rng.integers(1, 8)
        mean = rng.normal(0, rng.uniform(0.01, 5), (n, k))
        logvar = rng.normal(rng.uniform(-6, 2), rng.uniform(0, 3), (n, k))
        up = metrics.mi_xz_upper_bound(torch.tensor(mean), torch.tensor(logvar))
        lo = metrics.mi_xz_lower_bound(torch.tensor(mean), torch.tensor(logvar))
        assert up.shape == lo.shape == (k,)
        assert np.all(up >= lo - 1e-12)
        assert np.all(lo >= 0)


def test_mi_bounds_coincide_when_sigma_is_constant():
    """With sigma_k(x) = s for all x: eq. 4 = 1/2 log(s^2 + V) - 1/2 log s^2 = 1/2 log(1 + V/s^2) = eq. 5."""
    rng = np.random.default_rng(5)
    mean = rng.normal(0, 1.5, (300, 3))
    logvar = np.tile(np.array([-3.0, 0.0, 1.2]), (300, 1))
    up = metrics.mi_xz_upper_bound(torch.tensor(mean), torch.tensor(logvar))
    lo = metrics.mi_xz_lower_bound(torch.tensor(mean), torch.tensor(logvar))
    np.testing.assert_allclose(up, lo, rtol=1e-12, atol=1e-12)
    # and both equal the closed form with V the population variance of the means
    v = mean.var(axis=0)
    np.testing.assert_allclose(lo, 0.5 * np.log1p(v / np.exp(logvar[0])), rtol=1e-12)


def test_mi_lower_bound_of_a_constant_mean_is_zero():
    mean, logvar = _constructed_code()
    lo = metrics.mi_xz_lower_bound(torch.tensor(mean), torch.tensor(logvar))
    assert lo[2] == pytest.approx(0.0, abs=1e-12)
    # the upper bound is 0 too there, since sigma is constant in that dimension
    up = metrics.mi_xz_upper_bound(torch.tensor(mean), torch.tensor(logvar))
    assert up[2] == pytest.approx(0.0, abs=1e-12)


def test_active_dimensions_picks_the_informative_ones():
    mean, logvar = _constructed_code()
    _, lower = _hand_bounds(mean, logvar)
    active = metrics.active_dimensions(torch.tensor(mean), torch.tensor(logvar))
    np.testing.assert_array_equal(active, np.flatnonzero(lower > 0.1))
    assert 0 in active and 3 in active and 2 not in active
    # a higher threshold keeps only the strongly informative dimension
    np.testing.assert_array_equal(
        metrics.active_dimensions(torch.tensor(mean), torch.tensor(logvar), threshold_nats=1.0), [0]
    )


def test_latent_statistics_hand_values():
    mean = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [math.log(9.0), math.log(4.0)]])
    s = metrics.latent_statistics(mean, logvar)
    np.testing.assert_allclose(s["var_mean"], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s["mean_var"], [5.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(s["mean_logvar"], [0.5 * math.log(9.0), math.log(4.0)], rtol=1e-6)


# ----------------------------------------------------------------------------- reconstruction


def test_mean_bce_nats_logits_and_probs_agree():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(8, 30, generator=g, dtype=torch.float64) * 4
    x = torch.rand(8, 30, generator=g, dtype=torch.float64)
    x[:, :5] = 0.0
    x[:, 5:10] = 1.0
    a = metrics.mean_bce_nats(logits, x, logits=True)
    b = metrics.mean_bce_nats(torch.sigmoid(logits), x, logits=False)
    assert a == pytest.approx(b, rel=1e-9)
    s = torch.sigmoid(logits)
    hand = -(x * torch.log(s) + (1 - x) * torch.log(1 - s)).sum(dim=1).mean().item()
    assert a == pytest.approx(hand, rel=1e-9)
    # float32 inputs give the same value to float32 precision
    assert metrics.mean_bce_nats(logits.float(), x.float()) == pytest.approx(a, rel=1e-5)
