"""Encoder and decoder MLPs (Tables 1 and 2 of the paper; sizes come from the config).

Table 1 (MNIST, Fashion-MNIST): encoder 784-500-1000 with BatchNorm + ReLU and a head giving
(mu_z, log sigma_z^2, logits of y); decoder (y, z)-500-500-784 with a sigmoid output.
Table 2 (dSprites): encoder 4096-1200-1200-2400 with ReLU, decoder (y, z)-1200-1200-1200-4096
(the table's "28x28" output is a typo for 64x64).

Every network holds ``members`` independent copies of its parameters, stacked along a leading
member dimension, so that an ensemble of E models (a sweep over seeds or objective weights)
trains as one batched model: inputs ``[E, M, D]`` give outputs ``[E, M, .]`` through batched
matrix products, and each member has its own weights and BatchNorm statistics.  A single model
is the case E = 1, which also accepts inputs without the member dimension (``[M, D]``) and then
runs plain matrix products.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check_members(x: torch.Tensor, members: int, features: int, what: str) -> None:
    if x.dim() == 2 and members == 1 and x.shape[1] == features:
        return
    if x.dim() == 3 and x.shape[0] == members and x.shape[2] == features:
        return
    expected = f"[M, {features}] or [{members}, M, {features}]" if members == 1 else f"[{members}, M, {features}]"
    raise ValueError(f"{what} expects input of shape {expected}, got {tuple(x.shape)}")


class EnsembleLinear(nn.Module):
    """E independent affine maps x W_e + b_e: weight ``[E, in, out]``, bias ``[E, out]``.

    Each member is initialised as ``nn.Linear`` would be (uniform in +-1/sqrt(in)); see
    :func:`init_members` for seeding member by member.
    """

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        self.reset_member(slice(None))

    @torch.no_grad()
    def reset_member(self, member, generator: torch.Generator | None = None) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight[member].uniform_(-bound, bound, generator=generator)
        self.bias[member].uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_members(x, self.members, self.in_features, "EnsembleLinear")
        if x.dim() == 2:  # E = 1; squeeze(0) is a view with a view backward, where indexing [0] would
            # make autograd build a zero-filled copy of the whole weight on every backward pass
            return torch.addmm(self.bias.squeeze(0), x, self.weight.squeeze(0))
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleBatchNorm(nn.Module):
    """BatchNorm1d for each member separately: statistics over the batch axis, per member and feature.

    Same semantics as ``nn.BatchNorm1d`` (momentum 0.1, eps 1e-5, unbiased running variance);
    running statistics ``[E, F]``.  The fused ``F.batch_norm`` kernel runs on the members laid
    side by side as ``[M, E * F]`` channels.
    """

    def __init__(self, members: int, features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.members, self.features, self.momentum, self.eps = members, features, momentum, eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_members(x, self.members, self.features, "EnsembleBatchNorm")
        if self.training:
            self.num_batches_tracked.add_(1)
        if x.dim() == 2 or self.members == 1:
            flat = x.reshape(-1, self.features) if x.dim() == 2 else x[0]
            out = F.batch_norm(flat, self.running_mean.squeeze(0), self.running_var.squeeze(0),
                               self.weight.squeeze(0), self.bias.squeeze(0), self.training, self.momentum, self.eps)
            return out if x.dim() == 2 else out.unsqueeze(0)
        e, m, f = x.shape
        side_by_side = x.transpose(0, 1).reshape(m, e * f)
        out = F.batch_norm(side_by_side, self.running_mean.view(-1), self.running_var.view(-1),
                           self.weight.reshape(-1), self.bias.reshape(-1), self.training, self.momentum, self.eps)
        return out.view(m, e, f).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"members={self.members}, features={self.features}, momentum={self.momentum}, eps={self.eps}"


def _mlp_trunk(members: int, in_dim: int, hidden: Sequence[int], batchnorm: bool) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(EnsembleLinear(members, width, h))
        if batchnorm:
            layers.append(EnsembleBatchNorm(members, h))
        layers.append(nn.ReLU())
        width = h
    return nn.Sequential(*layers), width


class Encoder(nn.Module):
    """x -> (mean of z, log-variance of z, logits of y), for E members at once."""

    def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, n_classes: int, batchnorm: bool,
                 members: int = 1):
        super().__init__()
        self.members = members
        self.latent_dim = latent_dim
        self.n_classes = n_classes
        self.trunk, width = _mlp_trunk(members, input_dim, hidden, batchnorm)
        self.head = EnsembleLinear(members, width, 2 * latent_dim + n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.head(self.trunk(x))
        k = self.latent_dim
        return out[..., :k], out[..., k : 2 * k], out[..., 2 * k :]

    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y | x), the only output VAT needs."""
        return torch.log_softmax(self.forward(x)[2], dim=-1)


class Decoder(nn.Module):
    """(y, z) -> Bernoulli logits of the pixels (the sigmoid is applied in the likelihood)."""

    def __init__(self, output_dim: int, hidden: Sequence[int], latent_dim: int, n_classes: int, members: int = 1):
        super().__init__()
        self.members = members
        self.trunk, width = _mlp_trunk(members, latent_dim + n_classes, hidden, batchnorm=False)
        self.out = EnsembleLinear(members, width, output_dim)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(torch.cat([y, z], dim=-1)))


@torch.no_grad()
def init_members(module: nn.Module, seeds: Sequence[int]) -> None:
    """Initialise member e of every ensemble layer from a generator seeded with ``seeds[e]``.

    Member e of an ensemble then starts from exactly the weights a single model (E = 1) built
    with seed ``seeds[e]`` starts from, whatever the other members are.
    """
    layers = [m for m in module.modules() if isinstance(m, EnsembleLinear)]
    for e, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        for layer in layers:
            if layer.members != len(seeds):
                raise ValueError(f"{len(seeds)} seeds for a network of {layer.members} members")
            layer.reset_member(e, generator)


def member_state(state: dict[str, torch.Tensor], member: int) -> dict[str, torch.Tensor]:
    """The state dict of one member (E = 1) cut out of an ensemble's state dict."""
    return {k: (v[member : member + 1].clone() if v.dim() > 0 else v.clone()) for k, v in state.items()}


def stack_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The ensemble state dict whose members are the given single-member (E = 1) state dicts."""
    first = states[0]
    return {k: (torch.cat([s[k] for s in states]) if v.dim() > 0 else v.clone()) for k, v in first.items()}


def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, EnsembleBatchNorm) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Forward passes inside this block leave every BatchNorm's running statistics untouched.

    Used for VAT's perturbed passes: they still normalise with the perturbed batch's own
    statistics in training mode, but must not feed them into the running averages.
    Momentum 0 makes the running update r <- (1 - 0) r + 0 * batch an exact no-op.
    """
    saved = []
    for m in module.modules():
        if _is_batchnorm(m):
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
