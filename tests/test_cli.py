"""The `imae` command on a tiny data set: the run folder, eval, traverse, and every bad input."""

import json

import pytest

from conftest import tiny_overrides
from imae.cli import main

RUN_FILES = {"config.toml", "model.safetensors", "checkpoint.pt", "log.jsonl", "metrics.json", "traverse.png"}


def _train(tmp_path, overrides, *extra):
    args = ["train", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    return main(args + list(extra))


def test_train_writes_the_run_folder(tiny_npz, tmp_path, capsys):
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ["name=t"]) == 0
    run = tmp_path / "runs" / "t"
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    for key in ("loss", "recon", "L_y", "mi_y", "vat", "L_z", "tc", "wall_time"):
        assert key in log[0]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("cluster_acc", "nmi", "ari", "mi_xy", "recon_bce", "mi_xz_upper", "mi_xz_lower", "tc"):
        assert key in metrics
    assert len(metrics["mi_xz_upper"]) == 3
    assert (run / "traverse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cluster_acc" in capsys.readouterr().out

    # a second run of the same name gets its own folder
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ["name=t"]) == 0
    assert (tmp_path / "runs" / "t-2" / "metrics.json").exists()


def test_eval_recomputes_metrics_and_traverse_redraws(tiny_npz, tmp_path, capsys):
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ["name=e"]) == 0
    run = tmp_path / "runs" / "e"
    before = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    (run / "traverse.png").unlink()
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text()) == before
    assert "recon_bce" in capsys.readouterr().out
    assert main(["traverse", str(run)]) == 0
    assert (run / "traverse.png").exists()


def test_resume_continues_and_extends_a_run(tiny_npz, tmp_path):
    assert _train(tmp_path, tiny_overrides(tiny_npz, epochs=1) + ["name=r"]) == 0
    run = tmp_path / "runs" / "r"
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3", "--no-progress"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 3


def test_list_models(capsys):
    assert main(["train", "--list-models"]) == 0
    assert capsys.readouterr().out.startswith("imae")


def _assert_clean_failure(capsys, tmp_path, fragment):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imae: error:"), err
    assert fragment in lines[0]
    assert "Traceback" not in err
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "no half-written run folder"


@pytest.mark.parametrize("override, fragment", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("train.epochs=-1", "train.epochs must be at least 1"),
    ("objective.beta=abc", "objective.beta must be of type float"),
    ('data.name="/nonexistent/images.npy"', "does not exist"),
    ("data.name=cifar", "unknown data set 'cifar'"),
])
def test_bad_input_exits_2_with_one_line_and_no_run_folder(tiny_npz, tmp_path, capsys, override, fragment):
    assert _train(tmp_path, tiny_overrides(tiny_npz) + [override]) == 2
    _assert_clean_failure(capsys, tmp_path, fragment)


def test_corrupt_data_file_and_missing_mnist(tmp_path, capsys, tiny_npz):
    bad = tmp_path / "corrupt.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    assert _train(tmp_path, tiny_overrides(tiny_npz) + [f'data.name="{bad}"']) == 2
    _assert_clean_failure(capsys, tmp_path, "corrupt.npy")
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ["data.name=mnist", f'data.root="{tmp_path / "empty"}"']) == 2
    _assert_clean_failure(capsys, tmp_path, "imae data download mnist")


def test_config_file_errors(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 'many'\n")
    assert main(["train", "--config", str(cfg), "--runs-dir", str(tmp_path / "runs")]) == 2
    _assert_clean_failure(capsys, tmp_path, "train.epochs must be of type int")
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--runs-dir", str(tmp_path / "runs")]) == 2
    _assert_clean_failure(capsys, tmp_path, "does not exist")


def test_eval_of_a_checkpoint_from_another_architecture(tiny_npz, tmp_path, capsys):
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ["name=a"]) == 0
    run = tmp_path / "runs" / "a"
    (run / "config.toml").write_text((run / "config.toml").read_text().replace("encoder_hidden = [\n    32,\n]", "encoder_hidden = [\n    48,\n]"))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another architecture" in err
    assert main(["eval", str(tmp_path / "no_such_run")]) == 2
    assert "does not exist" in capsys.readouterr().err
