"""K-fold cross-validation folds: patient-grouped, multilabel-stratified, over the train+val rows only.

The ``fold`` column holds 0..K-1 on every non-test row and -1 on test rows; test rows are never used.
Fold k's model trains on the folds != k and validates (early stopping, out-of-fold predictions) on fold k.
K = 1 is the plain train/val split: no ``fold`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chestdx.data.splits import stratified_group_assign

FOLD = "fold"
TEST_FOLD = -1


def check_folds(k: object, n_patients: int | None = None) -> int:
    """``k`` as an int >= 1 (and <= the number of train+val patients when given), else a clear ValueError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) and not (isinstance(k, float) and k.is_integer()):
        raise ValueError(f"folds must be a whole number >= 1 (1 = plain train/val split), got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"folds must be >= 1 (1 = plain train/val split), got {k}")
    if n_patients is not None and k > n_patients:
        raise ValueError(f"folds={k} but the train+val split holds only {n_patients} patients: "
                         f"each fold needs at least one patient (use folds <= {n_patients})")
    return k


def assign_folds(table: pd.DataFrame, k: int, seed: int = 0) -> pd.DataFrame:
    """Copy of ``table`` with a ``fold`` column (K > 1); unchanged copy for K = 1.

    Every patient of the train+val rows goes to one fold (iterative stratification of the label positives,
    as for the split itself); test rows get -1.
    """
    if "split" not in table.columns:
        raise ValueError("the table has no split column: split it first (train/val/test)")
    trainval = table["split"] != "test"
    k = check_folds(k, int(table.loc[trainval, "patient_id"].nunique()))
    out = table.copy()
    if k == 1:
        return out.drop(columns=[FOLD], errors="ignore")
    assigned = stratified_group_assign(out[trainval], {str(i): 1.0 / k for i in range(k)}, seed=seed)
    out[FOLD] = TEST_FOLD
    out.loc[trainval, FOLD] = assigned.astype(int).to_numpy()
    out[FOLD] = out[FOLD].astype(int)
    empty = sorted(set(range(k)) - set(out.loc[trainval, FOLD]))
    if empty:
        raise ValueError(f"folds {empty} received no patient (folds={k}); use fewer folds")
    problems = audit_folds(out)
    if problems:  # cannot happen by construction; kept as a guard
        raise ValueError("fold assignment leaks: " + "; ".join(problems[:5]))
    return out


def audit_folds(table: pd.DataFrame) -> list[str]:
    """Messages for every patient in two folds, test rows in a fold, non-test rows without one (empty: ok)."""
    if FOLD not in table.columns:
        return []
    msgs: list[str] = []
    fold = table[FOLD]
    if fold.isna().any():
        msgs.append(f"{int(fold.isna().sum())} rows have no fold")
    is_test = table["split"] == "test"
    bad_test = is_test & (fold != TEST_FOLD)
    if bad_test.any():
        msgs.append(f"{int(bad_test.sum())} test rows are in a training fold (e.g. "
                    f"{table.loc[bad_test, 'image_id'].iloc[0]})")
    bad_rest = ~is_test & (fold < 0)
    if bad_rest.any():
        first = table.loc[bad_rest, "image_id"].iloc[0]
        msgs.append(f"{int(bad_rest.sum())} train/val rows have no fold (e.g. {first})")
    per_patient = table.groupby("patient_id", sort=False)[FOLD].nunique()
    for patient in per_patient[per_patient > 1].index[:20]:
        folds = sorted(map(int, table.loc[table["patient_id"] == patient, FOLD].unique()))
        msgs.append(f"patient {patient} is in several folds: {folds}")
    return msgs


def fold_table(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The split view that trains fold ``k``'s member: fold k -> "val", other folds -> "train", test stays."""
    if FOLD not in table.columns:
        raise ValueError("the table has no fold column (a K = 1 run)")
    out = table.copy()
    trainval = out[FOLD] >= 0
    out.loc[trainval, "split"] = np.where(out.loc[trainval, FOLD] == k, "val", "train")
    return out


def n_folds(table: pd.DataFrame) -> int:
    """K of a split table: 1 without a ``fold`` column, else the number of folds."""
    if FOLD not in table.columns:
        return 1
    return int(table.loc[table[FOLD] >= 0, FOLD].max()) + 1
