"""Heatmap overlays as PNG files: one image, or a captioned gallery (reports, side-by-side method comparisons).

Uses matplotlib's object API with the Agg canvas (no pyplot global state: safe in servers and threads).
The heatmap is drawn over the image's extent, so a (h, w) map of any size lines up with an (H, W) image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["OverlayItem", "format_caption", "overlay_png", "save_gallery"]


@dataclass
class OverlayItem:
    """One panel: gray image in [0, 1] (uint8 scaled), heatmap in [0, 1] or None, caption, (x, y, w, h) box or None."""

    image: np.ndarray
    heatmap: np.ndarray | None
    caption: str = ""
    box: Sequence[float] | None = None


def format_caption(label: str, prob: float | None = None, method: str | None = None) -> str:
    """'Effusion  p=0.83  (gradcam)' style caption."""
    parts = [label] + ([f"p={prob:.2f}"] if prob is not None else []) + ([f"({method})"] if method else [])
    return "  ".join(parts)


def _draw(ax: Axes, item: OverlayItem, alpha: float, cmap: str) -> None:
    raw = np.asarray(item.image)
    img = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
    if img.ndim == 3:  # (H, W, C) or (C, H, W) -> gray
        img = img.mean(axis=0 if img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3) else -1)
    H, W = img.shape
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, extent=(0, W, H, 0), interpolation="bilinear")
    if item.heatmap is not None:
        heat = np.clip(np.nan_to_num(np.asarray(item.heatmap, dtype=np.float32)), 0.0, 1.0)
        ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, extent=(0, W, H, 0), interpolation="bilinear")
    if item.box is not None:
        x, y, w, h = item.box
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=1.5))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_title(item.caption, fontsize=9)
    ax.axis("off")


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return path


def overlay_png(
    image01: np.ndarray,
    heatmap: np.ndarray | None,
    caption: str,
    path: str | Path,
    alpha: float = 0.4,
    box: Sequence[float] | None = None,
    cmap: str = "jet",
    size_in: float = 4.0,
    dpi: int = 100,
) -> Path:
    """Write a PNG of ``image01`` (H, W) in gray with ``heatmap`` (h, w) in ``cmap`` at ``alpha`` over it.

    ``box`` (x, y, w, h, image pixels) is outlined in green, e.g. the ground-truth lesion box.
    """
    fig = Figure(figsize=(size_in, size_in + 0.3))
    _draw(fig.add_subplot(1, 1, 1), OverlayItem(image01, heatmap, caption, box), alpha, cmap)
    return _save(fig, path, dpi)


def save_gallery(
    items: Iterable[OverlayItem | Mapping[str, Any] | Sequence[Any]],
    path: str | Path,
    ncols: int = 4,
    alpha: float = 0.4,
    cmap: str = "jet",
    title: str | None = None,
    panel_in: float = 3.0,
    dpi: int = 100,
) -> Path:
    """Grid of captioned overlays, ``ncols`` wide.

    Items are OverlayItem, dicts with its field names, or tuples (image, heatmap, caption[, box]).
    """
    panels = [
        it if isinstance(it, OverlayItem) else OverlayItem(**it) if isinstance(it, Mapping) else OverlayItem(*it)
        for it in items
    ]
    if not panels:
        raise ValueError("save_gallery needs at least one item")
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(panel_in * ncols, (panel_in + 0.3) * nrows + (0.4 if title else 0.0)))
    for i, item in enumerate(panels):
        _draw(fig.add_subplot(nrows, ncols, i + 1), item, alpha, cmap)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi)
