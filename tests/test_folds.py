"""K-fold assignment: patient-grouped, stratified, test untouched, audited; clear errors for bad K."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chestdx.train.folds import assign_folds, audit_folds, check_folds, fold_table, n_folds


def _table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        split = "test" if p % 5 == 0 else ("val" if p % 5 == 1 else "train")
        for i in range(int(rng.integers(1, 4))):
            rows.append({"image_id": f"p{p}_{i}", "path": f"/x/p{p}_{i}.png", "patient_id": f"P{p}", "split": split,
                         "Effusion": float(rng.random() < 0.3), "Hernia": float(p % 12 == 3)})
    return pd.DataFrame(rows)


def test_folds_group_patients_keep_test_out_and_stratify():
    table = _table()
    out = assign_folds(table, 5, seed=0)
    test = out["split"] == "test"
    assert (out.loc[test, "fold"] == -1).all() and out.loc[~test, "fold"].between(0, 4).all()
    assert out.groupby("patient_id")["fold"].nunique().max() == 1
    assert audit_folds(out) == [] and n_folds(out) == 5
    # the rare label reaches every fold it can (5 Hernia patients outside test -> one per fold)
    hernia = out[~test & (out["Hernia"] == 1)].groupby("fold")["patient_id"].nunique()
    assert len(hernia) == min(5, out.loc[~test & (out["Hernia"] == 1), "patient_id"].nunique())
    # same seed, same folds; the original columns are untouched
    assert assign_folds(table, 5, seed=0)["fold"].tolist() == out["fold"].tolist()
    pd.testing.assert_frame_equal(out.drop(columns="fold"), table)


def test_fold_table_trains_on_other_folds_and_validates_on_fold_k():
    out = assign_folds(_table(), 3, seed=1)
    view = fold_table(out, 2)
    assert set(view.loc[out["fold"] == 2, "split"]) == {"val"}
    assert set(view.loc[out["fold"].isin([0, 1]), "split"]) == {"train"}
    assert set(view.loc[out["fold"] == -1, "split"]) == {"test"}


def test_audit_finds_a_patient_in_two_folds_and_test_rows_in_a_fold():
    out = assign_folds(_table(), 4)
    bad = out.copy()
    patient = bad.loc[bad["fold"] >= 0, "patient_id"].iloc[0]
    rows = bad.index[bad["patient_id"] == patient]
    bad = pd.concat([bad, bad.loc[rows[:1]].assign(image_id="extra", fold=(bad.loc[rows[0], "fold"] + 1) % 4)])
    bad.loc[bad["split"] == "test", "fold"] = 0
    msgs = audit_folds(bad)
    assert any(f"patient {patient} is in several folds" in m for m in msgs)
    assert any("test rows are in a training fold" in m for m in msgs)


@pytest.mark.parametrize("k, message", [(0, "must be >= 1"), (-3, "must be >= 1"), (2.5, "whole number"),
                                        ("five", "whole number"), (True, "whole number")])
def test_bad_k_is_a_clear_error(k, message):
    with pytest.raises(ValueError, match=message):
        check_folds(k)


def test_more_folds_than_patients_is_a_clear_error():
    table = _table(10)
    n = table.loc[table["split"] != "test", "patient_id"].nunique()
    with pytest.raises(ValueError, match=f"only {n} patients"):
        assign_folds(table, n + 1)
    assert n_folds(assign_folds(table, n)) == n  # exactly one patient per fold is allowed


def test_k1_is_the_plain_split():
    table = _table()
    assert "fold" not in assign_folds(table, 1).columns and n_folds(table) == 1
