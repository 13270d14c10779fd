"""Torch Dataset over the pixel cache, with train-only, meaning-preserving augmentation (MONAI)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleIntensityFixedMean,
)
from torch.utils.data import Dataset


@dataclass(frozen=True)
class AugmentConfig:
    """Train-only augmentation that keeps a CXR's meaning. No flips: laterality carries meaning on a CXR.

    Geometry (the seed's): small affine jitter. Intensity (off when every strength is 0): what another
    hospital's detector, exposure and processing change - a gamma in [1/(1+gamma), 1+gamma], contrast scaled
    about the mean by a factor in [1-contrast, 1+contrast], Gaussian noise of std up to ``noise_std`` and a
    Gaussian blur of sigma up to ``blur_sigma`` pixels, each applied with probability ``intensity_prob``.
    """

    shift: float = 0.05  # fraction of the image side
    rotate_deg: float = 5.0
    shear: float = 0.05
    zoom: float = 0.15
    padding_mode: str = "border"  # Keras' fill_mode="nearest", as in the seed
    gamma: float = 0.0
    contrast: float = 0.0
    noise_std: float = 0.0
    blur_sigma: float = 0.0
    intensity_prob: float = 0.5

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

    def intensity(self) -> Compose | None:
        """MONAI's random intensity transforms for a (1, S, S) tensor in [0, 1], or None when all are off."""
        p, steps = self.intensity_prob, []
        if self.gamma > 0:
            steps.append(RandAdjustContrast(prob=p, gamma=(1.0 / (1.0 + self.gamma), 1.0 + self.gamma)))
        if self.contrast > 0:
            steps.append(RandScaleIntensityFixedMean(prob=p, factors=self.contrast))
        if self.blur_sigma > 0:
            sigma = (min(0.25, self.blur_sigma), self.blur_sigma)
            steps.append(RandGaussianSmooth(prob=p, sigma_x=sigma, sigma_y=sigma))
        if self.noise_std > 0:
            steps.append(RandGaussianNoise(prob=p, std=self.noise_std))  # std drawn in [0, noise_std]
        return Compose(steps) if steps else None


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
        self._intensity = augment.intensity() if augment is not None else None

    def set_epoch(self, epoch: int) -> None:
        """Augmentations depend on (seed, epoch, index) only: reproducible with any number of workers."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.pixels[self.slots[i]], dtype=np.float32) / 255.0)[None]
        if self._affine is not None:
            state = (self.seed * 1_000_003 + self.epoch * 7919 + i) % (2**32)
            tracking = get_track_meta()
            set_track_meta(False)  # plain tensors: MONAI's metadata tracking costs ~30% of the transform here
            try:
                self._affine.set_random_state(seed=state)
                x = self._affine(x)
                if self._intensity is not None:
                    self._intensity.set_random_state(seed=(state + 1) % (2**32))
                    x = self._intensity(x)
            finally:
                set_track_meta(tracking)
            x = torch.as_tensor(x).clamp_(0.0, 1.0).float()  # a plain tensor: metadata tracking was off
        return x, torch.from_numpy(self.labels[i]), torch.from_numpy(self.meta[i])
