"""DeLong test, paired bootstrap and run comparison (chestdx.evaluate.compare)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from chestdx.evaluate.compare import compare_predictions, delong_test, paired_bootstrap_diff

LABELS = ["Effusion", "Mass", "Hernia"]


def slow_delong(y, a, b):
    """Direct O(m n) DeLong (1988) with the psi kernel, for checking the fast algorithm."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, aucs = [], [], []
    for s in (a, b):
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.stack(v10)), np.cov(np.stack(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    zval = (aucs[1] - aucs[0]) / np.sqrt(var)
    return aucs, np.sqrt(var), 2 * norm.sf(abs(zval))


def scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    a = np.round(1 / (1 + np.exp(-(1.0 * y + rng.normal(size=n)))), 2)  # ties
    b = np.round(1 / (1 + np.exp(-(1.6 * y + rng.normal(size=n)))), 2)
    return y, a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_slow_and_sklearn(seed):
    y, a, b = scores(seed=seed)
    res = delong_test(y, a, b)
    aucs, se, p_value = slow_delong(y, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a)) == pytest.approx(aucs[0])
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert res["se"] == pytest.approx(se, rel=1e-9)
    assert res["p_value"] == pytest.approx(p_value, rel=1e-9)
    assert res["diff"] == pytest.approx(res["auc_b"] - res["auc_a"])


def test_delong_identical_predictions():
    y, a, _ = scores()
    res = delong_test(y, a, a)
    assert res["diff"] == 0 and res["p_value"] == 1.0


def test_paired_bootstrap_diff_ci():
    y, a, b = scores(n=600)
    groups = np.arange(len(y)) // 2
    res = paired_bootstrap_diff(y, a, b, groups, n_boot=300)
    lo, hi = res["ci"]
    assert lo <= res["diff"] <= hi and lo > 0  # b is clearly better
    assert res["diff"] == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))


def table(seed: int, sep: float, n_patients: int = 300) -> pd.DataFrame:
    """Predictions table (contracts.md) with the same truth for every seed, scores varying with sep."""
    truth = np.random.default_rng(123)
    pid = np.repeat(np.arange(n_patients), 2)
    df = pd.DataFrame(
        {
            "image_id": [f"img{i:05d}.png" for i in range(pid.size)],
            "patient_id": pid,
            "split": np.where(pid % 5 == 0, "val", "test"),
        }
    )
    rng = np.random.default_rng(seed)
    for lab, prev in zip(LABELS, (0.3, 0.2, 0.0), strict=True):
        y = (truth.random(pid.size) < prev).astype(float)
        df[lab] = y
        df[f"prob_{lab}"] = 1 / (1 + np.exp(-(sep * y - 1 + rng.normal(size=y.size))))
    df.loc[::17, "Mass"] = np.nan
    return df


def test_compare_predictions_table():
    runs = {"base": table(0, 1.0), "better": table(1, 2.5), "same": table(0, 1.0)}
    out = compare_predictions(runs, LABELS, n_boot=200)
    assert set(out["label"]) == {*LABELS, "macro"} and len(out) == 4 * 3
    assert out.attrs["reference"] == "base"
    row = out[(out.label == "Effusion") & (out.run == "better")].iloc[0]
    assert row["diff_vs_ref"] > 0 and row["diff_lo"] > 0 and row["delong_p"] < 0.01
    same = out[(out.label == "Effusion") & (out.run == "same")].iloc[0]
    assert same["diff_vs_ref"] == 0 and same["delong_p"] == 1.0
    ref = out[out.run == "base"]
    assert ref["diff_vs_ref"].isna().all() and ref["delong_p"].isna().all()
    hernia = out[out.label == "Hernia"]
    assert not hernia["estimable"].any() and hernia["auroc"].isna().all()
    macro = out[(out.label == "macro") & (out.run == "better")].iloc[0]
    assert macro["diff_lo"] > 0 and np.isnan(macro["delong_p"])


def test_compare_refuses_different_images_or_truth():
    a, b = table(0, 1.0), table(1, 1.0)
    with pytest.raises(ValueError, match=r"different test image sets: 1 only in 'a'.*img00002"):
        compare_predictions({"a": a, "b": b.drop(index=2)}, LABELS, n_boot=10)
    b.loc[3, "Effusion"] = 1 - b.loc[3, "Effusion"]
    with pytest.raises(ValueError, match=r"disagree on the true labels of 1 test images.*img00003"):
        compare_predictions({"a": a, "b": b}, LABELS, n_boot=10)
