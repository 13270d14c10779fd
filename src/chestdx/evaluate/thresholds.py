"""Decision thresholds chosen on validation data, and operating-point metrics with patient-bootstrap CIs.

Convention: a finding is called positive when ``p >= threshold`` (as in sklearn's ``roc_curve``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_curve

from chestdx.evaluate.bootstrap import group_codes, patient_counts, percentile_ci
from chestdx.evaluate.metrics import _binary

METHODS = ("youden", "sensitivity")
RATES = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _pick(y: np.ndarray, p: np.ndarray, method: str, target_sensitivity: float) -> tuple[float, float, float]:
    """(threshold, sensitivity, specificity) on this data for the method."""
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the "call nothing positive" point (thr = inf)
    if method == "youden":
        i = int(np.argmax(tpr - fpr))  # ties: the highest threshold (most specific)
    else:
        i = int(np.flatnonzero(tpr >= target_sensitivity - 1e-12)[0])  # highest threshold reaching target
    return float(thr[i]), float(tpr[i]), float(1.0 - fpr[i])


def select_thresholds(
    y_val: np.ndarray,
    p_val: np.ndarray,
    labels: Sequence[str],
    method: str = "youden",
    target_sensitivity: float = 0.9,
    fallback: float | None = 0.5,
    min_pos: int = 5,
) -> dict[str, dict]:
    """Per label: threshold with method, validation sensitivity/specificity, and a fallback ``reason``.

    ``youden`` maximizes sensitivity + specificity - 1; ``sensitivity`` takes the highest threshold
    whose validation sensitivity is >= ``target_sensitivity``. Labels with no positive or no negative
    validation image get ``fallback`` and a ``reason``; fewer than ``min_pos`` positives sets a
    ``warning``. Use validation data only, never test data.
    """
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose from {METHODS}")
    y_val, p_val = np.asarray(y_val, dtype=np.float64), np.asarray(p_val, dtype=np.float64)
    if y_val.ndim == 1:  # one label given as a vector
        y_val, p_val = y_val[:, None], p_val.reshape(-1, 1)
    y_val, p_val, known = _binary(y_val, p_val)
    if y_val.shape[1] != len(labels):
        raise ValueError(f"y_val has {y_val.shape[1]} columns for {len(labels)} labels")
    out: dict[str, dict] = {}
    for j, lab in enumerate(labels):
        y, p = y_val[known[:, j], j], p_val[known[:, j], j]
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        row = {
            "threshold": fallback,
            "method": method,
            "reason": None,
            "n_pos": n_pos,
            "n_neg": n_neg,
            "warning": None,
            "val_sensitivity": None,
            "val_specificity": None,
        }
        if n_pos == 0 or n_neg == 0:
            row["method"] = "fallback"
            row["reason"] = f"validation has {n_pos} positive / {n_neg} negative images; using {fallback}"
        else:
            if n_pos < min_pos:
                row["warning"] = f"only {n_pos} positive validation images: threshold is unreliable"
            row["threshold"], row["val_sensitivity"], row["val_specificity"] = _pick(y, p, method, target_sensitivity)
        if method == "sensitivity":
            row["target_sensitivity"] = float(target_sensitivity)
        out[lab] = row
    return out


def choose_thresholds(
    y_val: np.ndarray,
    p_val: np.ndarray,
    labels: Sequence[str],
    method: str = "youden",
    target_sensitivity: float = 0.9,
    fallback: float | None = 0.5,
) -> dict[str, float | None]:
    """``{label: threshold}`` chosen on validation data (see ``select_thresholds`` for the reasons)."""
    sel = select_thresholds(y_val, p_val, labels, method, target_sensitivity, fallback)
    return {lab: row["threshold"] for lab, row in sel.items()}


def _rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, F1 from (weighted) counts; NaN where undefined."""

    def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.full(np.shape(a), np.nan), where=b > 0)

    return {
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "ppv": div(tp, tp + fp),
        "npv": div(tn, tn + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
    }


def operating_point_core(
    y: np.ndarray, p: np.ndarray, threshold: float | None, codes: np.ndarray, counts: np.ndarray, ci: float
) -> dict:
    """``operating_point`` on precomputed patient resamples."""
    y, p, known = _binary(y, p)
    y, p, codes = y[known], p[known], codes[known]
    res: dict = {"threshold": None if threshold is None else float(threshold), "n": int(len(y))}
    if threshold is None:
        res["reason"] = "no threshold"
        return res
    pos, called = y == 1, p >= threshold
    cells = {"tp": pos & called, "fp": ~pos & called, "tn": ~pos & ~called, "fn": pos & ~called}
    res.update({k: int(v.sum()) for k, v in cells.items()})
    point = _rates(*(np.float64(res[k]) for k in ("tp", "fp", "tn", "fn")))
    n_groups = counts.shape[1]
    per_patient = {k: np.bincount(codes, weights=v.astype(np.float64), minlength=n_groups) for k, v in cells.items()}
    reps = _rates(*(counts @ per_patient[k] for k in ("tp", "fp", "tn", "fn")))
    for k in RATES:
        value = float(point[k])
        res[k] = None if np.isnan(value) else value
        res[f"{k}_ci"] = percentile_ci(reps[k], ci) if res[k] is not None else None
    res["n_boot"] = int(counts.shape[0])
    res["n_boot_skipped"] = int((np.isnan(reps["sensitivity"]) | np.isnan(reps["specificity"])).sum())
    return res


def operating_point(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float | None,
    groups: np.ndarray | Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """TP/FP/TN/FN and sensitivity, specificity, PPV, NPV, F1 at ``p >= threshold``.

    CIs are percentile intervals of a patient-grouped bootstrap (``groups`` = patient ids; ``None``:
    image-level), computed per metric over the replicates where it is defined. NaN labels are masked.
    Undefined metrics (zero denominator) are None.
    """
    codes = group_codes(groups, len(np.asarray(y)))
    return operating_point_core(y, p, threshold, codes, patient_counts(codes, n_boot, seed), ci)
