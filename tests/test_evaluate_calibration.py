"""ECE and temperature scaling (chestdx.evaluate.calibration)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from chestdx.evaluate.calibration import apply_temperature, expected_calibration_error, fit_temperature


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.random(40_000)
    y = (rng.random(p.size) < p).astype(float)
    cal = expected_calibration_error(y, p, n_bins=15)
    assert cal["ece"] < 0.02
    assert len(cal["table"]) == 15 and sum(r["count"] for r in cal["table"]) == p.size
    over = expit(3 * np.log(p / (1 - p)))
    assert expected_calibration_error(y, over)["ece"] > 0.1


def test_ece_table_and_nan_masking():
    y = np.array([[0, np.nan], [1, 1]])
    p = np.array([[0.05, 0.9], [0.95, 1.0]])
    cal = expected_calibration_error(y, p, n_bins=10)
    assert cal["n"] == 3
    last = cal["table"][-1]
    assert last["count"] == 2 and last["frac_pos"] == 1.0 and last["mean_pred"] == pytest.approx(0.975)
    assert cal["table"][3]["mean_pred"] is None
    assert cal["ece"] == pytest.approx((0.05 + 2 * 0.025) / 3)


def test_fit_temperature_recovers_two():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(20_000, 3))
    y = (rng.random(z.shape) < expit(z)).astype(float)
    y[::9, 1] = np.nan
    p_model = expit(2 * z)  # overconfident: logits doubled
    t = fit_temperature(y, p_model)
    assert t == pytest.approx(2.0, rel=0.06)
    fixed = apply_temperature(p_model, t)
    assert expected_calibration_error(y, fixed)["ece"] < expected_calibration_error(y, p_model)["ece"]
    assert np.allclose(apply_temperature(p_model, 1.0), np.clip(p_model, 1e-7, 1 - 1e-7))
