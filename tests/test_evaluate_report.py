"""evaluate_predictions end to end, and the plot files (chestdx.evaluate.evaluation / plots)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from chestdx.evaluate import compare_predictions, evaluate_predictions
from chestdx.evaluate.calibration import apply_temperature
from chestdx.evaluate.plots import plot_compare, plot_evaluation

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


def test_evaluate_predictions_shape_and_json():
    df = make_table()
    res = evaluate_predictions(df, LABELS, n_boot=100)
    json.dumps(res, allow_nan=False)
    assert set(res["labels"]) == set(LABELS)
    assert res["n_test_images"] == int((df.split == "test").sum())
    assert res["n_test_patients"] == df.loc[df.split == "test", "patient_id"].nunique()
    assert res["threshold_space"] == "calibrated" and res["temperature"] > 1.3  # logits were doubled
    assert res["calibration"]["after"]["ece"] < res["calibration"]["before"]["ece"]
    assert res["labels"]["Hernia"]["estimable"] is False and res["macro"]["labels"] == ["Effusion", "Mass"]
    op = res["labels"]["Effusion"]["operating_point"]
    assert op["threshold"] == res["thresholds"]["Effusion"] and op["sensitivity_ci"] is not None
    # raw thresholds call exactly the same images as calibrated ones
    p = df["prob_Effusion"].to_numpy()
    cal = apply_temperature(p, res["temperature"])
    assert ((cal >= res["thresholds"]["Effusion"]) == (p >= res["thresholds_raw"]["Effusion"])).mean() > 0.999
    assert "not a diagnosis" in res["note"]
    assert "2 positive" in res["threshold_details"]["Hernia"]["warning"]


def test_thresholds_and_temperature_ignore_test_labels():
    df = make_table()
    res = evaluate_predictions(df, LABELS, n_boot=50)
    shuffled = df.copy()
    test = np.flatnonzero(df.split == "test")
    perm = np.random.default_rng(5).permutation(test)
    shuffled.loc[test, LABELS] = df.loc[perm, LABELS].to_numpy()
    res2 = evaluate_predictions(shuffled, LABELS, n_boot=50)
    assert res2["thresholds"] == res["thresholds"] and res2["temperature"] == res["temperature"]
    assert res2["labels"]["Effusion"]["auroc"] != pytest.approx(res["labels"]["Effusion"]["auroc"])


def test_plots_write_png_and_numbers(tmp_path):
    df = make_table()
    res = evaluate_predictions(df, LABELS, n_boot=50)
    files = plot_evaluation(df, res, tmp_path / "plots")
    assert set(files) == {"roc", "roc_overlay", "pr", "reliability"}
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
    with pytest.raises(ValueError, match="split == 'val'"):
        evaluate_predictions(df[df.split != "val"], LABELS, n_boot=10)
