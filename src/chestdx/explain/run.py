"""Run-level explanations: ``explain_images`` (overlays for chosen images) and ``localize_run`` (maps vs boxes).

Both read a run dir through the :class:`~chestdx.inference.Predictor`, so maps are computed on exactly the
pixels the model sees (the (S, S) square resize of ``to_uint8_square``). Boxes are mapped into that frame:
reference frame (e.g. NIH's 1024 px originals) -> the image actually read (aspect kept) -> the (S, S) input
(squashed per axis, like the resize).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from chestdx.explain.localization import IOBB_THRESHOLDS, LocRecord, localization_table, score_records
from chestdx.explain.overlay import OverlayItem, format_caption, overlay_png, save_gallery
from chestdx.inference import DISCLAIMER, Predictor
from chestdx.io import ImageReadError, read_image

log = logging.getLogger(__name__)

LOC_METHODS = ("gradcam", "gradcampp", "smoothgrad")
MAX_GALLERY = 48  # panels in one gallery PNG (beyond that the figure gets unreadable)

__all__ = [
    "LOC_METHODS",
    "LocalizationResult",
    "box_reference_size_for",
    "box_to_input",
    "explain_images",
    "localize_run",
]


# --------------------------------------------------------------------------------------------- helpers
def _predictor(run_or_predictor: str | Path | Predictor) -> Predictor:
    return run_or_predictor if isinstance(run_or_predictor, Predictor) else Predictor.from_run(run_or_predictor)


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not show, transient=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "image"


def _key(image_id: str) -> str:
    """Match key of an image: its file name (split.csv may hold 'images/x.png', box files 'x.png')."""
    return Path(str(image_id)).name


def box_to_input(box: Sequence[float], reference_size: float, image_shape: tuple[int, int],
                 input_size: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) in a ``reference_size`` frame -> pixels of the (``input_size``)^2 model input.

    The box refers to the same picture at ``reference_size`` px on its long side (NIH: 1024); the image read
    has ``image_shape`` (H, W) (the nih-sample PNGs: 512 x 512); the model input squashes (H, W) to (S, S).
    For square images this is simply ``v * S / reference_size``.
    """
    h_img, w_img = image_shape[:2]
    to_read = max(h_img, w_img) / float(reference_size)
    sx, sy = input_size / float(w_img), input_size / float(h_img)
    x, y, w, h = (float(v) * to_read for v in box)
    return (x * sx, y * sy, w * sx, h * sy)


def box_reference_size_for(boxes_csv: str | Path, default: int = 1024) -> int:
    """The frame size box coordinates refer to: ``box_reference_size: N`` in a README.txt next to the box
    file (the synthetic phantom writes one), else ``default`` (NIH BBox_List_2017: 1024)."""
    readme = Path(boxes_csv).parent / "README.txt"
    if readme.is_file():
        match = re.search(r"box_reference_size:\s*(\d+)", readme.read_text(encoding="utf-8", errors="replace"))
        if match:
            return int(match.group(1))
    return int(default)


# --------------------------------------------------------------------------------------------- explain
def _display(img01: np.ndarray, max_side: int = 512) -> np.ndarray:
    """The original image (aspect kept) at most ``max_side`` px: what the overlay is drawn on. The (S, S) map
    stretches back over it exactly, as the model input is a per-axis squash of the whole image."""
    h, w = img01.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img01
    u8 = np.clip(np.rint(img01 * 255.0), 0, 255).astype(np.uint8)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(u8).resize(size, Image.Resampling.BILINEAR))


def _unique(out: Path, stem: str, used: set[str]) -> Path:
    """``out/stem.png``, with a numeric suffix when two inputs share a name."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return out / f"{name}.png"


def _select(labels: list[str], probs: np.ndarray, wanted: Sequence[str] | None, top_k: int) -> list[int]:
    if wanted:
        return [labels.index(lb) for lb in wanted]
    return [int(j) for j in np.argsort(-probs, kind="stable")[: max(1, int(top_k))]]


def explain_images(
    run_dir_or_predictor: str | Path | Predictor,
    images: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "gradcam",
    labels: Sequence[str] | None = None,
    top_k: int = 1,
    batch_size: int = 8,
    show_progress: bool = True,
    **saliency_kwargs: Any,
) -> pd.DataFrame:
    """Overlay PNGs of ``method`` maps for each image x label (given ``labels``, else the ``top_k`` most probable).

    Writes ``<out_dir>/<image>__<label>.png`` (caption: label, calibrated probability, method), ``gallery.png``
    (at most 48 panels) and ``index.csv`` (one row per image x label; unreadable files get a row with ``error``).
    Returns the index table. ``saliency_kwargs`` go to the saliency method (e.g. ``n_samples=10``).
    """
    pred = _predictor(run_dir_or_predictor)
    unknown = [lb for lb in labels or [] if lb not in pred.labels]
    if unknown:
        raise ValueError(f"labels {unknown} are not labels of this model ({', '.join(pred.labels)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    panels: list[OverlayItem] = []
    paths = [Path(p) for p in images]
    used: set[str] = set()
    with _progress(show_progress) as bar:
        task = bar.add_task(f"{method} maps", total=len(paths))
        for start in range(0, len(paths), max(1, int(batch_size))):
            chunk = paths[start:start + max(1, int(batch_size))]
            pixels, shown, ok = [], [], []
            for p in chunk:
                try:
                    img = read_image(p)
                    pixels.append(pred.preprocess(img))
                    shown.append(_display(img))
                    ok.append(p)
                except (ImageReadError, OSError, ValueError) as err:
                    rows.append({"image": str(p), "label": None, "error": str(err)})
            if ok:
                batch = np.stack(pixels)
                z = pred.logits(batch)
                raw, cal = 1.0 / (1.0 + np.exp(-z)), pred.calibration.apply(z)
                pairs = [(i, j) for i in range(len(ok)) for j in _select(pred.labels, cal[i], labels, top_k)]
                maps = pred.heatmaps(batch[[i for i, _ in pairs]], [j for _, j in pairs], method=method,
                                     batch_size=batch_size, **saliency_kwargs)
                for (i, j), hm in zip(pairs, maps, strict=True):
                    label = pred.labels[j]
                    thr = pred.calibration.threshold(label)
                    caption = format_caption(label, float(cal[i, j]), method)
                    png = overlay_png(shown[i], hm, caption, _unique(out, f"{_slug(ok[i].stem)}__{_slug(label)}", used))
                    if len(panels) < MAX_GALLERY:
                        panels.append(OverlayItem(shown[i], hm, f"{ok[i].name}\n{caption}"))
                    rows.append({"image": str(ok[i]), "label": label, "probability": float(cal[i, j]),
                                 "raw_probability": float(raw[i, j]), "threshold": thr,
                                 "finding": bool(thr is not None and cal[i, j] >= thr), "method": method,
                                 "png": png.name, "error": None})
            bar.advance(task, len(chunk))
    if panels:
        save_gallery(panels, out / "gallery.png", ncols=4)
    cols = ["image", "label", "probability", "raw_probability", "threshold", "finding", "method", "png", "error"]
    index = pd.DataFrame(rows).reindex(columns=cols)
    index.to_csv(out / "index.csv", index=False)
    return index


# --------------------------------------------------------------------------------------------- localize
@dataclass
class LocalizationResult:
    """Output of :func:`localize_run`: summary table (long), per-record scores, skipped boxes, files written."""

    table: pd.DataFrame
    records: pd.DataFrame
    skipped: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _match_boxes(boxes: pd.DataFrame, split_table: pd.DataFrame, model_labels: Sequence[str],
                 split: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Boxes joined to split.csv rows (adds ``path``, ``split``); and the skipped ones with a reason."""
    by_key = split_table.assign(_key=split_table["image_id"].map(_key)).drop_duplicates("_key").set_index("_key")
    kept, skipped = [], []
    for rec in boxes.to_dict("records"):
        key = _key(rec["image_id"])
        reason = None
        if key not in by_key.index:
            reason = "image not in the run's split.csv"
        elif split is not None and by_key.at[key, "split"] != split:
            reason = f"image in split {by_key.at[key, 'split']!r}, not {split!r}"
        elif rec["label"] not in model_labels:
            reason = f"label {rec['label']} not modelled"
        if reason:
            skipped.append({"image_id": rec["image_id"], "label": rec["label"], "reason": reason})
        else:
            row = by_key.loc[key]
            kept.append({**rec, "path": row["path"], "split": row["split"],
                         **{f: row[f] for f in ("age", "sex", "view") if f in row.index}})
    return pd.DataFrame(kept), pd.DataFrame(skipped, columns=["image_id", "label", "reason"])


def _read_boxed_images(pred: Predictor, kept: pd.DataFrame, reference_size: float, skipped: list[dict[str, Any]],
                       ) -> tuple[list[np.ndarray], list[dict[str, Any]], list[dict[str, Any]]]:
    """Preprocessed pixels and split rows per distinct image; one entry per usable box (box in input pixels)."""
    pixels: list[np.ndarray] = []
    image_rows: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    slot: dict[str, int] = {}
    shapes: dict[str, tuple[int, int]] = {}
    S = pred.input_size
    for rec in kept.to_dict("records"):
        path = str(rec["path"])
        if path not in slot:
            try:
                img = read_image(path)
            except (ImageReadError, OSError, ValueError) as err:
                skipped.append({"image_id": rec["image_id"], "label": rec["label"], "reason": f"unreadable: {err}"})
                continue
            slot[path], shapes[path] = len(pixels), (int(img.shape[0]), int(img.shape[1]))
            pixels.append(pred.preprocess(img))
            image_rows.append(rec)
        shape = shapes[path]
        box = box_to_input((rec["x"], rec["y"], rec["w"], rec["h"]), reference_size, shape, S)
        if box[0] >= S or box[1] >= S or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
            skipped.append({"image_id": rec["image_id"], "label": rec["label"],
                            "reason": f"box outside the image (box size {reference_size} wrong?)"})
            continue
        entries.append({"image_id": rec["image_id"], "label": rec["label"], "slot": slot[path],
                        "class": pred.labels.index(rec["label"]), "box": box, "image_shape": tuple(shape)})
    return pixels, image_rows, entries


def localize_run(
    run_dir: str | Path,
    boxes_csv: str | Path,
    out_dir: str | Path | None = None,
    methods: Sequence[str] = LOC_METHODS,
    split: str | None = "test",
    box_reference_size: int | None = None,
    batch_size: int = 8,
    n_gallery: int = 8,
    map_threshold: float = 0.5,
    predictor: Predictor | None = None,
    show_progress: bool = True,
    **saliency_kwargs: Any,
) -> LocalizationResult:
    """Pointing game and Wang et al. IoBB (> 0.1 / 0.25 / 0.5) of each method's maps against the boxes.

    Uses every box (NIH BBox_List_2017 layout) whose image is in ``RUN_DIR/split.csv`` (and in ``split``,
    unless None) and whose label the model predicts; the rest are listed in ``skipped`` with the reason.
    ``box_reference_size``: frame of the box coordinates (default: README.txt ``box_reference_size`` next to the
    box file, else 1024 as for NIH). Maps are computed for the boxed label (whatever the prediction).
    Writes ``localization.csv`` (method x label/overall x metric: n, hits, hit_rate, Wilson 95% CI, chance),
    ``localization.json``, ``records.csv``, ``skipped.csv`` and ``gallery.png`` (methods side by side, box in
    green) into ``out_dir`` (default ``RUN_DIR/localization``).
    """
    from chestdx.data.index import read_table
    from chestdx.data.nih import read_nih_boxes
    from chestdx.models import encode_metadata

    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "localization"
    pred = predictor or Predictor.from_run(run)
    ref = float(box_reference_size or box_reference_size_for(boxes_csv))
    kept, skipped_df = _match_boxes(read_nih_boxes(boxes_csv), read_table(run / "split.csv"), pred.labels, split)
    skipped = skipped_df.to_dict("records")
    pixels, image_rows, entries = _read_boxed_images(pred, kept, ref, skipped) if len(kept) else ([], [], [])
    skipped_df = pd.DataFrame(skipped, columns=["image_id", "label", "reason"])
    if not entries:
        reasons = skipped_df["reason"].value_counts().to_dict() if len(skipped_df) else {}
        raise ValueError(f"no usable boxes in {boxes_csv} for {run} (split={split!r}); skipped: {reasons}")
    batch = np.stack(pixels)
    meta = encode_metadata(pd.DataFrame(image_rows), pred.metadata) if pred.metadata else None
    probs = pred.probabilities(batch, meta, calibrated=True)
    maps: dict[str, np.ndarray] = {}
    with _progress(show_progress) as bar:
        for method in methods:
            task = bar.add_task(f"{method} maps", total=len(entries))
            chunks = []
            for start in range(0, len(entries), max(1, batch_size)):
                part = entries[start:start + max(1, batch_size)]
                slots = [e["slot"] for e in part]
                chunks.append(pred.heatmaps(batch[slots], [e["class"] for e in part], method=method,
                                            meta=None if meta is None else meta[slots], batch_size=batch_size,
                                            **saliency_kwargs))
                bar.advance(task, len(part))
            maps[method] = np.concatenate(chunks)
    records = [LocRecord(e["image_id"], e["label"], m, maps[m][k], e["box"])
               for m in methods for k, e in enumerate(entries)]
    scores = score_records(records, map_threshold=map_threshold)
    scores["probability"] = [float(probs[e["slot"], e["class"]]) for _ in methods for e in entries]
    table = localization_table(scores)
    meta = {"run_dir": str(run), "boxes": str(boxes_csv), "box_reference_size": ref, "split": split,
            "methods": list(methods), "input_size": pred.input_size, "arch": pred.arch,
            "n_boxes_used": len(entries), "n_images_used": len(pixels), "n_skipped": len(skipped_df),
            "skipped_reasons": skipped_df["reason"].value_counts().to_dict() if len(skipped_df) else {},
            "map_threshold": map_threshold, "iobb_thresholds": list(IOBB_THRESHOLDS),
            "chance": "pointing: box area / image area (uniform random point); iobb>T: P(IoBB > T) for the "
                      "method's own predicted box placed uniformly at random; hit_rate CI: Wilson 95%"}
    result = LocalizationResult(table, scores, skipped_df, meta=meta)
    result.files = _write_localization(result, out, entries, batch, maps, probs, n_gallery)
    return result


def _write_localization(result: LocalizationResult, out: Path, entries: list[dict[str, Any]], batch: np.ndarray,
                        maps: dict[str, np.ndarray], probs: np.ndarray, n_gallery: int) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "localization.csv", "json": out / "localization.json", "records": out / "records.csv",
             "skipped": out / "skipped.csv"}
    result.table.to_csv(files["table"], index=False)
    result.records.to_csv(files["records"], index=False)
    result.skipped.to_csv(files["skipped"], index=False)
    payload = {**result.meta, "table": result.table.to_dict("records"),
               "skipped": result.skipped.to_dict("records"), "note": DISCLAIMER}
    files["json"].write_text(json.dumps(payload, indent=2, default=str))
    if n_gallery > 0:
        files["gallery"] = save_gallery(_gallery_panels(result, entries, batch, maps, probs, n_gallery),
                                        out / "gallery.png", ncols=len(maps))
    return files


def _gallery_panels(result: LocalizationResult, entries: list[dict[str, Any]], batch: np.ndarray,
                    maps: dict[str, np.ndarray], probs: np.ndarray, n: int) -> Iterable[OverlayItem]:
    """Rows = boxed images (spread over labels), columns = methods; caption says hit/miss of the pointing game."""
    by_label: dict[str, list[int]] = {}
    for k in range(len(entries)):
        by_label.setdefault(entries[k]["label"], []).append(k)
    picked: list[int] = []
    while len(picked) < min(n, len(entries)):  # round-robin over labels
        for ks in by_label.values():
            if ks and len(picked) < n:
                picked.append(ks.pop(0))
    rec = result.records
    for k in picked:
        e = entries[k]
        for m, stack in maps.items():
            row = rec[(rec["method"] == m) & (rec["image_id"] == e["image_id"]) & (rec["label"] == e["label"])]
            hit = bool(row["pointing_hit"].iloc[0]) if len(row) else False
            caption = f"{_key(e['image_id'])}\n{format_caption(e['label'], float(probs[e['slot'], e['class']]), m)}"
            yield OverlayItem(batch[e["slot"]], stack[k], caption + ("  HIT" if hit else "  miss"), e["box"])

