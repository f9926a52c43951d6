"""The ``imae`` command: train, sweep, eval, traverse, data download."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imae.errors import UserInputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imae", description="Information Maximization Auto-Encoding")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model into runs/<name>/")
    train.add_argument("--config", help="TOML config file (default: the embedded-digits IMAE config)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=20 (repeatable)")
    train.add_argument("--data-root", help="folder holding named data sets (sets data.root)")
    train.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--list-models", action="store_true", help="list the models (objectives) and exit")

    sw = sub.add_parser("sweep", help="train a grid of runs (values x seeds) as batched ensembles",
                        description="Expand a config over --grid values and --seeds; runs that share their "
                                    "architecture, data and objective settings train together as one batched "
                                    "ensemble. Each run gets an ordinary run folder under runs/<name>/.")
    sw.add_argument("--config", help="base TOML config (default: the embedded-digits IMAE config)")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a base config value (repeatable)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="values of a config key to sweep, e.g. --grid objective.beta=1,2,4 (repeatable; "
                         "the sweep is the product of all grids)")
    sw.add_argument("--derive", action="append", default=[], metavar="KEY=F*KEY2",
                    help="a key set from a grid key, e.g. --derive objective.gamma=2*objective.beta")
    sw.add_argument("--seeds", default="0", help="seeds of each grid point: 0-9 or 0,1,2 (default: 0)")
    sw.add_argument("--ensemble-size", type=int, default=16,
                    help="most runs trained together as one batched ensemble (default: 16; 1 = one at a time)")
    sw.add_argument("--name", help="sweep folder name (default: <config name>_sweep)")
    sw.add_argument("--data-root", help="folder holding named data sets (sets data.root)")
    sw.add_argument("--runs-dir", default="runs", help="where the sweep folder goes (default: runs)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.add_argument("--resume", metavar="SWEEP_DIR",
                    help="finish an interrupted sweep: keep finished runs, train the others again")

    ev = sub.add_parser(
        "eval", help="recompute metrics.json of a run and print it",
        description="Recompute metric groups of a run, print them as a table and write them into "
                    "RUN_DIR/metrics.json. Keys of groups that are not recomputed (e.g. from training) are "
                    "kept; the recomputed keys are replaced.",
        epilog="metric groups: " + "; ".join(f"{name}: {what}" for name, what in _metric_groups().items()),
    )
    ev.add_argument("run_dir")
    ev.add_argument("--metrics", metavar="GROUPS",
                    help="comma list of metric groups to compute, e.g. mig,dci (default: eval.metrics of the "
                         "run's config, or else every group that applies; the disentanglement groups mig, "
                         "mig_chen, dci, factor_vae, sap need ground-truth factors, i.e. dSprites, where they "
                         "use the full 737,280-image grid)")
    ev.add_argument("--data-root", help="folder holding named data sets")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")

    tr = sub.add_parser("traverse", help="redraw the latent traversal figure of a run")
    tr.add_argument("run_dir")
    tr.add_argument("--out", help="PNG path (default: RUN_DIR/traverse.png)")
    tr.add_argument("--data-root", help="folder holding named data sets")

    data = sub.add_parser("data", help="data set utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    dl = data_sub.add_parser("download", help="download MNIST or Fashion-MNIST with checksum checks")
    dl.add_argument("name", choices=["mnist", "fashion-mnist"])
    dl.add_argument("--root", required=True, help="folder to download into")
    return parser


def _metric_groups() -> dict[str, str]:
    from imae.metric_groups import METRIC_GROUPS

    return METRIC_GROUPS


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _cmd_train(args) -> int:
    from imae import runner
    from imae.config import load_config

    if args.list_models:
        from imae.objectives import OBJECTIVES

        for name, cls in OBJECTIVES.items():
            print(f"{name:<12} {cls.summary}")
        return 0
    progress = False if args.no_progress else None
    overrides = list(args.overrides) + ([f"data.root={_toml_str(args.data_root)}"] if args.data_root else [])
    if args.resume:
        if args.config:
            raise UserInputError("--resume takes its config from the run folder; drop --config")
        run_dir = runner.resume_run(args.resume, overrides, progress=progress)
    else:
        config = load_config(args.config, overrides)
        run_dir = runner.train_run(config, args.runs_dir, progress=progress)
    from imae.evaluate import summary_rows
    import json

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    _print_table(summary_rows(metrics))
    print(f"run folder: {run_dir}")
    return 0


def _toml_str(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a valid TOML basic string


def _cmd_eval(args) -> int:
    from imae import runner
    from imae.evaluate import summary_rows
    from imae.metric_groups import parse_metric_groups

    groups = parse_metric_groups(args.metrics)  # a bad name fails before anything is loaded
    progress = not args.no_progress
    metrics = runner.evaluate_run(args.run_dir, data_root=args.data_root, metrics=groups, progress=progress)
    _print_table(summary_rows(metrics))
    return 0


def _cmd_sweep(args) -> int:
    from imae import sweep
    from imae.config import apply_overrides, read_toml

    progress = False if args.no_progress else None
    if args.resume:
        if args.config or args.overrides or args.grid or args.derive or args.name:
            raise UserInputError("--resume takes the sweep from SWEEP_DIR/sweep.toml; drop the other options")
        sweep_dir = sweep.resume_sweep(args.resume, progress=progress)
        print((sweep_dir / sweep.SUMMARY_FILE).read_text(), end="")
        print(f"sweep folder: {sweep_dir}")
        return 0
    overrides = list(args.overrides) + ([f"data.root={_toml_str(args.data_root)}"] if args.data_root else [])
    base = apply_overrides(read_toml(args.config) if args.config else {}, overrides)
    spec = sweep.SweepSpec(grid=sweep.parse_grid(args.grid), derive=sweep.parse_derive(args.derive),
                           seeds=sweep.parse_seeds(args.seeds))
    sweep_dir = sweep.run_sweep(base, spec, runs_dir=args.runs_dir, ensemble_size=args.ensemble_size,
                                progress=progress, name=args.name)
    print((sweep_dir / sweep.SUMMARY_FILE).read_text(), end="")
    print(f"sweep folder: {sweep_dir}")
    return 0


def _cmd_traverse(args) -> int:
    from imae import runner

    print(runner.traverse_run(args.run_dir, out=args.out, data_root=args.data_root))
    return 0


def _cmd_data(args) -> int:
    from imae.data.download import download_dataset

    folder = download_dataset(args.name, Path(args.root).expanduser())
    print(f"{args.name} is in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"train": _cmd_train, "sweep": _cmd_sweep, "eval": _cmd_eval, "traverse": _cmd_traverse, "data": _cmd_data}
    try:
        return handlers[args.command](args)
    except UserInputError as exc:
        print(f"imae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imae: interrupted; continue with `imae train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
