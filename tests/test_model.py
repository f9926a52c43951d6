"""Model-level behaviour: determinism, save/load, resume, input checks."""

import pytest
import torch

from imae import IMAE, Model, load_dataset
from imae.errors import CheckpointError, DataError


@pytest.fixture
def tiny_data(tiny_npz):
    return load_dataset(tiny_npz)


def _small(**kw):
    params = dict(encoder_hidden=[32], decoder_hidden=[32], latent_dim=3, n_classes=4, batch_size=32, progress=False)
    params.update(kw)
    return IMAE(**params)


def test_same_seed_gives_identical_weights_and_different_seed_does_not(tiny_data):
    a = _small().fit(tiny_data, epochs=2, seed=3)
    b = _small().fit(tiny_data, epochs=2, seed=3)
    c = _small().fit(tiny_data, epochs=2, seed=4)
    sa, sb, sc = (m.nets.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_encode_returns_probabilities_means_and_logvars(tiny_data):
    model = _small().fit(tiny_data, epochs=1)
    y_prob, z_mean, z_logvar = model.encode(tiny_data.images)
    assert y_prob.shape == (len(tiny_data), 4) and z_mean.shape == z_logvar.shape == (len(tiny_data), 3)
    assert torch.allclose(y_prob.sum(dim=1), torch.ones(len(tiny_data)), atol=1e-5)
    images = tiny_data.images.view(-1, 8, 8)
    assert torch.allclose(model.encode(images)[1], z_mean)  # [N, H, W] input is flattened
    x = model.decode(torch.tensor([0, 3]), torch.zeros(2, 3))
    assert x.shape == (2, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.allclose(model.decode(torch.eye(4)[[0, 3]], torch.zeros(2, 3)), x)


def test_wrong_input_shapes_are_clear_errors(tiny_data):
    model = _small().fit(tiny_data, epochs=1)
    with pytest.raises(DataError, match="takes images of 64 pixels"):
        model.encode(torch.zeros(5, 63))
    with pytest.raises(DataError, match="decode needs y"):
        model.decode(torch.zeros(2, 5), torch.zeros(2, 3))


def test_save_load_round_trip_gives_identical_encodings(tiny_data, tmp_path):
    model = _small().fit(tiny_data, epochs=2)
    model.save(tmp_path / "run")
    loaded = IMAE.load(tmp_path / "run")
    assert loaded.config == model.config
    for a, b in zip(model.encode(tiny_data.images), loaded.encode(tiny_data.images)):
        assert torch.equal(a, b)


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_data, tmp_path):
    straight = _small(epochs=4).fit(tiny_data, run_dir=_mkdir(tmp_path / "a"))

    def interrupt_after_two(trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    interrupted = _small(epochs=4)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(tiny_data, run_dir=_mkdir(tmp_path / "b"), callbacks=[interrupt_after_two])
    resumed = Model.load(tmp_path / "b").resume(tiny_data, tmp_path / "b")
    s1, s2 = straight.nets.state_dict(), resumed.nets.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    log = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4  # no duplicated epochs
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]


def test_loading_weights_into_another_architecture_is_a_checkpoint_error(tiny_data, tmp_path):
    model = _small().fit(tiny_data, epochs=1)
    model.save(tmp_path / "run")
    cfg = (tmp_path / "run" / "config.toml").read_text().replace("latent_dim = 3", "latent_dim = 5")
    (tmp_path / "run" / "config.toml").write_text(cfg)
    with pytest.raises(CheckpointError, match="another architecture"):
        Model.load(tmp_path / "run")


def test_corrupt_weights_and_missing_folder_are_checkpoint_errors(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Model.load(tmp_path / "missing")
    model = _small().fit(tiny_data, epochs=1)
    model.save(tmp_path / "run")
    (tmp_path / "run" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Model.load(tmp_path / "run")


def test_unknown_constructor_parameter_is_a_config_error():
    from imae.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown parameter 'betta'"):
        IMAE(betta=1.0)


def _mkdir(path):
    path.mkdir()
    return path
