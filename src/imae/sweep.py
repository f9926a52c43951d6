"""Sweeps: many runs of one base config over a grid of values and seeds, trained as ensembles.

The paper's figures need sweeps (Figure 2: 10 betas x 10 seeds per model).  A sweep expands a
base config into one config per grid point and seed, groups the runs that share everything but
their seed and the float weights of their objective (same architecture, data, objective,
optimizer settings), and trains each group as one batched ensemble (:mod:`imae.nets`,
:class:`imae.train.Trainer`), at most ``ensemble_size`` members at a time.  Every run still gets
its own ordinary run folder (config.toml, model.safetensors, checkpoint.pt, log.jsonl,
metrics.json, traverse.png), identical in layout to what ``imae train`` writes; the sweep folder
adds ``sweep.toml`` (the spec) and ``summary.csv`` (one row per run).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from imae import checkpoint as ckpt
from imae.config import Config, apply_overrides, config_from_dict, read_toml
from imae.errors import ConfigError

SPEC_FILE = "sweep.toml"
SUMMARY_FILE = "summary.csv"
#: summary.csv columns taken from metrics.json when present
SUMMARY_METRICS = ("cluster_acc", "nmi", "ari", "mi_xy", "recon_bce", "tc", "marginal_kl")


# ----------------------------------------------------------------------------- the spec

@dataclass
class SweepSpec:
    """What to sweep: grid values per config key, derived keys, seeds."""

    #: key -> list of values, e.g. {"objective.beta": [1.0, 2.0]}; the grid is their product
    grid: dict[str, list] = field(default_factory=dict)
    #: key -> (factor, source key): key = factor * source, e.g. gamma = 2 * beta (Figure 2)
    derive: dict[str, tuple[float, str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "derive": {k: f"{f}*{s}" for k, (f, s) in self.derive.items()}, "seeds": self.seeds}


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``KEY=V1,V2,...`` (values in TOML syntax, bare words as strings) -> {key: [values]}."""
    grid: dict[str, list] = {}
    for text in items:
        if "=" not in text:
            raise ConfigError(f"--grid {text!r} is not of the form key=v1,v2,... (e.g. --grid objective.beta=1,2,4)")
        key, values = (part.strip() for part in text.split("=", 1))
        parsed = [_parse_value(v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError(f"--grid {key} has no values; give them as {key}=v1,v2,...")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; give all its values in one --grid")
        grid[key] = parsed
    return grid


def _parse_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


_DERIVE = re.compile(r"^\s*([^=\s]+)\s*=\s*([-+0-9.eE]+)\s*\*\s*([^\s]+)\s*$")


def parse_derive(items: Sequence[str]) -> dict[str, tuple[float, str]]:
    """``KEY=FACTOR*SOURCE`` -> {key: (factor, source)}, e.g. objective.gamma=2*objective.beta."""
    out = {}
    for text in items:
        match = _DERIVE.match(text)
        if not match:
            raise ConfigError(f"--derive {text!r} is not of the form key=FACTOR*other_key "
                              "(e.g. --derive objective.gamma=2*objective.beta)")
        out[match.group(1)] = (float(match.group(2)), match.group(3))
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,7"`` or ``"5"`` -> a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                seeds += list(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not a list of integers; write e.g. 0-9 or 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds is empty; write e.g. 0-9 or 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} repeats a seed")
    return seeds


# ----------------------------------------------------------------------------- expansion

def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def expand(base: dict[str, Any], spec: SweepSpec) -> list[Config]:
    """One validated config per grid point and seed, each with its own run name.

    The name is ``<base name>_<key>=<value>_..._seed=<seed>`` with the last part of each key.
    """
    if not spec.seeds:
        raise ConfigError("a sweep needs at least one seed")
    keys = list(spec.grid)
    for key, (_, source) in spec.derive.items():
        if source not in spec.grid:
            raise ConfigError(f"--derive {key} uses {source}, which is not a --grid key; add --grid {source}=...")
        if key in spec.grid:
            raise ConfigError(f"{key} is both a --grid and a --derive key; keep one")
    base_name = base.get("name", "digits_imae")
    configs = []
    for point in itertools.product(*(spec.grid[k] for k in keys)):
        values = dict(zip(keys, point))
        for key, (factor, source) in spec.derive.items():
            values[key] = factor * values[source]
        for seed in spec.seeds:
            tag = "_".join(f"{k.split('.')[-1]}={_format(values[k])}" for k in keys)
            name = f"{base_name}_{tag}_seed={seed}" if tag else f"{base_name}_seed={seed}"
            overrides = [f"{k}={_toml(v)}" for k, v in values.items()] + [f"train.seed={seed}", f"name={_toml(name)}"]
            configs.append(config_from_dict(apply_overrides(base, overrides)))
    return configs


def _toml(value: Any) -> str:
    """A value written in TOML syntax for ``--set`` (a JSON scalar or array is valid TOML)."""
    return json.dumps(value)


def ensemble_key(config: Config) -> str:
    """What members of one ensemble must share: everything but the name, the seed and the
    float weights of the objective (which the ensemble takes per member)."""
    raw = config.to_dict()
    raw.pop("name")
    raw["train"].pop("seed")
    raw["objective"] = {k: v for k, v in raw["objective"].items() if not isinstance(v, float)}
    return json.dumps(raw, sort_keys=True)


def plan_ensembles(configs: Sequence[Config], ensemble_size: int) -> list[list[Config]]:
    """Group configs that can train together, in order of first appearance, at most
    ``ensemble_size`` per group."""
    if ensemble_size < 1:
        raise ConfigError("--ensemble-size must be at least 1")
    groups: dict[str, list[Config]] = {}
    for config in configs:
        groups.setdefault(ensemble_key(config), []).append(config)
    plan = []
    for members in groups.values():
        for i in range(0, len(members), ensemble_size):
            plan.append(members[i : i + ensemble_size])
    return plan


# ----------------------------------------------------------------------------- training

def train_ensemble(configs: Sequence[Config], run_dirs: Sequence[Path], progress: bool | None = None,
                   data=None) -> list[dict]:
    """Train ``configs`` (one ensemble) into ``run_dirs``; evaluate and draw each member.

    Returns each member's metrics.  ``data`` (train, eval) may be passed to skip loading.
    """
    import torch

    from imae.model import Model, build_nets, write_config
    from imae.nets import member_state
    from imae.objectives import build_objective
    from imae.runner import finish_run, load_data
    from imae.train import Trainer

    first = configs[0]
    if len({ensemble_key(c) for c in configs}) != 1:
        raise ConfigError("the configs of one ensemble must differ only in seed and float objective weights")
    train_data, eval_data = data if data is not None else load_data(first)
    seeds = [c.train.seed for c in configs]
    nets = build_nets(first, train_data.input_dim, seeds)
    objective = build_objective(first.model, [c.objective for c in configs], dataset_size=len(train_data))
    models = [Model(c) for c in configs]
    for model in models:
        model.input_dim, model.image_shape = train_data.input_dim, tuple(train_data.image_shape)
    for config, run_dir in zip(configs, run_dirs):
        Path(run_dir).mkdir(parents=True)
        write_config(config, Path(run_dir))
    torch.manual_seed(seeds[0])
    trainer = Trainer(nets, objective, train_data, first.train, seeds=seeds, run_dirs=[Path(d) for d in run_dirs],
                      metadata=[m.weights_metadata() for m in models])
    show = first.train.progress if progress is None else progress
    trainer.run(first.train.epochs, progress=show)
    results = []
    state = trainer.nets.state_dict()
    for e, (model, run_dir) in enumerate(zip(models, run_dirs)):
        model.build(train_data.input_dim, train_data.image_shape)
        model.nets.load_state_dict(member_state(state, e))
        model.nets.to(trainer.device)
        model.history = ckpt.read_log(Path(run_dir) / ckpt.LOG_FILE)
        if e in trainer.diverged:
            results.append({"diverged": True})
            continue
        results.append(finish_run(model, Path(run_dir), eval_data))
    return results


def run_sweep(base: dict[str, Any], spec: SweepSpec, runs_dir: str | Path = "runs", ensemble_size: int = 16,
              progress: bool | None = None, name: str | None = None, sweep_dir: Path | None = None) -> Path:
    """Expand, plan and train a sweep into ``runs_dir/<name>/``; write sweep.toml and summary.csv.

    With ``sweep_dir`` (an existing sweep folder, see :func:`resume_sweep`) runs that already
    have their metrics.json are kept and the others are trained again from scratch.
    """
    import shutil

    from imae.runner import check_metric_groups, load_data, unique_run_dir

    configs = expand(base, spec)
    done = {}
    if sweep_dir is not None:
        for config in configs:
            metrics_file = sweep_dir / config.name / ckpt.METRICS_FILE
            if metrics_file.is_file():
                done[config.name] = json.loads(metrics_file.read_text())
    todo = [c for c in configs if c.name not in done]
    plan = plan_ensembles(todo, ensemble_size) if todo else []
    data_cache: dict[str, tuple] = {}
    for group in plan:  # check every input before creating any folder
        key = json.dumps(dataclasses.asdict(group[0].data), sort_keys=True)
        if key not in data_cache:
            data_cache[key] = load_data(group[0])
        for config in group:
            check_metric_groups(config, data_cache[key][1])
    if sweep_dir is None:
        sweep_dir = unique_run_dir(Path(runs_dir), name or f"{base.get('name', 'digits_imae')}_sweep")
        sweep_dir.mkdir(parents=True)
        ckpt.atomic_write(sweep_dir / SPEC_FILE, lambda tmp: _write_spec(tmp, base, spec, ensemble_size))
    rows = {c.name: _summary_row(c, spec, done[c.name]) for c in configs if c.name in done}
    for i, group in enumerate(plan):
        if progress is not False and len(plan) > 1:
            import sys

            print(f"ensemble {i + 1}/{len(plan)}: {len(group)} runs", file=sys.stderr)
        run_dirs = [sweep_dir / c.name for c in group]
        for run_dir in run_dirs:  # an interrupted run starts again
            if run_dir.exists():
                shutil.rmtree(run_dir)
        data = data_cache[json.dumps(dataclasses.asdict(group[0].data), sort_keys=True)]
        for config, metrics in zip(group, train_ensemble(group, run_dirs, progress=progress, data=data)):
            rows[config.name] = _summary_row(config, spec, metrics)
        _write_summary(sweep_dir / SUMMARY_FILE, [rows[c.name] for c in configs if c.name in rows], spec)
    if not plan:
        _write_summary(sweep_dir / SUMMARY_FILE, [rows[c.name] for c in configs if c.name in rows], spec)
    return sweep_dir


def resume_sweep(sweep_dir: str | Path, progress: bool | None = None) -> Path:
    """Finish an interrupted sweep: keep finished runs, train the unfinished ones again."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / SPEC_FILE).is_file():
        raise ConfigError(f"{sweep_dir} has no {SPEC_FILE}; give the folder `imae sweep` wrote")
    base, spec, ensemble_size = read_spec(sweep_dir)
    return run_sweep(base, spec, ensemble_size=ensemble_size, progress=progress, sweep_dir=sweep_dir)


def _write_spec(path: Path, base: dict, spec: SweepSpec, ensemble_size: int) -> None:
    import tomli_w

    path.write_text(tomli_w.dumps({"base": base, "sweep": {**spec.to_dict(), "ensemble_size": ensemble_size}}))


def _lookup(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _summary_row(config: Config, spec: SweepSpec, metrics: dict) -> dict:
    row = {"run": config.name, "model": config.model}
    for key in list(spec.grid) + list(spec.derive):
        row[key] = _lookup(config, key)
    row["seed"] = config.train.seed
    row["diverged"] = bool(metrics.get("diverged", False))
    for key in SUMMARY_METRICS:
        row[key] = metrics.get(key, "")
    return row


def _write_summary(path: Path, rows: list[dict], spec: SweepSpec) -> None:
    if not rows:
        return
    columns = list(rows[0])

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    ckpt.atomic_write(path, write)


def read_spec(sweep_dir: str | Path) -> tuple[dict, SweepSpec, int]:
    raw = read_toml(Path(sweep_dir) / SPEC_FILE)
    sweep = raw["sweep"]
    spec = SweepSpec(grid=sweep["grid"], derive=parse_derive([f"{k}={v}" for k, v in sweep["derive"].items()]),
                     seeds=list(sweep["seeds"]))
    return raw["base"], spec, int(sweep["ensemble_size"])


__all__ = ["SweepSpec", "expand", "parse_derive", "parse_grid", "parse_seeds", "plan_ensembles", "run_sweep",
           "train_ensemble", "ensemble_key", "read_spec", "resume_sweep"]
