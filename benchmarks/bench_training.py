"""Training-speed benchmark: our lean step and ensembles against what users would otherwise run.

Run from the repository root::

    python3 benchmarks/bench_training.py            # full table, writes benchmarks/RESULTS.md
    python3 benchmarks/bench_training.py --quick     # fewer steps, prints only

Everything is measured in one process, one after another, on MNIST-shaped data (synthetic
binary 28x28 images: throughput does not depend on the pixel values) with the Table 1 MLP
(encoder 784-500-1000 with BatchNorm, decoder 500-500-784, 10 z dimensions, 10 classes).

* The "limit" is the float32 matrix-product throughput measured here, now (best of square
  products of a few sizes).  Achieved GFLOP/s count the matrix-product FLOPs of every pass a
  step makes (forward, backward, and VAT's extra encoder passes), from the layer shapes; the
  count is cross-checked against ``torch.utils.flop_counter``.  Element-wise work (BatchNorm,
  the M x M x K TC tensor, Adam) is not counted, so it shows up as lost efficiency.
* Rows compare, at the same batch size, MLP and objective: our step (``imae.train.Trainer``);
  a torchvision-style per-item Dataset through a DataLoader; a DataLoader over a TensorDataset;
  pythae's BetaVAE through its own training pipeline (optional extra ``.[bench]``); ensembles
  of E = 1, 4, 16, 64 members.
* Peak memory is the peak growth of live allocated memory while the row builds its model and
  runs its warm-up epoch (CPU: glibc's mallinfo2, sampled every 5 ms) or
  ``torch.cuda.max_memory_allocated`` (GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imae import estimators as est
from imae.config import load_config
from imae.data.dataset import ImageDataset
from imae.model import build_nets
from imae.objectives import OBJECTIVES, build_objective
from imae.train import Trainer, compiled_objective, set_threads

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "paper" / "mnist_imae.toml"


# ----------------------------------------------------------------------------- measuring

class PeakMemory:
    """Peak growth of live allocated memory inside the block.

    CPU: the bytes glibc's allocator has handed out and not yet freed (``mallinfo2``: in-use
    heap plus mmap'd blocks, which is where torch's CPU tensors live), sampled every 5 ms
    by a thread (during model building and the warm-up epoch, not while timing), so memory freed by an earlier row does not hide a later row's
    peak as resident-set sizes would.  CUDA: ``torch.cuda.max_memory_allocated``.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes = device, 0

    @staticmethod
    def _live() -> int:
        info = _mallinfo2()
        if info is not None:
            return info.uordblks + info.hblkhd
        with open("/proc/self/statm") as fh:  # fallback: resident set size
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._peak = self._live()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, self._live())
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, self._live()) - self._base


def _mallinfo2():
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        return libc.mallinfo2()
    except (OSError, AttributeError):
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_limit(device: torch.device, seconds: float = 1.0) -> float:
    """Best float32 GFLOP/s of square matrix products (n = 1024, 2048) on ``device``."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        for _ in range(2):
            a @ b
        _sync(device)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            a @ b
            reps += 1
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def layer_shapes(config, input_dim: int = 784) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    net = config.net
    enc, width = [], input_dim
    for h in net.encoder_hidden:
        enc.append((width, h))
        width = h
    enc.append((width, 2 * net.latent_dim + net.n_classes))
    dec, width = [], net.latent_dim + net.n_classes
    for h in net.decoder_hidden:
        dec.append((width, h))
        width = h
    dec.append((width, input_dim))
    return enc, dec


def step_flops(config, batch: int, vat: bool, input_dim: int = 784) -> float:
    """Matrix-product FLOPs of one training step per member, from the layer shapes.

    Forward 2*in*out per sample and layer; backward twice that (input and weight gradients),
    except that the first encoder layer needs no input gradient.  VAT (one power iteration)
    adds an encoder forward at x + xi*d and its input-gradient pass back to d, and a forward at
    x + r_adv with the full backward into the weights (again no input gradient at the first
    layer).
    """
    enc, dec = layer_shapes(config, input_dim)
    fe = sum(2 * i * o for i, o in enc)
    fd = sum(2 * i * o for i, o in dec)
    first = 2 * enc[0][0] * enc[0][1]
    flops = 3 * (fe + fd) - first
    if vat:
        flops += (fe + fe) + (3 * fe - first)
    return float(flops * batch)


def counted_flops(nets, objective, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = objective(nets, x, 0)
        loss.backward()
    for p in nets.parameters():
        p.grad = None
    return float(counter.get_total_flops())


@dataclass
class Row:
    name: str
    batch: int
    members: int
    samples_per_s: float
    step_ms: float
    gflops: float | None = None
    limit_pct: float | None = None
    peak_mb: float | None = None
    note: str = ""


# ----------------------------------------------------------------------------- our step

def synthetic_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 784, generator=g) > 0.87).to(torch.uint8) * 255


def _config(batch: int, model: str = "imae", **objective):
    overrides = [f"train.batch_size={batch}", "train.progress=false", "train.checkpoint_every=0", f"model={model}"]
    overrides += [f"objective.{k}={v}" for k, v in objective.items()]
    return load_config(PRESET, overrides)


def time_ours(config, images: torch.Tensor, members: int, steps: int, device: torch.device,
              compile_objective: bool = False) -> tuple[float, float]:
    """Seconds per step and peak memory (bytes) of ``Trainer`` on ``steps`` batches per epoch."""
    batch = config.train.batch_size
    data = ImageDataset(images[: batch * steps].float().div_(255), (28, 28), name="synthetic")
    seeds = list(range(members))
    torch.manual_seed(0)
    mem = PeakMemory(device).__enter__()  # the whole row: parameters, optimizer state, activations
    nets = build_nets(config, 784, seeds)
    objective = build_objective(config.model, [config.objective] * members, dataset_size=60000)
    tcfg = load_config(None, [f"train.batch_size={batch}", f'train.device="{device.type}"', "train.checkpoint_every=0"]).train
    trainer = Trainer(nets, objective, data, tcfg, seeds=seeds)
    if compile_objective:
        trainer.objective = compiled_objective(objective)
    trainer.run(1, progress=False)  # warm-up epoch (allocations, compilation)
    mem.__exit__(None, None, None)  # the sampler thread is stopped before timing: it takes the GIL
    _sync(device)
    start = time.perf_counter()
    trainer.run(2, progress=False)
    _sync(device)
    return (time.perf_counter() - start) / steps, mem.peak_bytes


# ----------------------------------------------------------------------------- typical user loops

class PerItemMNIST(torch.utils.data.Dataset):
    """What torchvision's MNIST does per item: a uint8 28x28 array -> PIL image -> float tensor."""

    def __init__(self, images: torch.Tensor):
        self.images = images.view(-1, 28, 28).numpy()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index], mode="L")
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).float().div(255).unsqueeze(0)  # ToTensor
        return tensor, 0


def time_typical(config, dataset, steps: int, device: torch.device) -> float:
    """Seconds per step of the loop a typical user writes: a shuffling DataLoader, the same
    model and objective, default Adam, the loss logged with ``.item()`` every step."""
    batch = config.train.batch_size
    torch.manual_seed(0)
    nets = build_nets(config, 784, [0]).to(device)
    objective = build_objective(config.model, config.objective, dataset_size=60000)
    optimizer = torch.optim.Adam(nets.parameters(), lr=config.train.lr)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)

    def epoch(limit):
        done = 0
        for x, _ in loader:
            x = x.view(x.shape[0], -1).to(device)
            loss, _ = objective(nets, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
            done += 1
            if done == limit:
                return

    epoch(2)
    _sync(device)
    start = time.perf_counter()
    epoch(steps)
    _sync(device)
    return (time.perf_counter() - start) / steps


def time_pythae(config, images: torch.Tensor, steps: int, device: torch.device) -> float | None:
    """Seconds per step of pythae's BetaVAE with the same MLP through its TrainingPipeline."""
    try:
        from pythae.models import BetaVAE, BetaVAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.pipelines import TrainingPipeline
        from pythae.trainers import BaseTrainerConfig
    except ImportError:
        return None
    net = config.net
    enc_shapes, dec_shapes = layer_shapes(config)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            layers = []
            for i, o in enc_shapes[:-1]:
                layers += [torch.nn.Linear(i, o), torch.nn.BatchNorm1d(o), torch.nn.ReLU()]
            self.trunk = torch.nn.Sequential(*layers)
            self.head = torch.nn.Linear(enc_shapes[-1][0], 2 * net.latent_dim)

        def forward(self, x):
            out = self.head(self.trunk(x.reshape(x.shape[0], -1)))
            return ModelOutput(embedding=out[:, : net.latent_dim], log_covariance=out[:, net.latent_dim :])

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            layers, width = [], net.latent_dim
            for _, o in dec_shapes[:-1]:
                layers += [torch.nn.Linear(width, o), torch.nn.ReLU()]
                width = o
            self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 784), torch.nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).view(-1, 1, 28, 28))

    batch = config.train.batch_size
    data = images[: batch * steps].view(-1, 1, 28, 28).float().div(255)
    model_config = BetaVAEConfig(input_dim=(1, 28, 28), latent_dim=net.latent_dim, beta=1.0, reconstruction_loss="bce")

    def train(n_epochs: int) -> float:
        torch.manual_seed(0)
        model = BetaVAE(model_config=model_config, encoder=Encoder(), decoder=Decoder())
        with tempfile.TemporaryDirectory() as out:
            training = BaseTrainerConfig(output_dir=out, num_epochs=n_epochs, per_device_train_batch_size=batch,
                                         learning_rate=config.train.lr, no_cuda=device.type != "cuda")
            pipeline = TrainingPipeline(training_config=training, model=model)
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), _quiet_logging():
                start = time.perf_counter()
                pipeline(train_data=data, eval_data=None)
                return time.perf_counter() - start

    one, three = train(1), train(3)
    return (three - one) / (2 * steps)  # per-epoch cost without the pipeline's fixed setup and saving


@contextlib.contextmanager
def _quiet_logging():
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


# ----------------------------------------------------------------------------- cost of VAT and TC

def time_tc(batch: int, latent: int, device: torch.device, reps: int = 30) -> tuple[float, int]:
    """Forward + backward seconds of L(z) and TC (MWS) on one batch, and the bytes of one
    M x M x K float32 tensor (the estimator holds about three of them for the backward)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(batch, latent, generator=g).to(device).requires_grad_(True)
    logvar = (0.1 * torch.randn(batch, latent, generator=g)).to(device).requires_grad_(True)
    noise = torch.randn(batch, latent, generator=g).to(device)

    def run():
        z = mean + torch.exp(0.5 * logvar) * noise
        agg = est.aggregate_log_density(z, mean, logvar, 60000, "mws")
        (est.total_correlation(agg) + est.marginal_kl_to_prior(agg, z)).backward()

    for _ in range(3):
        run()
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        run()
    _sync(device)
    return (time.perf_counter() - start) / reps, batch * batch * latent * 4


# ----------------------------------------------------------------------------- the table

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps; print only, do not write RESULTS.md")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="markdown file to write")
    parser.add_argument("--ensembles", default="1,4,16,64", help="ensemble sizes (default: 1,4,16,64)")
    parser.add_argument("--compile", action="store_true", help="add rows with torch.compile'd objectives")
    parser.add_argument("--skip-pythae", action="store_true", help="leave out the pythae rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    set_threads(0)
    steps = 8 if args.quick else 30
    images = synthetic_images(max(256, 64 * 64) * steps)

    limit = matmul_limit(device)
    print(f"float32 matmul limit: {limit:.0f} GFLOP/s on {device}", file=sys.stderr)
    rows: list[Row] = []

    def add(name, batch, members, seconds, flops=None, peak=None, note=""):
        gflops = flops / seconds / 1e9 if flops else None
        row = Row(name, batch, members, members * batch / seconds, seconds * 1e3, gflops,
                  100 * gflops / limit if gflops else None, None if peak is None else peak / 2**20, note)
        rows.append(row)
        print(_format_row(row), file=sys.stderr)
        return row

    # FLOP count cross-check
    cfg256 = _config(256)
    nets = build_nets(cfg256, 784, [0])
    x = images[:256].float().div(255)
    counted = counted_flops(nets, build_objective("imae", cfg256.objective, 60000), x)
    analytic = step_flops(cfg256, 256, vat=True)
    print(f"FLOPs per IMAE step at batch 256: analytic {analytic / 1e9:.3f} G, counted {counted / 1e9:.3f} G",
          file=sys.stderr)

    # 1. our step, single model, full IMAE (VAT + TC), and its parts
    ours = {}
    for batch in (256, 64):
        cfg = _config(batch)
        sec, peak = time_ours(cfg, images, 1, steps, device)
        ours[batch] = sec
        add("ours: IMAE step (VAT + TC)", batch, 1, sec, step_flops(cfg, batch, True), peak)
        sec_novat, _ = time_ours(_config(batch, vat_eps=0.0), images, 1, steps, device)
        add("ours: IMAE step without VAT", batch, 1, sec_novat, step_flops(cfg, batch, False),
            note=f"VAT costs {100 * (sec - sec_novat) / sec:.0f}% of the step")
        tc_sec, tc_bytes = time_tc(batch, cfg.net.latent_dim, device)
        rows.append(Row("TC + L(z) estimator alone (fwd + bwd)", batch, 1, batch / tc_sec, tc_sec * 1e3,
                        note=f"{100 * tc_sec / sec:.0f}% of the step; one M x M x K tensor = {tc_bytes / 2**10:.0f} KiB"))
        print(_format_row(rows[-1]), file=sys.stderr)
        if args.compile:
            sec_c, _ = time_ours(cfg, images, 1, steps, device, compile_objective=True)
            add("ours: IMAE step, torch.compile'd objective", batch, 1, sec_c, step_flops(cfg, batch, True))

    # 2. what a typical user writes (same model, objective and batch)
    for batch in (256, 64):
        cfg = _config(batch)
        n = batch * steps + 2 * batch
        sec = time_typical(cfg, PerItemMNIST(images[:n]), steps, device)
        add("per-item Dataset (torchvision style) + DataLoader", batch, 1, sec, step_flops(cfg, batch, True),
            note=f"ours is {sec / ours[batch]:.1f}x faster")
        tensors = torch.utils.data.TensorDataset(images[:n].float().div(255), torch.zeros(n))
        sec = time_typical(cfg, tensors, steps, device)
        add("DataLoader over a TensorDataset", batch, 1, sec, step_flops(cfg, batch, True),
            note=f"ours is {sec / ours[batch]:.1f}x faster")

    # 3. pythae's BetaVAE vs our beta-VAE, VAT off (pythae has no y, VAT or TC)
    if not args.skip_pythae and "beta_vae" in OBJECTIVES:
        for batch in (256, 64):
            cfg = _config(batch, model="beta_vae", vat_eps=0.0)
            sec_ours, peak = time_ours(cfg, images, 1, steps, device)
            add("ours: beta-VAE step (VAT off)", batch, 1, sec_ours, step_flops(cfg, batch, False), peak)
            sec = time_pythae(cfg, images, steps, device)
            if sec is None:
                print("pythae is not installed: pip install -e '.[bench]'", file=sys.stderr)
                break
            add("pythae BetaVAE + its TrainingPipeline", batch, 1, sec, step_flops(cfg, batch, False),
                note=f"ours is {sec / sec_ours:.1f}x faster")

    # 4. ensembles at batch 64
    base = None
    for members in [int(v) for v in args.ensembles.split(",")]:
        cfg = _config(64)
        ens_steps = max(4, steps // max(1, members // 4)) if members > 4 else steps
        sec, peak = time_ours(cfg, images, members, ens_steps, device)
        base = base or sec
        member_epoch = sec / members * (60000 // 64)
        add(f"ours: ensemble of {members}", 64, members, sec, members * step_flops(cfg, 64, True), peak,
            note=f"{member_epoch:.1f} s per member-epoch of 60k; {base * members / sec:.2f}x the runs one by one")

    table = _markdown(rows, limit, device, analytic, counted, steps)
    print(table)
    if not args.quick:
        Path(args.out).write_text(table)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _format_row(row: Row) -> str:
    parts = [f"{row.name:<52}", f"B={row.batch:<4}", f"E={row.members:<3}", f"{row.samples_per_s:9.0f} samples/s",
             f"{row.step_ms:8.1f} ms/step"]
    if row.gflops is not None:
        parts.append(f"{row.gflops:6.0f} GFLOP/s ({row.limit_pct:.0f}%)")
    if row.peak_mb is not None:
        parts.append(f"peak +{row.peak_mb:.0f} MiB")
    if row.note:
        parts.append(row.note)
    return "  ".join(parts)


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _markdown(rows, limit, device, analytic, counted, steps) -> str:
    lines = [
        "# Training speed",
        "",
        f"Machine: {_machine(device)}.  Command: `python3 benchmarks/bench_training.py`"
        f" ({steps} timed steps per row after a warm-up; MNIST-shaped synthetic data; Table 1 MLP).",
        "",
        f"Limit: float32 matrix products reach **{limit:.0f} GFLOP/s** here (best of 1024^3 and 2048^3 products,"
        " measured in the same run).  GFLOP/s below count the matrix-product FLOPs of every pass of the step"
        f" (IMAE at batch 256: {analytic / 1e9:.3f} GFLOP from the layer shapes;"
        f" torch.utils.flop_counter counts {counted / 1e9:.3f}).",
        "",
        "| what | batch | members | samples/s | ms/step | GFLOP/s | % of limit | peak memory | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            r.name, str(r.batch), str(r.members), f"{r.samples_per_s:,.0f}", f"{r.step_ms:.1f}",
            "" if r.gflops is None else f"{r.gflops:.0f}", "" if r.limit_pct is None else f"{r.limit_pct:.0f}%",
            "" if r.peak_mb is None else f"+{r.peak_mb:.0f} MiB", r.note]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
