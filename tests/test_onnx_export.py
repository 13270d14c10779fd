"""ONNX export: parity with torch on real images (≤ 1e-4), torch-free OnnxPredictor, other architectures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from chestdx.cli import app
from chestdx.inference import Predictor
from chestdx.models import build_model
from chestdx.serve.onnx_export import export_onnx

TORCH_FREE = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from chestdx.serve.onnx_predictor import OnnxPredictor
p = OnnxPredictor(sys.argv[1])
out = p.predict(sys.argv[2:], batch_size=4)
assert all(m is None for k, m in sys.modules.items() if k == "torch")
assert not any(k.startswith("torch.") for k in sys.modules)
print(json.dumps([{"raw": r.raw_probabilities, "cal": r.probabilities, "ood": r.ood_score,
                   "findings": r.findings, "error": r.error} for r in out]))
"""


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    res = CliRunner().invoke(app, ["export", str(tiny_run), "--onnx", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_export_files(exported: Path, tiny_run: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits", "ood_d2"]
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"  # dynamic batch
    side = json.loads(exported.with_suffix(".json").read_text())
    pred = Predictor.from_run(tiny_run)
    assert side["labels"] == pred.labels and side["input_size"] == pred.input_size
    assert side["temperature"] == pytest.approx(pred.temperature) and side["thresholds"] == pred.thresholds
    assert side["ood"]["threshold"] == pytest.approx(pred.ood.threshold)


@pytest.mark.data
def test_onnx_parity_torch_free(exported: Path, tiny_run: Path, nih_sample: Path, kermany: Path) -> None:
    files = sorted((nih_sample / "images").glob("*.png"))[:6] + sorted((kermany / "train" / "PNEUMONIA").glob("*"))[:3]
    res = subprocess.run([sys.executable, "-c", TORCH_FREE, str(exported), *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    onnx_out = json.loads(res.stdout)
    torch_out = Predictor.from_run(tiny_run).predict(files)
    for a, b in zip(onnx_out, torch_out, strict=True):
        assert a["error"] is None and b.error is None
        for lb in b.raw_probabilities:
            assert abs(a["raw"][lb] - b.raw_probabilities[lb]) <= 1e-4
            assert abs(a["cal"][lb] - b.probabilities[lb]) <= 1e-4
        assert a["findings"] == b.findings
        assert a["ood"] == pytest.approx(b.ood_score, rel=1e-3)


def _export_untrained(arch: str, tmp_path: Path, metadata: tuple[str, ...] = ()) -> tuple[Predictor, dict]:
    model = build_model(arch, 3, pretrained=None, metadata=metadata, input_size=64)
    payload = {"format": "chestdx-checkpoint/1", "arch": arch, "labels": ["Effusion", "Mass", "Nodule"],
               "input_size": 64, "mean": list(model.mean), "std": list(model.std), "pretrained": None,
               "freeze": "none", "metadata": list(metadata), "state_dict": model.state_dict(),
               "thresholds": {"Effusion": 0.5, "Mass": None, "Nodule": 0.3}, "temperature": 1.5, "config": {}}
    pred = Predictor(payload)
    side = export_onnx(pred, tmp_path / f"{arch}.onnx")
    return pred, side


@pytest.mark.parametrize("arch", ["densenet121", "efficientnet_lite0"])
def test_export_other_architectures(arch: str, tmp_path: Path) -> None:
    from chestdx.serve.onnx_predictor import OnnxPredictor

    pred, side = _export_untrained(arch, tmp_path)
    assert side["check"]["max_abs_prob_diff"] <= 1e-4
    x = np.random.default_rng(0).random((3, 90, 70)).astype(np.float32)
    images = list(x)
    a = OnnxPredictor(tmp_path / f"{arch}.onnx").predict(images)
    b = pred.predict(images)
    for ra, rb in zip(a, b, strict=True):
        assert max(abs(ra.probabilities[k] - rb.probabilities[k]) for k in rb.probabilities) <= 1e-4
        assert ra.ood_score is None and rb.ood_score is None


def test_export_with_metadata(tmp_path: Path) -> None:
    from chestdx.serve.onnx_predictor import OnnxPredictor

    pred, side = _export_untrained("simple_cnn", tmp_path, metadata=("age", "sex"))
    assert side["inputs"] == ["image", "meta"] and len(side["meta_missing"]) == 4
    x = list(np.random.default_rng(1).random((2, 64, 64)).astype(np.float32))
    a = OnnxPredictor(tmp_path / "simple_cnn.onnx").predict(x)
    b = pred.predict(x)  # meta=None: the model's "unknown" encoding, as the sidecar's meta_missing
    for ra, rb in zip(a, b, strict=True):
        assert max(abs(ra.raw_probabilities[k] - rb.raw_probabilities[k]) for k in rb.raw_probabilities) <= 1e-5


@pytest.mark.data
def test_app_on_onnx_backend(exported: Path, nih_sample: Path) -> None:
    from fastapi.testclient import TestClient

    from chestdx.serve.app import create_app

    client = TestClient(create_app(exported), base_url="http://localhost")
    assert client.get("/api/model").json()["backend"] == "onnxruntime"
    path = sorted((nih_sample / "images").glob("*.png"))[0]
    res = client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/png")}).json()
    side = json.loads(exported.with_suffix(".json").read_text())
    assert res["heatmaps"] == {} and [r["label"] for r in res["labels"]] == side["labels"]
    assert res["ood"]["score"] is not None


@pytest.mark.data
def test_cli_predict_onnx_without_torch(exported: Path, nih_sample: Path, tmp_path: Path) -> None:
    files = [str(f) for f in sorted((nih_sample / "images").glob("*.png"))[:4]]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from chestdx.cli import app\n"
            "app(sys.argv[1:])\n")
    out = tmp_path / "preds.csv"
    res = subprocess.run([sys.executable, "-c", code, "predict", str(exported), *files, "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-2000:]
    assert len(out.read_text().strip().splitlines()) == 5
