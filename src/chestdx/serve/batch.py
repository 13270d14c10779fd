"""Batch prediction over files and folders (recursive; PNG/JPEG/DICOM): rows with probabilities or an error.

Used by ``chestdx predict``. A bad file becomes a row with ``error`` filled; the others are still processed.
Works with either backend of :class:`~chestdx.inference.Predictor` (the ONNX one has no heatmaps).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chestdx.notice import DISCLAIMER

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".dic", ".bmp", ".tif", ".tiff",
                              ".gif", ".webp"})
DISCLAIMER_LINE = (DISCLAIMER + " Probabilities are calibrated on out-of-fold or validation data; a finding is "
                   "called only with the stated meaning of its threshold (column statements).")
BASE_COLUMNS = ("path", "error", "quality", "quality_prob", "corrected", "ood_score", "ood_flag", "findings")



@dataclass
class BatchResult:
    """Rows (one per input file, errors included) and timing."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_ok(self) -> int:
        return sum(not r["error"] for r in self.rows)

    @property
    def n_errors(self) -> int:
        return sum(bool(r["error"]) for r in self.rows)

    @property
    def throughput(self) -> float:
        """Images per second over the whole run (decoding included)."""
        return len(self.rows) / self.seconds if self.seconds > 0 else float("nan")


def _is_dicom_without_extension(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def collect_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders recursively (image extensions, and extension-less DICOM files with a 'DICM' preamble);
    files are kept as given (a missing path is kept too and becomes an error row). Hidden files are skipped."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.is_symlink() and not f.exists():  # link loop / broken link: an error row, never dropped
                    out.append(f)
                    continue
                if not f.is_file():
                    continue
                if f.suffix.lower() in IMAGE_EXTENSIONS or (not f.suffix and _is_dicom_without_extension(f)):
                    out.append(f)
        else:
            out.append(p)
    return out


def _safe_stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80] or "image"


def prediction_row(pred: Any, labels: Sequence[str]) -> dict[str, Any]:
    ok = not pred.error
    row: dict[str, Any] = {"path": pred.source, "error": pred.error or "", "quality": pred.quality or "",
                           "quality_prob": pred.quality_prob, "corrected": pred.corrected or "",
                           "ood_score": pred.ood_score, "ood_flag": bool(pred.ood_flag) if ok else None,
                           "findings": ";".join(pred.findings) if ok else ""}
    for lb in labels:
        row[f"prob_{lb}"] = pred.probabilities.get(lb) if ok else None
    for lb in labels:
        row[f"called_{lb}"] = (lb in pred.findings) if ok else None
    row["statements"] = " | ".join(f"{lb}: {text}" for lb, text in pred.statements.items()) if ok else ""
    row["warning"] = pred.warning or ""
    return row


def predict_paths(predictor: Any, paths: Sequence[str | Path], batch_size: int = 16,
                  heatmaps_dir: str | Path | None = None, method: str = "gradcam",
                  progress: Callable[[int], None] | None = None) -> BatchResult:
    """Predict every file of ``paths`` (already expanded) in chunks of ``batch_size``; ``progress(n)`` after each."""
    files = [Path(p) for p in paths]
    result = BatchResult(labels=list(predictor.labels))
    want_maps = heatmaps_dir is not None
    if want_maps:
        Path(heatmaps_dir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(0, len(files), batch_size):
        chunk = [str(f) for f in files[i:i + batch_size]]
        preds = predictor.predict(chunk, batch_size=batch_size, heatmaps=True) if want_maps else \
            predictor.predict(chunk, batch_size=batch_size)
        for k, pred in enumerate(preds):
            row = prediction_row(pred, result.labels)
            if want_maps and not pred.error and pred.heatmaps:
                row["heatmaps"] = ";".join(_save_maps(pred, Path(heatmaps_dir), i + k, method))
            result.rows.append(row)
        if progress:
            progress(len(chunk))
    result.seconds = time.perf_counter() - start
    return result


def _save_maps(pred: Any, folder: Path, index: int, method: str) -> list[str]:
    from chestdx.explain import format_caption, overlay_png
    from chestdx.inference.quality import undo
    from chestdx.io import read_image

    image = read_image(pred.source)
    if pred.corrected:  # the maps are on the upright image the gate made; its class is the verdict
        image = undo(image, pred.quality)
    out = []
    for label, heat in pred.heatmaps.items():
        path = folder / f"{index:06d}_{_safe_stem(Path(pred.source))}_{label}.png"
        overlay_png(image, heat, format_caption(label, pred.probabilities.get(label), method), path)
        out.append(str(path))
    return out


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_result(result: BatchResult, out: str | Path, model: dict[str, Any] | None = None) -> Path:
    """``.csv`` (columns path, error, quality, quality_prob, corrected, ood_score, ood_flag, findings,
    prob_<Label>..., called_<Label>..., statements, warning[, heatmaps]) or ``.json`` ({model, note, predictions})."""
    import pandas as pd

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        doc = {"note": DISCLAIMER_LINE, "model": model or {}, "n_images": len(result.rows),
               "n_errors": result.n_errors, "seconds": round(result.seconds, 3),
               "predictions": [{k: _clean(v) for k, v in r.items()} for r in result.rows]}
        out.write_text(json.dumps(doc, indent=1))
    elif out.suffix.lower() == ".csv":
        cols = [*BASE_COLUMNS, *[f"prob_{lb}" for lb in result.labels], *[f"called_{lb}" for lb in result.labels],
                "statements", "warning"]
        if any("heatmaps" in r for r in result.rows):
            cols.append("heatmaps")
        pd.DataFrame(result.rows, columns=cols).to_csv(out, index=False)
    else:
        raise ValueError(f"{out}: output must end in .csv or .json")
    return out
