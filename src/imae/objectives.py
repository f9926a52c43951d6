"""Objectives: each a short weighted sum of the estimator terms in :mod:`imae.estimators`.

An objective maps (networks, batch) to ``(loss, terms)``: the scalar to minimise and a dict
of named scalar tensors for logging.  Every objective shares :func:`forward_pass`, so models
differ only in how they weigh the terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from imae import estimators as est
from imae.latent import gaussian_sample, gumbel_softmax_sample
from imae.nets import Decoder, Encoder, frozen_batchnorm_stats


class HybridAutoencoder(nn.Module):
    """The encoder p(y, z | x) and the decoder q(x | y, z) of one model."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


@dataclass
class ForwardPass:
    """Everything one stochastic pass x -> (y, z) -> x_hat produces."""

    mean: torch.Tensor  # [M, K] mean of q(z | x)
    logvar: torch.Tensor  # [M, K] log-variance of q(z | x)
    log_probs: torch.Tensor  # [M, C] log p(y | x)
    z: torch.Tensor  # [M, K] reparameterised sample of z
    y: torch.Tensor  # [M, C] Gumbel-softmax sample of y
    recon_logits: torch.Tensor  # [M, D] decoder logits


def forward_pass(nets: HybridAutoencoder, x: torch.Tensor, temperature: float) -> ForwardPass:
    mean, logvar, logits = nets.encoder(x)
    log_probs = torch.log_softmax(logits, dim=-1)
    z = gaussian_sample(mean, logvar)
    y = gumbel_softmax_sample(logits, temperature)
    return ForwardPass(mean, logvar, log_probs, z, y, nets.decoder(y, z))


def vat_penalty(nets: HybridAutoencoder, x: torch.Tensor, fp: ForwardPass, cfg) -> torch.Tensor:
    """VAT (eq. 9) on p(y | x), with BatchNorm running statistics left untouched; 0 if off."""
    if cfg.vat_eps == 0:
        return torch.zeros((), device=x.device)
    with frozen_batchnorm_stats(nets.encoder):
        return est.virtual_adversarial_loss(
            nets.encoder.class_log_probs, x, fp.log_probs, cfg.vat_eps, cfg.vat_xi, cfg.vat_power_iterations
        )


class IMAEObjective:
    """Minus eq. 8: -(E[log q(x|y,z)] + beta L(y) + beta L(z) - gamma TC(z)).

    L(y) = I_hat(x; y) - VAT (eqs. 7 and 9), where ``marginal_entropy_weight`` = mu != 1 weighs
    the marginal entropy as mu H(y) - H(y|x) (IMSAT's balance weight; 1 is exactly eq. 7); L(z) = -sum_k KL(q(z_k) || r(z_k)) (eq. 6) on the
    minibatch aggregate marginals; TC(z) by minibatch weighted (or stratified) sampling.
    """

    name = "imae"
    summary = "IMAE (eq. 8): reconstruction + beta*[I(x;y) - VAT] - beta*sum_k KL(q(z_k)||r) - gamma*TC(z)"

    def __init__(self, cfg, dataset_size: int):
        self.cfg = cfg
        self.dataset_size = dataset_size

    def __call__(self, nets: HybridAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        fp = forward_pass(nets, x, cfg.temperature)
        recon = est.bernoulli_log_likelihood(fp.recon_logits, x)
        aggregate = est.aggregate_log_density(fp.z, fp.mean, fp.logvar, self.dataset_size, cfg.tc_estimator)
        l_z = -est.marginal_kl_to_prior(aggregate, fp.z, cfg.prior_std)
        tc = est.total_correlation(aggregate)
        h_marginal = est.batch_marginal_entropy(fp.log_probs)
        h_conditional = est.batch_conditional_entropy(fp.log_probs)
        mi = h_marginal - h_conditional  # eq. 7
        vat = vat_penalty(nets, x, fp, cfg)
        l_y = cfg.marginal_entropy_weight * h_marginal - h_conditional - vat
        objective = recon + cfg.beta * l_y + cfg.beta * l_z - cfg.gamma * tc
        loss = -objective
        terms = {"loss": loss, "recon": recon, "L_y": l_y, "mi_y": mi, "vat": vat, "L_z": l_z, "tc": tc}
        return loss, terms


#: name -> objective class; ``Config.model`` picks one.
OBJECTIVES: dict[str, Callable] = {IMAEObjective.name: IMAEObjective}


def build_objective(name: str, cfg, dataset_size: int):
    return OBJECTIVES[name](cfg, dataset_size)
