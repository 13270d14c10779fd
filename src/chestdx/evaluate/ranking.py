"""Weighted AUROC / average precision, vectorized over bootstrap replicates (rows of a weight matrix).

With unit weights these equal sklearn's ``roc_auc_score`` / ``average_precision_score`` (the tests
check this against sklearn with ``sample_weight``); replicates lacking a class give NaN.
"""

from __future__ import annotations

import numpy as np


def _blocks(y: np.ndarray, p: np.ndarray, weights: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, scores sorted; each (b, n_distinct)."""
    order = np.argsort(-p if descending else p, kind="mergesort")
    ps = p[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    w = np.atleast_2d(weights)[:, order]
    ys = y[order].astype(bool)
    pos = np.add.reduceat(w * ys, starts, axis=1)
    neg = np.add.reduceat(w * ~ys, starts, axis=1)
    return pos, neg


def weighted_auroc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC per weight row (ties count 1/2); NaN where a row has no positive or no negative weight."""
    pos, neg = _blocks(y, p, weights, descending=False)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    wp, wn = pos.sum(axis=1), neg.sum(axis=1)
    valid = (wp > 0) & (wn > 0)
    out = np.full(len(wp), np.nan)
    out[valid] = num[valid] / (wp[valid] * wn[valid])
    return out


def weighted_auprc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step-wise definition) per weight row; NaN if a class is missing."""
    pos, neg = _blocks(y, p, weights, descending=True)
    tp = np.cumsum(pos, axis=1)
    called = tp + np.cumsum(neg, axis=1)
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
    wp, wn = pos.sum(axis=1), neg.sum(axis=1)
    valid = (wp > 0) & (wn > 0)
    out = np.full(len(wp), np.nan)
    out[valid] = (pos * precision).sum(axis=1)[valid] / wp[valid]
    return out
