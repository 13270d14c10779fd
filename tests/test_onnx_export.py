"""ONNX export of an ensemble run: parity with the torch backend (<= 1e-4, calibrated), torch-free loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import chestdx
from chestdx.serve.onnx_export import export_onnx
from run_factory import make_run

TORCH_FREE = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import chestdx
p = chestdx.load(sys.argv[1])
out = p.predict(sys.argv[2:], batch_size=4)
assert not any(k.startswith("torch.") for k in sys.modules)
print(json.dumps([{"raw": r.raw_probabilities, "cal": r.probabilities, "ood": r.ood_score, "quality": r.quality,
                   "findings": r.findings, "error": r.error} for r in out]))
"""


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    run = make_run(root / "run", members=3)
    out = root / "model.onnx"
    side = export_onnx(run.path, out)
    assert side["check"]["max_abs_prob_diff"] <= 1e-4
    return run.path, out


def test_export_files(ensemble: tuple[Path, Path]) -> None:
    run, out = ensemble
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["format"] == "chestdx-onnx/2" and len(side["manifest"]["members"]) == 3
    assert side["calibration"]["policy"] == "balanced"


def test_ensemble_parity_calibrated(ensemble: tuple[Path, Path]) -> None:
    run, out = ensemble
    images = list(np.random.default_rng(0).random((5, 90, 70)).astype(np.float32))
    a = chestdx.load(out, gate=None).predict(images)
    b = chestdx.load(run, gate=None).predict(images)
    for ra, rb in zip(a, b, strict=True):
        assert max(abs(ra.raw_probabilities[k] - rb.raw_probabilities[k]) for k in rb.raw_probabilities) <= 1e-4
        assert max(abs(ra.probabilities[k] - rb.probabilities[k]) for k in rb.probabilities) <= 1e-4
        assert ra.findings == rb.findings and ra.statements == rb.statements
        assert rb.thresholds["Nodule"] is None and "Nodule" in rb.not_callable


@pytest.mark.parametrize("arch", ["densenet121", "efficientnet_lite0"])
def test_export_other_architectures(arch: str, tmp_path: Path) -> None:
    run = make_run(tmp_path / arch, arch=arch, members=1)
    side = export_onnx(run.path, tmp_path / f"{arch}.onnx")
    assert side["check"]["max_abs_prob_diff"] <= 1e-4


def test_export_with_metadata(tmp_path: Path) -> None:
    run = make_run(tmp_path / "meta", metadata=("age", "sex"), members=2)
    side = export_onnx(run.path, tmp_path / "meta.onnx")
    assert side["inputs"] == ["image", "meta"] and len(side["meta_missing"]) == 4
    x = list(np.random.default_rng(1).random((2, 64, 64)).astype(np.float32))
    a = chestdx.load(tmp_path / "meta.onnx", gate=None).predict(x)
    b = chestdx.load(run.path, gate=None).predict(x)  # meta=None: the model's "unknown" encoding
    for ra, rb in zip(a, b, strict=True):
        assert max(abs(ra.raw_probabilities[k] - rb.raw_probabilities[k]) for k in rb.raw_probabilities) <= 1e-5


@pytest.mark.data
def test_onnx_torch_free_on_real_images(ensemble: tuple[Path, Path], nih_sample: Path, kermany: Path) -> None:
    run, out = ensemble
    files = sorted((nih_sample / "images").glob("*.png"))[:6] + sorted((kermany / "train" / "PNEUMONIA").glob("*"))[:3]
    res = subprocess.run([sys.executable, "-c", TORCH_FREE, str(out), *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    onnx_out = json.loads(res.stdout)
    torch_out = chestdx.load(run).predict(files)
    for a, b in zip(onnx_out, torch_out, strict=True):
        assert a["error"] == b.error and a["quality"] == b.quality
        if b.error:
            continue
        for lb in b.raw_probabilities:
            assert abs(a["raw"][lb] - b.raw_probabilities[lb]) <= 1e-4
            assert abs(a["cal"][lb] - b.probabilities[lb]) <= 1e-4
        assert a["findings"] == b.findings


@pytest.mark.data
def test_app_on_onnx_backend(ensemble: tuple[Path, Path], nih_sample: Path) -> None:
    _, exported = ensemble
    from fastapi.testclient import TestClient

    from chestdx.serve.app import create_app

    client = TestClient(create_app(exported), base_url="http://localhost")
    assert client.get("/api/model").json()["backend"] == "onnxruntime"
    path = sorted((nih_sample / "images").glob("*.png"))[0]
    res = client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/png")}).json()
    side = json.loads(exported.with_suffix(".json").read_text())
    assert res["heatmaps"] == {} and [r["label"] for r in res["labels"]] == side["manifest"]["labels"]


@pytest.mark.data
def test_cli_predict_onnx_without_torch(ensemble: tuple[Path, Path], nih_sample: Path, tmp_path: Path) -> None:
    _, exported = ensemble
    files = [str(f) for f in sorted((nih_sample / "images").glob("*.png"))[:4]]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from chestdx.cli import app\n"
            "app(sys.argv[1:])\n")
    out = tmp_path / "preds.csv"
    res = subprocess.run([sys.executable, "-c", code, "predict", str(exported), *files, "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-2000:]
    assert len(out.read_text().strip().splitlines()) == 5
