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
    model = Model(config).build(train_data.input_dim, train_data.image_shape)
    run_dir = unique_run_dir(Path(runs_dir), config.name)
    run_dir.mkdir(parents=True)
    model.fit(train_data, run_dir=run_dir, callbacks=callbacks, progress=progress)
    finish_run(model, run_dir, eval_data)
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
    if overrides:
        write_config(model.config, run_dir)
    model.resume(train_data, run_dir, callbacks=callbacks, progress=progress)
    finish_run(model, run_dir, eval_data)
    return run_dir


def finish_run(model: Model, run_dir: Path, eval_data: ImageDataset) -> dict:
    metrics = write_metrics(model, run_dir, eval_data)
    from imae.viz import save_traversal_figure

    save_traversal_figure(model, eval_data, run_dir / ckpt.TRAVERSE_FILE, seed=model.config.train.seed)
    return metrics


def write_metrics(model: Model, run_dir: Path, eval_data: ImageDataset) -> dict:
    from imae.evaluate import evaluate

    metrics = evaluate(model, eval_data, seed=model.config.train.seed)
    ckpt.write_text_atomic(run_dir / ckpt.METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate_run(run_dir: str | Path, data_root: str | None = None) -> dict:
    """Re-compute ``metrics.json`` from the saved model."""
    run_dir = Path(run_dir)
    model = Model.load(run_dir)
    if data_root is not None:
        model.config.data.root = data_root
    _, eval_data = load_data(model.config)
    return write_metrics(model, run_dir, eval_data)


def traverse_run(run_dir: str | Path, out: str | Path | None = None, data_root: str | None = None) -> Path:
    """Redraw the traversal figure of a run folder."""
    from imae.viz import save_traversal_figure

    run_dir = Path(run_dir)
    model = Model.load(run_dir)
    if data_root is not None:
        model.config.data.root = data_root
    _, eval_data = load_data(model.config)
    return save_traversal_figure(model, eval_data, out or run_dir / ckpt.TRAVERSE_FILE, seed=model.config.train.seed)
