"""Figure 1-style latent traversals: one panel per z_k, one row per category y."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imae import metrics as M
from imae.data.dataset import ImageDataset


def traversal_grid(model, data: ImageDataset, steps: int, value_range: float, seed: int = 0):
    """Decoded images ``[K, C, steps, H, W]``, the z dimensions ``order`` and their lower bounds.

    For each category c, z starts at the posterior mean of a random image predicted as c (the
    prior mean 0 if no image is); dimension k is then set to ``steps`` values in
    [-value_range, value_range] * prior_std with the others fixed (Figure 1(b)-(d)).
    """
    y_prob, z_mean, z_logvar = model.encode(data.images)
    predicted = y_prob.argmax(dim=1)
    n_classes, k_dims = y_prob.shape[1], z_mean.shape[1]
    generator = torch.Generator().manual_seed(seed)
    base = torch.zeros(n_classes, k_dims)
    for c in range(n_classes):
        members = torch.nonzero(predicted == c).flatten()
        if members.numel():
            base[c] = z_mean[members[torch.randint(members.numel(), (1,), generator=generator)]]
    lower = M.mi_xz_lower_bound(z_mean, z_logvar)
    order = np.argsort(-lower)
    values = torch.linspace(-value_range, value_range, steps) * model.config.objective.prior_std
    z = base[None, :, None, :].repeat(k_dims, 1, steps, 1)  # [K, C, S, K]
    for k in range(k_dims):
        z[k, :, :, k] = values
    y = torch.arange(n_classes)[None, :, None].expand(k_dims, n_classes, steps)
    images = model.decode(y.reshape(-1), z.reshape(-1, k_dims))
    h, w = model.image_shape
    return images.reshape(k_dims, n_classes, steps, h, w).numpy(), order, lower


def save_traversal_figure(model, data: ImageDataset, path: str | Path, steps: int | None = None,
                          value_range: float | None = None, seed: int = 0) -> Path:
    """Draw the traversal panels (most informative z_k first) into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = model.config.eval
    images, order, lower = traversal_grid(model, data, steps or cfg.traverse_steps, value_range or cfg.traverse_range, seed)
    k_dims, n_classes, n_steps, h, w = images.shape
    cols = min(5, k_dims)
    rows = -(-k_dims // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows * n_classes / n_steps + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for slot, k in enumerate(order):
        padded = np.pad(images[k], ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=0.5)
        mosaic = padded.transpose(0, 2, 1, 3).reshape(n_classes * (h + 2), n_steps * (w + 2))
        ax = axes.flat[slot]
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"z{k}  I>={lower[k]:.2f}", fontsize=8)
    fig.suptitle("latent traversals: rows = category y, columns = z_k from -r to r", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
