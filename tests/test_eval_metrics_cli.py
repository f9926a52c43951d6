"""`imae eval --metrics` and `eval.metrics`: metric groups on a tiny dSprites run and bad names."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_overrides
from imae.cli import main


def _train(tmp_path, overrides):
    args = ["train", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    return main(args)


def _dsprites_overrides(metrics: str = '["information"]') -> list[str]:
    """600 rendered dSprites images, a net that trains in a second, metrics on those 600 images."""
    return [
        "data.name=dsprites", "data.n_samples=600", "net.encoder_hidden=[32]", "net.decoder_hidden=[32]",
        "net.latent_dim=3", "net.n_classes=3", "train.epochs=1", "train.batch_size=64", "train.progress=false",
        "eval.traverse_steps=3", "eval.full_grid=false", f"eval.metrics={metrics}", "name=ds",
    ]


@pytest.fixture(scope="module")
def dsprites_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ds")
    assert _train(tmp_path, _dsprites_overrides()) == 0
    return tmp_path / "runs" / "ds"


def test_train_computes_only_the_groups_of_eval_metrics(dsprites_run):
    metrics = json.loads((dsprites_run / "metrics.json").read_text())
    assert {"mi_xy", "mi_xz_upper", "mi_xz_lower", "active_dims", "tc"} <= set(metrics)
    assert "cluster_acc" not in metrics and "recon_bce" not in metrics and "mig" not in metrics


def test_eval_metrics_flag_computes_the_disentanglement_groups_and_keeps_other_keys(dsprites_run, capsys):
    before = json.loads((dsprites_run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(dsprites_run), "--metrics", "mig_chen, mig,factor_vae,sap", "--no-progress"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((dsprites_run / "metrics.json").read_text())
    for key in ("mig_chen", "mig_chen_hybrid", "mig", "mig_hybrid", "factor_vae_score", "sap"):
        assert key in metrics and key in out
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["mig_chen_gaps"]) == {"scale", "orientation", "posX", "posY"}  # the reference's factors
    assert set(metrics["mig_chen_hybrid_gaps"]) == {"shape", "scale", "orientation", "posX", "posY"}
    assert len(metrics["mig_chen_mutual_info"]["shape"]) == 3 + 1  # z_1..z_3 and y
    assert metrics["disentanglement_n_items"] == 600  # eval.full_grid = false: the run's own images
    for key, value in before.items():  # keys that were not recomputed are kept as they were
        assert metrics[key] == value
    assert "mi_xy" not in out  # the table shows what was computed
    assert "dci_disentanglement" not in metrics and "cluster_acc" not in metrics


def test_eval_rejects_an_unknown_metric_group(dsprites_run, capsys):
    before = (dsprites_run / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["eval", str(dsprites_run), "--metrics", "mig,purity"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imae: error:")
    assert "'purity'" in err[0] and "clustering, information, recon, mig_chen, mig, dci, factor_vae, sap" in err[0]
    assert (dsprites_run / "metrics.json").read_text() == before


def test_disentanglement_groups_need_factors(tiny_npz, tmp_path, capsys):
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ["name=d"]) == 0
    run = tmp_path / "runs" / "d"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "cluster_acc" in metrics and "mig" not in metrics  # default: every group that applies
    capsys.readouterr()
    assert main(["eval", str(run), "--metrics", "clustering,mig"]) == 2
    err = capsys.readouterr().err
    assert "need ground-truth factors" in err and "Traceback" not in err
    assert main(["eval", str(run), "--metrics", "recon", "--no-progress"]) == 0
    assert "recon_bce" in capsys.readouterr().out


def test_a_bad_eval_metrics_value_fails_before_training(tiny_npz, tmp_path, capsys):
    assert _train(tmp_path, tiny_overrides(tiny_npz) + ['eval.metrics=["clustering","bogus"]']) == 2
    assert "'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
