"""AUROC and average precision on every bootstrap replicate at once.

A replicate gives image i the weight ``counts[b, codes[i]]`` (its patient's draw count). Only the
distinct positive scores matter: negatives are binned as "between two positive scores" or "tied
with one", and the weight per (bin, replicate) is one sparse product. No (replicates x images)
matrix is built. With unit weights the results equal sklearn's ``roc_auc_score`` /
``average_precision_score`` (the tests check this with ``sample_weight``).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from chestdx.evaluate.bootstrap import MAX_BLOCK


def _incidence(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> csr_matrix:
    return csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)


def ranking_replicates(y: np.ndarray, p: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> dict:
    """``{"auroc": (B,), "auprc": (B,)}`` for the B rows of ``counts``; NaN where a class has no weight.

    ``y`` is 0/1 without NaN, ``codes`` the patient code (column of ``counts``) of each image.
    AUROC counts ties as 1/2; AUPRC is sklearn's step-wise average precision.
    """
    p = np.asarray(p, dtype=np.float64)
    is_pos = np.asarray(y) == 1
    levels = np.unique(p[is_pos])  # distinct positive scores, ascending
    k = len(levels)
    neg_p = p[~is_pos]
    slot = np.searchsorted(levels, neg_p, side="left")  # levels[slot-1] < v <= levels[slot]
    tied = (slot < k) & (levels[np.minimum(slot, max(k - 1, 0))] == neg_p) if k else np.zeros(len(neg_p), bool)
    n_groups = counts.shape[1]
    m_pos = _incidence(np.searchsorted(levels, p[is_pos]), codes[is_pos], (k, n_groups))
    m_neg = _incidence(2 * slot + tied, codes[~is_pos], (2 * k + 1, n_groups))  # bin 2j: below level j

    n_boot = counts.shape[0]
    out = {"auroc": np.full(n_boot, np.nan), "auprc": np.full(n_boot, np.nan)}
    step = max(1, MAX_BLOCK // (2 * k + 1))
    for start in range(0, n_boot, step):
        sl = slice(start, min(n_boot, start + step))
        c = counts[sl].T.astype(np.float64)  # (G, b)
        pos, neg = m_pos @ c, m_neg @ c  # (k, b), (2k + 1, b)
        cum_neg = np.cumsum(neg, axis=0)
        below, tie = cum_neg[0:-1:2], neg[1::2]  # negatives strictly below / tied with each level
        wp, wn = pos.sum(axis=0), cum_neg[-1]
        valid = (wp > 0) & (wn > 0)
        num = (pos * (below + 0.5 * tie)).sum(axis=0)
        tp = wp - np.cumsum(pos, axis=0) + pos  # positives scoring >= level
        called = tp + wn - below  # everything scoring >= level
        precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
        ap = (pos * precision).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["auroc"][sl] = np.where(valid, num / (wp * wn), np.nan)
            out["auprc"][sl] = np.where(valid, ap / wp, np.nan)
    return out
