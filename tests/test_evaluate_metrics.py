"""Patient-grouped bootstrap metrics (chestdx.evaluate.metrics / bootstrap / ranking)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from chestdx.evaluate.bootstrap import bootstrap_indices, group_codes, patient_counts
from chestdx.evaluate.metrics import label_metrics, multilabel_metrics
from chestdx.evaluate.ranking import ranking_replicates


def synth(
    n_patients: int,
    per_patient: int = 2,
    seed: int = 0,
    prevalence: float = 0.3,
    sep: float = 1.2,
    duplicate: bool = False,
):
    """Images grouped by patient; patients share their label; score = sep * y + noise.

    ``duplicate``: every image of a patient is a copy (same score)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per_patient)
    y = np.repeat((rng.random(n_patients) < prevalence).astype(float), per_patient)
    noise = np.repeat(rng.normal(size=n_patients), per_patient) if duplicate else rng.normal(size=y.size)
    p = 1 / (1 + np.exp(-(sep * y - sep / 2 + noise)))
    return y, np.round(p, 2), groups  # rounding creates ties


def test_bootstrap_indices_keep_patients_whole():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    reps = bootstrap_indices(groups, n_boot=20, seed=1)
    assert len(reps) == 20
    for idx in reps:
        drawn = groups[idx]
        for g in np.unique(drawn):
            assert (drawn == g).sum() % (groups == g).sum() == 0  # whole patients only
        assert len(np.unique(idx)) <= len(idx)
    assert all(np.array_equal(a, b) for a, b in zip(reps, bootstrap_indices(groups, 20, 1), strict=True))


def test_bootstrap_indices_match_internal_replicates():
    y, p, groups = synth(100, per_patient=3, seed=2)
    codes = group_codes(groups, len(y))
    reps = ranking_replicates(y, p, codes, patient_counts(codes, 10, seed=4))["auroc"]
    for b, idx in enumerate(bootstrap_indices(groups, 10, seed=4)):
        assert reps[b] == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-12)


def test_patient_counts_draw_g_patients_per_replicate():
    codes = group_codes(np.array([5, 5, 7, 9, 9, 9]), 6)
    counts = patient_counts(codes, n_boot=50, seed=0)
    assert counts.shape == (50, 3)
    assert (counts.sum(axis=1) == 3).all()


def test_weighted_ranking_matches_sklearn_with_weights():
    y, p, groups = synth(150, seed=3)
    codes = group_codes(groups, len(y))
    w = patient_counts(codes, 5, seed=2)[:, codes]
    reps = ranking_replicates(y, p, np.arange(len(y)), w)  # one "patient" per image: weights = w
    auc, ap = reps["auroc"], reps["auprc"]
    for b in range(5):
        assert auc[b] == pytest.approx(roc_auc_score(y, p, sample_weight=w[b]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, p, sample_weight=w[b]), abs=1e-12)
    # grouped form gives the same numbers as the expanded weights
    grouped = ranking_replicates(y, p, codes, patient_counts(codes, 5, seed=2))
    assert np.allclose(grouped["auroc"], auc) and np.allclose(grouped["auprc"], ap)
    none = ranking_replicates(y, p, codes, np.zeros((1, codes.max() + 1), dtype=int))
    assert np.isnan(none["auroc"]).all() and np.isnan(none["auprc"]).all()


def test_label_metrics_matches_sklearn_and_ci_contains_point():
    y, p, groups = synth(300)
    res = label_metrics(y, p, groups, n_boot=300, seed=0)
    assert res["estimable"] and res["reason"] is None
    assert res["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert res["auprc"] == pytest.approx(average_precision_score(y, p))
    for m in ("auroc", "auprc"):
        lo, hi = res[f"{m}_ci"]
        assert lo <= res[m] <= hi
    assert res["n_pos"] + res["n_neg"] == res["n"] == len(y)
    json.dumps(res, allow_nan=False)


def test_ci_narrows_with_more_patients():
    small = label_metrics(*synth(200, seed=1), n_boot=300)
    large = label_metrics(*synth(2000, seed=1), n_boot=300)
    width = lambda r: r["auroc_ci"][1] - r["auroc_ci"][0]  # noqa: E731
    assert width(large) < 0.6 * width(small)


def test_few_positives_not_estimable():
    y, p, groups = synth(200, prevalence=0.0)
    y[:4] = 1
    res = label_metrics(y, p, groups, n_boot=50)
    assert res["estimable"] is False and res["auroc"] is None and res["auroc_ci"] is None
    assert "4 positive" in res["reason"]


def test_nan_labels_are_masked():
    y, p, groups = synth(300, seed=4)
    y_nan = y.copy()
    y_nan[::7] = np.nan
    res = label_metrics(y_nan, p, groups, n_boot=50)
    known = ~np.isnan(y_nan)
    assert res["n_missing"] == int((~known).sum())
    assert res["auroc"] == pytest.approx(roc_auc_score(y[known], p[known]))


def test_patient_bootstrap_wider_than_image_bootstrap_for_duplicates():
    y, p, groups = synth(300, per_patient=6, seed=5, duplicate=True)  # 6 copies per patient
    patient = label_metrics(y, p, groups, n_boot=400)
    image = label_metrics(y, p, None, n_boot=400)
    assert patient["auroc"] == image["auroc"]
    wp = patient["auroc_ci"][1] - patient["auroc_ci"][0]
    wi = image["auroc_ci"][1] - image["auroc_ci"][0]
    assert wp > 1.5 * wi


def test_skipped_replicates_are_counted():
    y, p, groups = synth(60, seed=6, prevalence=0.0)
    y[groups < 2] = 1  # 2 positive patients, 4 positive images
    res = label_metrics(y, p, groups, n_boot=300, min_pos=4)
    assert res["estimable"] and res["n_boot_skipped"] > 0  # (58/60)^60 ~ 13% of replicates lack positives


def test_multilabel_macro_uses_same_resamples():
    y1, p1, groups = synth(400, seed=7)
    y2, p2, _ = synth(400, seed=8)
    y3 = np.zeros_like(y1)
    y3[:2] = 1  # not estimable
    y, p = np.stack([y1, y2, y3], 1), np.stack([p1, p2, p1], 1)
    res = multilabel_metrics(y, p, groups, ["A", "B", "C"], n_boot=200, seed=0)
    assert set(res["labels"]) == {"A", "B", "C"}
    assert res["macro"]["labels"] == ["A", "B"] and res["macro"]["excluded"] == ["C"]
    assert res["macro"]["auroc"] == pytest.approx((res["labels"]["A"]["auroc"] + res["labels"]["B"]["auroc"]) / 2)
    lo, hi = res["macro"]["auroc_ci"]
    assert lo <= res["macro"]["auroc"] <= hi
    # same seed, same groups -> per-label results identical to label_metrics
    assert res["labels"]["A"] == label_metrics(y1, p1, groups, n_boot=200, seed=0)
    json.dumps(res, allow_nan=False)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        label_metrics(np.array([0, 2, 1.0]), np.array([0.1, 0.2, 0.3]), None, n_boot=5)
    with pytest.raises(ValueError, match="NaN"):
        label_metrics(np.array([0, 1.0]), np.array([np.nan, 0.2]), None, n_boot=5)
