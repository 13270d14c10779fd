"""Operating points: policies, thresholds, CIs, prevalence-adjusted PPV/NPV."""

from __future__ import annotations

import numpy as np
import pytest

from chestdx.evaluate.bootstrap import group_codes, patient_counts
from chestdx.evaluate.operating_points import (
    operating_point,
    parse_policy,
    pick_threshold,
    policy_key,
    prevalence_adjusted,
)


def _scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(float)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.15, n), 0, 1)
    return y, p


def test_policy_names():
    assert parse_policy("balanced") == ("balanced", None) and parse_policy("F1") == ("f1", None)
    assert parse_policy("sensitivity:0.9") == ("sensitivity", 0.9)
    assert policy_key("Specificity:0.9") == "specificity:0.90"
    for bad in ("fast", "sensitivity", "sensitivity:1.5", "specificity:abc"):
        with pytest.raises(ValueError, match="policy"):
            parse_policy(bad)


def test_thresholds_meet_their_targets():
    y, p = _scores()
    for target in (0.8, 0.9, 0.95):
        t = pick_threshold(y, p, f"sensitivity:{target}")
        assert (p[y == 1] >= t).mean() >= target
        assert (p[y == 1] >= np.nextafter(t, 1)).mean() < target or t == p.max()  # highest such threshold
        t = pick_threshold(y, p, f"specificity:{target}")
        assert (p[y == 0] < t).mean() >= target
    t = pick_threshold(y, p, "f1")
    f1 = lambda th: 2 * ((p >= th) & (y == 1)).sum() / ((p >= th).sum() + (y == 1).sum())  # noqa: E731
    assert f1(t) >= max(f1(th) for th in np.unique(p)) - 1e-12
    t = pick_threshold(y, p, "balanced")
    youden = lambda th: (p[y == 1] >= th).mean() + (p[y == 0] < th).mean()  # noqa: E731
    assert youden(t) >= max(youden(th) for th in np.unique(p)) - 1e-12


def test_operating_point_rates_cis_and_stated_prevalence():
    y, p = _scores()
    groups = np.arange(len(y)) // 2
    codes = group_codes(groups, len(y))
    op = operating_point(y, p, "sensitivity:0.9", codes, patient_counts(codes, 300, 0), prevalence=0.02)
    called = p >= op["threshold"]
    assert op["sensitivity"] == pytest.approx(called[y == 1].mean(), abs=1e-4)
    assert op["specificity"] == pytest.approx((~called)[y == 0].mean(), abs=1e-4)
    assert op["ppv"] == pytest.approx(y[called].mean(), abs=1e-4)
    for k in ("sensitivity", "specificity", "ppv", "npv"):
        lo, hi = op[f"{k}_ci"]
        assert lo <= op[k] <= hi and hi - lo > 0
    ppv, npv = prevalence_adjusted(op["sensitivity"], op["specificity"], 0.02)
    stated = op["at_prevalence"]
    assert stated["ppv"] == pytest.approx(float(ppv), abs=1e-4) and stated["ppv"] < op["ppv"]  # rarer: lower PPV
    assert stated["ppv_ci"][0] <= stated["ppv"] <= stated["ppv_ci"][1] and stated["npv"] > 0.99
    # at the training prevalence the formula gives back the observed PPV
    train_ppv, _ = prevalence_adjusted(op["sensitivity"], op["specificity"], y.mean())
    assert float(train_ppv) == pytest.approx(op["ppv"], abs=2e-3)
