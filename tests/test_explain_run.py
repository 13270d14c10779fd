"""Run-level explanations: explain_images overlays, localize_run on the phantom (maps beat chance) and on NIH."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from chestdx.explain.run import box_reference_size_for, box_to_input, explain_images, localize_run


def phantom_boxes(run: Path) -> Path:
    from chestdx.train.data_setup import phantom_dir

    cache_root = yaml.safe_load((run / "config.yaml").read_text())["cache_root"]
    return phantom_dir(cache_root) / "boxes.csv"


def test_box_to_input_scales_reference_frame_to_model_input():
    # NIH box in 1024 px coordinates, image read at 512 px, model input 224: v * 224 / 1024
    assert box_to_input((100, 200, 50, 80), 1024, (512, 512), 224) == pytest.approx((21.875, 43.75, 10.9375, 17.5))
    # same box, full-resolution file: same answer (the file size cancels out)
    assert box_to_input((100, 200, 50, 80), 1024, (1024, 1024), 224) == pytest.approx((21.875, 43.75, 10.9375, 17.5))
    # non-square read image (H=256, W=512): frame 1024 -> read x0.5 -> (256, 64, 64, 32), then squashed to 64x64
    # (x, w by 64/512; y, h by 64/256)
    assert box_to_input((512, 128, 128, 64), 1024, (256, 512), 64) == pytest.approx((32.0, 16.0, 8.0, 8.0))


def test_box_reference_size_from_readme(tmp_path, tiny_run):
    assert box_reference_size_for(phantom_boxes(tiny_run)) == 128  # phantom README.txt says so
    (tmp_path / "boxes.csv").write_text("x")
    assert box_reference_size_for(tmp_path / "boxes.csv") == 1024  # NIH default


def test_explain_images_overlays_gallery_index(tiny_run, tmp_path):
    split = pd.read_csv(tiny_run / "split.csv")
    paths = split.loc[split["split"] == "test", "path"].head(3).tolist()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "explain"
    index = explain_images(tiny_run, [*paths, bad], out, method="gradcam", top_k=2, batch_size=2,
                           show_progress=False)
    ok = index[index["error"].isna()]
    assert len(ok) == 6 and ok.groupby("image")["label"].nunique().eq(2).all()
    assert index["error"].notna().sum() == 1 and "broken.png" in index["error"].dropna().iloc[0]
    for png in ok["png"]:
        assert Image.open(out / png).size[0] > 100
    assert (out / "gallery.png").stat().st_size > 10_000
    assert ((ok["probability"] >= 0) & (ok["probability"] <= 1)).all()
    saved = pd.read_csv(out / "index.csv")
    assert list(saved["png"].dropna()) == list(ok["png"])
    # explicit labels; unknown labels refused
    one = explain_images(tiny_run, paths[:1], out / "x", method="smoothgrad", labels=["Effusion"],
                         show_progress=False, n_samples=4)
    assert one["label"].tolist() == ["Effusion"]
    with pytest.raises(ValueError, match="not labels of this model"):
        explain_images(tiny_run, paths[:1], out / "y", labels=["Hernia"], show_progress=False)


def test_localize_tiny_run_outputs_and_skips(tiny_run, tmp_path):
    res = localize_run(tiny_run, phantom_boxes(tiny_run), tmp_path / "loc", methods=("gradcam",),
                       show_progress=False, n_gallery=4)
    t = res.table
    assert set(t["metric"]) == {"pointing", "iobb>0.1", "iobb>0.25", "iobb>0.5"}
    assert t["chance"].notna().all() and (t["chance"] < 1).all()
    overall = t[(t["label"] == "overall") & (t["metric"] == "pointing")].iloc[0]
    assert overall["n"] == res.meta["n_boxes_used"] > 50
    # everything not in the test split is reported as skipped, with the reason
    assert set(res.skipped["reason"]) == {"image in split 'train', not 'test'", "image in split 'val', not 'test'"}
    for name in ("localization.csv", "localization.json", "records.csv", "skipped.csv", "gallery.png"):
        assert (tmp_path / "loc" / name).stat().st_size > 100
    payload = json.loads((tmp_path / "loc" / "localization.json").read_text())
    assert payload["box_reference_size"] == 128 and payload["skipped_reasons"]


@pytest.mark.slow
def test_trained_phantom_maps_beat_chance_widely(tiny_run, tmp_path):
    """The saliency code is right: on phantoms with known boxes a trained model's maps hit far above chance."""
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    cache_root = yaml.safe_load((tiny_run / "config.yaml").read_text())["cache_root"]
    cfg = load_config("demo", ["image_size=80", "epochs=6", "progress=false", f"cache_root={cache_root}"])
    run = fit(cfg, tmp_path / "run80")
    res = localize_run(run, phantom_boxes(tiny_run), tmp_path / "loc", show_progress=False, n_samples=10)
    t = res.table
    point = t[(t["label"] == "overall") & (t["metric"] == "pointing")].set_index("method")
    margin = point["hit_rate"] - point["chance"]
    best = margin.idxmax()
    assert margin[best] >= 0.3, point
    assert point.at[best, "ci_low"] > point.at[best, "chance"] + 0.2
    assert (margin > 0.15).all(), point  # every method well above chance
    print("\n" + t.to_string())


@pytest.mark.data
def test_localize_nih_sample_boxes(tiny_run, nih_sample, tmp_path):
    """Pipeline on real NIH boxes (1024 px frame) and 512 px images: scaling, skips, chance beside each number."""
    from chestdx.data.nih import read_nih_boxes

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    boxes_csv = nih_sample / "BBox_List_2017.csv"
    boxes = read_nih_boxes(boxes_csv)
    present = sorted({b for b in boxes["image_id"] if (nih_sample / "images" / b).is_file()})
    assert len(present) >= 30
    split = pd.DataFrame({"image_id": present, "path": [str(nih_sample / "images" / b) for b in present],
                          "patient_id": [b.split("_")[0] for b in present], "split": "test"})
    split.to_csv(run / "split.csv", index=False)
    res = localize_run(run, boxes_csv, tmp_path / "loc", methods=("gradcam", "smoothgrad"), split=None,
                       show_progress=False, n_samples=4)
    modelled = boxes[boxes["image_id"].isin(present) & boxes["label"].isin(
        ["Cardiomegaly", "Effusion", "Nodule", "Pneumothorax"])]
    assert res.meta["n_boxes_used"] == len(modelled) >= 2
    reasons = res.skipped["reason"]
    assert (reasons == "label Pneumonia not modelled").sum() >= 25
    assert (reasons == "image not in the run's split.csv").sum() == len(boxes) - (boxes["image_id"].isin(present)).sum()
    # box scaling: NIH 1024 px frame -> 64 px model input (images on disk are 512 px)
    rec = res.records[res.records["method"] == "gradcam"].iloc[0]
    raw = modelled[modelled["image_id"] == rec["image_id"]].iloc[0]
    assert Image.open(nih_sample / "images" / rec["image_id"]).size == (512, 512)
    assert np.allclose(rec["box"], np.array([raw.x, raw.y, raw.w, raw.h]) * 64 / 1024)
    t = res.table
    assert t["chance"].notna().all() and {"hit_rate", "ci_low", "ci_high", "chance"} <= set(t.columns)
    assert (tmp_path / "loc" / "gallery.png").is_file()


def test_cli_explain_and_localize(tiny_run, tmp_path):
    from chestdx.cli import app

    split = pd.read_csv(tiny_run / "split.csv")
    img = split.loc[split["split"] == "test", "path"].iloc[0]
    runner = CliRunner()
    res = runner.invoke(app, ["explain", str(tiny_run), img, "--out", str(tmp_path / "ex"), "--top-k", "2"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "ex" / "index.csv")) == 2
    res = runner.invoke(app, ["localize", str(tiny_run), "--boxes", str(phantom_boxes(tiny_run)), "--out",
                              str(tmp_path / "loc"), "--methods", "gradcam", "--split", "val"])
    assert res.exit_code == 0, res.output
    assert "pointing" in res.output
    assert (tmp_path / "loc" / "localization.csv").is_file()
    res = runner.invoke(app, ["localize", str(tiny_run), "--boxes", str(phantom_boxes(tiny_run)), "--out",
                              str(tmp_path / "loc2"), "--split", "nosuchsplit"])
    assert res.exit_code == 1 and "no usable boxes" in res.output
