"""Run configuration: typed dataclasses, TOML files, ``--set key=value`` overrides, validation.

Every choice the paper leaves open is a field here with its default and the reason for it.
A wrong key, type or value raises :class:`~imae.errors.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imae.errors import ConfigError


@dataclass
class DataConfig:
    #: a name known to ``imae.load_dataset`` (digits, mnist, fashion-mnist, dsprites) or a path
    name: str = "digits"
    #: folder holding named data sets; "" means ~/data
    root: str = ""
    #: split to train on (for data sets that have splits)
    split: str = "train"
    #: split to evaluate on; falls back to the training data when the set has no such split
    eval_split: str = "test"
    #: number of random dSprites grid points to use (0 = the whole grid)
    n_samples: int = 0
    #: optional labels file (.npy/.txt) for the user's own images
    labels: str = ""


@dataclass
class NetConfig:
    #: dimension K1 of the continuous code z
    latent_dim: int = 10
    #: number K2 of categories of the discrete code y
    n_classes: int = 10
    #: encoder hidden widths (Table 1: [500, 1000]; Table 2: [1200, 1200, 2400])
    encoder_hidden: list[int] = field(default_factory=lambda: [256, 512])
    #: decoder hidden widths (Table 1: [500, 500]; Table 2: [1200, 1200, 1200])
    decoder_hidden: list[int] = field(default_factory=lambda: [256, 256])
    #: BatchNorm after each encoder layer (Table 1 has it, Table 2 does not)
    batchnorm: bool = True


@dataclass
class ObjectiveConfig:
    """The settings of every objective (one flat set, so ``--set objective.beta=3`` works for every
    model; each model reads the fields it needs).  Float fields may differ between the members of
    an ensemble (a sweep over them trains as one batched model); the others must be shared."""

    #: the main weight beta.  imae: of L(y) and L(z) in eq. 8; beta_vae: of both KL terms;
    #: info_vae: of the divergences of the aggregate posteriors from the priors; beta_tcvae: of
    #: TC(z).  In every model beta also weighs the VAT penalty (as inside IMAE's beta * L(y)), so
    #: beta = 0 (with gamma = alpha = 0) leaves the plain autoencoder loss.  JointVAE uses beta only
    #: for VAT (its capacity weight is gamma).  Figures 2 and 3 sweep beta over [1, 10]
    beta: float = 6.0
    #: the second weight gamma.  imae: of the total correlation in eq. 8 (the paper's sweeps use
    #: gamma = 2 beta); joint_vae: of |KL - C| for z and for y (Figure 4's beta; Dupont's reference
    #: presets 30, 100, 150); beta_tcvae: of the dimension-wise KL (Chen et al. use 1)
    gamma: float = 12.0
    #: beta_tcvae: weight alpha of the index-code mutual information I(x; z) (and of I(x; y));
    #: 1 as in Chen et al. (2018)
    alpha: float = 1.0
    #: info_vae: weight lambda of MMD(q(z), r(z)) relative to the y divergence, inside beta; 1 is
    #: Figure 4's form (one beta on both).  The MMD-VAE reference adds MMD with weight 1 to a
    #: per-pixel mean reconstruction error, i.e. about 784 against the summed log-likelihood used here
    mmd_weight: float = 1.0
    #: info_vae: MMD kernel.  "gaussian" exp(-||a-b||^2 / (K sigma_r^2)) (K = latent_dim);
    #: "gaussian_dim2" exp(-||a-b||^2 / (K^2 sigma_r^2)), what the MMD-VAE reference code computes;
    #: "imq" C / (C + ||a-b||^2) with C = 2 K sigma_r^2 (Wasserstein auto-encoders)
    mmd_kernel: str = "gaussian"
    #: joint_vae: the largest capacity C_z (nats) that KL(p(z|x) || r(z)) is pushed to (reference:
    #: MNIST 5, Fashion-MNIST 5, dSprites 40)
    capacity_z_max: float = 5.0
    #: joint_vae: the largest capacity C_y (nats) for KL(p(y|x) || uniform); capped at log K2 during
    #: training, the most a K2-way categorical can reach (reference: MNIST 5, Fashion-MNIST 10,
    #: dSprites 1.1)
    capacity_y_max: float = 5.0
    #: joint_vae: optimizer steps over which both capacities rise linearly from 0 to their maximum
    #: (Dupont's reference uses one count for both: MNIST 25,000, Fashion-MNIST 50,000, dSprites
    #: 300,000, at batch size 64); 0 = full capacity from the first step
    capacity_steps: int = 25000
    #: scale sigma_r of the prior r(z_k) = N(0, sigma_r^2) in eq. 6; 1 makes traversals over
    #: [-2, 2] span +-2 prior standard deviations as in Figure 1
    prior_std: float = 1.0
    #: "mws" (minibatch weighted sampling, Chen et al. 2018's default) or "mss" (stratified)
    tc_estimator: str = "mws"
    #: Gumbel-softmax temperature of the relaxed y fed to the decoder; 0.67 = 2/3 as
    #: recommended by Maddison et al. (2017) and used by JointVAE
    temperature: float = 0.67
    #: weight mu of the batch marginal entropy in L(y) = mu H(y) - H(y|x) - VAT; mu = 1 is exactly
    #: eq. 7.  IMSAT (Hu et al. 2017), which eq. 7/9 build on, uses mu = 4 to keep the categories
    #: balanced; the paper presets use 1, the embedded-digits default uses 4 (see README)
    marginal_entropy_weight: float = 4.0
    #: VAT radius eps of eq. 9 (L2, in pixel units of [0, 1] images); the paper uses 1; 0 = off
    vat_eps: float = 1.0
    #: VAT finite-difference step xi (L2 norm) of the power iteration.  Miyato et al.'s reference
    #: uses 1e-6, but in float32 (the training dtype) a step of 1e-6 moves the logits by about one
    #: rounding unit: the power iterate then has cosine ~0.03 with the exact H d on a Table-1
    #: encoder and some rows come out zero; 1e-2 gives cosine > 0.999 and is still deep in the
    #: linear regime for eps = 1 (tests/test_estimators.py checks the default against the exact iterate)
    vat_xi: float = 1e-2
    #: power iterations for r_adv; 1 as in the paper ("a pair of forward and backward passes")
    vat_power_iterations: int = 1


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 256
    #: Adam learning rate; 1e-3 is Adam's default and trains all Table-1/2 MLPs stably
    lr: float = 1e-3
    seed: int = 0
    #: "cpu", "cuda", "cuda:1", "mps", or "auto" (cuda when available)
    device: str = "cpu"
    #: torch intra-op threads on CPU; 0 = one per available core
    threads: int = 0
    #: show a progress bar on stderr
    progress: bool = True
    #: write weights and optimizer state every N epochs (and always after the last); 0 = only
    #: at the end.  The log line is written every epoch regardless.
    checkpoint_every: int = 1
    #: compile the objective with torch.compile (fuses the element-wise work; measured 20%
    #: faster per IMAE step on 2 CPU cores at batch 256, after ~25 s of compilation; see
    #: benchmarks/RESULTS.md).  Needs a C++ compiler on CPU.
    compile: bool = False


@dataclass
class EvalConfig:
    #: batch size for encoding the evaluation set
    batch_size: int = 1024
    #: traversal values per dimension in traverse.png
    traverse_steps: int = 9
    #: traverse each z_k over [-r, r] * prior_std (Figure 1 uses r = 2)
    traverse_range: float = 2.0
    #: metric groups written to metrics.json after training and by `imae eval` without --metrics
    #: (clustering, information, recon, mig_chen, mig, dci, factor_vae, sap); empty = every group
    #: that applies: the disentanglement groups only for data with ground-truth factors (dSprites),
    #: where they encode the full 737,280-image grid (minutes on 2 CPU cores; see README)
    metrics: list[str] = field(default_factory=list)
    #: dSprites: compute the disentanglement metrics on the full 737,280-image grid, as Chen et
    #: al.'s reference does, also when the run trained on a subset (data.n_samples); false = on
    #: the evaluation data itself (a quick, noisier look)
    full_grid: bool = True


@dataclass
class Config:
    #: run name; ``imae train`` writes runs/<name>/ (a -2, -3, ... suffix if it exists)
    name: str = "digits_imae"
    #: the objective to train (see ``imae.objectives.OBJECTIVES``; ``imae train --list-models``):
    #: imae, beta_vae, info_vae, joint_vae or beta_tcvae.  ``objective = NAME`` at the top level (of
    #: a file without an [objective] table, or ``--set objective=NAME``) is an alias
    model: str = "imae"
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Check value ranges; raise ConfigError naming the key and the fix."""
        _check(self.net.latent_dim >= 1, "net.latent_dim", "must be at least 1")
        _check(self.net.n_classes >= 2, "net.n_classes", "must be at least 2")
        _check(all(h >= 1 for h in self.net.encoder_hidden), "net.encoder_hidden", "widths must be positive")
        _check(all(h >= 1 for h in self.net.decoder_hidden), "net.decoder_hidden", "widths must be positive")
        o = self.objective
        for key in ("beta", "gamma", "alpha", "vat_eps", "marginal_entropy_weight", "mmd_weight",
                    "capacity_z_max", "capacity_y_max"):
            _check(getattr(o, key) >= 0, f"objective.{key}", "must be >= 0")
        _check(o.capacity_steps >= 0, "objective.capacity_steps", "must be >= 0 (0 = full capacity from the start)")
        _check(o.prior_std > 0, "objective.prior_std", "must be > 0")
        _check(o.temperature > 0, "objective.temperature", "must be > 0")
        _check(o.vat_xi > 0, "objective.vat_xi", "must be > 0")
        _check(o.vat_power_iterations >= 1, "objective.vat_power_iterations", "must be at least 1")
        from imae.estimators import MMD_KERNELS, TC_ESTIMATORS

        _check(o.tc_estimator in TC_ESTIMATORS, "objective.tc_estimator", f"must be one of {TC_ESTIMATORS}")
        _check(o.mmd_kernel in MMD_KERNELS, "objective.mmd_kernel", f"must be one of {MMD_KERNELS}")
        from imae.objectives import OBJECTIVES

        _check(self.model in OBJECTIVES, "model", f"must be one of {sorted(OBJECTIVES)}")
        t = self.train
        _check(t.epochs >= 1, "train.epochs", "must be at least 1")
        _check(t.batch_size >= 2, "train.batch_size", "must be at least 2 (the minibatch estimators need pairs)")
        _check(t.lr > 0, "train.lr", "must be > 0")
        _check(t.threads >= 0, "train.threads", "must be >= 0 (0 = one per core)")
        _check(t.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0 (0 = only after the last epoch)")
        _check(self.data.n_samples >= 0, "data.n_samples", "must be >= 0 (0 = all)")
        _check(self.data.split in ("train", "test", "all"), "data.split", "must be train, test or all")
        _check(self.data.eval_split in ("train", "test", "all"), "data.eval_split", "must be train, test or all")
        _check(self.eval.batch_size >= 1, "eval.batch_size", "must be at least 1")
        _check(self.eval.traverse_steps >= 2, "eval.traverse_steps", "must be at least 2")
        _check(self.eval.traverse_range > 0, "eval.traverse_range", "must be > 0")
        _check(bool(self.name) and "/" not in self.name and not self.name.startswith("."),
               "name", "must be a non-empty folder name without '/'")
        return self


def _check(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"config value {key} {rule}; fix it in the config file or with --set {key}=...")


# ----------------------------------------------------------------------------- building

def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check ``value`` against the annotated type ``kind``; ints are accepted for floats."""
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"config value {key} must be a list, got {value!r}; write it as [a, b, ...]")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"config value {key} must be of type {kind.__name__}, got {value!r} ({type(value).__name__}); "
        "fix its type in the config file or --set"
    )


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown config key {key!r}; {hint}")


def _all_keys() -> list[str]:
    keys = []
    for name, kind in _field_types(Config).items():
        if dataclasses.is_dataclass(kind):
            keys += [f"{name}.{sub}" for sub in _field_types(kind)]
        else:
            keys.append(name)
    return keys


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a validated Config from nested dicts (as read from TOML); unknown keys are errors."""
    top_types = _field_types(Config)
    raw = _resolve_model_alias(raw)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in top_types:
            raise _unknown_key(key, _all_keys())
        kind = top_types[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"config section [{key}] must be a table of key = value pairs")
            sub_types = _field_types(kind)
            sub_kwargs = {}
            for sub, sub_value in value.items():
                if sub not in sub_types:
                    raise _unknown_key(f"{key}.{sub}", _all_keys())
                sub_kwargs[sub] = _coerce(f"{key}.{sub}", sub_value, sub_types[sub])
            kwargs[key] = kind(**sub_kwargs)
        else:
            kwargs[key] = _coerce(key, value, kind)
    return Config(**kwargs).validate()


#: top-level keys that name the model: ``model`` and its alias ``objective`` (the section
#: ``[objective]`` holds the objective's settings; a top-level string names the objective)
_MODEL_KEYS = ("model", "objective")


def _resolve_model_alias(raw: dict[str, Any]) -> dict[str, Any]:
    """``objective = NAME`` (a string at the top level) read as ``model = NAME``; both with different values is an error."""
    alias = raw.get("objective")
    if isinstance(alias, dict) or "objective" not in raw:
        return raw
    if not isinstance(alias, str):
        raise ConfigError(f"config value objective must be a model name (an alias of model), got {alias!r}; "
                          "set the objective's settings as objective.KEY=VALUE")
    if "model" in raw and raw["model"] != alias:
        raise ConfigError(f"config values model={raw['model']!r} and objective={alias!r} disagree; objective is an "
                          "alias of model, give one of them")
    out = {k: v for k, v in raw.items() if k != "objective"}
    out["model"] = alias
    return out


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not of the form key=value (e.g. --set train.epochs=20)")
    key, raw_value = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()  # a bare word, e.g. --set data.name=mnist
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values in TOML syntax, bare words as strings) to raw dicts."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _resolve_model_alias(raw).items()}
    sections = {name for name, kind in _field_types(Config).items() if dataclasses.is_dataclass(kind)}
    named_model: tuple[str, Any] | None = None  # (key, value) of the last --set model= / objective=
    for text in overrides:
        path, value = _parse_override(text)
        if len(path) == 1 and path[0] in _MODEL_KEYS and not isinstance(value, dict):
            if named_model is not None and named_model[0] != path[0] and named_model[1] != value:
                raise ConfigError(f"--set {named_model[0]}={named_model[1]} and --set {path[0]}={value} disagree; "
                                  "objective is an alias of model, give one of them")
            _resolve_model_alias({"objective": value})  # a non-string name is an error
            named_model = (path[0], value)
            out["model"] = value
        elif len(path) == 1 and path[0] not in sections:
            out[path[0]] = value
        elif len(path) == 2 and path[0] in sections:
            out.setdefault(path[0], {})[path[1]] = value
        else:
            raise _unknown_key(".".join(path), _all_keys())
    return out


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path given to --config")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """The default config, or the one in ``path``, with ``overrides`` applied; validated."""
    raw = read_toml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def write_toml(config: Config, path: str | os.PathLike) -> None:
    import tomli_w

    Path(path).write_text(tomli_w.dumps(config.to_dict()))
