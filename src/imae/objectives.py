"""Objectives: each a short weighted sum of the estimator terms in :mod:`imae.estimators`.

An objective maps (networks, batch) to ``(loss, terms)``: the scalar to minimise and a dict
of named scalar tensors for logging.  Every objective shares :func:`forward_pass`, so models
differ only in how they weigh the terms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from imae import estimators as est
from imae.latent import gaussian_sample, gumbel_softmax_sample
from imae.nets import Decoder, Encoder, frozen_batchnorm_stats


class HybridAutoencoder(nn.Module):
    """The encoder p(y, z | x) and the decoder q(x | y, z) of one model (or of an ensemble)."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def members(self) -> int:
        return self.encoder.members


@dataclass
class ForwardPass:
    """Everything one stochastic pass x -> (y, z) -> x_hat produces (each ``[E, M, .]`` or ``[M, .]``)."""

    mean: torch.Tensor  # [M, K] mean of q(z | x)
    logvar: torch.Tensor  # [M, K] log-variance of q(z | x)
    log_probs: torch.Tensor  # [M, C] log p(y | x)
    z: torch.Tensor  # [M, K] reparameterised sample of z
    y: torch.Tensor  # [M, C] Gumbel-softmax sample of y
    recon_logits: torch.Tensor  # [M, D] decoder logits


def forward_pass(nets: HybridAutoencoder, x: torch.Tensor, temperature) -> ForwardPass:
    mean, logvar, logits = nets.encoder(x)
    log_probs = torch.log_softmax(logits, dim=-1)
    z = gaussian_sample(mean, logvar)
    y = gumbel_softmax_sample(logits, est.per_member(temperature, logits))
    return ForwardPass(mean, logvar, log_probs, z, y, nets.decoder(y, z))


class MemberWeights:
    """The float settings of each member's objective config, ready to weigh per-member terms.

    ``weights.beta`` is a Python float when every member has the same value and otherwise a
    tensor ``[E]`` (one value per member), which the estimators broadcast over the batch.
    """

    def __init__(self, cfgs: Sequence):
        self._values = {f.name: [getattr(c, f.name) for c in cfgs] for f in dataclasses.fields(cfgs[0])
                        if isinstance(getattr(cfgs[0], f.name), float)}
        self._cache: dict[str, float | torch.Tensor] = {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._cache:
            if name not in self._values:
                raise AttributeError(f"no float objective setting {name!r}")
            values = self._values[name]
            self._cache[name] = values[0] if all(v == values[0] for v in values) else torch.tensor(values)
        return self._cache[name]

    def all_zero(self, name: str) -> bool:
        return all(v == 0 for v in self._values[name])


def shared_settings(cfgs: Sequence) -> dict:
    """The non-float settings of the members' objective configs, which must all agree."""
    shared = {}
    for f in dataclasses.fields(cfgs[0]):
        values = [getattr(c, f.name) for c in cfgs]
        if isinstance(values[0], float):
            continue
        if any(v != values[0] for v in values):
            raise ValueError(f"ensemble members differ in objective.{f.name} ({values}); only float weights "
                             "may differ between the members of one ensemble")
        shared[f.name] = values[0]
    return shared


class Objective:
    """Base of every objective: ``objective(nets, x, step) -> (loss, terms)``.

    Built from one objective config (a single model) or one per ensemble member.  ``loss`` is
    the scalar to minimise, the sum of the members' losses (the members share no parameter, so
    each member's gradient is that of its own loss); ``terms`` maps names to per-member values
    (``[E]``, or 0-d for a single model fed ``[M, D]``) for logging.  ``step`` counts optimizer
    steps from 0 (for schedules such as JointVAE's capacities).
    """

    name = ""
    summary = ""

    def __init__(self, cfg, dataset_size: int):
        self.cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
        if not self.cfgs:
            raise ValueError("an objective needs at least one member config")
        shared_settings(self.cfgs)
        self.cfg = self.cfgs[0]  # the shared (non-float) settings
        self.w = MemberWeights(self.cfgs)
        self.dataset_size = dataset_size

    @property
    def members(self) -> int:
        return len(self.cfgs)

    def __call__(self, nets: HybridAutoencoder, x: torch.Tensor, step: int = 0):
        terms = self.terms(nets, x, step)
        return terms["loss"].sum(), terms

    def terms(self, nets: HybridAutoencoder, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def vat_penalty(nets: HybridAutoencoder, x: torch.Tensor, fp: ForwardPass, objective: Objective) -> torch.Tensor:
    """VAT (eq. 9) on p(y | x), with BatchNorm running statistics left untouched; 0 if off."""
    cfg, w = objective.cfg, objective.w
    if w.all_zero("vat_eps"):
        return torch.zeros(fp.log_probs.shape[:-2], device=x.device, dtype=fp.log_probs.dtype)
    with frozen_batchnorm_stats(nets.encoder):
        return est.virtual_adversarial_loss(
            nets.encoder.class_log_probs, x, fp.log_probs, w.vat_eps, cfg.vat_xi, cfg.vat_power_iterations
        )


class IMAEObjective(Objective):
    """Minus eq. 8: -(E[log q(x|y,z)] + beta L(y) + beta L(z) - gamma TC(z)).

    L(y) = I_hat(x; y) - VAT (eqs. 7 and 9), where ``marginal_entropy_weight`` = mu != 1 weighs
    the marginal entropy as mu H(y) - H(y|x) (IMSAT's balance weight; 1 is exactly eq. 7);
    L(z) = -sum_k KL(q(z_k) || r(z_k)) (eq. 6) on the minibatch aggregate marginals; TC(z) by
    minibatch weighted (or stratified) sampling.
    """

    name = "imae"
    summary = "IMAE (eq. 8): reconstruction + beta*[I(x;y) - VAT] - beta*sum_k KL(q(z_k)||r) - gamma*TC(z)"

    def terms(self, nets: HybridAutoencoder, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        cfg, w = self.cfg, self.w
        fp = forward_pass(nets, x, w.temperature)
        recon = est.bernoulli_log_likelihood(fp.recon_logits, x)
        aggregate = est.aggregate_log_density(fp.z, fp.mean, fp.logvar, self.dataset_size, cfg.tc_estimator)
        l_z = -est.marginal_kl_to_prior(aggregate, fp.z, w.prior_std)
        tc = est.total_correlation(aggregate)
        h_marginal = est.batch_marginal_entropy(fp.log_probs)
        h_conditional = est.batch_conditional_entropy(fp.log_probs)
        mi = h_marginal - h_conditional  # eq. 7
        vat = vat_penalty(nets, x, fp, self)
        l_y = _w(w.marginal_entropy_weight, h_marginal) * h_marginal - h_conditional - vat
        beta, gamma = _w(w.beta, recon), _w(w.gamma, recon)
        objective = recon + beta * l_y + beta * l_z - gamma * tc
        return {"loss": -objective, "recon": recon, "L_y": l_y, "mi_y": mi, "vat": vat, "L_z": l_z, "tc": tc}


def _w(weight, term: torch.Tensor):
    """A member weight (float or ``[E]`` tensor) ready to multiply a per-member term."""
    if isinstance(weight, torch.Tensor):
        return weight.to(device=term.device, dtype=term.dtype)
    return weight


#: name -> objective class; ``Config.model`` picks one.
OBJECTIVES: dict[str, Callable] = {IMAEObjective.name: IMAEObjective}


def build_objective(name: str, cfg, dataset_size: int) -> Objective:
    """The objective ``name`` for one objective config, or for a list of them (one per ensemble member)."""
    return OBJECTIVES[name](cfg, dataset_size)
