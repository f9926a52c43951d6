"""Shared fixtures: a tiny labelled image set on disk and a tiny, fast configuration."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """120 of scikit-learn's 8x8 digits (classes 0-3) as an npz with images and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < 4)[:120]
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=(digits.images[keep] / 16.0).astype(np.float32), labels=digits.target[keep])
    return path


def tiny_overrides(data_path, epochs: int = 2) -> list[str]:
    """``--set`` overrides for a model that trains in well under a second."""
    return [
        f'data.name="{data_path}"',
        "net.encoder_hidden=[32]",
        "net.decoder_hidden=[32]",
        "net.latent_dim=3",
        "net.n_classes=4",
        f"train.epochs={epochs}",
        "train.batch_size=32",
        "train.progress=false",
        "eval.traverse_steps=3",
    ]


@pytest.fixture
def tiny_config(tiny_npz):
    from imae.config import load_config

    return load_config(None, tiny_overrides(tiny_npz))
