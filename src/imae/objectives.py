"""Objectives: each a short weighted sum of the estimator terms in :mod:`imae.estimators`.

An objective maps (networks, batch) to ``(loss, terms)``: the scalar to minimise and a dict
of named scalar tensors for logging.  Every objective shares :func:`forward_pass`, so models
differ only in how they weigh the terms.

Models (the registry :data:`OBJECTIVES`): ``imae`` (eq. 8) and the baselines of Section 3 and
Figure 4, each with VAT (eq. 9) on p(y|x): ``beta_vae``, ``info_vae`` (MMD form), ``joint_vae``
and ``beta_tcvae``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from imae import estimators as est
from imae.latent import gaussian_prior_sample, gaussian_sample, gumbel_softmax_sample
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


# ----------------------------------------------------------------------------- baselines
#
# The models IMAE is compared with (Section 3, Figure 4), on the same networks, forward pass,
# training loop and evaluation.  Each augments p(y | x) with VAT (eq. 9) exactly as IMAE does,
# weighted by beta: IMAE's beta * L(y) contains -beta * VAT, so at every beta of the Figure 2/3
# sweeps every model carries the same VAT term, and beta = 0 (with gamma = alpha = 0) leaves the
# plain autoencoder loss -E[log q(x|y,z)] in every model.


def _autoencoder_terms(objective: Objective, nets: HybridAutoencoder, x: torch.Tensor):
    """The pieces every baseline shares: the forward pass, E[log q(x|y,z)], VAT and the
    minibatch I(x; y) of eq. 7 (logged by every model so that runs compare)."""
    fp = forward_pass(nets, x, objective.w.temperature)
    recon = est.bernoulli_log_likelihood(fp.recon_logits, x)
    vat = vat_penalty(nets, x, fp, objective)
    mi_y = est.discrete_mutual_information(fp.log_probs)
    return fp, recon, vat, mi_y


class BetaVAEObjective(Objective):
    """beta-VAE (Higgins et al. 2017) on the hybrid code, plus VAT:

    -(E[log q(x|y,z)] - beta [KL(p(z|x) || r(z)) + KL(p(y|x) || r(y))] - beta VAT),

    r(z) = N(0, prior_std^2 I), r(y) uniform; both KLs in closed form, averaged over the batch
    (Figure 4: the ELBO's two KL terms, weighted by beta; beta = 1 is the ELBO).
    """

    name = "beta_vae"
    summary = "beta-VAE: reconstruction - beta*[KL(p(z|x)||r(z)) + KL(p(y|x)||r(y))] - beta*VAT"

    def terms(self, nets: HybridAutoencoder, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        w = self.w
        fp, recon, vat, mi_y = _autoencoder_terms(self, nets, x)
        kl_z = est.gaussian_kl_to_prior(fp.mean, fp.logvar, w.prior_std).mean(dim=-1)
        kl_y = est.categorical_kl_to_uniform(fp.log_probs).mean(dim=-1)
        beta = _w(w.beta, recon)
        objective = recon - beta * (kl_z + kl_y) - beta * vat
        return {"loss": -objective, "recon": recon, "kl_z": kl_z, "kl_y": kl_y, "mi_y": mi_y, "vat": vat}


class InfoVAEObjective(Objective):
    """InfoVAE (Zhao et al. 2017) in its MMD form, as Figure 4 summarises it, plus VAT:

    -(E[log q(x|y,z)] - beta [mmd_weight MMD(q(z), r(z)) + KL(p(y) || r(y))] - beta VAT).

    The mutual-information terms of the ELBO are dropped; the aggregate posteriors are pushed to
    the priors: for z the squared MMD (:func:`~imae.estimators.maximum_mean_discrepancy`, kernel
    ``mmd_kernel``) between the batch's z samples and as many samples of r(z), for y the KL of the
    batch-averaged p(y|x) to the uniform r(y).
    """

    name = "info_vae"
    summary = "InfoVAE (MMD): reconstruction - beta*[mmd_weight*MMD(q(z), r(z)) + KL(p(y)||r(y))] - beta*VAT"

    def terms(self, nets: HybridAutoencoder, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        cfg, w = self.cfg, self.w
        fp, recon, vat, mi_y = _autoencoder_terms(self, nets, x)
        prior_z = gaussian_prior_sample(fp.z, est.per_member(w.prior_std, fp.z))
        mmd_z = est.maximum_mean_discrepancy(fp.z, prior_z, cfg.mmd_kernel, w.prior_std)
        kl_y_marginal = est.marginal_kl_to_uniform(fp.log_probs)
        beta = _w(w.beta, recon)
        objective = recon - beta * (_w(w.mmd_weight, recon) * mmd_z + kl_y_marginal) - beta * vat
        return {"loss": -objective, "recon": recon, "mmd_z": mmd_z, "kl_y_marginal": kl_y_marginal,
                "mi_y": mi_y, "vat": vat}


class JointVAEObjective(Objective):
    """JointVAE (Dupont 2018), plus VAT:

    -(E[log q(x|y,z)] - gamma |KL_z - C_z(t)| - gamma |KL_y - C_y(t)| - beta VAT),

    KL_z = KL(p(z|x) || r(z)) and KL_y = KL(p(y|x) || uniform), in closed form and averaged over
    the batch; the capacities rise linearly from 0 at step 0 to ``capacity_z_max`` and
    ``capacity_y_max`` at step ``capacity_steps`` (:func:`~imae.estimators.linear_capacity`), C_y
    capped at log K2.  gamma is the capacity weight (Figure 4 calls it beta).
    """

    name = "joint_vae"
    summary = "JointVAE: reconstruction - gamma*|KL_z - C_z(t)| - gamma*|KL_y - C_y(t)| - beta*VAT, C rising linearly"

    def terms(self, nets: HybridAutoencoder, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        cfg, w = self.cfg, self.w
        fp, recon, vat, mi_y = _autoencoder_terms(self, nets, x)
        kl_z = est.gaussian_kl_to_prior(fp.mean, fp.logvar, w.prior_std).mean(dim=-1)
        kl_y = est.categorical_kl_to_uniform(fp.log_probs).mean(dim=-1)
        log_k2 = math.log(fp.log_probs.shape[-1])
        capacity_z = _per_term(est.linear_capacity(step, w.capacity_z_max, cfg.capacity_steps), recon)
        capacity_y = _per_term(est.linear_capacity(step, w.capacity_y_max, cfg.capacity_steps, limit=log_k2), recon)
        gamma = _w(w.gamma, recon)
        objective = recon - gamma * (kl_z - capacity_z).abs() - gamma * (kl_y - capacity_y).abs() - _w(w.beta, recon) * vat
        return {"loss": -objective, "recon": recon, "kl_z": kl_z, "kl_y": kl_y, "capacity_z": capacity_z,
                "capacity_y": capacity_y, "mi_y": mi_y, "vat": vat}


class BetaTCVAEObjective(Objective):
    """beta-TCVAE (Chen et al. 2018) on the hybrid code, plus VAT:

    -(E[log q(x|y,z)] - alpha [I(x;z) + I(x;y)] - beta TC(z) - gamma [sum_k KL(q(z_k)||r(z_k)) + KL(p(y)||r(y))]
      - beta VAT).

    Chen et al.'s decomposition E_x KL(q(z|x) || r(z)) = I(x;z) + TC(z) + sum_k KL(q(z_k)||r(z_k))
    with their minibatch estimators (``tc_estimator``: mws or mss, as in IMAE); y, for which the
    decomposition has no TC, is treated as one more factor: the batch mean of KL(p(y|x)||r(y))
    is exactly I_hat(x;y) (eq. 7) + KL(batch-averaged p(y) || r(y)), weighed by alpha and gamma.
    alpha = beta = gamma = 1 is thus a batch estimate of the ELBO's KL terms; Chen et al. keep
    alpha = gamma = 1 and vary beta.
    """

    name = "beta_tcvae"
    summary = "beta-TCVAE: reconstruction - alpha*I(x;z,y) - beta*TC(z) - gamma*dimension-wise KL - beta*VAT"

    def terms(self, nets: HybridAutoencoder, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        cfg, w = self.cfg, self.w
        fp, recon, vat, mi_y = _autoencoder_terms(self, nets, x)
        aggregate = est.aggregate_log_density(fp.z, fp.mean, fp.logvar, self.dataset_size, cfg.tc_estimator)
        mi_z = est.index_code_mutual_information(aggregate, fp.z, fp.mean, fp.logvar)
        tc = est.total_correlation(aggregate)
        dwkl_z = est.marginal_kl_to_prior(aggregate, fp.z, w.prior_std)
        kl_y_marginal = est.marginal_kl_to_uniform(fp.log_probs)
        alpha, beta, gamma = _w(w.alpha, recon), _w(w.beta, recon), _w(w.gamma, recon)
        objective = recon - alpha * (mi_z + mi_y) - beta * tc - gamma * (dwkl_z + kl_y_marginal) - beta * vat
        return {"loss": -objective, "recon": recon, "mi_z": mi_z, "tc": tc, "dwkl_z": dwkl_z, "mi_y": mi_y,
                "kl_y_marginal": kl_y_marginal, "vat": vat}


def _per_term(value, term: torch.Tensor) -> torch.Tensor:
    """A float or per-member ``[E]`` value as a tensor shaped like the per-member ``term`` (for logging)."""
    return torch.as_tensor(value, dtype=term.dtype, device=term.device).expand(term.shape).clone()


#: name -> objective class; ``Config.model`` (or its alias ``objective``) picks one; ``imae train
#: --list-models`` prints each with its ``summary``.
OBJECTIVES: dict[str, Callable] = {
    cls.name: cls for cls in (IMAEObjective, BetaVAEObjective, InfoVAEObjective, JointVAEObjective, BetaTCVAEObjective)
}


def build_objective(name: str, cfg, dataset_size: int) -> Objective:
    """The objective ``name`` for one objective config, or for a list of them (one per ensemble member)."""
    return OBJECTIVES[name](cfg, dataset_size)
