"""Comparing models on the same test images: DeLong test, paired patient bootstrap, comparison table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from chestdx.evaluate.bootstrap import group_codes, patient_counts, percentile_ci
from chestdx.evaluate.metrics import _binary, multilabel_core
from chestdx.evaluate.ranking import ranking_replicates
from chestdx.evaluate.tables import SplitArrays, split_arrays


def delong_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> dict:
    """Two-sided DeLong test of AUROC(a) vs AUROC(b) on the same images (fast midrank algorithm).

    Sun & Xu (2014). NaN labels are masked. Treats images as independent (no patient clustering;
    see ``paired_bootstrap_diff`` for that). ``diff`` = auc_b - auc_a.
    """
    y, p_a, known = _binary(y, p_a)
    p_b = _binary(y, p_b)[1][known]
    y, p_a = y[known], p_a[known]
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs >= 2 positives and negatives, got {m} / {n}")
    scores = np.stack([p_a, p_b])
    x, z = scores[:, pos], scores[:, ~pos]
    tx, tz = rankdata(x, axis=1), rankdata(z, axis=1)
    t_all = rankdata(np.concatenate([x, z], axis=1), axis=1)
    aucs = (t_all[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (t_all[:, :m] - tx) / n  # structural components of positives
    v01 = 1.0 - (t_all[:, m:] - tz) / m  # ... of negatives
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(aucs[1] - aucs[0])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        zstat = diff / se
        p_value = float(2.0 * norm.sf(abs(zstat)))
    else:
        zstat, p_value = 0.0, 1.0 if diff == 0 else 0.0
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "se": se,
        "z": float(zstat),
        "p_value": p_value,
    }


def paired_bootstrap_diff(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    groups: np.ndarray | Sequence | None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """CI of AUROC(b) - AUROC(a) with both models scored on the same patient resamples."""
    y, p_a, known = _binary(y, p_a)
    codes = group_codes(groups, len(y))[known]
    p_b = _binary(y, p_b)[1][known]
    y, p_a = y[known], p_a[known]
    counts = patient_counts(codes, n_boot, seed)
    diffs = ranking_replicates(y, p_b, codes, counts)["auroc"] - ranking_replicates(y, p_a, codes, counts)["auroc"]
    auc_a, auc_b = float(roc_auc_score(y, p_a)), float(roc_auc_score(y, p_b))
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": auc_b - auc_a,
        "ci": percentile_ci(diffs, ci),
        "n_boot": int(n_boot),
        "n_boot_skipped": int(np.isnan(diffs).sum()),
    }


def _examples(values: np.ndarray, k: int = 5) -> list:
    return [v.item() if hasattr(v, "item") else v for v in values[:k]]


def _aligned(tables: dict[str, pd.DataFrame], labels: Sequence[str], split: str) -> dict[str, SplitArrays]:
    """Split arrays per run; refuses differing image sets, true labels or patient ids."""
    arrays = {name: split_arrays(df, labels, split) for name, df in tables.items()}
    ref_name, ref = next(iter(arrays.items()))
    for name, arr in arrays.items():
        only_ref = np.setdiff1d(ref.image_id.astype(str), arr.image_id.astype(str))
        only_new = np.setdiff1d(arr.image_id.astype(str), ref.image_id.astype(str))
        if len(only_ref) or len(only_new):
            raise ValueError(
                f"runs {ref_name!r} and {name!r} have different {split} image sets: "
                f"{len(only_ref)} only in {ref_name!r} (e.g. {_examples(only_ref)}), "
                f"{len(only_new)} only in {name!r} (e.g. {_examples(only_new)}); compare on the same images"
            )
        same = (ref.y == arr.y) | (np.isnan(ref.y) & np.isnan(arr.y))
        bad_rows = ~same.all(axis=1)
        if bad_rows.any():
            raise ValueError(
                f"runs {ref_name!r} and {name!r} disagree on the true labels of {int(bad_rows.sum())} "
                f"{split} images (e.g. {_examples(ref.image_id[bad_rows])})"
            )
        bad_pat = ref.patient_id.astype(str) != arr.patient_id.astype(str)
        if bad_pat.any():
            raise ValueError(
                f"runs {ref_name!r} and {name!r} disagree on patient_id of {int(bad_pat.sum())} "
                f"{split} images (e.g. {_examples(ref.image_id[bad_pat])})"
            )
    return arrays


def compare_predictions(
    tables: dict[str, pd.DataFrame],
    labels: Sequence[str],
    split: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    min_pos: int = 5,
    min_neg: int = 5,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Long table, one row per (label or "macro", run): AUROC with CI, diff vs the first run with
    paired patient-bootstrap CI, and DeLong p-value (per label; NaN for macro and the reference run).

    Raises ValueError when the runs' ``split`` image sets, true labels or patient ids differ.
    """
    if len(tables) < 1:
        raise ValueError("no prediction tables to compare")
    labels = list(labels)
    arrays = _aligned(tables, labels, split)
    ref_name, ref = next(iter(arrays.items()))
    codes = group_codes(ref.patient_id, len(ref.image_id))
    counts = patient_counts(codes, n_boot, seed)
    runs = {
        name: multilabel_core(arr.y, arr.p, codes, counts, labels, min_pos, min_neg, ci) for name, arr in arrays.items()
    }
    ref_res, ref_reps = runs[ref_name]
    rows = []
    for j, lab in enumerate([*labels, "macro"]):
        is_macro = lab == "macro"
        for name, (res, reps) in runs.items():
            r = res["macro"] if is_macro else res["labels"][lab]
            estimable = r["n_labels"] > 0 if is_macro else r["estimable"]
            row = {
                "label": lab,
                "run": name,
                "estimable": estimable,
                "auroc": r["auroc"],
                "auroc_lo": (r["auroc_ci"] or [None, None])[0],
                "auroc_hi": (r["auroc_ci"] or [None, None])[1],
                "n_pos": None if is_macro else r["n_pos"],
                "n_neg": None if is_macro else r["n_neg"],
                "diff_vs_ref": None,
                "diff_lo": None,
                "diff_hi": None,
                "delong_p": None,
            }
            if estimable and name != ref_name:
                ref_r = ref_res["macro"] if is_macro else ref_res["labels"][lab]
                row["diff_vs_ref"] = r["auroc"] - ref_r["auroc"]
                d_ci = percentile_ci(reps[lab]["auroc"] - ref_reps[lab]["auroc"], ci)
                row["diff_lo"], row["diff_hi"] = d_ci or (None, None)
                if not is_macro:
                    arr = arrays[name]
                    row["delong_p"] = delong_test(ref.y[:, j], ref.p[:, j], arr.p[:, j])["p_value"]
            rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("auroc", "auroc_lo", "auroc_hi", "diff_vs_ref", "diff_lo", "diff_hi", "delong_p"):
        table[col] = table[col].astype(float)
    for col in ("n_pos", "n_neg"):
        table[col] = table[col].astype("Int64")
    table.attrs.update(
        {
            "reference": ref_name,
            "split": split,
            "n_images": len(ref.image_id),
            "n_patients": int(counts.shape[1]),
            "n_boot": n_boot,
            "seed": seed,
        }
    )
    return table
