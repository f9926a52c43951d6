"""Matrix-product throughput at the shapes one training step of the Table 1 MLP runs.

Run from the repository root::

    python3 benchmarks/matmul_shapes.py            # batch 256 and 64, one model and E = 16

Prints, for every forward, input-gradient and weight-gradient product of the step, float32 and
bfloat16 GFLOP/s (bfloat16 uses the CPU's AMX/AVX-512 units where it has them), and for the
ensemble's weight-gradient products the time with a freshly allocated output (what autograd
does every backward pass) against the same product into a reused buffer, with the page faults
the fresh output takes.  It explains the gap between the "limit" of bench_training.py (large
square products) and what the step's own small products can reach.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

# (in, out) of every layer of the Table 1 MLP: encoder 784-500-1000-(2*10+10), decoder (10+10)-500-500-784
LAYERS = [(784, 500), (500, 1000), (1000, 30), (20, 500), (500, 500), (500, 784)]


def _seconds(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def products(batch: int, members: int):
    """(name, a, b) for the three products of each layer, with the step's own shapes."""
    for fan_in, fan_out in LAYERS:
        x = torch.randn(members, batch, fan_in)
        w = torch.randn(members, fan_in, fan_out)
        g = torch.randn(members, batch, fan_out)
        yield f"{fan_in}->{fan_out} forward", x, w
        yield f"{fan_in}->{fan_out} input grad", g, w.transpose(1, 2)
        yield f"{fan_in}->{fan_out} weight grad", x.transpose(1, 2), g


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--in-training", type=int, default=8, metavar="EPOCHS",
                        help="also time the ensemble's largest weight-gradient product inside a training run of "
                             "EPOCHS epochs of 8 steps (0: skip; default 8)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch, members in [(256, 1), (64, 1), (64, 16)]:
        print(f"\nbatch {batch}, members {members}:  GFLOP/s float32 / bfloat16")
        for name, a, b in products(batch, members):
            flops = 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            rates = []
            for dtype in (torch.float32, torch.bfloat16):
                p, q = a.to(dtype), b.to(dtype)
                rates.append(flops / _seconds(lambda: torch.bmm(p, q), args.reps) / 1e9)
            print(f"  {name:<26} {rates[0]:7.0f} / {rates[1]:7.0f}")
    print("\nE = 16, batch 64, weight-gradient products: fresh output (as autograd allocates it) vs reused buffer")
    for fan_in, fan_out in LAYERS:
        x, g = torch.randn(16, 64, fan_in).transpose(1, 2), torch.randn(16, 64, fan_out)
        out = torch.empty(16, fan_in, fan_out)
        reused = _seconds(lambda: torch.bmm(x, g, out=out), args.reps)
        before = _faults()
        fresh = _seconds(lambda: torch.bmm(x, g), args.reps)
        faults = (_faults() - before) / (args.reps + 1)
        print(f"  {fan_in}->{fan_out}: output {out.numel() * 4 / 2**20:5.1f} MiB  reused {reused * 1e3:6.2f} ms  "
              f"fresh {fresh * 1e3:6.2f} ms  ({faults:.0f} page faults per product)")
    if args.in_training:
        in_training(args.in_training)
    return 0


def in_training(epochs: int) -> None:
    """Time every weight-gradient product of the 500->1000 layer inside a real E = 16 training run."""
    import sys
    from pathlib import Path

    from torch.utils._python_dispatch import TorchDispatchMode

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_training as bench
    from imae.config import load_config
    from imae.data.dataset import ImageDataset
    from imae.model import build_nets
    from imae.objectives import build_objective
    from imae.train import Trainer

    members, batch = 16, 64
    config = bench._config(batch)
    data = ImageDataset(bench.synthetic_images(batch * 8).float().div_(255), (28, 28), name="synthetic")
    seeds = list(range(members))
    objective = build_objective(config.model, [config.objective] * members, dataset_size=60000)
    tcfg = load_config(None, [f"train.batch_size={batch}", "train.checkpoint_every=0"]).train
    trainer = Trainer(build_nets(config, 784, seeds), objective, data, tcfg, seeds=seeds)
    calls: list[tuple[float, int]] = []

    class TimeWeightGradients(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is not torch.ops.aten.bmm.default or tuple(args[0].shape) != (members, 500, batch):
                return func(*args, **(kwargs or {}))
            before, start = _faults(), time.perf_counter()
            out = func(*args, **(kwargs or {}))
            calls.append((time.perf_counter() - start, _faults() - before))
            return out

    with TimeWeightGradients():
        trainer.run(epochs, progress=False)
    times = sorted(t for t, _ in calls)
    slow = [(t, f) for t, f in calls if t > 3 * times[len(times) // 2]]
    print(f"\nInside training (E = 16, batch 64, {len(calls)} products [16, 500, 64] x [16, 64, 1000]):")
    print(f"  median {times[len(times) // 2] * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms; "
          f"{len(slow)} products over 3x the median, with {sum(f for _, f in slow) / max(1, len(slow)):.0f} "
          f"page faults each on average (the output is {members * 500 * 1000 * 4 / 2**20:.1f} MiB = "
          f"{members * 500 * 1000 * 4 // 4096} pages); the others averaged "
          f"{sum(f for t, f in calls if (t, f) not in slow) / max(1, len(calls) - len(slow)):.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
