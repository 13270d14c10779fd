"""The one Predictor: calibration sidecar applied, findings only with a stated meaning, gate refuse/correct."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import chestdx
from chestdx.inference.prediction import QualityRefused
from run_factory import LABELS, make_run


def _sig(z):
    return 1 / (1 + np.exp(-z))


def test_calibrated_probabilities_follow_the_sidecar(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    pred = chestdx.load(run.path, gate=None)
    x = np.random.default_rng(0).integers(0, 255, (4, 64, 64), dtype=np.uint8)
    z = pred.logits(x).astype(np.float64)
    p = pred.probabilities(x, calibrated=True)
    np.testing.assert_allclose(p[:, 0], _sig(0.8 * z[:, 0] - 1.0), atol=1e-9)  # platt
    np.testing.assert_allclose(p[:, 1], np.interp(z[:, 1], [-3, -1, 0, 1, 3], [0.01, 0.05, 0.2, 0.5, 0.9]))
    np.testing.assert_allclose(p[:, 2], _sig(z[:, 2] / 1.5), atol=1e-9)  # temperature
    members = [pred.backend.members[k] for k in range(2)]
    import torch

    with torch.no_grad():
        t = torch.from_numpy(x.astype(np.float32) / 255)[:, None]
        mean = torch.stack([m(t) for m in members]).mean(0).numpy()
    np.testing.assert_allclose(z, mean, atol=1e-5)  # the ensemble is the mean logit


def test_findings_come_with_their_meaning(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    pred = chestdx.load(run.path, gate=None)
    imgs = list(np.random.default_rng(1).random((6, 80, 80)).astype(np.float32))
    out = pred.predict(imgs)
    assert any(o.findings for o in out)
    for o in out:
        assert o.thresholds["Nodule"] is None and "10 needed" in o.not_callable["Nodule"]
        assert "Nodule" not in o.findings
        for lb in o.findings:
            assert o.probabilities[lb] >= o.thresholds[lb]
            assert o.statements[lb].startswith("at this threshold, out-of-fold: finds 80% [70, 90]")
        assert set(o.statements) == set(o.findings)
    strict = chestdx.load(run.path, gate=None, policy="specificity:0.9")
    assert strict.calibration.threshold("Effusion") == 0.3
    with pytest.raises(ValueError, match="available"):
        chestdx.load(run.path, gate=None, policy="sensitivity:0.42")


def test_uncalibrated_run_calls_nothing(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", calibrated=False)
    out = chestdx.load(run.path, gate=None).predict(list(np.random.default_rng(2).random((3, 64, 64))))
    assert all(o.findings == [] and set(o.not_callable) == set(LABELS) for o in out)
    assert "chestdx evaluate" in out[0].not_callable["Effusion"]


@dataclass
class _Result:
    verdict: str
    prob: float
    action: str
    corrected: str | None = None
    note: str | None = None


class _FakeGate:
    """Says 'rot90' for images whose top-left pixel is 1 and 'not_cxr' for all-zero images."""

    card = {"version": "fake"}

    def assess(self, img):
        if not img.any():
            return _Result("not_cxr", 0.99, "refused", note="not a chest X-ray")
        if img[0, 0] == 1.0:
            return _Result("rot90", 0.98, "corrected", "rot90", "rotated 90 degrees counter-clockwise; corrected")
        return _Result("frontal", 0.97, "ok")

    @staticmethod
    def correct(img, res):
        return np.rot90(img, -1).copy()


def test_gate_corrects_and_refuses(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    pred = chestdx.load(run.path, gate=_FakeGate())
    upright = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    upright[0, 0] = upright[-1, 0] = 0.5
    rotated = np.rot90(upright, 1).copy()
    rotated[0, 0] = 1.0  # the fake gate's signal; np.rot90(rotated, -1) puts it at [0, -1]... keep it equal:
    upright_marked = np.rot90(rotated, -1).copy()
    a, b, refused = pred.predict([upright_marked, rotated, np.zeros((64, 64), np.float32)])
    assert a.quality == "frontal" and a.corrected is None
    assert b.quality == "rot90" and "corrected" in b.corrected
    for lb in LABELS:
        assert abs(a.probabilities[lb] - b.probabilities[lb]) <= 1e-6
    assert refused.error and "refused by the quality gate" in refused.error and refused.quality == "not_cxr"
    assert refused.probabilities == {}
    with pytest.raises(QualityRefused):
        pred.predict_bytes(_png(np.zeros((32, 32), np.uint8)), "blank.png")


def _png(a: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_legacy_run_dir_still_loads(tmp_path: Path) -> None:
    import torch

    from chestdx.models import build_model

    model = build_model("simple_cnn", 2, pretrained=None, input_size=32)
    run = tmp_path / "old"
    run.mkdir()
    torch.save({"format": "chestdx-checkpoint/1", "arch": "simple_cnn", "labels": ["Effusion", "Mass"],
                "input_size": 32, "mean": list(model.mean), "std": list(model.std), "metadata": [],
                "pretrained": None, "freeze": "none", "state_dict": model.state_dict(), "thresholds": None,
                "temperature": None, "config": {}}, run / "model.pt")
    out = chestdx.load(run, gate=None).predict([np.random.default_rng(0).random((40, 40))])
    assert out[0].error is None and out[0].findings == []


@pytest.mark.data
def test_real_gate_corrected_image_predicts_like_the_upright_one(tmp_path: Path, nih_sample: Path) -> None:
    """The packaged quality gate, both backends: rotated/inverted real X-rays are detected, turned back and give
    the upright image's probabilities (<= 1e-4); a text page is refused with the reason."""
    from PIL import Image, ImageDraw

    from chestdx.io import read_image
    from chestdx.serve.onnx_export import export_onnx

    run = make_run(tmp_path / "run")
    export_onnx(run.path, tmp_path / "m.onnx")
    src = sorted((nih_sample / "images").glob("*.png"))[:3]
    files = []
    for f in src:
        u8 = np.asarray(Image.open(f).convert("L"))
        for name, arr in (("up", u8), ("rot90", np.rot90(u8, 1)), ("rot270", np.rot90(u8, 3)), ("inv", 255 - u8)):
            files.append(tmp_path / f"{f.stem}_{name}.png")
            Image.fromarray(np.ascontiguousarray(arr)).save(files[-1])
    page = Image.new("L", (600, 800), 255)
    ImageDraw.Draw(page).multiline_text((20, 20), "\n".join(["Discharge summary, page 2"] * 30), fill=0)
    page.save(tmp_path / "text.png")
    files.append(tmp_path / "text.png")
    for loaded in (chestdx.load(run.path), chestdx.load(tmp_path / "m.onnx")):
        out = loaded.predict(files)
        assert out[-1].error and "refused by the quality gate" in out[-1].error and out[-1].quality == "not_cxr"
        for k in range(len(src)):
            up, *changed = out[4 * k: 4 * k + 4]
            assert up.quality == "frontal" and up.corrected is None and up.error is None
            assert [c.quality for c in changed] == ["rot90", "rot270", "inverted"]
            for c in changed:
                assert c.corrected and c.error is None
                assert max(abs(c.probabilities[lb] - up.probabilities[lb]) for lb in LABELS) <= 1e-4
    assert read_image(files[0]).shape == read_image(src[0]).shape
