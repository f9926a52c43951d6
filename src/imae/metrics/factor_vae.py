"""The FactorVAE disentanglement score.

Kim & Mnih (2018), "Disentangling by Factorising", Section 4, as disentanglement_lib computes it
(Locatello et al. 2019, ``evaluation/metrics/factor_vae.py``):

1. the global variance s_k^2 of each code dimension over ``num_variance_estimate`` random items
   (ddof = 1); dimensions with s_k < ``prune_threshold`` (0.05, disentanglement_lib's study
   setting) are "collapsed" and left out;
2. one vote: choose a factor j uniformly, fix it at the value of a random item, draw
   ``batch_size`` items that share that value (the other factors as they come in the data: on
   a full factor grid, uniformly, as disentanglement_lib samples them), and vote
   (j, argmin_k Var_batch[c_k] / s_k^2) over the active dimensions;
3. the majority-vote classifier maps each code dimension to the factor that won most of its
   ``num_train`` training votes; the score is its accuracy on ``num_eval`` fresh votes.

Defaults are disentanglement_lib's: batches of 64, 10,000 training and 5,000 evaluation votes,
10,000 items for the global variances.  Items are drawn with replacement, all with
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imae.metrics._arrays import as_codes, as_factors, check_num

_CHUNK_VOTES = 2048


@dataclass(frozen=True)
class FactorVAEResult:
    """``score`` is the evaluation accuracy; ``votes`` the ``[J, K]`` training votes."""

    score: float
    train_accuracy: float
    num_active_dims: int
    votes: np.ndarray

    def as_dict(self) -> dict:
        return {"score": self.score, "train_accuracy": self.train_accuracy,
                "num_active_dims": self.num_active_dims, "votes": self.votes.tolist()}


class _FixedFactorSampler:
    """Draws batches of rows that share the value of one factor."""

    def __init__(self, factors: np.ndarray):
        self.factors = factors
        n, j = factors.shape
        orders, starts, counts, offsets = [], [], [], []
        base = 0
        for col in range(j):
            order = np.argsort(factors[:, col], kind="stable")
            _, first, count = np.unique(factors[order, col], return_index=True, return_counts=True)
            orders.append(order)
            # the group of each row: start and size of the run of its value in `order`
            group = np.empty(n, dtype=np.int64)
            group[order] = np.repeat(np.arange(len(first)), count)
            starts.append(base + first[group])
            counts.append(count[group])
            base += n
        self.order = np.concatenate(orders)
        self.start = np.stack(starts, axis=1)  # [N, J] start of the row's group, per factor
        self.count = np.stack(counts, axis=1)  # [N, J] size of that group

    def votes(self, codes, global_var, active, num, batch_size, rng, vote_shape):
        """``[J, K]`` vote counts of ``num`` batches."""
        n, j = self.factors.shape
        active_idx = np.flatnonzero(active)
        votes = np.zeros(vote_shape, dtype=np.int64)
        for done in range(0, num, _CHUNK_VOTES):
            m = min(_CHUNK_VOTES, num - done)
            factor = rng.integers(j, size=m)
            anchor = rng.integers(n, size=m)
            start = self.start[anchor, factor]
            count = self.count[anchor, factor]
            offs = np.floor(rng.random((m, batch_size)) * count[:, None]).astype(np.int64)
            rows = self.order[start[:, None] + np.minimum(offs, count[:, None] - 1)]
            local = codes[rows][:, :, active_idx].var(axis=1, ddof=1)  # [m, K_active]
            best = active_idx[np.argmin(local / global_var[active_idx], axis=1)]
            np.add.at(votes, (factor, best), 1)
        return votes


def factor_vae_score(codes, factors, batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                     seed: int = 0) -> FactorVAEResult:
    """The FactorVAE score of point codes ``[N, K]`` against integer factors ``[N, J]`` (module docstring).

    Returns accuracy 0 with no active dimension (as disentanglement_lib does).  Works on any
    representation; on a full factor grid the batches follow disentanglement_lib's sampling.
    """
    x = as_codes(codes)
    y = as_factors(factors, n=x.shape[0])
    batch_size = check_num(batch_size, "batch_size", 2)
    num_train = check_num(num_train, "num_train", 1)
    num_eval = check_num(num_eval, "num_eval", 1)
    num_variance_estimate = check_num(num_variance_estimate, "num_variance_estimate", 2)
    if not prune_threshold >= 0:
        raise ValueError(f"prune_threshold must be >= 0, got {prune_threshold}")
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64, copy=False)
    global_var = x[rng.integers(x.shape[0], size=num_variance_estimate)].var(axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    active &= global_var > 0
    shape = (y.shape[1], x.shape[1])
    if not active.any():
        return FactorVAEResult(0.0, 0.0, 0, np.zeros(shape, dtype=np.int64))
    sampler = _FixedFactorSampler(y)
    train_votes = sampler.votes(x, global_var, active, num_train, batch_size, rng, shape)
    classifier = np.argmax(train_votes, axis=0)  # factor predicted for each code dimension
    cols = np.arange(shape[1])
    train_acc = train_votes[classifier, cols].sum() / train_votes.sum()
    eval_votes = sampler.votes(x, global_var, active, num_eval, batch_size, rng, shape)
    eval_acc = eval_votes[classifier, cols].sum() / eval_votes.sum()
    return FactorVAEResult(score=float(eval_acc), train_accuracy=float(train_acc),
                           num_active_dims=int(active.sum()), votes=train_votes)


__all__ = ["FactorVAEResult", "factor_vae_score"]
