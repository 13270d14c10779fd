"""Validation thresholds and operating points (chestdx.evaluate.thresholds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chestdx.evaluate.thresholds import operating_point

Y = np.array([0, 0, 0, 0, 1, 1, 1], dtype=float)
P = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8])


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
