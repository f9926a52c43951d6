"""The in-memory data set every loader returns and the training loop slices batches from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from imae.errors import DataError


@dataclass
class ImageDataset:
    """Images held as one tensor, with optional labels and ground-truth factors.

    Attributes:
        images: ``[N, D]`` pixels, flattened.  A float tensor in [0, 1]; binary data sets too
            large for float32 (the full dSprites grid) may hold ``uint8`` 0/1 pixels instead,
            and :meth:`batch` always returns float32 in [0, 1].
        image_shape: ``(H, W)`` of one image, with ``H * W == D``.
        labels: ``[N]`` int64 class labels, or ``None`` when unknown.
        factors: ``[N, J]`` int64 indices of ground-truth generative factors, or ``None``.
        factor_names: names of the ``J`` factors.
        factor_sizes: number of values each factor takes.
        name: a short name for logs and run folders.
        scaling: how raw values were mapped to [0, 1] (stated so a user can check it).
    """

    images: torch.Tensor
    image_shape: tuple[int, int]
    labels: torch.Tensor | None = None
    factors: torch.Tensor | None = None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    name: str = "data"
    scaling: str = ""
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dim() != 2:
            raise DataError(
                f"images must be a 2-D [N, D] tensor, got shape {tuple(self.images.shape)}; "
                "flatten each image before building an ImageDataset"
            )
        n, d = self.images.shape
        h, w = self.image_shape
        if h * w != d:
            raise DataError(
                f"image_shape {self.image_shape} has {h * w} pixels but images have {d} columns; "
                "pass the true (H, W) of one image"
            )
        if self.labels is not None and self.labels.shape != (n,):
            raise DataError(
                f"labels have shape {tuple(self.labels.shape)} but there are {n} images; "
                "give exactly one label per image"
            )
        if self.factors is not None:
            if self.factors.dim() != 2 or self.factors.shape[0] != n:
                raise DataError(
                    f"factors have shape {tuple(self.factors.shape)}, expected [{n}, J]; "
                    "give one row of factor indices per image"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def input_dim(self) -> int:
        return self.images.shape[1]

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Float32 pixels in [0, 1] for the rows ``index`` (a slice or an index tensor)."""
        x = self.images[index]
        if x.dtype == torch.uint8:
            return x.float()
        return x if x.dtype == torch.float32 else x.float()

    def to(self, device: torch.device | str) -> "ImageDataset":
        """The same data set with its tensors on ``device``."""
        return self._map_tensors(lambda t: t.to(device))

    def subset(self, index: torch.Tensor) -> "ImageDataset":
        """The rows ``index`` as a new data set (used for train/evaluation splits)."""
        return self._map_tensors(lambda t: t[index])

    def _map_tensors(self, fn) -> "ImageDataset":
        return dataclasses.replace(
            self,
            images=fn(self.images),
            labels=None if self.labels is None else fn(self.labels),
            factors=None if self.factors is None else fn(self.factors),
            extras=dict(self.extras),
        )
