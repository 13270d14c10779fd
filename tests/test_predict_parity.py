"""The Predictor on real NIH images gives the same raw probabilities as `evaluate` wrote to predictions.csv."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chestdx.data.readers import build_index
from chestdx.evaluate.run import evaluate_run
from chestdx.inference import Predictor
from chestdx.rundir import RunDir

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def nih_run(tiny_run: Path, nih_sample: Path, tmp_path_factory) -> Path:
    """A copy of tiny_run whose val/test rows are 24 real NIH images (labels from the NIH CSV), re-evaluated."""
    root = tmp_path_factory.mktemp("nihrun")
    run = Path(shutil.copytree(tiny_run, root / "run"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["cache_root"] = str(root / "cache")  # never touch the fixture's cache
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "oof.csv").unlink()  # its validation rows are replaced below: evaluate predicts the new ones
    split = pd.read_csv(run / "split.csv")
    nih = build_index(nih_sample).sort_values("image_id").head(24).reset_index(drop=True)
    nih["split"] = ["val"] * 12 + ["test"] * 12
    keep = [c for c in split.columns if c in nih.columns]
    table = pd.concat([split[split["split"] == "train"], nih[keep]], ignore_index=True)
    table.to_csv(run / "split.csv", index=False)
    evaluate_run(run, n_boot=20, show_progress=False)
    return run


def test_predictor_matches_evaluate(nih_run: Path) -> None:
    preds = pd.read_csv(nih_run / "predictions.csv")
    split = pd.read_csv(nih_run / "split.csv").set_index("image_id")
    paths = split.loc[preds["image_id"], "path"].tolist()
    assert len(paths) == 24 and all("nih-sample" in p for p in paths)
    predictor = Predictor.from_run(nih_run)
    out = predictor.predict(paths, batch_size=7)
    assert not any(p.error for p in out)
    got = np.array([[p.raw_probabilities[lb] for lb in predictor.labels] for p in out])
    want = preds[[f"prob_{lb}" for lb in predictor.labels]].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_evaluate_saves_ood_stats(nih_run: Path) -> None:
    ood = RunDir(nih_run).read_ood()
    assert ood["n_train"] > 100 and ood["threshold"] > 0 and ood["mean"].shape == (ood["feature_dim"],)
    predictor = Predictor.from_run(nih_run)
    assert predictor.ood is not None and predictor.describe()["ood"]["quantile"] == 0.99


def test_evaluate_never_rewrites_the_weights(nih_run: Path) -> None:
    """Re-running evaluate with other flags changes the sidecar, never model.json or members/ (their hashes)."""
    from chestdx.rundir import sha256_file

    run = RunDir(nih_run)
    files = [run.manifest_path, *sorted(run.members_dir.glob("*.pt"))]
    before = [sha256_file(f) for f in files]
    side_before = run.read_calibration()
    evaluate_run(nih_run, n_boot=20, show_progress=False, policy="sensitivity:0.9")
    assert [sha256_file(f) for f in files] == before
    assert run.read_calibration()["policy"] != side_before["policy"]
    assert not (nih_run / "model.pt").exists()
