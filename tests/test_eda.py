"""EDA on real data: plots exist and the numbers behind them are right."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from chestdx.cli import app
from chestdx.data.eda import cooccurrence, prevalence, run_eda
from chestdx.data.readers import build_index
from chestdx.data.splits import make_split


def test_eda_nih_sample(nih_sample, tmp_path):
    df = make_split(build_index(nih_sample), seed=0)
    summary = run_eda(df, tmp_path, title="NIH sample")
    for name in summary["files"]:
        assert (tmp_path / name).stat().st_size > (5000 if name.endswith(".png") else 200)
    prev = pd.read_csv(tmp_path / "prevalence.csv")
    pneu = prev[(prev["label"] == "Pneumonia")]
    assert pneu["positives"].sum() == 364  # 364 Pneumonia images in the sample
    train = df[df["split"] == "train"]
    row = pneu[pneu["split"] == "train"].iloc[0]
    assert row["prevalence"] == (train["Pneumonia"] == 1).sum() / len(train)
    co = pd.read_csv(tmp_path / "cooccurrence.csv", index_col=0)
    assert co.loc["Pneumonia", "Pneumonia"] == 364 and (co.to_numpy() == co.to_numpy().T).all()
    assert co.loc["Pneumonia", "Infiltration"] == int(((df["Pneumonia"] == 1) & (df["Infiltration"] == 1)).sum())
    saved = json.loads((tmp_path / "eda.json").read_text())
    assert saved["n_patients"] == 514 and saved["sex"]["M"] + saved["sex"]["F"] == 758
    assert saved["view"]["PA"] + saved["view"]["AP"] == 758


def test_eda_kermany_cli(kermany, tmp_path):
    df = make_split(build_index(kermany), seed=0)
    split = tmp_path / "split.csv"
    df.to_csv(split, index=False)
    res = CliRunner().invoke(app, ["eda", str(split), "--out", str(tmp_path / "eda")])
    assert res.exit_code == 0, res.output
    prev = prevalence(df).set_index(["split", "label"])
    assert abs(prev.loc[("train", "Pneumonia"), "prevalence"] - 3875 / 5216) < 0.03
    assert prev.loc[("train", "Effusion"), "graded"] == (df.loc[df["split"] == "train", "Pneumonia"] == 0).sum()
    assert cooccurrence(df).loc["Pneumonia", "Pneumonia"] == 3875
    assert (tmp_path / "eda" / "prevalence.png").exists()
