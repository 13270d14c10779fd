"""The offline demo in one call (``chestdx demo``): train -> evaluate -> explain -> localize -> report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from chestdx.notice import DISCLAIMER

log = logging.getLogger(__name__)



def run_demo(out: str | Path, data: str | None = None, epochs: int | None = None,
             overrides: list[str] | None = None) -> dict[str, Any]:
    """Offline demo. Without ``data``: the SYNTHETIC phantom set with the small ``demo`` preset.

    With ``data`` (a real dataset folder): the ``default`` preset. Returns a summary dict.
    """
    import pandas as pd

    from chestdx.data.nih import BOX_FILE
    from chestdx.evaluate.run import evaluate_run
    from chestdx.explain.run import explain_images, localize_run
    from chestdx.report import build_report
    from chestdx.train.config import load_config
    from chestdx.train.data_setup import phantom_dir
    from chestdx.train.fit import fit

    start = time.perf_counter()
    sets = list(overrides or [])
    if epochs is not None:
        sets.append(f"epochs={epochs}")
    config = load_config("demo" if data is None else "default", sets + ([f"data={data}"] if data else []))
    run = fit(config, out)
    metrics = evaluate_run(run, n_boot=500)
    pred = pd.read_csv(run / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    split = pd.read_csv(run / "split.csv", dtype={"image_id": str, "patient_id": str})
    test_paths = split.loc[split["image_id"].isin(pred.loc[pred["split"] == "test", "image_id"]), "path"]
    explain_images(run, test_paths.head(8).tolist(), run / "explain", method="gradcam")
    boxes = None
    if data is None:
        boxes = phantom_dir(config["cache_root"]) / "boxes.csv"
    elif (Path(data) / BOX_FILE).is_file():
        boxes = Path(data) / BOX_FILE
    if boxes is not None:
        localize_run(run, boxes, run / "localization")
    report = build_report(run)
    summary = {
        "run_dir": str(run),
        "data": data or "phantom (SYNTHETIC)",
        "test_macro_auroc": metrics["macro"].get("auroc"),
        "test_macro_auroc_ci": metrics["macro"].get("auroc_ci"),
        "report": str(report),
        "seconds": round(time.perf_counter() - start, 1),
        "note": DISCLAIMER,
    }
    log.info("demo finished in %.0f s: %s", summary["seconds"], report)
    return summary
