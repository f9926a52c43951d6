"""The metric groups of ``metrics.json`` and the parsing of ``--metrics`` / ``eval.metrics``.

Kept free of heavy imports so that the command line can list the groups instantly.
"""

from __future__ import annotations

from typing import Iterable

from imae.errors import UserInputError

#: every metric group, with what it computes
METRIC_GROUPS = {
    "clustering": "cluster accuracy (Hungarian), NMI, ARI, confusion matrix (with labels), cluster sizes",
    "information": "I(x;y), Proposition 1 bounds on I(x;z_k), Var[mu_k], E[sigma_k^2], active dims, TC, marginal KL",
    "recon": "reconstruction BCE of decode(argmax y, mean z), nats per image",
    "mig_chen": "Chen et al.'s MIG on the whole factor grid (the paper's metric), and its hybrid variant with y",
    "mig": "disentanglement_lib's histogram MIG on 10,000 random items, and its hybrid variant",
    "dci": "DCI disentanglement, completeness, informativeness (gradient-boosted trees)",
    "factor_vae": "FactorVAE score (majority-vote classifier)",
    "sap": "SAP score (1-D linear SVMs)",
}
#: groups that need no ground-truth factors
BASIC_GROUPS = ("clustering", "information", "recon")
#: groups that need ground-truth factors (dSprites); computed by :mod:`imae.disentanglement_eval`
FACTOR_GROUPS = ("mig_chen", "mig", "dci", "factor_vae", "sap")


def parse_metric_groups(requested: str | Iterable[str] | None) -> list[str] | None:
    """The metric group names of a comma list or a list; ``None`` / empty means the default.

    Raises UserInputError naming the unknown names and listing the valid ones.
    """
    if requested is None:
        return None
    items = requested.split(",") if isinstance(requested, str) else list(requested)
    names = [str(item).strip().lower().replace("-", "_") for item in items if str(item).strip()]
    if not names:
        return None
    unknown = [n for n in names if n not in METRIC_GROUPS]
    if unknown:
        raise UserInputError(f"unknown metric group(s) {', '.join(repr(u) for u in unknown)}; "
                             f"valid names: {', '.join(METRIC_GROUPS)}")
    return list(dict.fromkeys(names))


def resolve_metric_groups(requested: str | Iterable[str] | None, has_factors: bool, data_name: str = "the data") -> list[str]:
    """The groups to compute: those requested, or every group that applies.

    The disentanglement groups need ground-truth factors (dSprites); asking for one on a data set
    without factors is a UserInputError.
    """
    names = parse_metric_groups(requested)
    if names is None:
        return [g for g in METRIC_GROUPS if has_factors or g not in FACTOR_GROUPS]
    missing = [n for n in names if n in FACTOR_GROUPS and not has_factors]
    if missing:
        raise UserInputError(f"metric group(s) {', '.join(missing)} need ground-truth factors, which {data_name} "
                             f"does not have (dSprites does); choose from {', '.join(BASIC_GROUPS)}")
    return names
