"""What the ``imae`` commands do, as functions: train a run folder, evaluate it, draw it.

A run folder ``runs/<name>/`` holds ``config.toml``, ``model.safetensors``, ``checkpoint.pt``
(optimizer and RNG state for ``--resume``), ``log.jsonl`` (one line per epoch), ``metrics.json``
and ``traverse.png``.  All user input (config, data) is checked before the folder is created,
so a bad input leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from imae import checkpoint as ckpt
from imae.config import Config, config_from_dict, read_toml, apply_overrides
from imae.data import load_dataset
from imae.data.dataset import ImageDataset
from imae.errors import CheckpointError
from imae.model import Model, write_config
from imae.train import EpochCallback

#: named data sets that have a separate test split
_SPLIT_DATASETS = ("mnist", "fashion-mnist")


def load_data(config: Config) -> tuple[ImageDataset, ImageDataset]:
    """The training set and the evaluation set named by ``config.data``.

    Data sets with a test split evaluate on ``data.eval_split``; the others evaluate on the
    training data (unsupervised clustering is customarily scored on the data it clusters).
    """
    d = config.data
    options = {}
    if d.name.lower() == "dsprites" and d.n_samples:
        options = {"n_samples": d.n_samples, "seed": config.train.seed}
    root = d.root or None
    labels = d.labels or None
    train = load_dataset(d.name, root=root, split=d.split, labels=labels, **options)
    if d.name.lower().replace("_", "-") in _SPLIT_DATASETS and d.eval_split != d.split:
        return train, load_dataset(d.name, root=root, split=d.eval_split)
    return train, train


def unique_run_dir(runs_dir: Path, name: str) -> Path:
    candidate, i = runs_dir / name, 1
    while candidate.exists():
        i += 1
        candidate = runs_dir / f"{name}-{i}"
    return candidate


def train_run(config: Config, runs_dir: str | Path = "runs", callbacks: Iterable[EpochCallback] = (),
              progress: bool | None = None) -> Path:
    """Train ``config`` into a new run folder under ``runs_dir``; evaluate and draw it."""
    train_data, eval_data = load_data(config)  # every input check happens before mkdir
    check_metric_groups(config, eval_data)
    model = Model(config).build(train_data.input_dim, train_data.image_shape)
    run_dir = unique_run_dir(Path(runs_dir), config.name)
    run_dir.mkdir(parents=True)
    model.fit(train_data, run_dir=run_dir, callbacks=callbacks, progress=progress)
    finish_run(model, run_dir, eval_data, progress=progress)
    return run_dir


def resume_run(run_dir: str | Path, overrides: list[str] | None = None, callbacks: Iterable[EpochCallback] = (),
               progress: bool | None = None) -> Path:
    """Continue an interrupted run (``--set train.epochs=N`` extends it); then evaluate and draw it."""
    run_dir = Path(run_dir)
    model = Model.load(run_dir)
    if overrides:
        config = config_from_dict(apply_overrides(read_toml(run_dir / ckpt.CONFIG_FILE), overrides))
        if (config.net, config.model) != (model.config.net, model.config.model):
            raise CheckpointError("--resume cannot change the architecture or the model; "
                                  "start a new run with `imae train` instead")
        model.config = config
    train_data, eval_data = load_data(model.config)
    check_metric_groups(model.config, eval_data)
    if overrides:
        write_config(model.config, run_dir)
    model.resume(train_data, run_dir, callbacks=callbacks, progress=progress)
    finish_run(model, run_dir, eval_data, progress=progress)
    return run_dir


def check_metric_groups(config: Config, eval_data: ImageDataset) -> list[str]:
    """The metric groups of ``eval.metrics`` for this data (a UserInputError before any work if invalid)."""
    from imae.metric_groups import resolve_metric_groups

    return resolve_metric_groups(config.eval.metrics, eval_data.factors is not None, repr(eval_data.name))


def finish_run(model: Model, run_dir: Path, eval_data: ImageDataset, progress: bool | None = None) -> dict:
    show = model.config.train.progress if progress is None else progress
    metrics = write_metrics(model, run_dir, eval_data, progress=show)
    from imae.viz import save_traversal_figure

    save_traversal_figure(model, eval_data, run_dir / ckpt.TRAVERSE_FILE, seed=model.config.train.seed)
    return metrics


def factor_data_for(model: Model, eval_data: ImageDataset, groups: list[str]) -> ImageDataset:
    """The data the disentanglement metrics use: for dSprites the full 737,280-image grid (loaded
    from the run's data root when the run used a subset, ``data.n_samples``) unless
    ``eval.full_grid`` is false; else ``eval_data``."""
    from imae.metric_groups import FACTOR_GROUPS

    if eval_data.name != "dsprites" or not model.config.eval.full_grid or not any(g in FACTOR_GROUPS for g in groups):
        return eval_data
    from imae.data.dsprites import N_IMAGES

    if len(eval_data) == N_IMAGES:
        return eval_data
    root = model.config.data.root or None
    if _full_grid_cache.get("root", ...) != root:  # one grid (3 GB) kept for the runs of a sweep
        _full_grid_cache.clear()
        _full_grid_cache.update(root=root, data=load_dataset("dsprites", root=root))
    return _full_grid_cache["data"]


_full_grid_cache: dict = {}


def read_metrics(run_dir: Path) -> dict:
    """The metrics.json of a run folder, or {} when there is none (or it is unreadable)."""
    path = Path(run_dir) / ckpt.METRICS_FILE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def write_metrics(model: Model, run_dir: Path, eval_data: ImageDataset, metrics=None, progress: bool = False) -> dict:
    """Compute the metric groups ``metrics`` (default ``eval.metrics``: every group that applies)
    and write them into ``metrics.json``, keeping the keys already there that were not recomputed.

    Returns the newly computed values.
    """
    from imae.evaluate import evaluate, resolve_metric_groups

    requested = model.config.eval.metrics if metrics is None else metrics
    groups = resolve_metric_groups(requested, eval_data.factors is not None, repr(eval_data.name))
    factor_data = factor_data_for(model, eval_data, groups)
    computed = evaluate(model, eval_data, seed=model.config.train.seed, metrics=groups, factor_data=factor_data,
                        progress=progress)
    merged = {**read_metrics(run_dir), **computed}
    ckpt.write_text_atomic(run_dir / ckpt.METRICS_FILE, json.dumps(merged, indent=2) + "\n")
    return computed


def evaluate_run(run_dir: str | Path, data_root: str | None = None, metrics=None, progress: bool = False) -> dict:
    """Re-compute the metric groups ``metrics`` (default ``eval.metrics``: all that apply) from the
    saved model and merge them into ``metrics.json``; returns the recomputed values."""
    run_dir = Path(run_dir)
    model = Model.load(run_dir)
    if data_root is not None:
        model.config.data.root = data_root
    _, eval_data = load_data(model.config)
    return write_metrics(model, run_dir, eval_data, metrics=metrics, progress=progress)


def traverse_run(run_dir: str | Path, out: str | Path | None = None, data_root: str | None = None) -> Path:
    """Redraw the traversal figure of a run folder."""
    from imae.viz import save_traversal_figure

    run_dir = Path(run_dir)
    model = Model.load(run_dir)
    if data_root is not None:
        model.config.data.root = data_root
    _, eval_data = load_data(model.config)
    return save_traversal_figure(model, eval_data, out or run_dir / ckpt.TRAVERSE_FILE, seed=model.config.train.seed)
