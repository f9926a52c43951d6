"""One lean training loop for every objective.

The data set lives on the device as one tensor; each epoch draws a fresh permutation from a
dedicated generator and slices batches from it; Adam updates the parameters; the running sums
of the named loss terms stay on the device until the epoch ends (no host sync per step).
After each epoch the loop writes the weights (safetensors), the optimizer and RNG state and a
line of ``log.jsonl``, so ``resume`` continues exactly where an interrupted run stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from imae import checkpoint as ckpt
from imae.data.dataset import ImageDataset
from imae.errors import ConfigError, UserInputError


class TrainingDiverged(UserInputError):
    """A loss term became NaN or infinite; the message names the terms and what to change."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available; an unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config value train.device {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is available; use --set train.device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is mps but MPS is not available; use --set train.device=cpu")
    return device


def set_threads(threads: int) -> None:
    """Intra-op threads for CPU work: ``threads``, or one per core this process may use."""
    if threads > 0:
        n = threads
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Full batches over ``n`` items; a last partial batch is dropped (the minibatch estimators
    of MI and TC are biased on tiny batches), unless the data set is smaller than one batch."""
    if n <= batch_size:
        return [slice(0, n)]
    return [slice(i, i + batch_size) for i in range(0, n - batch_size + 1, batch_size)]


EpochCallback = Callable[["Trainer", dict], None]


class Trainer:
    """Trains ``nets`` on ``data`` with ``objective``; owns the optimizer and RNG state."""

    def __init__(self, nets, objective, data: ImageDataset, tcfg, run_dir: Path | None = None,
                 weights_metadata: dict[str, str] | None = None):
        self.tcfg = tcfg
        self.device = resolve_device(tcfg.device)
        set_threads(tcfg.threads)
        self.nets = nets.to(self.device)
        self.objective = objective
        self.images = data.images.to(self.device)
        self.optimizer = torch.optim.Adam(self.nets.parameters(), lr=tcfg.lr)
        self.order_rng = torch.Generator().manual_seed(tcfg.seed)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.weights_metadata = weights_metadata or {}
        self.epoch = 0
        self.wall_time = 0.0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "wall_time": self.wall_time,
            "rng_cpu": torch.get_rng_state(),
            "rng_order": self.order_rng.get_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.wall_time = float(state["wall_time"])
        torch.set_rng_state(state["rng_cpu"])
        self.order_rng.set_state(state["rng_order"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def save(self, record: dict | None) -> None:
        """Write weights, training state and (if given) the epoch's log line into the run folder."""
        if self.run_dir is None:
            return
        ckpt.save_weights(self.nets.state_dict(), self.run_dir / ckpt.WEIGHTS_FILE, self.weights_metadata)
        ckpt.save_training_state(self.state_dict(), self.run_dir / ckpt.STATE_FILE)
        if record is not None:
            with (self.run_dir / ckpt.LOG_FILE).open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def run(self, epochs: int, callbacks: Iterable[EpochCallback] = (), progress: bool = True) -> list[dict]:
        """Train until ``epochs`` epochs are complete in total; returns the new log records."""
        records = []
        slices = batch_slices(self.images.shape[0], self.tcfg.batch_size)
        bar = _progress_bar(total=(epochs - self.epoch) * len(slices), enabled=progress)
        try:
            while self.epoch < epochs:
                start = time.perf_counter()
                sums = self._train_epoch(slices, bar)
                epoch_time = time.perf_counter() - start
                self.epoch += 1
                self.wall_time += epoch_time
                if not all(math.isfinite(v) for v in sums.values()):
                    bad = ", ".join(k for k, v in sums.items() if not math.isfinite(v))
                    raise TrainingDiverged(f"training diverged in epoch {self.epoch} (non-finite {bad}); "
                                           "lower train.lr or the objective weights and start again")
                record = {"epoch": self.epoch, **{k: v / len(slices) for k, v in sums.items()},
                          "epoch_time": epoch_time, "wall_time": self.wall_time}
                records.append(record)
                self.save(record)
                if bar is not None:
                    bar.set_postfix({k: f"{record[k]:.3g}" for k in sums}, refresh=False)
                for callback in callbacks:
                    callback(self, record)
        finally:
            if bar is not None:
                bar.close()
        return records

    def _train_epoch(self, slices: list[slice], bar) -> dict[str, float]:
        self.nets.train()
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.order_rng).to(self.device)
        sums: dict[str, torch.Tensor] = {}
        for s in slices:
            x = self.images[order[s]]
            x = x.float() if x.dtype != torch.float32 else x
            loss, terms = self.objective(self.nets, x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for k, v in terms.items():
                v = v.detach()
                sums[k] = sums[k] + v if k in sums else v.clone()
            if bar is not None:
                bar.update(1)
        return {k: float(v) for k, v in sums.items()}


def _progress_bar(total: int, enabled: bool):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=True)
