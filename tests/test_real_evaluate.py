"""A run trained on real NIH images, evaluated on a held-out patient-disjoint test split: metrics.json agrees with
an independent scikit-learn recomputation from predictions.csv, CIs bracket the estimates, rare labels are
marked not estimable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def nih_evaluated(nih_sample: Path, tmp_path_factory) -> Path:
    from chestdx.evaluate.run import evaluate_run
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    root = tmp_path_factory.mktemp("nih-eval")
    config = load_config("demo", [f"data={nih_sample}", "image_size=64", "epochs=1", "progress=false",
                                  f"cache_root={root / 'cache'}"])
    run = fit(config, root / "run")
    evaluate_run(run, n_boot=200, show_progress=False)
    return run


def test_split_is_patient_disjoint(nih_evaluated: Path) -> None:
    split = pd.read_csv(nih_evaluated / "split.csv")
    assert len(split) == 758
    patients = {s: set(g["patient_id"]) for s, g in split.groupby("split")}
    assert set(patients) == {"train", "val", "test"}
    assert not (patients["test"] & (patients["train"] | patients["val"])) and not (patients["train"] & patients["val"])


def test_metrics_match_sklearn_on_predictions_csv(nih_evaluated: Path) -> None:
    metrics = json.loads((nih_evaluated / "metrics.json").read_text())
    preds = pd.read_csv(nih_evaluated / "predictions.csv")
    assert set(preds["split"]) == {"val", "test"}  # val rows: what thresholds and temperature were fitted on
    preds = preds[preds["split"] == "test"]
    assert len(preds) == metrics["n_test_images"] and preds["image_id"].is_unique
    checked = 0
    for label, m in metrics["labels"].items():
        y, p = preds[label].to_numpy(float), preds[f"prob_{label}"].to_numpy(float)
        keep = ~np.isnan(y)
        n_pos, n_neg = int(y[keep].sum()), int((1 - y[keep]).sum())
        assert (m["n_pos"], m["n_neg"]) == (n_pos, n_neg)
        if n_pos < 5 or n_neg < 5:
            assert not m["estimable"] and m["auroc"] is None and m["auroc_ci"] is None
            continue
        assert m["estimable"]
        assert m["auroc"] == pytest.approx(roc_auc_score(y[keep], p[keep]), abs=1e-9)
        lo, hi = m["auroc_ci"]
        assert lo <= m["auroc"] <= hi and hi - lo > 0
        checked += 1
    assert checked >= 3 and metrics["labels"]["Pneumonia"]["estimable"]
    assert any(not m["estimable"] for m in metrics["labels"].values())  # nih-sample has rare labels
    macro = metrics["macro"]
    estimable = [lb for lb, m in metrics["labels"].items() if m["estimable"]]
    assert macro["labels"] == estimable
    assert macro["auroc"] == pytest.approx(np.mean([metrics["labels"][lb]["auroc"] for lb in estimable]))
