"""Calibrator math: the stored parameters, applied with numpy alone, reproduce sklearn's fitted models; the
selection rule (CV log-loss, Platt when positives are few, temperature without positives)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from chestdx.evaluate.calibrators import (
    MIN_POS_ISOTONIC,
    apply_calibrator,
    fit_isotonic,
    fit_platt,
    logits_from_probs,
    select_calibrator,
)
from chestdx.inference.calibration import Calibration


def _data(n=2000, a=0.6, b=-1.5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, n)
    y = (rng.random(n) < expit(a * z + b)).astype(float)
    return z, y


def _numpy_apply(cal: dict, z: np.ndarray) -> np.ndarray:
    """The torch-free reader's result for one label."""
    return Calibration(["x"], {"x": {"calibrator": cal}}).apply(z[:, None])[:, 0]


def test_platt_matches_sklearn_and_recovers_the_true_map():
    z, y = _data()
    cal = fit_platt(z, y)
    ref = LogisticRegression(C=1e4, max_iter=1000).fit(z[:, None], y.astype(int))
    grid = np.linspace(-12, 12, 101)
    np.testing.assert_allclose(_numpy_apply(cal, grid), ref.predict_proba(grid[:, None])[:, 1], atol=1e-9)
    assert cal["a"] == pytest.approx(0.6, abs=0.08) and cal["b"] == pytest.approx(-1.5, abs=0.2)


def test_isotonic_knots_match_sklearn_predict_including_outside_the_range():
    z, y = _data(seed=1)
    cal = fit_isotonic(z, y)
    ref = IsotonicRegression(y_min=1e-3, y_max=1 - 1e-3, out_of_bounds="clip").fit(z, y)
    grid = np.concatenate([np.linspace(-20, 20, 401), z[:50]])
    np.testing.assert_allclose(_numpy_apply(cal, grid), ref.predict(grid), atol=1e-12)
    assert np.all(np.diff(cal["x"]) > 0) and np.all(np.diff(cal["y"]) >= 0)
    assert min(cal["y"]) >= 1e-3 and max(cal["y"]) <= 1 - 1e-3  # never "certain"


def test_temperature_and_identity_and_the_evaluate_side_agree():
    z = np.linspace(-30, 30, 61)
    for cal in ({"method": "temperature", "t": 1.7}, {"method": "identity"}):
        np.testing.assert_allclose(_numpy_apply(cal, z), apply_calibrator(cal, z), atol=1e-12)
    np.testing.assert_allclose(_numpy_apply({"method": "temperature", "t": 2.0}, z), expit(z / 2.0), atol=1e-12)
    assert np.isfinite(_numpy_apply({"method": "identity"}, np.array([-800.0, 800.0]))).all()


def test_logits_round_trip_through_float64_probabilities():
    z = np.array([-30.0, -5.0, 0.0, 4.0, 20.0])
    np.testing.assert_allclose(logits_from_probs(expit(z)), z, rtol=1e-6)


def test_selection_picks_isotonic_for_a_non_sigmoid_shape_with_many_positives():
    rng = np.random.default_rng(2)
    z = rng.uniform(-4, 4, 3000)
    y = (rng.random(3000) < np.where(np.abs(z) < 1, 0.8, 0.1)).astype(float)  # not monotone-sigmoid in z
    groups = np.arange(3000) // 2
    cal, sel, held = select_calibrator(z, y, groups)
    assert sel["chosen"] == "isotonic" and sel["isotonic_logloss"] < sel["platt_logloss"]
    assert held.shape == z.shape and np.isfinite(held).all()


def test_selection_falls_back_to_platt_with_few_positives_and_temperature_without():
    z, y = _data(300, seed=3)
    y[:] = 0
    y[np.argsort(-z)[: MIN_POS_ISOTONIC - 5]] = 1
    cal, sel, _ = select_calibrator(z, y, np.arange(300))
    assert cal["method"] == "platt" and "fewer than 30" in sel["reason"]
    cal, sel, held = select_calibrator(z, np.zeros(300), np.arange(300), temperature=1.3)
    assert cal == {"method": "temperature", "t": 1.3} and sel["chosen"] == "temperature" and held is None
