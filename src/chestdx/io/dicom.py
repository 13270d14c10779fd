"""DICOM -> float32 grayscale in [0, 1]: Modality LUT, then VOI LUT / window (else min-max), then
MONOCHROME1 inversion. Images far larger than ``chestdx.io.limits.DECODE_MAX_SIDE`` are block-averaged by an
integer factor right after the pixel data is decoded (before the float LUT steps)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from chestdx.io import limits
from chestdx.io.errors import ImageReadError
from chestdx.io.raster import LUMA

log = logging.getLogger(__name__)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_dataset(data: bytes, name: str, force: bool = False, stop_before_pixels: bool = False) -> Dataset:
    """Parse DICOM bytes (``force`` for files without the 128-byte preamble + 'DICM')."""
    try:
        return pydicom.dcmread(io.BytesIO(data), force=force, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ImageReadError(name, f"not a valid DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on garbage input
        raise ImageReadError(name, f"corrupt DICOM file ({type(exc).__name__}: {exc})") from exc


def decode_dicom(data: bytes, name: str, force: bool = False, max_pixels: int | None = None,
                 max_side: int | None = None, stats: dict | None = None) -> np.ndarray:
    """Decode a single-frame DICOM image; every failure is an :class:`ImageReadError`. ``stats`` (optional
    dict) receives ``width``/``height`` (stored size), ``reduced_by`` and ``colour_spread`` (None: not measured)."""
    ds = read_dataset(data, name, force=force)
    try:  # pydicom parses elements lazily: a corrupt header element fails here, with any exception type
        check_dataset(ds, name, forced=force, max_pixels=max_pixels)
        k = limits.reduce_factor(_int(ds.get("Columns", 0), 0), _int(ds.get("Rows", 0), 0), max_side)
        if stats is not None:
            stats.update(width=_int(ds.get("Columns", 0), 0), height=_int(ds.get("Rows", 0), 0), reduced_by=k,
                         colour_spread=None)
        _ensure_transfer_syntax(ds)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. NotImplementedError for an unknown VR, ValueError, KeyError
        raise ImageReadError(name, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from exc
    try:
        raw = ds.pixel_array
    except MemoryError as exc:
        raise ImageReadError(name, "not enough memory to decode the DICOM pixel data") from exc
    except Exception as exc:  # missing decoder plugin, bad length, ...
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(tsyntax, "name", tsyntax) or "unknown"
        raise ImageReadError(
            name, f"cannot decode DICOM pixel data (transfer syntax {ts_name}): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return to_gray01(raw, ds, name, reduce=k)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(name, f"invalid DICOM LUT / window attributes ({type(exc).__name__}: {exc})") from exc


def check_dataset(ds: Dataset, name: str, forced: bool = False, max_pixels: int | None = None) -> None:
    """Refuse datasets without pixels, multi-frame datasets and oversized images (header only)."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if forced:
            raise ImageReadError(name, "no 'DICM' marker at byte 128 and no pixel data: not a DICOM image")
        raise ImageReadError(name, "DICOM file has no pixel data (PixelData element missing)")
    frames = _int(ds.get("NumberOfFrames", 1), 1)
    if frames > 1:
        raise ImageReadError(
            name, f"multi-frame DICOM ({frames} frames) is not supported: export the frontal view as one frame"
        )
    rows, cols = _int(ds.get("Rows", 0), 0), _int(ds.get("Columns", 0), 0)
    if rows <= 0 or cols <= 0:
        raise ImageReadError(name, f"DICOM has invalid image size Rows={rows} Columns={cols}")
    reason = limits.check_pixels(cols, rows, max_pixels)
    if reason:
        raise ImageReadError(name, reason)


def to_gray01(raw: np.ndarray, ds: Dataset, name: str = "<dicom>", reduce: int = 1) -> np.ndarray:
    """Pixel array of a single frame -> float32 (H, W) in [0, 1], following DICOM's display pipeline.

    ``reduce`` > 1 block-averages the stored values by that factor first (the rescale is linear, so this equals
    averaging the modality values); with a Modality LUT sequence the LUT is applied first, then averaged.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim not in (2, 3):
        raise ImageReadError(name, f"unexpected DICOM pixel array shape {raw.shape}")
    lut_seq = raw.ndim == 2 and bool(ds.get("ModalityLUTSequence"))
    if reduce > 1 and not lut_seq:
        raw = block_mean(raw, reduce)
    if raw.ndim == 3:  # colour (RGB after pydicom's YBR conversion, or already RGB)
        if photometric == "PALETTE COLOR":
            raise ImageReadError(name, "PALETTE COLOR DICOM is not supported")
        rgb = raw[..., :3].astype(np.float64)
        scale = float(2 ** _int(ds.get("BitsStored", 8), 8) - 1)
        out = (rgb @ LUMA.astype(np.float64)) / scale
        return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
    values = apply_modality_lut(raw, ds)
    if reduce > 1 and lut_seq:
        values = block_mean(np.asarray(values), reduce)
    try:
        out = _apply_voi(values, ds)
    except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError) as exc:
        log.warning("%s: unusable VOI LUT / window (%s); using min-max instead", name, exc)
        out = None
    if out is None:
        out = _minmax(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """VOI LUT sequence (preferred) or window center/width, rescaled to [0, 1]; ``None`` when absent."""
    seq = ds.get("VOILUTSequence")
    has_lut = bool(seq) and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut:
        desc = [int(v) for v in seq[0].LUTDescriptor]
        entries, first = desc[0] or 2**16, desc[1]
        # Clip to the LUT's input range first: pydicom stores indices as uint16, which would wrap.
        ints = np.clip(np.rint(np.nan_to_num(np.asarray(values, dtype=np.float64))), first, first + entries - 1)
        out = np.asarray(apply_voi_lut(ints.astype(np.int64), ds), dtype=np.float64)
        table = np.asarray(apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds), dtype=np.float64)
        return _scaled(out, float(table.min()), float(table.max()))
    if has_window:
        out = apply_voi_lut(values.astype(np.float64), ds)
        with np.errstate(over="ignore"):
            # The window's output for inputs below / above it. pydicom maps the window onto the rescaled
            # stored-value range, which a negative RescaleSlope reverses (lo > hi): scaling by these two
            # probes maps "below the window" to 0 and "above" to 1 either way, as the standard's VOI step does.
            lo, hi = (float(v) for v in apply_voi_lut(np.array([-1e30, 1e30]), ds))
        return _scaled(out, lo, hi)
    return None


def _scaled(out: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(out - lo) / (hi - lo)``; ValueError (-> logged min-max fallback) when the range is empty."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi == lo:
        raise ValueError(f"VOI output range [{lo}, {hi}] is empty")
    return (np.asarray(out, dtype=np.float64) - lo) / (hi - lo)


def block_mean(arr: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of a (H, W) or (H, W, C) array, float32 (edge rows/columns beyond a multiple of
    ``k`` dropped); a strided view, so no full-size copy is made."""
    h, w = arr.shape[0] // k, arr.shape[1] // k
    if h == 0 or w == 0:
        return np.asarray(arr, dtype=np.float32)
    blocks = arr[: h * k, : w * k].reshape(h, k, w, k, *arr.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float64))
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files without a meta header (read with ``force``) lack the transfer syntax pydicom needs."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, _little = getattr(ds, "original_encoding", (True, True))
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default
