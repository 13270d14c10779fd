"""Do saliency maps point at the lesion? Pointing game and Wang et al. (2017) IoBB against boxes, with chance.

Boxes are (x, y, w, h) in the map's pixel coordinates (x = column, y = row, continuous: pixel (r, c) covers
[c, c+1) x [r, r+1)). Image sizes are an int (square) or (height, width) as in ``array.shape``.
NIH's BBox_List coordinates refer to the 1024 px originals: pass them through :func:`scale_box` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

Box = tuple[float, float, float, float]
IOBB_THRESHOLDS = (0.1, 0.25, 0.5)

__all__ = [
    "IOBB_THRESHOLDS",
    "LocRecord",
    "iobb",
    "iobb_chance",
    "localization_table",
    "map_to_box",
    "pointing_game_chance",
    "pointing_game_hit",
    "scale_box",
    "score_records",
    "wilson_ci",
]


class LocRecord(NamedTuple):
    """One (image, label, method) map with its ground-truth box (map pixel coordinates)."""

    image_id: str
    label: str
    method: str
    map: np.ndarray
    box: Box


def _hw(size: int | Sequence[int]) -> tuple[float, float]:
    if isinstance(size, (int, np.integer, float)):
        return float(size), float(size)
    h, w = size[:2]
    return float(h), float(w)


def scale_box(box: Sequence[float], from_size: int | Sequence[int], to_size: int | Sequence[int]) -> Box:
    """Rescale (x, y, w, h) from an image of ``from_size`` to one of ``to_size`` (int or (H, W)), per axis."""
    (fh, fw), (th, tw) = _hw(from_size), _hw(to_size)
    sx, sy = tw / fw, th / fh
    x, y, w, h = (float(v) for v in box)
    return (x * sx, y * sy, w * sx, h * sy)


def _clip_box(box: Sequence[float], shape: tuple[int, int], pad: float = 0.0) -> Box:
    """Box grown by ``pad`` on each side and clipped to the image."""
    H, W = shape
    x0, y0 = max(0.0, box[0] - pad), max(0.0, box[1] - pad)
    x1, y1 = min(float(W), box[0] + box[2] + pad), min(float(H), box[1] + box[3] + pad)
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))


def pointing_game_hit(smap: np.ndarray, box: Sequence[float], tolerance: float = 0.0) -> bool:
    """True if the map's maximum (first argmax; its pixel centre) lies in ``box`` grown by ``tolerance`` px."""
    smap = np.nan_to_num(np.asarray(smap, dtype=np.float64), nan=-np.inf)
    r, c = np.unravel_index(int(np.argmax(smap)), smap.shape)
    px, py = c + 0.5, r + 0.5
    x, y, w, h = box
    t = float(tolerance)
    return bool(x - t <= px <= x + w + t and y - t <= py <= y + h + t)


def pointing_game_chance(box: Sequence[float], shape: tuple[int, int], tolerance: float = 0.0) -> float:
    """Chance of a hit for a uniformly random point: area of the (grown, clipped) box / image area."""
    _, _, w, h = _clip_box(box, shape, tolerance)
    return float(w * h / (shape[0] * shape[1]))


def map_to_box(smap: np.ndarray, threshold: float = 0.5, connectivity: int = 2) -> Box | None:
    """Bounding box (x, y, w, h) of the largest connected component of ``map >= threshold * max``.

    ``connectivity`` 1 = 4-neighbours, 2 = 8-neighbours. None when the map has no positive maximum.
    """
    smap = np.nan_to_num(np.asarray(smap, dtype=np.float64))
    peak = smap.max() if smap.size else 0.0
    if peak <= 0:
        return None
    labels, n = ndimage.label(smap >= threshold * peak, structure=ndimage.generate_binary_structure(2, connectivity))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    rows, cols = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return (
        float(cols.min()),
        float(rows.min()),
        float(cols.max() - cols.min() + 1),
        float(rows.max() - rows.min() + 1),
    )


def _overlap_1d(a0: float, a1: float, b0: np.ndarray | float, b1: np.ndarray | float) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)


def _iobb_boxes(pred: Sequence[float], gt: Sequence[float]) -> float:
    px, py, pw, ph = pred
    gx, gy, gw, gh = gt
    inter = _overlap_1d(px, px + pw, gx, gx + gw) * _overlap_1d(py, py + ph, gy, gy + gh)
    return float(inter / (pw * ph)) if pw * ph > 0 else 0.0


def iobb(smap: np.ndarray, box: Sequence[float], threshold: float = 0.5) -> tuple[float, Box | None]:
    """Wang et al. 2017: IoBB = area(pred ∩ gt) / area(pred), pred = :func:`map_to_box`. (0.0, None) if no box."""
    pred = map_to_box(smap, threshold)
    return (0.0, None) if pred is None else (_iobb_boxes(pred, box), pred)


def iobb_chance(
    pred_wh: tuple[float, float], box: Sequence[float], shape: tuple[int, int], thresholds: Iterable[float]
) -> tuple[float, dict[float, float]]:
    """Exact chance values for a box of size ``pred_wh`` placed uniformly at integer positions inside the image.

    Returns (expected IoBB, {T: P(IoBB > T)}). x and y placements are independent, so the IoBB is a product of
    two 1-D overlaps whose distributions are enumerated exactly (no sampling, no seed).
    """
    H, W = shape
    pw, ph = min(float(pred_wh[0]), W), min(float(pred_wh[1]), H)
    gx, gy, gw, gh = box
    xs = np.arange(0, int(np.floor(W - pw)) + 1, dtype=np.float64)
    ys = np.arange(0, int(np.floor(H - ph)) + 1, dtype=np.float64)
    ox = _overlap_1d(gx, gx + gw, xs, xs + pw) / pw  # fraction of the pred width inside the gt box
    oy = np.sort(_overlap_1d(gy, gy + gh, ys, ys + ph) / ph)
    mean = float(ox.mean() * oy.mean())
    probs = {}
    for t in thresholds:
        # P(ox * oy > t): for each ox, count oy > t / ox
        pos = ox > 0
        need = np.full(ox.shape, np.inf)
        need[pos] = t / ox[pos]
        count = len(oy) - np.searchsorted(oy, need, side="right")
        probs[float(t)] = float(count.sum() / (len(ox) * len(oy)))
    return mean, probs


def score_records(
    records: Iterable[LocRecord | Sequence[Any] | Mapping[str, Any]],
    map_threshold: float = 0.5,
    thresholds: Sequence[float] = IOBB_THRESHOLDS,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """One row per record: pointing hit/chance, IoBB, predicted box, and IoBB>T hit/chance for each T."""
    rows = []
    for rec in records:
        r = LocRecord(**rec) if isinstance(rec, Mapping) else LocRecord(*rec)
        smap = np.asarray(r.map)
        shape = smap.shape[:2]
        val, pred = iobb(smap, r.box, map_threshold)
        row: dict[str, Any] = {
            "image_id": r.image_id,
            "label": r.label,
            "method": r.method,
            "box": tuple(float(v) for v in r.box),
            "pred_box": pred,
            "pointing_hit": pointing_game_hit(smap, r.box, tolerance),
            "pointing_chance": pointing_game_chance(r.box, shape, tolerance),
            "iobb": val,
        }
        if pred is None:
            row["iobb_chance"] = 0.0
            chances = {float(t): 0.0 for t in thresholds}
        else:
            row["iobb_chance"], chances = iobb_chance((pred[2], pred[3]), r.box, shape, thresholds)
        for t in thresholds:
            row[f"iobb>{t:g}_hit"] = bool(val > t)
            row[f"iobb>{t:g}_chance"] = chances[float(t)]
        rows.append(row)
    return pd.DataFrame(rows)


def wilson_ci(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for k successes out of n (NaNs if n == 0)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def localization_table(
    records: Iterable[LocRecord | Sequence[Any] | Mapping[str, Any]] | pd.DataFrame,
    map_threshold: float = 0.5,
    thresholds: Sequence[float] = IOBB_THRESHOLDS,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """Hit rates per method x (label, "overall") x metric ("pointing", "iobb>0.1", ...), long format.

    Columns: method, label, metric, n, hits, hit_rate, ci_low, ci_high (Wilson 95%), chance (mean over records).
    Also accepts the frame of :func:`score_records`.
    """
    df = records if isinstance(records, pd.DataFrame) else score_records(records, map_threshold, thresholds, tolerance)
    cols = ["method", "label", "metric", "n", "hits", "hit_rate", "ci_low", "ci_high", "chance"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    metrics = ["pointing"] + [c[: -len("_hit")] for c in df.columns if c.startswith("iobb>") and c.endswith("_hit")]
    out = []
    for method, dm in df.groupby("method", sort=False):
        groups = [(lab, g) for lab, g in dm.groupby("label", sort=True)] + [("overall", dm)]
        for label, g in groups:
            for m in metrics:
                n, k = len(g), int(g[f"{m}_hit"].sum())
                lo, hi = wilson_ci(k, n)
                out.append([method, label, m, n, k, k / n, lo, hi, float(g[f"{m}_chance"].mean())])
    return pd.DataFrame(out, columns=cols)
