"""Disentanglement metrics of a trained model on a data set with ground-truth factors (dSprites).

:func:`disentanglement_metrics` encodes every item (for dSprites, the whole 737,280-image grid,
as Chen et al.'s reference does) in batches of ``eval.batch_size``, then computes the metric
groups asked for:

==============  ==============================================================================
group           keys in ``metrics.json``
==============  ==============================================================================
``mig_chen``    ``mig_chen``: Chen et al.'s MIG of the continuous code z on the whole set
                (dSprites: scale, orientation, posX, posY, the reference's factors; other data
                sets: every factor); ``mig_chen_hybrid``: the same with every factor (shape
                included) and y as one more candidate latent; ``mig_chen_gaps``,
                ``mig_chen_hybrid_gaps`` (per factor); ``mig_chen_mutual_info`` (per factor,
                I(z_1..z_K, y; v_j) in nats)
``mig``         ``mig``: disentanglement_lib's histogram MIG of the mean representation mu(x) on
                10,000 random items, every factor; ``mig_hybrid``: with argmax_y p(y|x) as one
                more code column; ``mig_gaps`` (per factor)
``dci``         ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` (test
                accuracy), ``dci_informativeness_train``: of mu(x), 10,000 + 5,000 items
``factor_vae``  ``factor_vae_score`` (evaluation accuracy), ``factor_vae_train_accuracy``,
                ``factor_vae_active_dims``: of mu(x), batches of 64, 10,000 + 5,000 votes
``sap``         ``sap``: of mu(x), 10,000 + 5,000 items, discrete factors (linear SVMs)
==============  ==============================================================================

The sample counts are disentanglement_lib's and Chen et al.'s; all draws use ``seed``.  DCI,
FactorVAE and SAP score the continuous mean representation, as the paper evaluates the
disentanglement of z (its footnote 3); the two MIGs also report the hybrid variant with y.
"""

from __future__ import annotations

import numpy as np
import torch

from imae import metrics as M
from imae.data.dataset import ImageDataset
from imae.metric_groups import FACTOR_GROUPS

#: the dSprites factors the reference MIG scores (it leaves shape out)
DSPRITES_CONTINUOUS = ("scale", "orientation", "posX", "posY")
#: items of the histogram MIG (disentanglement_lib's ``mig.num_train``)
MIG_POINTS = 10_000


@torch.no_grad()
def encode_all(model, data: ImageDataset, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y_prob, z_mean, z_logvar)`` of every item, encoded in batches of ``eval.batch_size``."""
    n = len(data)
    size = model.config.eval.batch_size
    step = size * max(1, 65_536 // size)  # a few batches per progress update
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="encoding", unit="img", unit_scale=True, dynamic_ncols=True)
    parts = []
    try:
        for start in range(0, n, step):
            parts.append(model.encode(data.images[start : start + step], batch_size=size))
            if bar is not None:
                bar.update(min(step, n - start))
    finally:
        if bar is not None:
            bar.close()
    y_prob, z_mean, z_logvar = (torch.cat(p) for p in zip(*parts))
    return y_prob, z_mean, z_logvar


def _factor_names(data: ImageDataset) -> list[str]:
    j = data.factors.shape[1]
    names = list(data.factor_names) if len(data.factor_names) == j else [f"factor{i}" for i in range(j)]
    return names


def _by_name(names: list[str], values) -> dict:
    return {name: float(v) for name, v in zip(names, values)}


def disentanglement_metrics(model, data: ImageDataset, groups=FACTOR_GROUPS, seed: int = 0, progress: bool = False,
                            encoded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict:
    """The groups ``groups`` (of :data:`FACTOR_GROUPS`) of ``model`` on ``data`` (module docstring).

    ``data`` must have ``factors``; ``encoded`` = ``(y_prob, z_mean, z_logvar)`` of all of
    ``data`` skips the encoding.
    """
    if data.factors is None:
        raise ValueError(f"the data set {data.name!r} has no ground-truth factors")
    unknown = [g for g in groups if g not in FACTOR_GROUPS]
    if unknown:
        raise ValueError(f"unknown disentanglement metric group(s) {unknown}; use {', '.join(FACTOR_GROUPS)}")
    y_prob, z_mean, z_logvar = encoded if encoded is not None else encode_all(model, data, progress)
    factors = data.factors.cpu().numpy()
    names = _factor_names(data)
    sizes = list(data.factor_sizes) if len(data.factor_sizes) == len(names) else None
    codes = z_mean.numpy()
    out: dict = {"disentanglement_n_items": len(data)}

    if "mig_chen" in groups:
        if set(DSPRITES_CONTINUOUS) <= set(names) and "shape" in names:
            continuous = [names.index(f) for f in DSPRITES_CONTINUOUS]
        else:
            continuous = list(range(len(names)))
        ent = M.chen_entropies(z_mean, z_logvar, factors, sizes, y_prob=y_prob, seed=seed, progress=progress,
                               device=model.device)
        base = ent.mig(continuous, with_y=False)
        hybrid = ent.mig(with_y=True)
        out["mig_chen"] = base.score
        out["mig_chen_hybrid"] = hybrid.score
        out["mig_chen_gaps"] = _by_name([names[j] for j in continuous], base.gaps)
        out["mig_chen_hybrid_gaps"] = _by_name(names, hybrid.gaps)
        out["mig_chen_mutual_info"] = {names[j]: ent.mutual_info()[:, i].tolist() for i, j in enumerate(ent.factors)}

    rng = np.random.default_rng(seed)
    if "mig" in groups:
        # i.i.d. draws, as disentanglement_lib samples; a smaller set is used whole
        rows = rng.integers(len(data), size=MIG_POINTS) if len(data) > MIG_POINTS else np.arange(len(data))
        result = M.mig_details(codes[rows], factors[rows])
        hybrid_codes = np.concatenate([codes[rows], y_prob.argmax(dim=1).numpy()[rows, None].astype(codes.dtype)], 1)
        out["mig"] = result.score
        out["mig_hybrid"] = M.mig(hybrid_codes, factors[rows])
        out["mig_gaps"] = _by_name(names, result.gaps)
    if "dci" in groups:
        result = M.dci(codes, factors, seed=seed, progress=progress)
        out["dci_disentanglement"] = result.disentanglement
        out["dci_completeness"] = result.completeness
        out["dci_informativeness"] = result.informativeness
        out["dci_informativeness_train"] = result.informativeness_train
    if "factor_vae" in groups:
        result = M.factor_vae_score(codes, factors, seed=seed)
        out["factor_vae_score"] = result.score
        out["factor_vae_train_accuracy"] = result.train_accuracy
        out["factor_vae_active_dims"] = result.num_active_dims
    if "sap" in groups:
        out["sap"] = M.sap(codes, factors, seed=seed).score
    return out
