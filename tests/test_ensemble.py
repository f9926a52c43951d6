"""Ensembles: E members trained as one batched model behave like E models trained one by one;
`imae sweep` writes one ordinary run folder per run."""

import csv
import json

import pytest
import torch

from conftest import tiny_overrides
from imae import estimators as est
from imae import load_dataset
from imae.cli import main
from imae.config import load_config
from imae.errors import ConfigError
from imae.model import Model, build_nets
from imae.nets import EnsembleBatchNorm, EnsembleLinear, member_state, stack_states
from imae.objectives import Objective, _w
from imae.sweep import SweepSpec, expand, parse_derive, parse_grid, parse_seeds, plan_ensembles
from imae.train import Trainer

RUN_FILES = {"config.toml", "model.safetensors", "checkpoint.pt", "log.jsonl", "metrics.json", "traverse.png"}


class _NoiseFree(Objective):
    """A deterministic objective (no z or y sampling, no VAT) so that runs can be compared exactly;
    it still uses per-member weights, BatchNorm, the decoder and the batch estimators."""

    name = "noise_free"

    def terms(self, nets, x, step):
        mean, logvar, logits = nets.encoder(x)
        log_probs = torch.log_softmax(logits, dim=-1)
        recon = est.bernoulli_log_likelihood(nets.decoder(log_probs.exp(), mean), x)
        kl = est.gaussian_kl_to_prior(mean, logvar, self.w.prior_std).mean(dim=-1)
        mi = est.discrete_mutual_information(log_probs)
        beta = _w(self.w.beta, recon)
        return {"loss": -(recon + beta * mi - beta * kl), "recon": recon, "mi": mi}


def _tiny_config(tiny_npz, *extra):
    return load_config(None, tiny_overrides(tiny_npz, epochs=2) + list(extra))


def test_ensemble_members_train_exactly_like_single_models(tiny_npz):
    """Seeds, data order, per-member weights, BatchNorm statistics and Adam state are per member:
    a 3-member ensemble ends where the three single-model runs end."""
    config = _tiny_config(tiny_npz)
    data = load_dataset(tiny_npz)
    seeds, betas, priors = [3, 5, 3], [1.0, 4.0, 0.5], [1.0, 2.0, 1.0]
    cfgs = [load_config(None, tiny_overrides(tiny_npz) + [f"objective.beta={b}", f"objective.prior_std={p}"]).objective
            for b, p in zip(betas, priors)]

    nets = build_nets(config, data.input_dim, seeds)
    Trainer(nets, _NoiseFree(cfgs, len(data)), data, config.train, seeds=seeds).run(2, progress=False)
    for e, (seed, cfg) in enumerate(zip(seeds, cfgs)):
        single = build_nets(config, data.input_dim, [seed])
        Trainer(single, _NoiseFree(cfg, len(data)), data, config.train, seeds=[seed]).run(2, progress=False)
        mine = member_state(nets.state_dict(), e)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(mine[key], value, atol=2e-5, rtol=1e-4, msg=key)
    # members 0 and 2 share a seed but not beta: they must have moved apart
    assert not torch.allclose(nets.encoder.head.weight[0], nets.encoder.head.weight[2])


def test_ensemble_batchnorm_normalises_each_member_over_its_own_batch():
    torch.manual_seed(0)
    bn = EnsembleBatchNorm(3, 4)
    x = torch.randn(3, 16, 4) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1) + torch.tensor([0.0, 3.0, -2.0]).view(3, 1, 1)
    out = bn(x)
    reference = torch.nn.BatchNorm1d(4)
    for e in range(3):
        reference.reset_running_stats()
        torch.testing.assert_close(out[e], reference(x[e]))
        torch.testing.assert_close(bn.running_mean[e], reference.running_mean)
        torch.testing.assert_close(bn.running_var[e], reference.running_var)


def test_ensemble_linear_rejects_inputs_of_the_wrong_member_count():
    layer = EnsembleLinear(2, 5, 3)
    assert layer(torch.zeros(2, 7, 5)).shape == (2, 7, 3)
    with pytest.raises(ValueError, match=r"\[2, M, 5\]"):
        layer(torch.zeros(7, 5))
    assert EnsembleLinear(1, 5, 3)(torch.zeros(7, 5)).shape == (7, 3)


def test_member_states_round_trip():
    config = load_config(None, ["net.encoder_hidden=[8]", "net.decoder_hidden=[8]"])
    nets = build_nets(config, 12, [0, 1, 2])
    state = nets.state_dict()
    members = [member_state(state, e) for e in range(3)]
    restacked = stack_states(members)
    assert all(torch.equal(restacked[k], state[k]) for k in state)
    single = build_nets(config, 12, [1]).state_dict()
    assert all(torch.equal(members[1][k], single[k]) for k in single)  # member 1 starts as seed 1 alone


def test_objective_members_must_share_non_float_settings(tiny_npz):
    from imae.objectives import IMAEObjective

    a = _tiny_config(tiny_npz).objective
    b = _tiny_config(tiny_npz, 'objective.tc_estimator="mss"').objective
    with pytest.raises(ValueError, match="tc_estimator"):
        IMAEObjective([a, b], 100)


# ----------------------------------------------------------------------------- sweep planning


def test_parse_grid_seeds_and_derive():
    assert parse_grid(["objective.beta=1,2.5", 'model=imae']) == {"objective.beta": [1, 2.5], "model": ["imae"]}
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("4,7") == [4, 7]
    assert parse_derive(["objective.gamma=2*objective.beta"]) == {"objective.gamma": (2.0, "objective.beta")}
    for bad in (lambda: parse_grid(["beta"]), lambda: parse_seeds("a-b"), lambda: parse_seeds("1,1"),
                lambda: parse_derive(["objective.gamma=objective.beta"])):
        with pytest.raises(ConfigError):
            bad()


def test_expand_and_plan_group_runs_that_can_share_an_ensemble(tiny_npz):
    base = {"name": "s", "data": {"name": str(tiny_npz)}}
    spec = SweepSpec(grid={"objective.beta": [1, 2], "net.latent_dim": [3, 4]},
                     derive={"objective.gamma": (2.0, "objective.beta")}, seeds=[0, 1, 2])
    configs = expand(base, spec)
    assert len(configs) == 12 and len({c.name for c in configs}) == 12
    assert all(c.objective.gamma == 2 * c.objective.beta for c in configs)
    assert "s_beta=1_latent_dim=3_seed=0" in {c.name for c in configs}
    plan = plan_ensembles(configs, ensemble_size=4)
    # latent_dim changes the architecture: two groups of 6 runs, each cut into 4 + 2
    assert [len(g) for g in plan] == [4, 2, 4, 2]
    for group in plan:
        assert len({c.net.latent_dim for c in group}) == 1
    assert [len(g) for g in plan_ensembles(configs, ensemble_size=100)] == [6, 6]
    with pytest.raises(ConfigError, match="not a --grid key"):
        expand(base, SweepSpec(derive={"objective.gamma": (2.0, "objective.beta")}))


# ----------------------------------------------------------------------------- the command


def _sweep(tmp_path, tiny_npz, *extra):
    args = ["sweep", "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--name", "sw"]
    for o in tiny_overrides(tiny_npz):
        args += ["--set", o]
    return main(args + list(extra))


def test_sweep_writes_one_ordinary_run_folder_per_run(tiny_npz, tmp_path, capsys):
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.beta=1,3", "--derive", "objective.gamma=2*objective.beta",
                  "--seeds", "0-1", "--ensemble-size", "4") == 0
    sweep_dir = tmp_path / "runs" / "sw"
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert len(rows) == 4
    assert {(float(r["objective.beta"]), float(r["objective.gamma"]), int(r["seed"])) for r in rows} == {
        (1.0, 2.0, 0), (1.0, 2.0, 1), (3.0, 6.0, 0), (3.0, 6.0, 1)}
    assert (sweep_dir / "sweep.toml").exists()
    for row in rows:
        run = sweep_dir / row["run"]
        assert RUN_FILES <= {p.name for p in run.iterdir()}
        config = load_config(run / "config.toml")
        assert config.train.seed == int(row["seed"]) and config.objective.beta == float(row["objective.beta"])
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log] == [1, 2] and "tc" in log[0]
        metrics = json.loads((run / "metrics.json").read_text())
        assert float(row["cluster_acc"]) == pytest.approx(metrics["cluster_acc"])
        Model.load(run)  # each member loads as a single model
    assert "sweep folder" in capsys.readouterr().out


def test_a_sweep_member_resumes_as_a_single_run(tiny_npz, tmp_path):
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.beta=1,3", "--ensemble-size", "2") == 0
    run = tmp_path / "runs" / "sw" / "digits_imae_beta=3_seed=0"
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3", "--no-progress"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_sweep_bad_input_leaves_no_folder(tiny_npz, tmp_path, capsys):
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.betta=1,2") == 2
    assert "objective.betta" in capsys.readouterr().err
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.beta=1,2", "--set", 'data.name="/nope.npz"') == 2
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.beta=1,2", "--set", 'eval.metrics=["migg"]') == 2
    assert not (tmp_path / "runs").exists()


def test_a_diverging_member_does_not_stop_the_others(tiny_npz, tmp_path):
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.beta=1,1e38", "--ensemble-size", "2") == 0
    rows = {r["objective.beta"]: r for r in csv.DictReader((tmp_path / "runs" / "sw" / "summary.csv").open())}
    assert rows["1.0"]["diverged"] == "False" and float(rows["1.0"]["cluster_acc"]) > 0
    assert rows["1e+38"]["diverged"] == "True"


def test_an_interrupted_sweep_resumes_keeping_finished_runs(tiny_npz, tmp_path):
    assert _sweep(tmp_path, tiny_npz, "--grid", "objective.beta=1,3", "--ensemble-size", "1") == 0
    sweep_dir = tmp_path / "runs" / "sw"
    kept, broken = sweep_dir / "digits_imae_beta=1_seed=0", sweep_dir / "digits_imae_beta=3_seed=0"
    kept_weights = (kept / "model.safetensors").read_bytes()
    (broken / "metrics.json").unlink()  # as if interrupted before evaluation
    (sweep_dir / "summary.csv").unlink()
    assert main(["sweep", "--resume", str(sweep_dir), "--no-progress"]) == 0
    assert (kept / "model.safetensors").read_bytes() == kept_weights  # not retrained
    assert (broken / "metrics.json").exists()
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sorted(r["run"] for r in rows) == [kept.name, broken.name]
    assert main(["sweep", "--resume", str(tmp_path), "--no-progress"]) == 2  # not a sweep folder
