"""Run-folder files: weights in safetensors, training state via ``torch.load(weights_only=True)``.

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so an interruption never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from imae.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "checkpoint.pt"
CONFIG_FILE = "config.toml"
LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
TRAVERSE_FILE = "traverse.png"


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not Path(path).is_file():
        raise CheckpointError(f"{path} does not exist; point to a run folder written by `imae train`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-run `imae train`") from None


def save_training_state(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise CheckpointError(f"{path} does not exist, so this run cannot be resumed; start it again with `imae train`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise CheckpointError(f"{path} is corrupt ({type(exc).__name__}); start the run again with `imae train`") from None


def read_log(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
