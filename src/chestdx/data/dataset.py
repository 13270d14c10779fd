"""Torch Dataset over the pixel cache, with train-only, meaning-preserving augmentation (MONAI)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import RandAffine
from torch.utils.data import Dataset


@dataclass(frozen=True)
class AugmentConfig:
    """The seed's augmentation: small affine jitter only. No flips: laterality carries meaning on a CXR."""

    shift: float = 0.05  # fraction of the image side
    rotate_deg: float = 5.0
    shear: float = 0.05
    zoom: float = 0.15
    padding_mode: str = "border"  # Keras' fill_mode="nearest", as in the seed

    def transform(self, size: int) -> RandAffine:
        return RandAffine(
            prob=1.0,
            rotate_range=(math.radians(self.rotate_deg),),
            shear_range=(self.shear, self.shear),
            translate_range=(self.shift * size, self.shift * size),
            scale_range=(self.zoom, self.zoom),
            padding_mode=self.padding_mode,
            mode="bilinear",
            spatial_size=(size, size),
            cache_grid=True,  # the base grid is built once, not per image
        )


class CXRDataset(Dataset):
    """Items ``(x, y, meta)``: x float32 (1,S,S) in [0,1], y float32 (L,) with NaN = unknown, meta (M,).

    Normalization to the model's mean/std and 1->3 channels happens once, batch-wise, in
    ``chestdx.data.normalize.Normalize`` so train, validation, test and inference share it.
    """

    def __init__(self, pixels: np.ndarray, slots: np.ndarray, labels: np.ndarray,
                 meta: np.ndarray | None = None, augment: AugmentConfig | None = None, seed: int = 0):
        self.pixels = pixels
        self.slots = np.asarray(slots, dtype=np.int64)
        self.labels = np.array(labels, dtype=np.float32)  # own writable copy (torch.from_numpy)
        self.meta = (np.array(meta, dtype=np.float32) if meta is not None
                     else np.zeros((len(self.slots), 0), np.float32))
        if not (len(self.slots) == len(self.labels) == len(self.meta)):
            raise ValueError("slots, labels and meta must have the same length")
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._affine = augment.transform(pixels.shape[-1]) if augment is not None else None

    def set_epoch(self, epoch: int) -> None:
        """Augmentations depend on (seed, epoch, index) only: reproducible with any number of workers."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.pixels[self.slots[i]], dtype=np.float32) / 255.0)[None]
        if self._affine is not None:
            self._affine.set_random_state(seed=(self.seed * 1_000_003 + self.epoch * 7919 + i) % (2**32))
            tracking = get_track_meta()
            set_track_meta(False)  # plain tensors: MONAI's metadata tracking costs ~30% of the transform here
            try:
                out = self._affine(x)
            finally:
                set_track_meta(tracking)
            x = out.clamp_(0.0, 1.0).float()  # a plain tensor: metadata tracking was off
        return x, torch.from_numpy(self.labels[i]), torch.from_numpy(self.meta[i])
