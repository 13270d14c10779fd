"""Corruptions for robustness measurement, the intensity augmentation, and ``robustness_run`` on a run dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chestdx.data.dataset import AugmentConfig, CXRDataset
from chestdx.data.phantom import generate_phantom
from chestdx.evaluate.corruptions import CORRUPTIONS, SEVERITIES, corrupt


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return generate_phantom(4, size=96, seed=0).images


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_grows_with_severity(name: str, batch: np.ndarray) -> None:
    changes = []
    for sev in SEVERITIES:
        out = corrupt(batch, name, sev, seed=3)
        assert out.dtype == np.uint8 and out.shape == batch.shape
        assert np.array_equal(out, corrupt(batch, name, sev, seed=3))  # same seed, same pixels
        assert np.array_equal(out[2], corrupt(batch[2:], name, sev, seed=3)[0]) or name in ("noise", "gamma")
        changes.append(float(np.abs(out.astype(int) - batch).mean()))
    assert changes[0] > 0.1, f"{name} severity 1 leaves the image unchanged"
    assert changes[0] < changes[1] < changes[2], f"{name}: change per severity {changes}"


def test_per_image_draws_depend_on_seed_and_index_only(batch: np.ndarray) -> None:
    full = corrupt(batch, "noise", 2, seed=5)
    assert np.array_equal(full[0], corrupt(batch[0], "noise", 2, seed=5))  # image 0 of a batch == the image
    assert not np.array_equal(full, corrupt(batch, "noise", 2, seed=6))


def test_corrupt_rejects_bad_arguments(batch: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(batch, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(batch, "blur", 4)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(batch.astype(np.float32), "blur", 1)


def test_intensity_augmentation_is_off_by_default_and_reproducible(batch: np.ndarray) -> None:
    labels = np.zeros((len(batch), 2), np.float32)
    assert AugmentConfig().intensity() is None
    plain = CXRDataset(batch, np.arange(len(batch)), labels, augment=AugmentConfig(), seed=1)
    cfg = AugmentConfig(gamma=0.5, contrast=0.3, noise_std=0.03, blur_sigma=1.0, intensity_prob=1.0)
    a = CXRDataset(batch, np.arange(len(batch)), labels, augment=cfg, seed=1)
    b = CXRDataset(batch, np.arange(len(batch)), labels, augment=cfg, seed=1)
    for i in range(len(batch)):
        xa, xp = a[i][0], plain[i][0]
        assert xa.dtype == torch.float32 and xa.shape == xp.shape
        assert 0.0 <= float(xa.min()) and float(xa.max()) <= 1.0
        assert torch.equal(xa, b[i][0])  # (seed, epoch, index) fixes the draw
        assert float((xa - xp).abs().mean()) > 1e-3  # intensity changes on top of the same affine draw
    a.set_epoch(1)
    assert not torch.equal(a[0][0], b[0][0])


def test_config_schema_accepts_and_bounds_the_intensity_fields() -> None:
    from chestdx.train.config import load_config

    cfg = load_config("demo", ["augment.noise_std=0.02", "augment.gamma=0.4"])
    assert cfg["augment"]["noise_std"] == 0.02 and cfg["augment"]["blur_sigma"] == 0.0
    AugmentConfig(**cfg["augment"])  # every schema field is an AugmentConfig field
    with pytest.raises(Exception, match="contrast"):
        load_config("demo", ["augment.contrast=1.5"])


@pytest.mark.data
@pytest.mark.slow
def test_robustness_run_on_real_images(nih_sample: Path, tmp_path: Path) -> None:
    """A 1-epoch demo run on nih-sample: clean scores equal the Predictor's, changes are paired and bounded."""
    from chestdx.evaluate.robustness import robustness_markdown, robustness_run
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    config = load_config("demo", [f"data={nih_sample}", "image_size=64", "epochs=1", "progress=false",
                                  f"cache_root={tmp_path / 'cache'}"])
    run = fit(config, tmp_path / "run")
    res = robustness_run(run, split="val", corruptions=["noise", "jpeg"], severities=[1, 3], n_boot=100,
                         show_progress=False)
    assert json.loads((run / "robustness.json").read_text()) == res
    split = pd.read_csv(run / "split.csv")
    assert res["n_images"] == int((split["split"] == "val").sum())
    assert [(s["corruption"], s["severity"]) for s in res["settings"]] == [("noise", 1), ("noise", 3), ("jpeg", 1),
                                                                         ("jpeg", 3)]
    for s in res["settings"]:
        assert 0.0 <= s["flip_rate"] <= 1.0 and s["mean_abs_dprob"] > 0
        if s["delta_auroc"] is not None:
            lo, hi = s["delta_auroc_ci"]
            assert lo <= s["delta_auroc"] + 1e-9 and s["delta_auroc"] - 1e-9 <= hi
            assert s["macro_auroc"] == pytest.approx(res["clean"]["macro_auroc"] + s["delta_auroc"])
    noise = {s["severity"]: s["mean_abs_dprob"] for s in res["settings"] if s["corruption"] == "noise"}
    assert noise[3] > noise[1]  # a stronger corruption moves the probabilities more
    assert "| noise | 3 | 0.08 |" in robustness_markdown(res)
    # the report and the model card carry the result
    from chestdx.report.build import _robustness_section
    from chestdx.report.model_card import build_model_card, card_markdown

    assert "<td>noise</td><td>3</td><td>0.08</td>" in _robustness_section(run).replace("\n", "")
    card = card_markdown(build_model_card(run))
    assert "Robustness (val rows" in card and "noise" in card
    # the clean macro AUROC is the one of the Predictor's own probabilities on the same rows
    from sklearn.metrics import roc_auc_score

    import chestdx
    from chestdx.data.pipeline import cache_table

    pred = chestdx.load(run, gate=None)
    rows = split[split["split"] == "val"]
    cache, rows, _ = cache_table(rows, pred.input_size, tmp_path / "cache", show_progress=False)
    p = 1 / (1 + np.exp(-pred.logits(np.asarray(cache.pixels[cache.slots(rows["path"].tolist())]))))
    aucs = [roc_auc_score(rows[lb], p[:, j]) for j, lb in enumerate(pred.labels)
            if lb in res["clean"]["labels_in_macro"]]
    assert res["clean"]["macro_auroc"] == pytest.approx(np.mean(aucs), abs=1e-6)
