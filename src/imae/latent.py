"""Posteriors of the hybrid code: a factorial Gaussian for z and a categorical for y.

Sampling (reparameterisation for z, Gumbel-softmax for y), log densities and entropies, all in
log-space.  Variances are parameterised by their logarithm, ``logvar = log sigma^2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the reparameterisation of Kingma & Welling."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def gaussian_prior_sample(like: torch.Tensor, std) -> torch.Tensor:
    """A sample of the prior N(0, std^2 I) shaped like ``like`` (``[E, M, K]`` or ``[M, K]``).

    Drawn from the global torch generator; ``std`` is a number or a tensor that broadcasts
    against ``like`` (one value per ensemble member viewed as ``[E, 1, 1]``).  InfoVAE compares
    such a sample, as many points as the batch, with the batch's z by MMD.
    """
    return torch.randn_like(like) * std


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; mean, exp(logvar)); broadcasts over its arguments."""
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar))


def gaussian_entropy(logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise differential entropy of N(., exp(logvar)): 0.5 * (log(2 pi e) + logvar)."""
    return 0.5 * (LOG_2PI + 1.0 + logvar)


def gumbel_softmax_sample(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A relaxed one-hot sample softmax((logits + g) / tau), g ~ Gumbel(0, 1) (Jang et al. 2016).

    The Gumbel noise is drawn as -log(E) with E ~ Exp(1), which is never log(0).
    """
    gumbel = -torch.empty_like(logits).exponential_().log()
    return F.softmax((logits + gumbel) / temperature, dim=-1)


def categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy -sum_c p_c log p_c along the last axis, from log-probabilities (0 log 0 = 0)."""
    probs = log_probs.exp()
    terms = torch.where(probs > 0, probs * log_probs, torch.zeros_like(log_probs))
    return -terms.sum(dim=-1)


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_c p_c (log p_c - log q_c) along the last axis, from log-probabilities."""
    probs = log_p.exp()
    terms = torch.where(probs > 0, probs * (log_p - log_q), torch.zeros_like(log_p))
    return terms.sum(dim=-1)
