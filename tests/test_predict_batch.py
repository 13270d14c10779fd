"""`chestdx predict` over folders: 200 real images + 3 corrupt files -> 200 rows + 3 error rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from chestdx.cli import app
from chestdx.cli._common import Exit
from chestdx.serve.batch import collect_inputs

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, nih_sample: Path, kermany: Path) -> Path:
    """150 NIH PNGs + 50 Kermany JPEGs (nested folder) as symlinks, plus 3 corrupt files."""
    root = tmp_path_factory.mktemp("batch")
    (root / "nih").mkdir()
    (root / "kermany" / "NORMAL").mkdir(parents=True)
    for src in sorted((nih_sample / "images").glob("*.png"))[:150]:
        os.symlink(src, root / "nih" / src.name)
    for src in sorted((kermany / "train" / "NORMAL").glob("*.jpeg"))[:50]:
        os.symlink(src, root / "kermany" / "NORMAL" / src.name)
    good = sorted((nih_sample / "images").glob("*.png"))[0].read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "notes.png").write_text("this is a text file, not an image\n")
    (root / "empty.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_collect_inputs_recursive(image_folder: Path) -> None:
    files = collect_inputs([image_folder])
    assert len(files) == 203
    assert not any(f.suffix == ".txt" for f in files)


def test_predict_folder_csv(tiny_run: Path, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", str(tiny_run), str(image_folder), "--out", str(out),
                                   "--batch-size", "32", "--no-progress"])
    assert res.exit_code == Exit.PARTIAL, res.output  # some inputs are bad files on purpose
    df = pd.read_csv(out, keep_default_na=False)
    labels = [c for c in df.columns if c.startswith("prob_")]
    assert list(df.columns[:1]) == ["path"] and labels and "error" in df.columns
    assert {"findings", "ood_score", "ood_flag"} <= set(df.columns)
    errors = df[df["error"] != ""]
    assert len(df) == 203 and len(errors) == 3
    assert {Path(p).name for p in errors["path"]} == {"truncated.png", "notes.png", "empty.jpg"}
    assert errors["error"].str.contains("truncated").any() and errors["error"].str.contains("text").any()
    assert errors["error"].str.contains("empty").any()
    ok = df[df["error"] == ""]
    probs = ok[labels].astype(float)
    assert ((probs >= 0) & (probs <= 1)).all().all()
    assert "images/s" in res.output


def test_predict_json_and_heatmaps(tiny_run: Path, nih_sample: Path, tmp_path: Path) -> None:
    files = sorted((nih_sample / "images").glob("*.png"))[:3]
    out = tmp_path / "preds.json"
    res = CliRunner().invoke(app, ["predict", str(tiny_run), *map(str, files), str(tmp_path / "missing.png"),
                                   "--out", str(out), "--heatmaps", str(tmp_path / "maps"), "--no-progress"])
    assert res.exit_code == Exit.PARTIAL, res.output  # some inputs are bad files on purpose
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 4 and doc["n_errors"] == 1 and "not a diagnosis" in doc["note"]
    rows = doc["predictions"]
    assert "file not found" in rows[-1]["error"]
    assert all(r["heatmaps"] for r in rows[:3])
    maps = list((tmp_path / "maps").glob("*.png"))
    assert len(maps) >= 3


def test_maps_of_a_corrected_image_are_drawn_on_the_upright_image(tmp_path: Path, nih_sample: Path,
                                                                   monkeypatch) -> None:
    """A file the gate turned back (verdict rot90) gets its maps over the upright image, without a second gate."""
    import numpy as np
    from PIL import Image

    import chestdx.explain
    from chestdx.inference import Prediction
    from chestdx.io import read_image
    from chestdx.serve.batch import _save_maps

    src = sorted((nih_sample / "images").glob("*.png"))[0]
    upright = read_image(src)
    turned = tmp_path / "turned.png"
    Image.fromarray((np.rot90(upright) * 255).round().astype(np.uint8)).save(turned)
    drawn = []
    monkeypatch.setattr(chestdx.explain, "overlay_png", lambda img, heat, caption, path: drawn.append(img) or path)
    pred = Prediction(source=str(turned), quality="rot90", corrected="rotated; corrected",
                      heatmaps={"Mass": np.zeros((8, 8), np.float32)})
    assert len(_save_maps(pred, tmp_path, 0, "gradcam")) == 1
    np.testing.assert_allclose(drawn[0], upright, atol=1 / 255)
