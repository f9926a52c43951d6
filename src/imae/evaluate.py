"""Compute ``metrics.json`` for a trained model on a data set."""

from __future__ import annotations

import math

import torch

from imae import estimators as est
from imae import metrics as M
from imae.data.dataset import ImageDataset


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
def evaluate(model, data: ImageDataset, seed: int = 0) -> dict:
    """Clustering, information and reconstruction metrics of ``model`` on ``data``.

    Keys: ``n_eval``; ``cluster_acc``, ``nmi``, ``ari``, ``confusion`` (when labels exist);
    ``mi_xy`` (nats); ``recon_bce`` (nats per image); per z dimension ``mi_xz_upper``,
    ``mi_xz_lower`` (Proposition 1), ``var_mean`` and ``mean_var`` (Figure 1(a));
    ``active_dims``; ``tc`` and ``marginal_kl`` (full-data estimates with one z sample per
    image, drawn with ``seed``); ``cluster_sizes``.
    """
    y_prob, z_mean, z_logvar = model.encode(data.images)
    assignments = y_prob.argmax(dim=1)
    out: dict = {"n_eval": len(data)}
    if data.labels is not None:
        out["cluster_acc"] = M.cluster_accuracy(data.labels, assignments)
        out["nmi"] = M.nmi(data.labels, assignments)
        out["ari"] = M.ari(data.labels, assignments)
        out["confusion"] = M.confusion_matrix(data.labels, assignments).tolist()
    out["mi_xy"] = M.mutual_information_xy(y_prob)
    out["recon_bce"] = reconstruction_bce(model, data, y_prob, z_mean)
    stats = M.latent_statistics(z_mean, z_logvar)
    out["mi_xz_upper"] = M.mi_xz_upper_bound(z_mean, z_logvar).tolist()
    out["mi_xz_lower"] = M.mi_xz_lower_bound(z_mean, z_logvar).tolist()
    out["var_mean"] = stats["var_mean"].tolist()
    out["mean_var"] = stats["mean_var"].tolist()
    out["active_dims"] = M.active_dimensions(z_mean, z_logvar).tolist()
    generator = torch.Generator().manual_seed(seed)
    mean, logvar = z_mean.double(), z_logvar.double()
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, dtype=torch.float64)
    aggregate = est.dataset_aggregate_log_density(z, mean, logvar)
    out["tc"] = float(est.total_correlation(aggregate))
    out["marginal_kl"] = float(est.marginal_kl_to_prior(aggregate, z, model.config.objective.prior_std))
    out["cluster_sizes"] = torch.bincount(assignments, minlength=y_prob.shape[1]).tolist()
    return out


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(name, value) rows for the terminal table; vectors shown compactly."""
    rows = []
    for key, value in metrics.items():
        if key == "confusion":
            continue
        if isinstance(value, list):
            text = "[" + ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value) + "]"
        elif isinstance(value, float):
            text = f"{value:.4f}" if math.isfinite(value) else str(value)
        else:
            text = str(value)
        rows.append((key, text))
    return rows
