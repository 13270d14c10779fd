"""Held-out evaluation with a calibration fitted on validation rows, and the plot files (evaluate.heldout / plots)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from chestdx.evaluate import compare_predictions, evaluate_heldout
from chestdx.evaluate.calibrate import calibrate_oof
from chestdx.evaluate.calibration import logit
from chestdx.evaluate.plots import plot_compare, plot_evaluation
from chestdx.inference.calibration import Calibration

LABELS = ["Effusion", "Mass", "Hernia"]


def make_table(n_patients: int = 400, seed: int = 0) -> pd.DataFrame:
    """Overconfident synthetic predictions table; Hernia has 3 positives (not estimable)."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), 2)
    split = np.select([pid % 10 < 3, pid % 10 < 4], ["val", "train"], "test")
    df = pd.DataFrame(
        {"image_id": [f"i{i}" for i in range(pid.size)], "patient_id": [f"p{k}" for k in pid], "split": split}
    )
    for lab, prev in zip(LABELS, (0.35, 0.25, 0.0), strict=True):
        z = rng.normal(-1, 1.5, size=pid.size) + 3 * (rng.random(pid.size) < prev)
        y = (rng.random(pid.size) < 1 / (1 + np.exp(-z))).astype(float)
        if lab == "Hernia":
            y[:] = 0
            y[np.flatnonzero(split == "test")[:3]] = 1
            y[np.flatnonzero(split == "val")[:2]] = 1
        df[lab] = y
        df[f"prob_{lab}"] = 1 / (1 + np.exp(-2 * z))
    df.loc[::13, "Mass"] = np.nan
    return df


def calibrated(df: pd.DataFrame):
    """Calibration fitted on the table's validation rows only (as evaluate does for K = 1)."""
    side, _ = calibrate_oof(df[df.split == "val"].assign(fold=0), LABELS, min_positives=10, n_boot=50)
    return Calibration.from_sidecar(side, LABELS)


def with_cal(df: pd.DataFrame, cal: Calibration) -> pd.DataFrame:
    out = df.copy()
    z = logit(df[[f"prob_{lab}" for lab in LABELS]].to_numpy())
    out[[f"cal_{lab}" for lab in LABELS]] = cal.apply(z)
    return out


def test_evaluate_heldout_shape_and_json():
    df = make_table()
    cal = calibrated(df)
    res = evaluate_heldout(df, cal, LABELS, n_boot=100)
    json.dumps(res, allow_nan=False)
    assert set(res["labels"]) == set(LABELS)
    assert res["n_test_images"] == int((df.split == "test").sum())
    assert res["n_test_patients"] == df.loc[df.split == "test", "patient_id"].nunique()
    assert res["calibration"]["after"]["ece"] < res["calibration"]["before"]["ece"]  # logits were doubled
    assert res["labels"]["Hernia"]["estimable"] is False and res["macro"]["labels"] == ["Effusion", "Mass"]
    op = res["labels"]["Effusion"]["operating_point"]
    assert op["threshold"] == res["thresholds"]["Effusion"] == cal.threshold("Effusion")
    assert op["sensitivity_ci"] is not None
    assert res["thresholds"]["Hernia"] is None and "positives" in res["labels"]["Hernia"]["operating_point"]["reason"]
    fpi = res["findings_per_image"]
    assert fpi["called_per_image"] > 0 and fpi["true_per_image"] > 0
    assert "not a diagnosis" in res["note"]


def test_held_out_evaluation_fits_nothing_on_test():
    """Poisoning the test labels changes the test metrics, never the calibration or the thresholds."""
    df = make_table()
    poisoned = df.copy()
    test = np.flatnonzero(df.split == "test")
    poisoned.loc[test, LABELS] = 1.0 - df.loc[test, LABELS].to_numpy()
    poisoned.loc[test, [f"prob_{lab}" for lab in LABELS]] = 0.5
    a, b = calibrated(df), calibrated(poisoned)
    assert a.entries == b.entries
    ra, rb = evaluate_heldout(df, a, LABELS, n_boot=50), evaluate_heldout(poisoned, b, LABELS, n_boot=50)
    assert ra["thresholds"] == rb["thresholds"]
    assert rb["labels"]["Effusion"]["auroc"] != pytest.approx(ra["labels"]["Effusion"]["auroc"])


def test_plots_write_png_and_numbers(tmp_path):
    df = make_table()
    cal = calibrated(df)
    res = evaluate_heldout(df, cal, LABELS, n_boot=50)
    files = plot_evaluation(with_cal(df, cal), res, tmp_path / "plots")
    assert set(files) == {"roc", "roc_overlay", "pr", "reliability_test"}
    for path in files.values():
        assert path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
        assert path.with_suffix(".json").exists()
    roc = json.loads(files["roc"].with_suffix(".json").read_text())
    assert "fpr" in roc["labels"]["Effusion"] and "fpr" not in roc["labels"]["Hernia"]
    assert roc["labels"]["Hernia"]["auroc"] is None
    other = df.copy()
    other[[f"prob_{lab}" for lab in LABELS]] **= 0.5
    table = compare_predictions({"a": df, "b": other}, LABELS, n_boot=50)
    path = plot_compare(table, tmp_path / "compare.png")
    assert path.exists() and path.with_suffix(".csv").exists()
    assert len(pd.read_csv(path.with_suffix(".csv"))) == len(table)


def test_missing_split_raises():
    df = make_table()
    with pytest.raises(ValueError, match="split == 'test'"):
        evaluate_heldout(df[df.split != "test"], calibrated(df), LABELS, n_boot=10)
