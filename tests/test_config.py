import pytest

from imae.config import Config, load_config, write_toml
from imae.errors import ConfigError


def test_default_config_is_valid_and_round_trips_through_toml(tmp_path):
    config = load_config()
    path = tmp_path / "config.toml"
    write_toml(config, path)
    assert load_config(path) == config


def test_overrides_parse_toml_values_and_bare_words():
    config = load_config(None, ["train.epochs=7", "net.encoder_hidden=[5, 6]", "data.name=mnist",
                                "objective.beta=2", "train.progress=false", "name=abc"])
    assert config.train.epochs == 7
    assert config.net.encoder_hidden == [5, 6]
    assert config.data.name == "mnist"
    assert config.objective.beta == 2.0 and isinstance(config.objective.beta, float)
    assert config.train.progress is False
    assert config.name == "abc"


def test_unknown_key_names_the_key_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'train.epochs'"):
        load_config(None, ["train.epoch=3"])


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[objective]\nbeta = 1.0\nbetta = 2.0\n")
    with pytest.raises(ConfigError, match="objective.betta"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=2.5", "train.epochs must be of type int"),
    ("train.epochs=true", "train.epochs must be of type int"),
    ("objective.beta=high", "objective.beta must be of type float"),
    ("net.encoder_hidden=5", "net.encoder_hidden must be a list"),
    ("train.epochs=0", "train.epochs must be at least 1"),
    ("objective.beta=-1", "objective.beta must be >= 0"),
    ("objective.tc_estimator=exact", "objective.tc_estimator must be one of"),
    ("model=vae", "model must be one of"),
    ("train.batch_size=1", "train.batch_size must be at least 2"),
])
def test_wrong_types_and_ranges_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_malformed_override_and_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_paper_presets_load(request):
    from pathlib import Path

    presets = sorted((Path(request.config.rootpath) / "configs" / "paper").glob("*.toml"))
    assert presets, "configs/paper/ holds the paper presets"
    for path in presets:
        config = load_config(path)
        assert isinstance(config, Config)
