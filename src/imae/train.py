"""One lean training loop for every objective.

The data set lives on the device as one tensor; each epoch draws a fresh permutation from a
dedicated generator and slices batches from it; Adam updates the parameters; the running sums
of the named loss terms stay on the device until the epoch ends (no host sync per step).
After each epoch the loop writes the weights (safetensors), the optimizer and RNG state and a
line of ``log.jsonl``, so ``resume`` continues exactly where an interrupted run stopped
(``train.checkpoint_every`` thins out the weight writes for fast sweeps).

The same loop trains an ensemble: E members stacked along a leading parameter dimension
(:mod:`imae.nets`), one batched step for all, each member with its own seed, data order,
optimizer moments, BatchNorm statistics, log and run folder.
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


def _slice_state(value, member: int):
    """One member's part of an optimizer-state value (tensors with a member axis are cut)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value[member : member + 1].clone()
    return value


def member_optimizer_state(state: dict, member: int) -> dict:
    """The optimizer state dict of one member, cut out of the ensemble's (Adam's moments are
    element-wise, so a member's slice is exactly the state a single-model run would have)."""
    return {"state": {k: {n: _slice_state(v, member) for n, v in s.items()} for k, s in state["state"].items()},
            "param_groups": state["param_groups"]}


def stack_optimizer_states(states: list[dict]) -> dict:
    """The ensemble's optimizer state dict from the members' (inverse of member_optimizer_state)."""
    first = states[0]
    stacked = {}
    for k, s in first["state"].items():
        stacked[k] = {n: (torch.cat([m["state"][k][n] for m in states]) if isinstance(v, torch.Tensor) and v.dim() > 0
                          else v) for n, v in s.items()}
    return {"state": stacked, "param_groups": first["param_groups"]}


class Trainer:
    """Trains ``nets`` (one model, or an ensemble of E members) on ``data`` with ``objective``.

    Each member has its own data order (a generator seeded with its seed), its own optimizer
    state (Adam's moments are element-wise over the stacked parameters), BatchNorm statistics,
    log and run folder; one step updates every member from one batched forward/backward pass.
    """

    def __init__(self, nets, objective, data: ImageDataset, tcfg, run_dir: Path | None = None,
                 weights_metadata: dict[str, str] | None = None, seeds: list[int] | None = None,
                 run_dirs: list[Path | None] | None = None, metadata: list[dict[str, str]] | None = None):
        self.tcfg = tcfg
        self.device = resolve_device(tcfg.device)
        set_threads(tcfg.threads)
        self.nets = nets.to(self.device)
        self.members = nets.members
        self.objective = compiled_objective(objective) if getattr(tcfg, "compile", False) else objective
        if objective.members != self.members:
            raise ValueError(f"the objective has {objective.members} member configs for {self.members} network members")
        self.images = data.images.to(self.device)
        self.optimizer = _adam(self.nets.parameters(), tcfg.lr, self.device)
        self.seeds = list(seeds) if seeds is not None else [tcfg.seed]
        if len(self.seeds) != self.members:
            raise ValueError(f"{len(self.seeds)} seeds for {self.members} members")
        self.order_rngs = [torch.Generator().manual_seed(int(s)) for s in self.seeds]
        if run_dirs is None:
            run_dirs = [None if run_dir is None else Path(run_dir)] * self.members if self.members == 1 else [None] * self.members
        self.run_dirs = [None if d is None else Path(d) for d in run_dirs]
        self.metadata = metadata or [weights_metadata or {}] * self.members
        self.epoch = 0
        self.step = 0
        self.wall_time = 0.0
        self.diverged: set[int] = set()

    @property
    def run_dir(self) -> Path | None:
        return self.run_dirs[0]

    # ------------------------------------------------------------------ state
    def member_state_dict(self, member: int) -> dict:
        """Everything ``resume`` needs for one member: its optimizer state, epoch, step and RNGs."""
        state = {
            "optimizer": member_optimizer_state(self.optimizer.state_dict(), member),
            "epoch": self.epoch,
            "step": self.step,
            "wall_time": self.wall_time,
            "rng_cpu": torch.get_rng_state(),
            "rng_order": self.order_rngs[member].get_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def state_dict(self) -> dict:
        return self.member_state_dict(0)

    def load_member_states(self, states: list[dict]) -> None:
        """Restore every member from its saved state (all saved at the same epoch)."""
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) != 1:
            raise ValueError(f"the members were saved at different epochs {sorted(epochs)}; resume them one by one")
        self.optimizer.load_state_dict(stack_optimizer_states([s["optimizer"] for s in states]))
        first = states[0]
        self.epoch = int(first["epoch"])
        self.step = int(first.get("step", 0))
        self.wall_time = float(first["wall_time"])
        torch.set_rng_state(first["rng_cpu"])
        for rng, s in zip(self.order_rngs, states):
            rng.set_state(s["rng_order"])
        if "rng_cuda" in first and self.device.type == "cuda":
            torch.cuda.set_rng_state(first["rng_cuda"], self.device)

    def load_state_dict(self, state: dict) -> None:
        self.load_member_states([state])

    def save(self, records: list[dict] | dict | None, weights: bool = True) -> None:
        """Write each member's log line and (with ``weights``) its weights and training state."""
        from imae.nets import member_state

        if isinstance(records, dict) or records is None:
            records = [records] * self.members
        full = self.nets.state_dict() if weights else None
        for e, run_dir in enumerate(self.run_dirs):
            if run_dir is None:
                continue
            if records[e] is not None:
                with (run_dir / ckpt.LOG_FILE).open("a") as fh:
                    fh.write(json.dumps(records[e]) + "\n")
            if weights and e not in self.diverged:
                ckpt.save_weights(member_state(full, e), run_dir / ckpt.WEIGHTS_FILE, self.metadata[e])
                ckpt.save_training_state(self.member_state_dict(e), run_dir / ckpt.STATE_FILE)

    # ------------------------------------------------------------------ loop
    def run(self, epochs: int, callbacks: Iterable[EpochCallback] = (), progress: bool = True) -> list[dict]:
        """Train until ``epochs`` epochs are complete in total; returns the new log records
        (one dict per epoch for a single model; for an ensemble, a dict with a list per member)."""
        records = []
        slices = batch_slices(self.images.shape[0], self.tcfg.batch_size)
        bar = _progress_bar(total=(epochs - self.epoch) * len(slices), enabled=progress, members=self.members)
        every = getattr(self.tcfg, "checkpoint_every", 1)
        try:
            while self.epoch < epochs:
                start = time.perf_counter()
                sums = self._train_epoch(slices, bar)
                epoch_time = time.perf_counter() - start
                self.epoch += 1
                self.wall_time += epoch_time
                member_records = []
                for e in range(self.members):
                    values = {k: v[e] / len(slices) for k, v in sums.items()}
                    record = {"epoch": self.epoch, **values, "epoch_time": epoch_time, "wall_time": self.wall_time}
                    if not all(math.isfinite(v) for v in values.values()):
                        if self.members == 1:
                            bad = ", ".join(k for k, v in values.items() if not math.isfinite(v))
                            raise TrainingDiverged(f"training diverged in epoch {self.epoch} (non-finite {bad}); "
                                                   "lower train.lr or the objective weights and start again")
                        if e not in self.diverged:
                            record["diverged"] = True
                            self.diverged.add(e)
                    member_records.append(record)
                if len(self.diverged) == self.members and self.members > 1:
                    raise TrainingDiverged(f"every member diverged by epoch {self.epoch}; lower train.lr or the "
                                           "objective weights and start again")
                last = self.epoch == epochs
                self.save(member_records, weights=last or (every > 0 and self.epoch % every == 0))
                record = member_records[0] if self.members == 1 else {"epoch": self.epoch, "members": member_records}
                records.append(record)
                if bar is not None:
                    shown = member_records[0]
                    bar.set_postfix({k: f"{shown[k]:.3g}" for k in sums}, refresh=False)
                for callback in callbacks:
                    callback(self, record)
        finally:
            if bar is not None:
                bar.close()
        return records

    def _train_epoch(self, slices: list[slice], bar) -> dict[str, list[float]]:
        self.nets.train()
        n = self.images.shape[0]
        order = torch.stack([torch.randperm(n, generator=g) for g in self.order_rngs]).to(self.device)
        sums: dict[str, torch.Tensor] = {}
        for s in slices:
            x = self.images[order[0, s]] if self.members == 1 else self.images[order[:, s]]
            x = x.float() if x.dtype != torch.float32 else x
            loss, terms = self.objective(self.nets, x, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            for k, v in terms.items():
                v = v.detach().reshape(-1)
                sums[k] = sums[k] + v if k in sums else v.clone()
            if bar is not None:
                bar.update(1)
        return {k: v.double().cpu().tolist() for k, v in sums.items()}


class compiled_objective:
    """``objective`` with its ``terms`` compiled by ``torch.compile`` (same call signature).

    VAT's inner ``torch.autograd.grad`` splits the graph; the element-wise work around it
    (the TC tensor, BatchNorm, the likelihood) is fused.
    """

    def __init__(self, objective):
        self.objective = objective
        self.members = objective.members
        self._terms = torch.compile(objective.terms)

    def __call__(self, nets, x, step: int = 0):
        terms = self._terms(nets, x, step)
        return terms["loss"].sum(), terms


def _adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where the device has one: one pass over each parameter
    instead of about ten (on 2 CPU cores it is 6x faster than the default loop, which matters
    once an ensemble stacks millions of parameters per step)."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.Adam(params, lr=lr)


def _progress_bar(total: int, enabled: bool, members: int = 1):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    desc = f"{members} models" if members > 1 else None
    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=True, desc=desc)
