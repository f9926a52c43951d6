"""Encoder and decoder MLPs (Tables 1 and 2 of the paper; sizes come from the config).

Table 1 (MNIST, Fashion-MNIST): encoder 784-500-1000 with BatchNorm + ReLU and a head giving
(mu_z, log sigma_z^2, logits of y); decoder (y, z)-500-500-784 with a sigmoid output.
Table 2 (dSprites): encoder 4096-1200-1200-2400 with ReLU, decoder (y, z)-1200-1200-1200-4096
(the table's "28x28" output is a typo for 64x64).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn


def _mlp_trunk(in_dim: int, hidden: Sequence[int], batchnorm: bool) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    return nn.Sequential(*layers), width


class Encoder(nn.Module):
    """x -> (mean of z, log-variance of z, logits of y)."""

    def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, n_classes: int, batchnorm: bool):
        super().__init__()
        self.latent_dim = latent_dim
        self.n_classes = n_classes
        self.trunk, width = _mlp_trunk(input_dim, hidden, batchnorm)
        self.head = nn.Linear(width, 2 * latent_dim + n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.head(self.trunk(x))
        k = self.latent_dim
        return out[:, :k], out[:, k : 2 * k], out[:, 2 * k :]

    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y | x), the only output VAT needs."""
        return torch.log_softmax(self.forward(x)[2], dim=-1)


class Decoder(nn.Module):
    """(y, z) -> Bernoulli logits of the pixels (the sigmoid is applied in the likelihood)."""

    def __init__(self, output_dim: int, hidden: Sequence[int], latent_dim: int, n_classes: int):
        super().__init__()
        self.trunk, width = _mlp_trunk(latent_dim + n_classes, hidden, batchnorm=False)
        self.out = nn.Linear(width, output_dim)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(torch.cat([y, z], dim=-1)))


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Forward passes inside this block leave every BatchNorm's running statistics untouched.

    Used for VAT's perturbed passes: they still normalise with the perturbed batch's own
    statistics in training mode, but must not feed them into the running averages.
    Momentum 0 makes the running update r <- (1 - 0) r + 0 * batch an exact no-op.
    """
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
