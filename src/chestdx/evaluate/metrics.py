"""AUROC / AUPRC per label with patient-grouped bootstrap CIs, and their macro mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from chestdx.evaluate.bootstrap import bootstrap_indices, group_codes, patient_counts, percentile_ci
from chestdx.evaluate.ranking import ranking_replicates

__all__ = ["bootstrap_indices", "label_metrics", "multilabel_metrics"]

RANKING = ("auroc", "auprc")


def _binary(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays and the mask of known labels; checks values are 0/1/NaN and p finite."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y shape {y.shape} != p shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{int((~np.isfinite(p)).sum())} predicted probabilities are NaN/inf")
    known = ~np.isnan(y)
    bad = known & (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(f"labels must be 0, 1 or NaN; found {np.unique(y[bad])[:5].tolist()}")
    return y, p, known


def label_core(
    y: np.ndarray,
    p: np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    min_pos: int,
    min_neg: int,
    ci: float,
) -> tuple[dict, dict | None]:
    """Result dict for one label plus its replicate arrays (None when not estimable)."""
    y, p, known = _binary(y, p)
    y, p, codes = y[known], p[known], codes[known]
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    res: dict = {
        "n": int(len(y)),
        "n_pos": n_pos,
        "n_neg": n_neg,
        "n_missing": int((~known).sum()),
        "n_patients": int(len(np.unique(codes))),
        "prevalence": float(n_pos / len(y)) if len(y) else None,
        "estimable": True,
        "reason": None,
        "auroc": None,
        "auroc_ci": None,
        "auprc": None,
        "auprc_ci": None,
        "n_boot": int(counts.shape[0]),
        "n_boot_skipped": 0,
    }
    if n_pos < min_pos or n_neg < min_neg:
        res["estimable"] = False
        res["reason"] = f"{n_pos} positive / {n_neg} negative images (need >= {min_pos} / >= {min_neg})"
        return res, None
    res["auroc"] = float(roc_auc_score(y, p))
    res["auprc"] = float(average_precision_score(y, p))
    reps = ranking_replicates(y, p, codes, counts)
    for m in RANKING:
        res[f"{m}_ci"] = percentile_ci(reps[m], ci)
    res["n_boot_skipped"] = int(np.isnan(reps["auroc"]).sum())
    return res, reps


def label_metrics(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray | Sequence | None,
    n_boot: int = 1000,
    seed: int = 0,
    min_pos: int = 5,
    min_neg: int = 5,
    ci: float = 0.95,
) -> dict:
    """AUROC and AUPRC of one label with percentile CIs from a patient-grouped bootstrap.

    ``y`` is 0/1/NaN (NaN = unknown, masked out); ``groups`` the patient id per image (``None``:
    image-level bootstrap). Not estimable (values None, ``reason`` set) with fewer than ``min_pos``
    positive or ``min_neg`` negative images. Replicates missing a class are skipped and counted in
    ``n_boot_skipped``. Returns a JSON-ready dict.
    """
    codes = group_codes(groups, len(np.asarray(y)))
    return label_core(y, p, codes, patient_counts(codes, n_boot, seed), min_pos, min_neg, ci)[0]


def macro_core(results: dict, reps: dict, ci: float) -> tuple[dict, dict]:
    """Macro mean over estimable labels; its CI from the per-replicate macro on the same resamples.

    A replicate in which any included label is undefined (missing a class) is skipped.
    """
    used = [lab for lab, r in results.items() if r["estimable"]]
    macro: dict = {
        "labels": used,
        "excluded": [lab for lab in results if lab not in used],
        "n_labels": len(used),
    }
    macro_reps: dict = {}
    for m in RANKING:
        if not used:
            macro[m], macro[f"{m}_ci"] = None, None
            continue
        macro[m] = float(np.mean([results[lab][m] for lab in used]))
        macro_reps[m] = np.mean(np.stack([reps[lab][m] for lab in used]), axis=0)
        macro[f"{m}_ci"] = percentile_ci(macro_reps[m], ci)
    macro["n_boot_skipped"] = int(np.isnan(macro_reps["auroc"]).sum()) if used else 0
    return macro, macro_reps


def multilabel_core(
    y: np.ndarray,
    p: np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    labels: Sequence[str],
    min_pos: int,
    min_neg: int,
    ci: float,
) -> tuple[dict, dict]:
    """``multilabel_metrics`` on precomputed resamples; also returns replicates (label and "macro")."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != len(labels):
        raise ValueError(f"y shape {y.shape} does not match {len(labels)} labels")
    results, reps = {}, {}
    for j, lab in enumerate(labels):
        results[lab], reps[lab] = label_core(y[:, j], p[:, j], codes, counts, min_pos, min_neg, ci)
    macro, reps["macro"] = macro_core(results, reps, ci)
    return {"labels": results, "macro": macro}, reps


def multilabel_metrics(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray | Sequence | None,
    labels: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    min_pos: int = 5,
    min_neg: int = 5,
    ci: float = 0.95,
) -> dict:
    """Per-label ``label_metrics`` for (N, L) arrays plus a macro mean over estimable labels.

    All labels share one set of patient resamples; the macro CI is the percentile interval of the
    per-replicate macro mean. Returns ``{"labels": {label: {...}}, "macro": {...}}`` (JSON-ready).
    """
    y = np.asarray(y, dtype=np.float64)
    codes = group_codes(groups, y.shape[0])
    counts = patient_counts(codes, n_boot, seed)
    return multilabel_core(y, p, codes, counts, labels, min_pos, min_neg, ci)[0]
