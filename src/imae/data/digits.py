"""The embedded default data set: scikit-learn's handwritten digits (no download needed)."""

from __future__ import annotations

import numpy as np
import torch

from imae.data.dataset import ImageDataset


def load_digits() -> ImageDataset:
    """The 1,797 8x8 digits that scikit-learn ships inside its package (UCI optdigits test set).

    Pixels take the 17 grey levels 0..16 and are scaled to [0, 1] by dividing by 16.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32) / 16.0)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return ImageDataset(
        images=images,
        image_shape=(8, 8),
        labels=labels,
        name="digits",
        scaling="grey levels 0..16 divided by 16",
    )
