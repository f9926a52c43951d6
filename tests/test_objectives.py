"""The objectives of every model (IMAE and the baselines beta-VAE, InfoVAE, JointVAE, beta-TCVAE):
each value assembled by hand from closed-form terms, the common autoencoder limit, ensembles,
the registry, the config alias ``objective=NAME``, the paper presets and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import imae.objectives as objectives
from conftest import tiny_overrides
from imae.cli import main
from imae.config import load_config
from imae.errors import ConfigError
from imae.model import build_nets
from imae.objectives import OBJECTIVES, build_objective

F64 = torch.float64
MODELS = ("imae", "beta_vae", "info_vae", "joint_vae", "beta_tcvae")
D, K, C = 16, 3, 4  # pixels, latent_dim, n_classes
TINY_NET = ["net.encoder_hidden=[8]", "net.decoder_hidden=[8]", f"net.latent_dim={K}", f"net.n_classes={C}"]
PRESETS = Path(__file__).resolve().parents[1] / "configs" / "paper"


def _prior(std: float) -> Normal:
    """N(0, std^2) with float64 parameters (a Python float would make them float32)."""
    return Normal(torch.tensor(0.0, dtype=F64), torch.tensor(std, dtype=F64))


def _config(model: str, *overrides: str):
    return load_config(None, [f"model={model}", *TINY_NET, *overrides])


def _nets(config, seeds=(0,)):
    return build_nets(config, D, list(seeds)).double().train()


def _x(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.fixture
def captured(monkeypatch):
    """Record the z, y and prior samples the objectives draw (they still come from the global RNG)."""
    seen: dict[str, torch.Tensor] = {}

    def recorder(name, fn):
        def wrapped(*args, **kwargs):
            seen[name] = fn(*args, **kwargs)
            return seen[name]
        return wrapped

    monkeypatch.setattr(objectives, "gaussian_sample", recorder("z", objectives.gaussian_sample))
    monkeypatch.setattr(objectives, "gumbel_softmax_sample", recorder("y", objectives.gumbel_softmax_sample))
    monkeypatch.setattr(objectives, "gaussian_prior_sample", recorder("prior", objectives.gaussian_prior_sample))
    return seen


@pytest.fixture
def deterministic(monkeypatch):
    """Replace every random draw with a fixed one that is the same for each member: z = mean,
    y = softmax(logits / tau), prior samples and VAT's start direction from a fixed generator."""

    def fixed(like):
        g = torch.Generator().manual_seed(1234)
        return torch.randn(like.shape[-2:], generator=g, dtype=like.dtype).expand(like.shape).clone()

    monkeypatch.setattr(objectives, "gaussian_sample", lambda mean, logvar: mean + 0.3 * fixed(mean) * torch.exp(0.5 * logvar))
    monkeypatch.setattr(objectives, "gumbel_softmax_sample", lambda logits, tau: torch.softmax(logits / tau, dim=-1))
    monkeypatch.setattr(objectives, "gaussian_prior_sample", lambda like, std: fixed(like) * std)
    real_randn_like = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: fixed(t) if t.shape[-1] == D else real_randn_like(t, **kw))


def _encoder_outputs(nets, x):
    """mean, logvar, log p(y|x) of the batch (train-mode BatchNorm: deterministic given x)."""
    with torch.no_grad():
        mean, logvar, logits = nets.encoder(x)
    return mean, logvar, torch.log_softmax(logits, dim=-1)


def _recon_by_hand(nets, x, y, z):
    with torch.no_grad():
        p = torch.sigmoid(nets.decoder(y, z))
    return (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1).mean(-1)


def _kl_z_by_hand(mean, logvar, prior_std):
    q = Normal(mean, torch.exp(0.5 * logvar))
    return kl_divergence(q, Normal(torch.zeros_like(mean), torch.full_like(mean, prior_std))).sum(-1).mean(-1)


def _kl_y_by_hand(log_probs):
    p = log_probs.exp()
    return (p * torch.log(p * p.shape[-1])).sum(-1).mean(-1)


def _marginal_kl_y_by_hand(log_probs):
    p_bar = log_probs.exp().mean(-2)
    return (p_bar * torch.log(p_bar * p_bar.shape[-1])).sum(-1)


def _close(a, b):
    torch.testing.assert_close(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- values by hand


def test_beta_vae_value_by_hand(captured):
    cfg = _config("beta_vae", "objective.beta=2.5", "objective.prior_std=1.5")
    nets, x = _nets(cfg), _x(1, 12)
    loss, terms = build_objective("beta_vae", cfg.objective, 100)(nets, x)
    mean, logvar, log_probs = _encoder_outputs(nets, x)
    recon = _recon_by_hand(nets, x, captured["y"], captured["z"])
    kl_z, kl_y = _kl_z_by_hand(mean, logvar, 1.5), _kl_y_by_hand(log_probs)
    _close(terms["recon"], recon)
    _close(terms["kl_z"], kl_z)
    _close(terms["kl_y"], kl_y)
    assert terms["vat"].item() > 0  # VAT on (eps = 1), weighted by beta
    _close(loss, -(recon - 2.5 * (kl_z + kl_y) - 2.5 * terms["vat"]))


@pytest.mark.parametrize("kernel", ["gaussian", "imq"])
def test_info_vae_value_by_hand(captured, kernel):
    cfg = _config("info_vae", "objective.beta=3.0", "objective.mmd_weight=40.0", f"objective.mmd_kernel={kernel}",
                  "objective.prior_std=1.5")
    nets, x = _nets(cfg), _x(2, 12)
    loss, terms = build_objective("info_vae", cfg.objective, 100)(nets, x)
    _, _, log_probs = _encoder_outputs(nets, x)
    z, prior = captured["z"].detach(), captured["prior"]
    assert prior.shape == z.shape  # as many prior samples as the batch has z
    assert prior.std().item() > 1.1  # drawn from r(z) = N(0, 1.5^2 I)

    def k(a, b):  # bandwidths scale with K sigma_r^2
        d2 = float(((a - b) ** 2).sum())
        return math.exp(-d2 / (K * 2.25)) if kernel == "gaussian" else (2 * K * 2.25) / (2 * K * 2.25 + d2)

    def mean_k(u, v):
        return sum(k(ui, vj) for ui in u for vj in v) / (len(u) * len(v))

    mmd = mean_k(z, z) + mean_k(prior, prior) - 2 * mean_k(z, prior)
    kl_marginal = _marginal_kl_y_by_hand(log_probs)
    recon = _recon_by_hand(nets, x, captured["y"], captured["z"])
    _close(terms["mmd_z"], mmd)
    _close(terms["kl_y_marginal"], kl_marginal)
    _close(loss, -(recon - 3.0 * (40.0 * mmd + kl_marginal) - 3.0 * terms["vat"]))


@pytest.mark.parametrize("step, c_z, c_y", [
    (0, 0.0, 0.0),
    (250, 2.0, 0.5),               # a quarter of the ramp: 8/4 and 2/4
    (1000, 8.0, math.log(C)),      # full ramp; C_y = 2 is capped at log 4 = 1.386
    (50_000, 8.0, math.log(C)),
])
def test_joint_vae_value_by_hand(captured, step, c_z, c_y):
    cfg = _config("joint_vae", "objective.gamma=30.0", "objective.beta=2.0", "objective.capacity_z_max=8.0",
                  "objective.capacity_y_max=2.0", "objective.capacity_steps=1000")
    nets, x = _nets(cfg), _x(3, 12)
    loss, terms = build_objective("joint_vae", cfg.objective, 100)(nets, x, step)
    mean, logvar, log_probs = _encoder_outputs(nets, x)
    kl_z, kl_y = _kl_z_by_hand(mean, logvar, 1.0), _kl_y_by_hand(log_probs)
    recon = _recon_by_hand(nets, x, captured["y"], captured["z"])
    _close(terms["capacity_z"], c_z)
    _close(terms["capacity_y"], c_y)
    _close(terms["kl_z"], kl_z)
    _close(terms["kl_y"], kl_y)
    _close(loss, -(recon - 30.0 * abs(kl_z - c_z) - 30.0 * abs(kl_y - c_y) - 2.0 * terms["vat"]))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_beta_tcvae_value_by_hand(captured, estimator):
    """The three z terms sum to the batch estimate of E KL(q(z|x) || r(z)) (Chen et al.'s
    decomposition) and the two y terms to the batch mean of KL(p(y|x) || uniform)."""
    cfg = _config("beta_tcvae", "objective.alpha=1.5", "objective.beta=4.0", "objective.gamma=0.5",
                  "objective.prior_std=1.2", f"objective.tc_estimator={estimator}")
    nets, x = _nets(cfg), _x(4, 12)
    loss, terms = build_objective("beta_tcvae", cfg.objective, 60)(nets, x)
    mean, logvar, log_probs = _encoder_outputs(nets, x)
    z = captured["z"].detach()
    kl_z_mc = (Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1) - _prior(1.2).log_prob(z).sum(-1)).mean()
    _close(terms["mi_z"] + terms["tc"] + terms["dwkl_z"], kl_z_mc)
    _close(terms["mi_y"] + terms["kl_y_marginal"], _kl_y_by_hand(log_probs))
    _close(terms["kl_y_marginal"], _marginal_kl_y_by_hand(log_probs))
    recon = _recon_by_hand(nets, x, captured["y"], captured["z"])
    expected = -(recon - 1.5 * (terms["mi_z"] + terms["mi_y"]) - 4.0 * terms["tc"]
                 - 0.5 * (terms["dwkl_z"] + terms["kl_y_marginal"]) - 4.0 * terms["vat"])
    _close(loss, expected)


def test_beta_tcvae_with_unit_weights_is_the_batch_elbo(captured):
    """alpha = beta = gamma = 1: the regulariser is the ELBO's KL(q(z|x)||r) + KL(p(y|x)||u) (plus VAT)."""
    cfg = _config("beta_tcvae", "objective.alpha=1", "objective.beta=1", "objective.gamma=1")
    nets, x = _nets(cfg), _x(5, 12)
    loss, terms = build_objective("beta_tcvae", cfg.objective, 500)(nets, x)
    mean, logvar, log_probs = _encoder_outputs(nets, x)
    z = captured["z"].detach()
    kl_z_mc = (Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1) - _prior(1.0).log_prob(z).sum(-1)).mean()
    _close(loss, -(terms["recon"] - kl_z_mc - _kl_y_by_hand(log_probs) - terms["vat"]))


# ----------------------------------------------------------------------------- the common limit


def test_with_zero_weights_every_objective_is_the_same_autoencoder_loss():
    """beta = gamma = alpha = 0 (VAT still on: it is weighted by beta) leaves -E[log q(x|y,z)]."""
    zero = ["objective.beta=0", "objective.gamma=0", "objective.alpha=0", "objective.vat_eps=1.0"]
    x = _x(6, 16)
    state = _nets(_config("imae")).state_dict()
    losses = {}
    for name in MODELS:
        cfg = _config(name, *zero)
        nets = _nets(cfg)
        nets.load_state_dict(state)
        torch.manual_seed(7)
        loss, terms = build_objective(name, cfg.objective, 100)(nets, x, 300)
        assert terms["vat"].item() > 0
        _close(loss, -terms["recon"])
        losses[name] = loss.item()
    assert len({round(v, 9) for v in losses.values()}) == 1, losses


def test_with_nonzero_weights_the_objectives_differ():
    """The converse, so that the test above can tell the models apart."""
    x = _x(6, 16)
    state = _nets(_config("imae")).state_dict()
    losses = {}
    for name in MODELS:
        cfg = _config(name, "objective.beta=2", "objective.gamma=3", "objective.capacity_steps=0")
        nets = _nets(cfg)
        nets.load_state_dict(state)
        torch.manual_seed(7)
        loss, terms = build_objective(name, cfg.objective, 100)(nets, x)
        assert not torch.isclose(loss, -terms["recon"])
        losses[name] = round(loss.item(), 6)
    assert len(set(losses.values())) == len(MODELS), losses


# ----------------------------------------------------------------------------- ensembles


MEMBER_SETTINGS = {  # float settings that differ between the two members
    "imae": ["beta", "gamma", "prior_std"],
    "beta_vae": ["beta", "prior_std"],
    "info_vae": ["beta", "mmd_weight", "prior_std"],
    "joint_vae": ["beta", "gamma", "capacity_z_max", "capacity_y_max"],
    "beta_tcvae": ["alpha", "beta", "gamma", "prior_std"],
}


@pytest.mark.parametrize("name", MODELS)
def test_an_ensemble_member_has_the_terms_of_the_single_model(deterministic, name):
    """Two members with different weights and seeds, each fed its own batch, give per member the
    terms a single model with that seed, weights and batch gives (random draws fixed alike)."""
    values = {"beta": (1.5, 4.0), "gamma": (0.5, 6.0), "alpha": (0.7, 2.0), "prior_std": (1.0, 1.6),
              "mmd_weight": (1.0, 30.0), "capacity_z_max": (3.0, 9.0), "capacity_y_max": (0.4, 5.0)}
    members = [[f"objective.{k}={values[k][e]}" for k in MEMBER_SETTINGS[name]] for e in range(2)]
    cfgs = [_config(name, "objective.capacity_steps=1000", "objective.vat_eps=0.5", *m) for m in members]
    seeds, x = [3, 8], _x(9, 2, 12)
    ensemble = _nets(cfgs[0], seeds)
    _, batched = build_objective(name, [c.objective for c in cfgs], 100)(ensemble, x, 400)
    losses = []
    for e in range(2):
        _, alone = build_objective(name, cfgs[e].objective, 100)(_nets(cfgs[e], [seeds[e]]), x[e], 400)
        assert set(alone) == set(batched)
        for key, value in alone.items():
            assert batched[key].shape == (2,), key
            torch.testing.assert_close(batched[key][e], value, msg=f"{name}: {key} of member {e}")
        losses.append(alone["loss"].item())
    assert losses[0] != pytest.approx(losses[1])
    assert batched["vat"].min() > 0


# ----------------------------------------------------------------------------- registry and config


def test_registry_names_and_summaries():
    assert set(OBJECTIVES) == set(MODELS)
    for name, cls in OBJECTIVES.items():
        assert cls.name == name
        assert cls.summary and "\n" not in cls.summary


def test_list_models_prints_one_line_per_model(capsys):
    assert main(["train", "--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(OBJECTIVES)


def test_objective_is_an_alias_of_model(tmp_path):
    assert load_config(None, ["objective=beta_vae"]).model == "beta_vae"
    assert load_config(None, ["model=info_vae", "objective=info_vae"]).model == "info_vae"
    path = tmp_path / "c.toml"
    path.write_text('objective = "joint_vae"\n[train]\nepochs = 3\n')
    assert load_config(path).model == "joint_vae"
    path.write_text('model = "imae"\n[objective]\nbeta = 2.0\n')
    config = load_config(path, ["objective=beta_tcvae"])  # an override replaces the file's model
    assert (config.model, config.objective.beta) == ("beta_tcvae", 2.0)


@pytest.mark.parametrize("overrides, toml, message", [
    (["model=imae", "objective=beta_vae"], None, "disagree"),
    (["objective=beta_vae", "model=imae"], None, "disagree"),
    ([], 'model = "imae"\nobjective = "info_vae"\n', "disagree"),
    (["objective=3"], None, "must be a model name"),
    (["objective=vae"], None, "model must be one of"),
    (["objective.mmd_kernel=rbf"], None, "objective.mmd_kernel must be one of"),
    (["objective.capacity_steps=-5"], None, "objective.capacity_steps must be >= 0"),
    (["objective.capacity_steps=2.5"], None, "objective.capacity_steps must be of type int"),
    (["objective.alpha=-1"], None, "objective.alpha must be >= 0"),
    (["objective.mmd_weight=-1"], None, "objective.mmd_weight must be >= 0"),
    (["objective.capacity_y_max=-0.1"], None, "objective.capacity_y_max must be >= 0"),
])
def test_bad_model_and_baseline_settings_are_named(tmp_path, overrides, toml, message):
    path = None
    if toml is not None:
        path = tmp_path / "c.toml"
        path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def _presets():
    return sorted(PRESETS.glob("*.toml"))


def test_every_model_has_a_preset_per_data_set():
    names = {p.stem for p in _presets()}
    assert names == {f"{d}_{m}" for d in ("mnist", "fashion_mnist", "dsprites") for m in MODELS}


@pytest.mark.parametrize("path", _presets(), ids=lambda p: p.stem)
def test_paper_preset_loads_validates_and_builds_its_objective(path):
    config = load_config(path)
    model = next(m for m in MODELS if path.stem.endswith("_" + m))
    dataset = path.stem[: -len(model) - 1]
    assert config.model == model and config.name == path.stem
    assert config.data.name == {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "dsprites": "dsprites"}[dataset]
    table = {"mnist": ([500, 1000], [500, 500], True, 10), "fashion_mnist": ([500, 1000], [500, 500], True, 10),
             "dsprites": ([1200, 1200, 2400], [1200, 1200, 1200], False, 3)}[dataset]
    assert (config.net.encoder_hidden, config.net.decoder_hidden, config.net.batchnorm, config.net.n_classes) == table
    assert config.net.latent_dim == 10
    assert config.objective.vat_eps == 1.0  # footnote 2, every model
    assert "# sweep:" in path.read_text()
    # the objective runs on the preset's code sizes (small hidden layers keep this fast)
    small = load_config(path, ["net.encoder_hidden=[8]", "net.decoder_hidden=[8]"])
    nets = build_nets(small, 20, [0])
    loss, terms = build_objective(small.model, small.objective, 1000)(nets, torch.rand(8, 20))
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in terms.values())


@pytest.mark.parametrize("dataset, c_z, c_y, steps, gamma", [
    ("mnist", 5.0, 5.0, 25_000, 30.0),
    ("fashion_mnist", 5.0, 10.0, 50_000, 100.0),
    ("dsprites", 40.0, 1.1, 300_000, 150.0),
])
def test_joint_vae_presets_carry_the_reference_specs(dataset, c_z, c_y, steps, gamma):
    config = load_config(PRESETS / f"{dataset}_joint_vae.toml")
    o = config.objective
    assert (o.capacity_z_max, o.capacity_y_max, o.capacity_steps, o.gamma) == (c_z, c_y, steps, gamma)
    assert (o.temperature, config.train.lr, config.train.batch_size) == (0.67, 5e-4, 64)


# ----------------------------------------------------------------------------- the CLI

RUN_FILES = {"config.toml", "model.safetensors", "checkpoint.pt", "log.jsonl", "metrics.json", "traverse.png"}


def test_every_model_trains_from_the_cli_into_the_same_run_folder_layout(tiny_npz, tmp_path):
    keys = {}
    for i, name in enumerate(MODELS):
        spelling = "objective" if i % 2 else "model"  # both spellings pick the model
        args = ["train", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
        for o in tiny_overrides(tiny_npz) + [f"{spelling}={name}", f"name=run_{name}", "objective.capacity_steps=4"]:
            args += ["--set", o]
        assert main(args) == 0, name
        run = tmp_path / "runs" / f"run_{name}"
        assert {p.name for p in run.iterdir()} == RUN_FILES, name
        assert load_config(run / "config.toml").model == name
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log] == [1, 2]
        assert {"loss", "recon", "mi_y", "vat", "epoch_time", "wall_time"} <= set(log[0])
        assert all(math.isfinite(v) for r in log for v in r.values() if isinstance(v, float))
        keys[name] = set(json.loads((run / "metrics.json").read_text()))
    assert {"cluster_acc", "mi_xy", "recon_bce"} <= keys["imae"]
    for name in MODELS:
        assert keys[name] == keys["imae"], name
