"""Acquisition-style corruptions of a model input, for robustness measurement (``chestdx.evaluate.robustness``).

Each corruption maps a uint8 (S, S) model input to another uint8 (S, S) image, as a different hospital, scanner
or post-processing chain might have produced it: exposure (gamma), dynamic range (contrast), quantum noise,
detector blur, vendor edge enhancement (sharpen), lossy export (JPEG), a low-resolution source (down- then
up-sampled) and histogram-equalised display processing. Severities 1-3 are fixed here, once, as plausible
mild / moderate / strong versions; they are not tuned on any result. Everything is deterministic given the
seed (noise, and the direction of the gamma change, are drawn per image from it).

The intensity transforms are MONAI's (``AdjustContrast``, ``GaussianSmooth``, ``GaussianSharpen``,
``HistogramNormalize``); JPEG and resampling are Pillow's.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

SEVERITIES = (1, 2, 3)

# name -> (what it stands for, parameter per severity 1..3)
CORRUPTIONS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "gamma": ("exposure / LUT difference: gamma g or 1/g (direction drawn per image)", (1.25, 1.6, 2.2)),
    "contrast": ("flat, low-contrast image: intensities pulled towards the mean by this factor", (0.75, 0.5, 0.3)),
    "noise": ("quantum noise: Gaussian, this standard deviation on the [0, 1] scale", (0.02, 0.04, 0.08)),
    "blur": ("detector / motion blur: Gaussian, sigma in pixels of the model input", (0.6, 1.2, 2.0)),
    "sharpen": ("vendor edge enhancement: unsharp mask (sigma 2 px) of this strength", (0.5, 1.0, 2.0)),
    "jpeg": ("lossy export: JPEG at this quality", (60.0, 30.0, 12.0)),
    "lowres": ("low-resolution source: down-sampled to this fraction of the side, then back", (0.6, 0.4, 0.25)),
    "equalize": ("histogram-equalised display processing, blended in at this weight", (0.35, 0.65, 1.0)),
}


def _f(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32)[None] / 255.0  # MONAI array transforms: channel first


def _u8(x: object) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    return np.clip(np.rint(a.reshape(a.shape[-2:]) * 255.0), 0, 255).astype(np.uint8)


def _gamma(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import AdjustContrast

    g = level if rng.random() < 0.5 else 1.0 / level
    return _u8(AdjustContrast(gamma=g, retain_stats=False)(_f(u8)))


def _contrast(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    x = _f(u8)
    return _u8(x.mean() + (x - x.mean()) * level)


def _noise(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return _u8(_f(u8) + rng.normal(0.0, level, size=(1, *u8.shape)).astype(np.float32))


def _blur(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import GaussianSmooth

    return _u8(GaussianSmooth(sigma=level)(_f(u8)))


def _sharpen(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import GaussianSmooth

    x = _f(u8)  # unsharp mask: x + a (x - G(x)), sigma 2 px (MONAI's GaussianSharpen blurs the base image first)
    return _u8(x + level * (x - np.asarray(GaussianSmooth(sigma=2.0)(x), dtype=np.float32)))


def _jpeg(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(level))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def _lowres(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    h, w = u8.shape
    small = Image.fromarray(u8).resize((max(2, round(w * level)), max(2, round(h * level))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def _equalize(u8: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import HistogramNormalize

    x = _f(u8)
    eq = np.asarray(HistogramNormalize(num_bins=256, min=0.0, max=1.0)(x), dtype=np.float32)
    return _u8((1.0 - level) * x + level * eq)


_FUNCS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gamma": _gamma, "contrast": _contrast, "noise": _noise, "blur": _blur, "sharpen": _sharpen, "jpeg": _jpeg,
    "lowres": _lowres, "equalize": _equalize,
}


def corrupt(batch_u8: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """A corrupted copy of a uint8 (N, S, S) batch (or one (S, S) image); image ``i`` draws from
    ``(seed, i)``, so a re-run gets the same pixels."""
    if name not in _FUNCS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    arr = np.asarray(batch_u8)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"expected uint8 (S, S) or (N, S, S) images, got {arr.dtype} {arr.shape}")
    level = CORRUPTIONS[name][1][severity - 1]
    fn = _FUNCS[name]
    if arr.ndim == 2:
        return fn(arr, level, np.random.default_rng([seed, 0]))
    return np.stack([fn(img, level, np.random.default_rng([seed, i])) for i, img in enumerate(arr)])
