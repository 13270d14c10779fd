"""Saliency gallery for the report: true positives, false positives and false negatives of the test split.

Examples are chosen from ``predictions.csv`` with the validation thresholds (calibrated probabilities):
TP = most confident correct positives, FP = most confident false alarms, FN = most confident misses (the
positives with the lowest probability).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestdx.explain.overlay import OverlayItem, format_caption, save_gallery
from chestdx.inference.predictor import Predictor
from chestdx.io import ImageReadError, read_image

CATEGORIES = ("TP", "FP", "FN")


def pick_examples(pred: pd.DataFrame, label: str, threshold: float, split: str = "test") -> dict[str, pd.DataFrame]:
    """Rows of ``pred`` (its calibrated ``cal_<Label>`` as ``p_cal``) for each of TP / FP / FN: TP and FP most
    confident first, FN least confident first (the clearest misses); all of them (take ``n``)."""
    df = pred[(pred["split"] == split) & pred[label].notna()].copy()
    df["p_cal"] = df[f"cal_{label}"].to_numpy(dtype=np.float64)
    pos, hit = df[label] == 1, df["p_cal"] >= threshold
    return {"TP": df[pos & hit].sort_values("p_cal", ascending=False),
            "FP": df[~pos & hit].sort_values("p_cal", ascending=False),
            "FN": df[pos & ~hit].sort_values("p_cal", ascending=True)}


def top_labels(metrics: dict[str, Any], k: int) -> list[str]:
    """Estimable labels with a threshold, most test positives first (ties: higher AUROC)."""
    items = [(lb, r) for lb, r in metrics.get("labels", {}).items()
             if r.get("estimable") and metrics.get("thresholds", {}).get(lb) is not None]
    items.sort(key=lambda t: (-int(t[1].get("n_pos", 0)), -float(t[1].get("auroc") or 0.0)))
    return [lb for lb, _ in items[:k]]


def saliency_gallery(run_dir: str | Path, metrics: dict[str, Any], out_dir: str | Path, n_per_cell: int = 3,
                     max_labels: int = 3, method: str = "gradcam",
                     predictor: Predictor | None = None) -> list[dict[str, Any]]:
    """One PNG per top label (rows TP, FP, FN; ``n_per_cell`` images each) of ``method`` maps on test images.

    Returns [{label, png, counts: {TP: n, FP: n, FN: n}, threshold}] (png None when no example exists).
    """
    from chestdx.models import encode_metadata
    from chestdx.report.data_summary import read_split

    run = Path(run_dir)
    pred_csv = run / "predictions.csv"
    if not pred_csv.is_file():
        return []
    predictions = pd.read_csv(pred_csv, dtype={"image_id": str, "patient_id": str})
    split = read_split(run).drop_duplicates("image_id").set_index("image_id")
    predictor = predictor or Predictor.from_run(run, gate=None)
    out = []
    for label in top_labels(metrics, max_labels):
        if label not in predictor.labels:
            continue
        thr = float(metrics["thresholds"][label])
        picks = pick_examples(predictions, label, thr)
        items: list[OverlayItem] = []
        blank = np.ones((predictor.input_size, predictor.input_size), np.float32)
        for cat in CATEGORIES:
            pixels, kept = [], []
            for r in picks[cat][picks[cat]["image_id"].isin(split.index)].itertuples(index=False):
                if len(kept) == n_per_cell:
                    break
                try:
                    pixels.append(predictor.preprocess(read_image(split.at[r.image_id, "path"])))
                    kept.append(r)
                except (ImageReadError, OSError, ValueError):
                    continue
            if pixels:
                batch = np.stack(pixels)
                meta = (encode_metadata(split.loc[[r.image_id for r in kept]], predictor.metadata)
                        if predictor.metadata else None)
                maps = predictor.heatmaps(batch, [predictor.labels.index(label)] * len(kept), method=method,
                                          meta=meta)
                for r, img, hm in zip(kept, batch, maps, strict=True):
                    name = Path(str(r.image_id)).name
                    items.append(OverlayItem(img, hm, f"{cat}: {name}\n{format_caption(label, r.p_cal, method)}"))
            items += [OverlayItem(blank, None, f"{cat}: no example")] * (n_per_cell - len(kept))
        has_any = any(it.heatmap is not None for it in items)
        png = save_gallery(items, Path(out_dir) / f"saliency_{label}.png", ncols=n_per_cell) if has_any else None
        out.append({"label": label, "png": png, "threshold": thr,
                    "counts": {c: int(len(picks[c])) for c in CATEGORIES}})
    return out
