"""Compute ``metrics.json`` for a trained model on a data set, by metric group.

Groups (``imae eval --metrics``, ``eval.metrics`` in the config):

* ``clustering``: ``cluster_acc``, ``nmi``, ``ari``, ``confusion`` (when labels exist) and
  ``cluster_sizes``;
* ``information``: ``mi_xy``, ``mi_xz_upper`` / ``mi_xz_lower`` (Proposition 1), ``var_mean``,
  ``mean_var`` (Figure 1(a)), ``active_dims``, ``tc``, ``marginal_kl``;
* ``recon``: ``recon_bce``;
* ``mig``, ``mig_chen``, ``dci``, ``factor_vae``, ``sap``: the disentanglement metrics, for data
  sets with ground-truth factors (dSprites); see :mod:`imae.disentanglement_eval`.

By default every group that applies to the data is computed.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from imae import metrics as M
from imae.data.dataset import ImageDataset
from imae.disentanglement_eval import disentanglement_metrics, encode_all
from imae.errors import DataError
from imae.metric_groups import (  # noqa: F401 - re-exported
    BASIC_GROUPS,
    FACTOR_GROUPS,
    METRIC_GROUPS,
    parse_metric_groups,
    resolve_metric_groups,
)

@torch.no_grad()
def reconstruction_bce(model, data: ImageDataset, y_prob: torch.Tensor, z_mean: torch.Tensor) -> float:
    """Bernoulli NLL in nats per image of the deterministic reconstruction decode(argmax y, mean z)."""
    nets = model.nets
    nets.eval()
    device = model.device
    size = model.config.eval.batch_size
    total = 0.0
    y_onehot = torch.nn.functional.one_hot(y_prob.argmax(dim=1), y_prob.shape[1]).float()
    for i in range(0, len(data), size):
        logits = nets.decoder(y_onehot[i : i + size].to(device), z_mean[i : i + size].to(device))
        total += M.mean_bce_nats(logits.cpu(), data.batch(slice(i, i + size))) * logits.shape[0]
    return total / len(data)


@torch.no_grad()
def evaluate(model, data: ImageDataset, seed: int = 0, metrics: str | Iterable[str] | None = None,
             factor_data: ImageDataset | None = None, progress: bool = False) -> dict:
    """The metric groups ``metrics`` (default: all that apply) of ``model`` on ``data``.

    Keys: ``n_eval``; ``cluster_acc``, ``nmi``, ``ari``, ``confusion`` (when labels exist),
    ``cluster_sizes``; ``mi_xy`` (nats); ``recon_bce`` (nats per image); per z dimension
    ``mi_xz_upper``, ``mi_xz_lower`` (Proposition 1), ``var_mean`` and ``mean_var`` (Figure 1(a));
    ``active_dims``; ``tc`` and ``marginal_kl`` (full-data mixture, one z sample per image drawn
    with ``seed``, 10,000 of them on larger sets); and the disentanglement keys of
    :mod:`imae.disentanglement_eval`, computed on ``factor_data`` (default ``data``; for
    dSprites the runner passes the full grid).
    """
    factor_data = data if factor_data is None else factor_data
    groups = resolve_metric_groups(metrics, factor_data.factors is not None, repr(data.name))
    out: dict = {}
    if any(g in groups for g in BASIC_GROUPS):
        y_prob, z_mean, z_logvar = encode_all(model, data, progress=progress and len(data) > 100_000)
        out["n_eval"] = len(data)
    if "clustering" in groups:
        assignments = y_prob.argmax(dim=1)
        if data.labels is not None:
            out["cluster_acc"] = M.cluster_accuracy(data.labels, assignments)
            out["nmi"] = M.nmi(data.labels, assignments)
            out["ari"] = M.ari(data.labels, assignments)
            out["confusion"] = M.confusion_matrix(data.labels, assignments).tolist()
    if "information" in groups:
        out["mi_xy"] = M.mutual_information_xy(y_prob)
    if "recon" in groups:
        out["recon_bce"] = reconstruction_bce(model, data, y_prob, z_mean)
    if "information" in groups:
        stats = M.latent_statistics(z_mean, z_logvar)
        out["mi_xz_upper"] = M.mi_xz_upper_bound(z_mean, z_logvar).tolist()
        out["mi_xz_lower"] = M.mi_xz_lower_bound(z_mean, z_logvar).tolist()
        out["var_mean"] = stats["var_mean"].tolist()
        out["mean_var"] = stats["mean_var"].tolist()
        out["active_dims"] = M.active_dimensions(z_mean, z_logvar).tolist()
        out.update(M.aggregate_posterior_divergences(z_mean, z_logvar, model.config.objective.prior_std,
                                                     seed=seed, progress=progress and len(data) > 10_000,
                                                     device=model.device))
    if "clustering" in groups:
        out["cluster_sizes"] = torch.bincount(assignments, minlength=y_prob.shape[1]).tolist()
    wanted = [g for g in FACTOR_GROUPS if g in groups]
    if wanted:
        encoded = (y_prob, z_mean, z_logvar) if factor_data is data and "n_eval" in out else None
        try:
            out.update(disentanglement_metrics(model, factor_data, wanted, seed=seed, progress=progress,
                                               encoded=encoded))
        except ValueError as exc:
            raise DataError(f"cannot compute the disentanglement metrics on {factor_data.name!r}: {exc}") from None
    return out


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_format(v)}" for k, v in value.items())
    return str(value)


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(name, value) rows for the terminal table; vectors shown compactly, matrices left out."""
    rows = []
    for key, value in metrics.items():
        if key in ("confusion", "mig_chen_mutual_info"):
            continue
        rows.append((key, _format(value)))
    return rows
