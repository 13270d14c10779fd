"""Validation thresholds and operating points (chestdx.evaluate.thresholds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chestdx.evaluate.thresholds import choose_thresholds, operating_point, select_thresholds

Y = np.array([0, 0, 0, 0, 1, 1, 1], dtype=float)
P = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8])


def test_youden_on_toy_example():
    # thresholds: 0.8 J=1/3, 0.7 J=2/3, 0.6 J=5/12, 0.5 J=3/4 (best), 0.3 J=1/2 ...
    assert choose_thresholds(Y[:, None], P[:, None], ["A"]) == {"A": 0.5}
    assert choose_thresholds(Y, P, ["A"]) == {"A": 0.5}  # 1-D input = one label
    detail = select_thresholds(Y[:, None], P[:, None], ["A"])["A"]
    assert detail["val_sensitivity"] == 1.0 and detail["val_specificity"] == 0.75
    assert "3 positive" in detail["warning"]


def test_sensitivity_target_takes_highest_threshold_reaching_it():
    assert choose_thresholds(Y[:, None], P[:, None], ["A"], "sensitivity", 0.6) == {"A": 0.7}
    assert choose_thresholds(Y[:, None], P[:, None], ["A"], "sensitivity", 0.9) == {"A": 0.5}


def test_fallback_when_no_positives_and_nan_masked():
    y = np.stack([Y, np.zeros(7)], 1)
    y[0, 0] = np.nan
    sel = select_thresholds(y, np.stack([P, P], 1), ["A", "B"])
    assert sel["A"]["threshold"] == 0.5 and sel["A"]["reason"] is None
    assert sel["B"]["threshold"] == 0.5 and sel["B"]["method"] == "fallback" and "0 positive" in sel["B"]["reason"]
    json.dumps(sel, allow_nan=False)
    with pytest.raises(ValueError, match="unknown threshold method"):
        choose_thresholds(Y[:, None], P[:, None], ["A"], method="f1")


def test_operating_point_counts_and_cis():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(500), 2)
    y = np.repeat((rng.random(500) < 0.3).astype(float), 2)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=y.size))))
    y[::50] = np.nan
    op = operating_point(y, p, 0.5, groups, n_boot=300)
    known = ~np.isnan(y)
    yk, called = y[known] == 1, p[known] >= 0.5
    assert op["tp"] == int((yk & called).sum()) and op["fn"] == int((yk & ~called).sum())
    assert op["tp"] + op["fp"] + op["tn"] + op["fn"] == known.sum()
    assert op["sensitivity"] == pytest.approx(op["tp"] / (op["tp"] + op["fn"]))
    assert op["npv"] == pytest.approx(op["tn"] / (op["tn"] + op["fn"]))
    assert op["f1"] == pytest.approx(2 * op["tp"] / (2 * op["tp"] + op["fp"] + op["fn"]))
    for k in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        lo, hi = op[f"{k}_ci"]
        assert lo <= op[k] <= hi
    json.dumps(op, allow_nan=False)


def test_operating_point_undefined_metrics_are_none():
    op = operating_point(np.array([0, 0, 1.0]), np.array([0.1, 0.2, 0.3]), 0.9, n_boot=20)
    assert op["ppv"] is None and op["ppv_ci"] is None and op["sensitivity"] == 0.0
