"""The user-facing model: configure, ``fit``, ``encode``, ``decode``, ``save`` and ``load``.

``Model`` trains any objective of :data:`imae.objectives.OBJECTIVES`; :class:`IMAE` is the
same class with the IMAE objective and the paper's hyper-parameter names as arguments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import torch

from imae import checkpoint as ckpt
from imae.config import Config, config_from_dict, read_toml, write_toml
from imae.data.dataset import ImageDataset
from imae.errors import CheckpointError, ConfigError, DataError
from imae.nets import Decoder, Encoder, init_members
from imae.objectives import HybridAutoencoder, build_objective
from imae.train import EpochCallback, Trainer, resolve_device

FORMAT_VERSION = "1"
_SECTIONS = ("objective", "net", "train", "data", "eval")


def config_with(config: Config | None = None, **params) -> Config:
    """A copy of ``config`` (or the default) with flat parameters set.

    A parameter is looked up by field name in the sections objective, net, train, data, eval
    (first match wins: ``batch_size`` is ``train.batch_size``); ``model`` and ``name`` are
    top-level.  Unknown names raise ConfigError.
    """
    raw = (config or Config()).to_dict()
    for key, value in params.items():
        if key in ("model", "name"):
            raw[key] = value
            continue
        for section in _SECTIONS:
            if key in raw[section]:
                raw[section][key] = value
                break
        else:
            raise ConfigError(f"unknown parameter {key!r}; use a field name of the config (see `imae.config`)")
    return config_from_dict(raw)


def build_nets(config: Config, input_dim: int, seeds: list[int]) -> HybridAutoencoder:
    """The networks of ``config.net`` for ``len(seeds)`` members, member e initialised from ``seeds[e]``."""
    net = config.net
    members = len(seeds)
    encoder = Encoder(input_dim, net.encoder_hidden, net.latent_dim, net.n_classes, net.batchnorm, members=members)
    decoder = Decoder(input_dim, net.decoder_hidden, net.latent_dim, net.n_classes, members=members)
    nets = HybridAutoencoder(encoder, decoder)
    init_members(nets, seeds)
    return nets


class Model:
    """An encoder p(y, z | x), a decoder q(x | y, z) and the objective that trains them."""

    def __init__(self, config: Config | None = None, **params):
        self.config = config_with(config, **params) if params else (config or Config()).validate()
        self.nets: HybridAutoencoder | None = None
        self.input_dim: int | None = None
        self.image_shape: tuple[int, int] | None = None
        self.history: list[dict] = []
        self._trainer: Trainer | None = None

    # ------------------------------------------------------------------ building
    def build(self, input_dim: int, image_shape: tuple[int, int]) -> "Model":
        """Create the networks for ``input_dim`` pixels (seeded by ``train.seed``)."""
        self.nets = build_nets(self.config, input_dim, [self.config.train.seed])
        self.input_dim, self.image_shape = input_dim, tuple(image_shape)
        return self

    def _require_nets(self) -> HybridAutoencoder:
        if self.nets is None:
            raise RuntimeError("the model has no networks yet: call fit() or Model.load() first")
        return self.nets

    @property
    def device(self) -> torch.device:
        return next(self._require_nets().parameters()).device

    def weights_metadata(self) -> dict[str, str]:
        return {"format_version": FORMAT_VERSION, "model": self.config.model,
                "input_dim": str(self.input_dim), "image_shape": ",".join(map(str, self.image_shape))}

    # ------------------------------------------------------------------ training
    def fit(self, data: ImageDataset, epochs: int | None = None, seed: int | None = None,
            run_dir: str | Path | None = None, callbacks: Iterable[EpochCallback] = (),
            progress: bool | None = None) -> "Model":
        """Train on ``data`` for ``epochs`` (default ``train.epochs``) with ``seed``.

        With ``run_dir`` every epoch writes weights, training state and a ``log.jsonl`` line
        there, so an interrupted fit can continue with :meth:`resume`.
        """
        overrides = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
        if overrides:
            self.config = config_with(self.config, **overrides)
        if self.nets is None or self.input_dim != data.input_dim or seed is not None:
            self.build(data.input_dim, data.image_shape)
        torch.manual_seed(self.config.train.seed)
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_config(self.config, Path(run_dir))
        self._trainer = self._make_trainer(data, run_dir)
        return self._run(callbacks, progress)

    def resume(self, data: ImageDataset, run_dir: str | Path, callbacks: Iterable[EpochCallback] = (),
               progress: bool | None = None) -> "Model":
        """Continue the run in ``run_dir`` (weights, optimizer, epoch, RNG) up to ``train.epochs``."""
        run_dir = Path(run_dir)
        if data.input_dim != self.input_dim:
            raise DataError(f"the data have {data.input_dim} pixels per image but the run in {run_dir} was "
                            f"trained on {self.input_dim}; resume it with the data it was trained on")
        self._trainer = self._make_trainer(data, run_dir)
        self._trainer.load_state_dict(ckpt.load_training_state(run_dir / ckpt.STATE_FILE))
        log_path = run_dir / ckpt.LOG_FILE
        kept = ckpt.read_log(log_path)[: self._trainer.epoch]
        ckpt.write_text_atomic(log_path, "".join(_json_line(r) for r in kept))
        self.history = kept
        return self._run(callbacks, progress)

    def _make_trainer(self, data: ImageDataset, run_dir) -> Trainer:
        objective = build_objective(self.config.model, self.config.objective, dataset_size=len(data))
        return Trainer(self._require_nets(), objective, data, self.config.train,
                       run_dir=None if run_dir is None else Path(run_dir), weights_metadata=self.weights_metadata())

    def _run(self, callbacks, progress) -> "Model":
        show = self.config.train.progress if progress is None else progress
        self.history += self._trainer.run(self.config.train.epochs, callbacks=callbacks, progress=show)
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y_prob, z_mean, z_logvar)`` of p(y | x) and q(z | x) for images ``x`` ([N, D] or [N, H, W])."""
        nets = self._require_nets()
        x = self._check_inputs(x)
        nets.eval()
        size = batch_size or self.config.eval.batch_size
        outs = [nets.encoder(x[i : i + size].to(self.device).float()) for i in range(0, x.shape[0], size)]
        mean, logvar, logits = (torch.cat(parts) for parts in zip(*outs)) if outs else (torch.empty(0),) * 3
        return torch.softmax(logits, dim=-1).cpu(), mean.cpu(), logvar.cpu()

    @torch.no_grad()
    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of q(x | y, z); ``y`` holds class indices [N] or probabilities [N, C]."""
        nets = self._require_nets()
        net = self.config.net
        if y.dim() == 1:
            y = torch.nn.functional.one_hot(y.long(), net.n_classes).float()
        if y.shape[-1] != net.n_classes or z.shape[-1] != net.latent_dim or y.shape[0] != z.shape[0]:
            raise DataError(f"decode needs y of shape [N] or [N, {net.n_classes}] and z of shape "
                            f"[N, {net.latent_dim}], got {tuple(y.shape)} and {tuple(z.shape)}")
        nets.eval()
        return torch.sigmoid(nets.decoder(y.to(self.device).float(), z.to(self.device).float())).cpu()

    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() == 3:
            x = x.flatten(1)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise DataError(f"the model takes images of {self.input_dim} pixels ({self.image_shape}), "
                            f"got a tensor of shape {tuple(x.shape)}; pass [N, {self.input_dim}] or [N, H, W]")
        return x

    # ------------------------------------------------------------------ persistence
    def save(self, run_dir: str | Path) -> Path:
        """Write ``config.toml`` and ``model.safetensors`` into ``run_dir`` (created if needed)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_weights(self._require_nets().state_dict(), run_dir / ckpt.WEIGHTS_FILE, self.weights_metadata())
        write_config(self.config, run_dir)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, map_location: str | torch.device = "cpu") -> "Model":
        """Rebuild a model from a run folder written by ``save`` or ``imae train``."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"run folder {run_dir} does not exist; give the folder `imae train` wrote")
        config = config_from_dict(read_toml(run_dir / ckpt.CONFIG_FILE))
        state, meta = ckpt.load_weights(run_dir / ckpt.WEIGHTS_FILE)
        try:
            input_dim = int(meta["input_dim"])
            image_shape = tuple(int(v) for v in meta["image_shape"].split(","))
        except (KeyError, ValueError):
            raise CheckpointError(f"{run_dir / ckpt.WEIGHTS_FILE} lacks the imae metadata (input_dim, image_shape); "
                                  "it was not written by imae — retrain with `imae train`") from None
        model = cls.__new__(cls)
        Model.__init__(model, config)
        model.build(input_dim, image_shape)
        try:
            model.nets.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise CheckpointError(f"the weights in {run_dir} do not fit the architecture in its config.toml "
                                  f"({first[1].strip() if len(first) > 1 else first[0]}); "
                                  "they come from another architecture — restore the config they were trained with") from None
        model.nets.to(map_location)
        model.history = ckpt.read_log(run_dir / ckpt.LOG_FILE)
        return model


def write_config(config: Config, run_dir: Path) -> None:
    ckpt.atomic_write(run_dir / ckpt.CONFIG_FILE, lambda tmp: write_toml(config, tmp))


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record) + "\n"


class IMAE(Model):
    """Information Maximization Auto-Encoding (eq. 8) with the paper's hyper-parameters by name.

    Example::

        model = IMAE(beta=1.0, gamma=2.0, latent_dim=10, n_classes=10, vat_eps=1.0)
        model.fit(load_dataset("digits"), epochs=50, seed=0)
        y_prob, z_mean, z_logvar = model.encode(data.images)

    Any other config field can be passed by name (``lr=5e-4``, ``batch_size=128``, ...).
    """

    def __init__(self, beta: float | None = None, gamma: float | None = None, latent_dim: int | None = None,
                 n_classes: int | None = None, vat_eps: float | None = None, config: Config | None = None, **params):
        named = {"beta": beta, "gamma": gamma, "latent_dim": latent_dim, "n_classes": n_classes, "vat_eps": vat_eps}
        params.update({k: v for k, v in named.items() if v is not None})
        params.setdefault("model", "imae")
        super().__init__(config, **params)
