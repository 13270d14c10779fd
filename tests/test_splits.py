"""Patient-grouped stratified splits, the official split, and the leak audit (API and CLI)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from chestdx.cli import app
from chestdx.data.index import label_columns
from chestdx.data.nih import read_nih, read_nih_boxes
from chestdx.data.readers import build_index
from chestdx.data.splits import audit_split, make_split

runner = CliRunner()


def _synthetic_index(n_patients=400, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        hernia = p < 12  # a rare label carried by 12 patients
        for k in range(rng.integers(1, 4)):
            rows.append({"image_id": f"{p}_{k}.png", "path": f"/x/{p}_{k}.png", "patient_id": str(p),
                         "Hernia": float(hernia), "Effusion": float(rng.random() < 0.2)})
    return pd.DataFrame(rows)


def test_grouped_split_is_patient_disjoint_stratified_and_seeded():
    df = _synthetic_index()
    a = make_split(df, seed=1)
    assert audit_split(a).ok
    assert a.groupby("patient_id")["split"].nunique().max() == 1
    hernia = a[a["Hernia"] == 1].groupby("split")["patient_id"].nunique()
    assert set(hernia.index) == {"train", "val", "test"}  # the rare label reaches every split
    frac = a["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.05 and abs(frac["test"] - 0.2) < 0.05
    assert a["split"].equals(make_split(df, seed=1)["split"])
    assert not a["split"].equals(make_split(df, seed=2)["split"])


def test_nih_sample_splits_and_audit_cli(nih_sample, tmp_path):
    idx = tmp_path / "index.csv"
    res = runner.invoke(app, ["index", str(nih_sample), "--out", str(idx)])
    assert res.exit_code == 0, res.output
    assert "758 images indexed" in res.output and "111362" in res.output
    split = tmp_path / "split.csv"
    res = runner.invoke(app, ["split", str(idx), "--out", str(split), "--seed", "0"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(split, dtype={"patient_id": str})
    assert {"image_id", "patient_id", "split"} <= set(df.columns) and len(df) == 758
    assert runner.invoke(app, ["audit", str(split)]).exit_code == 0
    # leak one patient: move one of its images to another split
    multi = df.groupby("patient_id").filter(lambda g: len(g) > 1)
    victim = multi["patient_id"].iloc[0]
    row = df.index[df["patient_id"] == victim][0]
    df.loc[row, "split"] = {"train": "test", "val": "train", "test": "train"}[df.loc[row, "split"]]
    leaked = tmp_path / "leaked.csv"
    df.to_csv(leaked, index=False)
    res = runner.invoke(app, ["audit", str(leaked)])
    assert res.exit_code != 0 and f"patient {victim}" in res.output


def test_official_split_uses_the_official_test_list(nih_sample):
    df = make_split(read_nih(nih_sample), official=True, seed=0)
    assert audit_split(df).ok
    assert (df.loc[df["official_split"] == "test", "split"] == "test").all()
    assert set(df.loc[df["official_split"] == "train_val", "split"]) == {"train", "val"}


def test_boxed_images_forced_into_test(nih_sample):
    boxed = read_nih_boxes(nih_sample / "BBox_List_2017.csv")["image_id"].tolist()
    df = make_split(read_nih(nih_sample), seed=0, force_test=boxed)
    assert audit_split(df).ok
    assert (df.loc[df["image_id"].isin(boxed), "split"] == "test").all()
    assert 0.15 < (df["split"] == "test").mean() < 0.3


def test_kermany_grouped_split(kermany):
    df = make_split(build_index(kermany), seed=0)
    assert audit_split(df).ok
    prev = df.groupby("split")["Pneumonia"].mean()
    assert prev.max() - prev.min() < 0.05  # stratified
    assert label_columns(df)[6] == "Pneumonia"


def test_audit_flags_duplicate_images():
    df = pd.DataFrame({"image_id": ["a", "a"], "path": ["/a", "/a"], "patient_id": ["1", "1"],
                       "split": ["train", "train"]})
    result = audit_split(df)
    assert not result.ok and "image a" in " ".join(result.messages())
