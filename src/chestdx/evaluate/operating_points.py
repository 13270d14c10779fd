"""Operating points on calibrated out-of-fold probabilities, each with its stated meaning and patient-bootstrap CIs.

Policies: ``balanced`` (Youden: max sensitivity + specificity - 1), ``sensitivity:<x>`` (the highest threshold
reaching sensitivity >= x), ``specificity:<x>`` (the lowest threshold keeping specificity >= x), ``f1`` (max F1:
calls a rare finding about as often as it occurs, where Youden calls it on a fixed share of the negatives). A finding is
called when ``p >= threshold``. PPV/NPV at a prevalence pi other than the training one follow from sensitivity
s and specificity c: PPV = s*pi / (s*pi + (1-c)*(1-pi)), NPV = c*(1-pi) / (c*(1-pi) + (1-s)*pi); their CIs are
percentiles over the same patient resamples.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from chestdx.evaluate.bootstrap import percentile_ci
from chestdx.evaluate.thresholds import operating_point_core
from chestdx.policies import parse_policy, policy_key  # noqa: F401 (re-exported)

DEFAULT_POLICIES = ("balanced", "sensitivity:0.90", "specificity:0.90", "f1")
KEEP = ("threshold", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "ppv", "ppv_ci", "npv",
        "npv_ci")


def pick_threshold(y: np.ndarray, p: np.ndarray, policy: str) -> float:
    """The policy's threshold on ``p`` (labels known, both classes present)."""
    kind, target = parse_policy(policy)
    if kind == "f1":
        prec, rec, thr = precision_recall_curve(y, p)
        f1 = np.divide(2 * prec[:-1] * rec[:-1], prec[:-1] + rec[:-1], out=np.zeros(len(thr)),
                       where=prec[:-1] + rec[:-1] > 0)
        return float(thr[int(np.argmax(f1))])
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the "call nothing" point (threshold inf)
    if kind == "balanced":
        i = int(np.argmax(tpr - fpr))  # ties: the highest threshold
    elif kind == "sensitivity":
        i = int(np.flatnonzero(tpr >= target - 1e-12)[0])
    else:  # specificity: the last (lowest) threshold whose false-positive rate stays <= 1 - target
        ok = np.flatnonzero(fpr <= 1.0 - target + 1e-12)
        i = int(ok[-1]) if len(ok) else 0
    return float(thr[i])


def prevalence_adjusted(sens: np.ndarray, spec: np.ndarray, prevalence: float) -> tuple[np.ndarray, np.ndarray]:
    """(PPV, NPV) at ``prevalence`` from sensitivity and specificity (arrays or scalars; NaN where undefined)."""
    sens, spec = np.asarray(sens, np.float64), np.asarray(spec, np.float64)
    tp, fp = sens * prevalence, (1.0 - spec) * (1.0 - prevalence)
    tn, fn = spec * (1.0 - prevalence), (1.0 - sens) * prevalence
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fp > 0, tp / (tp + fp), np.nan), np.where(tn + fn > 0, tn / (tn + fn), np.nan)


def _replicate_rates(y: np.ndarray, called: np.ndarray, codes: np.ndarray, counts: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity in each patient resample (rows of ``counts``)."""
    n_groups = counts.shape[1]
    cell = lambda mask: counts @ np.bincount(codes, weights=mask.astype(np.float64), minlength=n_groups)  # noqa: E731
    pos = y == 1
    tp, fn, tn, fp = cell(pos & called), cell(pos & ~called), cell(~pos & ~called), cell(~pos & called)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / (tp + fn), np.nan), np.where(tn + fp > 0, tn / (tn + fp), np.nan)


def operating_point(y: np.ndarray, p: np.ndarray, policy: str, codes: np.ndarray, counts: np.ndarray,
                    prevalence: float | None = None, ci: float = 0.95) -> dict:
    """One policy's threshold and OOF sensitivity, specificity, PPV, NPV with CIs (+ at a stated prevalence).

    ``y``/``p``/``codes``: this label's known rows; ``counts``: patient resamples shared by every label.
    """
    threshold = pick_threshold(y, p, policy)
    res = operating_point_core(y, p, threshold, codes, counts, ci)
    out = {k: _r(res.get(k)) for k in KEEP}
    out["threshold"] = float(threshold)  # exact: rounding would move it across a tied score
    out["n_pos"], out["n_neg"] = int((y == 1).sum()), int((y == 0).sum())
    out["false_alarm_rate"] = None if out["specificity"] is None else _r(1.0 - out["specificity"])
    if prevalence is not None:
        sens_r, spec_r = _replicate_rates(y, p >= threshold, codes, counts)
        ppv_r, npv_r = prevalence_adjusted(sens_r, spec_r, prevalence)
        ppv, npv = prevalence_adjusted(res["sensitivity"], res["specificity"], prevalence)
        out["at_prevalence"] = {"prevalence": float(prevalence), "ppv": _r(ppv), "ppv_ci": _r(percentile_ci(ppv_r, ci)),
                                "npv": _r(npv), "npv_ci": _r(percentile_ci(npv_r, ci))}
    return out


def _r(v):
    """Round floats (and lists of them) to 4 decimals; NaN -> None (JSON-safe)."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return [_r(x) for x in v]
    v = float(v)
    return None if not np.isfinite(v) else round(v, 4)
