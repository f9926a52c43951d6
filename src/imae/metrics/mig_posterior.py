"""Mutual Information Gap as Chen et al.'s reference code computes it (the IMAE paper's metric).

Chen, Li, Grosse & Duvenaud (2018), "Isolating Sources of Disentanglement in Variational
Autoencoders", Section 5 and their ``disentanglement_metrics.py`` (``mutual_info_metric_shapes``,
``estimate_entropies``) and ``metric_helpers/mi_metric.py``; the IMAE paper (Section 4, Figure 3)
scores dSprites with this metric on the continuous factors.

For a Gaussian encoder q(z | x) = prod_k N(z_k; mu_k(x), sigma_k^2(x)) evaluated on the whole
data set (for dSprites, all 737,280 grid images):

1. draw one sample z_n ~ q(z | x_n) per item;
2. H(z_k) = E[-log q(z_k)] with q(z_k) = (1/N) sum_n q(z_k | x_n), the mixture of all N
   posteriors, estimated on ``n_samples`` = 10,000 of the z_n drawn without replacement
   (a logsumexp over the N components per sample);
3. H(z_k | v_j) = sum_v p(v) H(z_k | v_j = v): the same estimate within the items whose factor
   j has value v (mixture over those items' posteriors, 10,000 of their samples, or all when
   fewer); on a full factor grid p(v) = 1 / |V_j|, the reference's plain average over values;
4. I(z_k; v_j) = max(0, H(z_k) - H(z_k | v_j)), normalised by log |V_j| (the entropy of a
   uniform factor), and MIG = mean over the scored factors of the gap top1 - top2 over k.

The reference scores dSprites' four continuous factors (scale, orientation, posX, posY) and
leaves shape out; pass ``include`` to choose the factors (default: all columns).  The hybrid
variant adds the discrete code y as one more candidate latent (``y_prob`` = p(y | x), ``[N, C]``):
its entropies are exact for a categorical mixture, H(y) = H(mean_n p(y | x_n)) and
H(y | v_j) = sum_v p(v) H(mean_{n: v_j(x_n) = v} p(y | x_n)) -- the limit of the same Monte Carlo
estimator with infinitely many samples -- so I(y; v_j) = H(y) - H(y | v_j) competes with the
I(z_k; v_j) for the top two places (for dSprites, with ``include`` adding shape).

The log-density sums run in chunks (see :mod:`imae.metrics._mixture`); on a CPU the full
dSprites grid uses a compiled float32 kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from imae.metrics._arrays import as_factors, check_num
from imae.metrics._mixture import mixture_entropy, use_fast_path
from imae.metrics.mig_histogram import MIGResult, gap_score


@dataclass(frozen=True)
class ChenEntropies:
    """Marginal and conditional entropies (nats) of the candidate latents.

    Attributes:
        marginal: ``[L]`` H(c_l) for the K dimensions of z, then y when ``has_y``.
        conditional: ``[J, L]`` H(c_l | v_j) for the factor columns ``factors``.
        factors: ``[J]`` the factor columns the conditional entropies are for.
        n_values: ``[J]`` |V_j|, the number of values of each (its log normalises the MIG).
        has_y: whether the last candidate is the discrete code y.
    """

    marginal: np.ndarray
    conditional: np.ndarray
    factors: np.ndarray
    n_values: np.ndarray
    has_y: bool

    def mutual_info(self) -> np.ndarray:
        """``[L, J]`` I(c_l; v_j) = max(0, H(c_l) - H(c_l | v_j)) in nats."""
        return np.clip(self.marginal[None, :] - self.conditional, 0.0, None).T

    def mig(self, factors: Sequence[int] | None = None, with_y: bool | None = None) -> MIGResult:
        """The MIG over the factor columns ``factors`` (default: all computed), with y as a
        candidate when ``with_y`` (default: when y was given)."""
        with_y = self.has_y if with_y is None else bool(with_y)
        if with_y and not self.has_y:
            raise ValueError("these entropies were computed without y_prob; cannot score y as a candidate")
        wanted = list(self.factors) if factors is None else [int(f) for f in factors]
        missing = [f for f in wanted if f not in set(self.factors.tolist())]
        if missing:
            raise ValueError(f"factor column(s) {missing} were not computed (have {self.factors.tolist()})")
        cols = [int(np.flatnonzero(self.factors == f)[0]) for f in wanted]
        mi = self.mutual_info()[:, cols]
        if self.has_y and not with_y:
            mi = mi[:-1]
        n_values = self.n_values[cols]
        if np.any(n_values < 2):
            bad = [wanted[i] for i in np.flatnonzero(n_values < 2)]
            raise ValueError(f"factor column(s) {bad} take a single value; log|V_j| = 0 cannot normalise "
                             "the MIG; leave them out with include=...")
        return gap_score(mi, np.log(n_values.astype(np.float64)), factors=np.asarray(wanted))


def _as_posterior(values, name: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [N, K] tensor, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds non-finite values")
    return t


def _categorical_entropy(p: torch.Tensor) -> float:
    p = p.double()
    return float(-(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum())


def chen_entropies(z_mean, z_logvar, factors, factor_sizes: Sequence[int] | None = None, *,
                   include: Sequence[int] | None = None, y_prob=None, n_samples: int = 10_000, seed: int = 0,
                   fast: bool | None = None, progress: bool = False, device=None) -> ChenEntropies:
    """Estimate H(z_k), H(z_k | v_j) (and H(y), H(y | v_j)) as Chen et al.'s reference does.

    Args:
        z_mean, z_logvar: ``[N, K]`` parameters of the Gaussian posteriors q(z | x_n).
        factors: ``[N, J]`` integer ground-truth factor classes (``[N]`` for one factor).
        factor_sizes: number of values of each of the J factors (default: the number of distinct
            values present); log of it normalises the MIG.
        include: factor columns to compute conditional entropies for (default: all).
        y_prob: optional ``[N, C]`` p(y | x_n); y becomes the last candidate latent.
        n_samples: samples per entropy estimate (10,000 in the reference).
        seed: seeds the z draws and the sample subsets (``torch.Generator``).
        fast: force (True) or forbid (False) the compiled float32 kernel; None decides by size.
        progress: show a tqdm bar.
        device: where to compute (default: the device of ``z_mean``).
    """
    mean = _as_posterior(z_mean, "z_mean")
    logvar = _as_posterior(z_logvar, "z_logvar")
    if mean.shape != logvar.shape:
        raise ValueError(f"z_mean {tuple(mean.shape)} and z_logvar {tuple(logvar.shape)} must have the same shape")
    n, k = mean.shape
    if n < 1:
        raise ValueError("z_mean has no rows; give at least one item")
    fac = as_factors(factors, n=n)
    n_samples = check_num(n_samples, "n_samples", 1)
    cols = list(range(fac.shape[1])) if include is None else [int(c) for c in include]
    if not cols or len(set(cols)) != len(cols) or any(c < 0 or c >= fac.shape[1] for c in cols):
        raise ValueError(f"include must list distinct factor columns in 0..{fac.shape[1] - 1}, got {include!r}")
    if factor_sizes is not None:
        sizes = [int(s) for s in factor_sizes]
        if len(sizes) != fac.shape[1]:
            raise ValueError(f"factor_sizes has {len(sizes)} entries but factors have {fac.shape[1]} columns")
    probs = None
    if y_prob is not None:
        probs = torch.as_tensor(y_prob).double()
        if probs.dim() != 2 or probs.shape[0] != n:
            raise ValueError(f"y_prob must be [N, C] with N = {n} rows, got shape {tuple(probs.shape)}")
        if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) \
                or not torch.allclose(probs.sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-4):
            raise ValueError("y_prob rows must be probability vectors (non-negative, summing to 1)")
    if k + (probs is not None) < 2:
        raise ValueError("a MIG needs at least two candidate latents (K >= 2, or K = 1 and y_prob)")

    device = torch.device(device) if device is not None else mean.device
    generator = torch.Generator().manual_seed(int(seed))
    mean64, logvar64 = mean.double().cpu(), logvar.double().cpu()
    z = mean64 + torch.exp(0.5 * logvar64) * torch.randn(mean64.shape, generator=generator, dtype=torch.float64)
    mean_d, logvar_d, z_d = mean64.to(device), logvar64.to(device), z.to(device)

    groups: list[list[np.ndarray]] = []
    n_values = []
    for c in cols:
        values, inverse = np.unique(fac[:, c], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1]
        groups.append(np.split(order, bounds))
        if factor_sizes is not None:
            if sizes[c] < len(values):
                raise ValueError(f"factor_sizes[{c}] = {sizes[c]} but factor column {c} takes {len(values)} values")
            n_values.append(sizes[c])
        else:
            n_values.append(len(values))

    work = min(n_samples, n) * n + sum(min(n_samples, len(g)) * len(g) for gs in groups for g in gs)
    fast = use_fast_path(fast, float(work) * k, device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=work, desc="MIG (Chen et al.) entropies", unit="pair", unit_scale=True, dynamic_ncols=True)
    try:
        def entropy(rows: np.ndarray | None) -> torch.Tensor:
            m = n if rows is None else len(rows)
            pick = torch.randperm(m, generator=generator)[:n_samples]
            if rows is None:
                return mixture_entropy(z_d[pick.to(device)], mean_d, logvar_d, fast=fast, progress=bar)
            idx = torch.from_numpy(rows).to(device)
            return mixture_entropy(z_d[idx[pick.to(device)]], mean_d[idx], logvar_d[idx], fast=fast, progress=bar)

        marginal = entropy(None).cpu().numpy()
        conditional = np.zeros((len(cols), k))
        for i, gs in enumerate(groups):
            for rows in gs:
                conditional[i] += (len(rows) / n) * entropy(rows).cpu().numpy()
    finally:
        if bar is not None:
            bar.close()

    if probs is not None:
        h_y = _categorical_entropy(probs.mean(dim=0))
        h_y_given = [sum(len(rows) / n * _categorical_entropy(probs[torch.from_numpy(rows)].mean(dim=0))
                         for rows in gs) for gs in groups]
        marginal = np.append(marginal, h_y)
        conditional = np.concatenate([conditional, np.asarray(h_y_given)[:, None]], axis=1)
    return ChenEntropies(marginal=marginal, conditional=conditional, factors=np.asarray(cols),
                         n_values=np.asarray(n_values), has_y=probs is not None)


def mig_chen_details(z_mean, z_logvar, factors, factor_sizes: Sequence[int] | None = None, *,
                     include: Sequence[int] | None = None, y_prob=None, n_samples: int = 10_000, seed: int = 0,
                     fast: bool | None = None, progress: bool = False, device=None) -> MIGResult:
    """Chen et al.'s MIG with its mutual-information matrix and per-factor gaps (see :func:`mig_chen`)."""
    ent = chen_entropies(z_mean, z_logvar, factors, factor_sizes, include=include, y_prob=y_prob,
                         n_samples=n_samples, seed=seed, fast=fast, progress=progress, device=device)
    return ent.mig()


def mig_chen(z_mean, z_logvar, factors, factor_sizes: Sequence[int] | None = None, *,
             include: Sequence[int] | None = None, y_prob=None, n_samples: int = 10_000, seed: int = 0,
             fast: bool | None = None, progress: bool = False, device=None) -> float:
    """MIG of Gaussian posteriors ``(z_mean, z_logvar)`` ``[N, K]`` against integer factors ``[N, J]``.

    Chen et al.'s (2018) reference estimator (module docstring): one sample per item, entropies
    of the posterior mixtures on ``n_samples`` samples, mutual information clamped at 0 and
    normalised by log |V_j|, mean gap over the factor columns ``include`` (default: all).
    With ``y_prob`` ``[N, C]``, the discrete code y is one more candidate latent (hybrid MIG).
    For dSprites (columns shape, scale, orientation, posX, posY) the reference's score is
    ``mig_chen(mu, logvar, factors, FACTOR_SIZES, include=(1, 2, 3, 4))``.
    """
    return mig_chen_details(z_mean, z_logvar, factors, factor_sizes, include=include, y_prob=y_prob,
                            n_samples=n_samples, seed=seed, fast=fast, progress=progress, device=device).score


__all__ = ["ChenEntropies", "chen_entropies", "mig_chen", "mig_chen_details"]
