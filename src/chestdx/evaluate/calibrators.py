"""Per-label probability calibrators fitted on out-of-fold (or validation) logits, chosen by grouped CV log-loss.

Each calibrator is a plain dict (the ``calibrator`` entry of ``calibration.json``, docs/contracts.md) that
:class:`chestdx.inference.calibration.Calibration` applies with numpy alone:

- Platt: ``p = sigmoid(a*z + b)``, a logistic regression on the logit ``z`` (sklearn, nearly unpenalized).
- isotonic: ``p = np.interp(z, x, y)``, sklearn's ``IsotonicRegression`` on ``z`` stored as its knots
  (probabilities kept in [0.001, 0.999] so no finding is ever "certain").
- temperature ``p = sigmoid(z / t)`` (one shared t) and identity ``p = sigmoid(z)``.

Choice per label: the lower patient-grouped cross-validated log-loss; Platt when the label has fewer than
``MIN_POS_ISOTONIC`` (30) positives or negatives (isotonic overfits a handful of positives); the shared
temperature when a label has no positive or no negative out-of-fold image.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from chestdx.inference.calibration import apply_calibrator  # the one calibrator rule (also imported from here)

MIN_POS_ISOTONIC = 30
ISOTONIC_CLIP = 1e-3
CV_SPLITS = 5
PLATT_C = 1e4  # inverse L2 strength: effectively unpenalized, but finite on separable data
LOG_EPS = 1e-6


def logits_from_probs(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid; probabilities in predictions tables are float64, so this recovers the logit."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1.0 - 1e-15)
    return np.log(p) - np.log1p(-p)


def fit_platt(z: np.ndarray, y: np.ndarray) -> dict:
    """Logistic regression of ``y`` on ``z``; one class only -> constant at the smoothed prevalence."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    n_pos = float(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return {"method": "platt", "a": 0.0, "b": float(np.log((n_pos + 1) / (len(y) - n_pos + 1)))}
    lr = LogisticRegression(C=PLATT_C, max_iter=1000)
    lr.fit(z[:, None], y.astype(int))
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def fit_isotonic(z: np.ndarray, y: np.ndarray) -> dict:
    """Non-decreasing step fit of ``y`` on ``z`` as knots (x increasing) for ``np.interp``."""
    iso = IsotonicRegression(y_min=ISOTONIC_CLIP, y_max=1.0 - ISOTONIC_CLIP, increasing=True, out_of_bounds="clip")
    iso.fit(np.asarray(z, np.float64), np.asarray(y, np.float64))
    return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, LOG_EPS, 1.0 - LOG_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


def cross_fitted(z: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Held-out calibrated probabilities per method from a patient-grouped, stratified CV; None if too few cases."""
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    splits = min(CV_SPLITS, n_pos, n_neg, len(np.unique(groups)))
    if splits < 2:
        return None
    out = {m: np.full(len(y), np.nan) for m in FITTERS}
    cv = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits" is expected
        warnings.simplefilter("ignore", UserWarning)
        for train, held in cv.split(z[:, None], y.astype(int), groups):
            for name, fitter in FITTERS.items():
                out[name][held] = apply_calibrator(fitter(z[train], y[train]), z[held])
    return out


def select_calibrator(z: np.ndarray, y: np.ndarray, groups: np.ndarray, temperature: float = 1.0,
                      seed: int = 0, min_pos_isotonic: int = MIN_POS_ISOTONIC
                      ) -> tuple[dict, dict, np.ndarray | None]:
    """Fit and choose one label's calibrator on its known OOF rows.

    Returns ``(calibrator, selection, held_out_probs)``: ``selection`` records both CV log-losses, the choice
    and its reason; ``held_out_probs`` are the chosen method's cross-fitted probabilities (an honest picture
    of calibration for reliability diagrams; the fitted calibrator's own predictions would be optimistic), or
    None when there are too few positives or negatives to cross-fit (< 2) or none at all.
    """
    z, y, groups = np.asarray(z, np.float64), np.asarray(y, np.float64), np.asarray(groups)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        cal = {"method": "temperature", "t": float(temperature)}
        sel = {"platt_logloss": None, "isotonic_logloss": None, "chosen": "temperature",
               "reason": f"{n_pos} positive / {n_neg} negative out-of-fold images: shared temperature"}
        return cal, sel, None
    held = cross_fitted(z, y, groups, seed)
    losses = {m: (log_loss(y, held[m]) if held is not None else None) for m in FITTERS}
    if min(n_pos, n_neg) < min_pos_isotonic:
        chosen, reason = "platt", f"fewer than {min_pos_isotonic} positives or negatives: Platt"
    elif losses["isotonic"] < losses["platt"]:
        chosen, reason = "isotonic", "lower cross-validated log-loss"
    else:
        chosen, reason = "platt", "lower cross-validated log-loss"
    sel = {"platt_logloss": _round(losses["platt"]), "isotonic_logloss": _round(losses["isotonic"]),
           "chosen": chosen, "reason": reason}
    cal = FITTERS[chosen](z, y)
    return cal, sel, None if held is None else held[chosen]


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 5)
