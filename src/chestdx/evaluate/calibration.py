"""Calibration: expected calibration error with its reliability table, and temperature scaling."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

EPS = 1e-7
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (y, p) over entries whose label is known (not NaN)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y has {y.size} entries, p has {p.size}")
    known = ~np.isnan(y)
    return y[known], p[known]


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> dict:
    """ECE over equal-width probability bins; arrays of any shape are pooled, NaN labels masked.

    Returns ``{"ece", "mce", "n", "n_bins", "table"}`` where ``table`` lists every bin as
    ``{bin, lo, hi, mean_pred, frac_pos, count}`` (mean_pred / frac_pos None for empty bins).
    """
    y, p = _known(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    full = count > 0
    mean_pred = np.divide(sum_p, count, out=np.full(n_bins, np.nan), where=full)
    frac_pos = np.divide(sum_y, count, out=np.full(n_bins, np.nan), where=full)
    gap = np.abs(mean_pred - frac_pos)
    n = int(count.sum())
    table = [
        {
            "bin": b,
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "mean_pred": float(mean_pred[b]) if full[b] else None,
            "frac_pos": float(frac_pos[b]) if full[b] else None,
            "count": int(count[b]),
        }
        for b in range(n_bins)
    ]
    return {
        "ece": float((count[full] * gap[full]).sum() / n) if n else None,
        "mce": float(gap[full].max()) if n else None,
        "n": n,
        "n_bins": int(n_bins),
        "table": table,
    }


def fit_temperature(y_val: np.ndarray, p_val: np.ndarray) -> float:
    """One temperature T shared by all labels, minimizing the masked NLL of sigmoid(logit(p) / T).

    Fitted on validation data only (bounded search on log T in [log 0.05, log 20]); 1.0 when there
    are no known validation labels. T > 1 softens overconfident probabilities.
    """
    y, p = _known(y_val, p_val)
    if y.size == 0:
        return 1.0
    z = logit(p)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    fit = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(fit.x))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities sigmoid(logit(p) / T) (float64, same shape; monotone in p)."""
    return expit(logit(p) / float(temperature))
