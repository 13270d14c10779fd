"""torchxrayvision backbones (``chestdx.models.xrv``) against torchxrayvision 1.5.7's own model code.

Choice: a minimal stub, not a fixture. torchxrayvision (dev extra, installed with ``pip install --no-deps
torchxrayvision==1.5.7``) imports torchvision, skimage, requests and imageio at import time, but its
``DenseNet`` uses none of them, and its ``ResNet`` only calls ``torchvision.models.resnet50``. The
torchvision wheel on our index is a CUDA build that does not import next to the CPU torch, so the test puts
stubs in ``sys.modules`` for the duration of this module: empty ``torchvision``, ``torchvision.transforms``
and, only when missing, ``skimage``, ``skimage.transform``, ``skimage.io``, ``requests``, ``imageio``; and
``torchvision.models.resnet50`` = ``_TVResNet50`` below, torchvision's ResNet-50 written out with its
parameter names (as test_models.py does for its ViT). So every xrv code path we compare against is xrv's own
(classes, init, ``fix_resolution``, ``op_norm``, ``normalize``, its loading of pickled models), except that
the ResNet-50 body is our transcription of torchvision's. A committed fixture would have frozen one
random network; the stub lets each test make the networks and files it needs, with xrv's code, offline.
Skipped (with the install line) when torchxrayvision is not installed.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from chestdx.data.transforms import to_uint8_square
from chestdx.io import read_image
from chestdx.labels import NIH_LABELS
from chestdx.models import PretrainedWeightsError, build_model, freeze_points
from chestdx.models import xrv_weights as xw
from chestdx.models.adopt import adopt_model
from chestdx.models.inference_net import InferenceNet
from chestdx.models.xrv import map_xrv_labels, xrv_op_norm
from chestdx.models.xrv_weights import XRV_TARGETS, XRV_WEIGHTS, read_xrv_file

torch.set_num_threads(1)
N_IMAGES = 4


# ---------------------------------------------------------------------------------------------- stubs


class _TVBottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (stride on the 3x3 conv), as written there."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class _TVResNet50(nn.Module):
    """torchvision.models.resnet50(num_classes=...) layout and forward."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3, 1)
        self.layer2 = self._make_layer(128, 4, 2)
        self.layer3 = self._make_layer(256, 6, 2)
        self.layer4 = self._make_layer(512, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(planes * 4))
        layers = [_TVBottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [_TVBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet50(*, weights=None, num_classes: int = 1000, **_kw) -> _TVResNet50:
    assert weights is None
    return _TVResNet50(num_classes)


def _unavailable(*_a, **_kw):
    raise RuntimeError("stubbed out in tests/test_xrv.py")


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture(scope="module")
def xrv():
    """torchxrayvision imported against the stubs; stubs and xrv leave sys.modules after this module."""
    if importlib.util.find_spec("torchxrayvision") is None:
        pytest.skip("torchxrayvision not installed: pip install --no-deps torchxrayvision==1.5.7 (dev extra)")
    tv_models = _stub("torchvision.models", resnet50=_resnet50)
    stubs = {"torchvision": _stub("torchvision", models=tv_models), "torchvision.models": tv_models}
    stubs["torchvision.transforms"] = stubs["torchvision"].transforms = _stub("torchvision.transforms")
    for name in ("skimage", "skimage.transform", "skimage.io", "requests", "imageio", "imageio.v2"):
        if importlib.util.find_spec(name.split(".")[0]) is None:
            stubs[name] = _stub(name)
    if "skimage.io" in stubs:  # `from skimage.io import imread` at import; never called here
        stubs["skimage.io"].imread = _unavailable
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        import torchxrayvision

        yield torchxrayvision
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        for k in [k for k in sys.modules if k == "torchxrayvision" or k.startswith("torchxrayvision.")]:
            del sys.modules[k]


# ---------------------------------------------------------------------------------------------- references


def _realistic(ref: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """Random weights that give unsaturated outputs: BN statistics from ``x`` (one train-mode pass), random
    BN affine and a small random classifier. Returns ``ref`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        ref.train()
        ref(x)
        head = ref.classifier if hasattr(ref, "classifier") else ref.fc
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.05)
        head.bias.copy_(torch.randn(head.bias.shape, generator=g) * 0.5)
    return ref.eval()


@pytest.fixture(scope="module")
def nih_u8(nih_sample) -> np.ndarray:
    """(N, 224, 224) uint8: real NIH PNGs through chestdx's to_uint8_square (the pixels both sides get)."""
    files = sorted((nih_sample / "images").glob("*.png"))[:N_IMAGES]
    return np.stack([to_uint8_square(read_image(f), 224) for f in files])


def _xrv_input(xrv, u8: np.ndarray) -> torch.Tensor:
    """xrv's preprocessing of uint8 pixels: ``xrv.datasets.normalize(img, 255)`` + channel axis."""
    return torch.from_numpy(np.stack([xrv.datasets.normalize(im, 255)[None] for im in u8]))


def _x01(u8: np.ndarray) -> torch.Tensor:
    """chestdx's network input for the same pixels (what Predictor._tensor / the cache give)."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0)[:, None]


@pytest.fixture(scope="module")
def ref_densenet(xrv, nih_u8):
    torch.manual_seed(0)
    ref = xrv.models.DenseNet(apply_sigmoid=True)
    return _realistic(ref, _xrv_input(xrv, nih_u8), seed=1)


@pytest.fixture(scope="module")
def densenet_file(ref_densenet, tmp_path_factory) -> Path:
    """The release format: a whole pickled ``xrv.models.DenseNet`` (named like the -nih release file)."""
    path = tmp_path_factory.mktemp("xrv") / XRV_WEIGHTS["densenet121-res224-nih"].file_name
    torch.save(ref_densenet, path)
    return path


# ---------------------------------------------------------------------------------------------- tests


def test_weight_table_matches_torchxrayvision(xrv):
    urls = xrv.models.model_urls
    assert {k for k in urls if k.startswith(("densenet", "resnet"))} == set(XRV_WEIGHTS)
    assert list(xrv.datasets.default_pathologies) == list(XRV_TARGETS) == list(xrv.models.DenseNet.targets)
    for name, w in XRV_WEIGHTS.items():
        assert w.url == urls[name]["weights_url"], name
        assert list(w.labels) == list(urls[name]["labels"]), name
        assert w.resolution == urls[name]["input_resolution"], name
        np.testing.assert_array_equal(np.array(w.op_threshs), np.array(urls[name]["op_threshs"], float), name)


def test_densenet_parity_on_nih_pngs(xrv, ref_densenet, densenet_file, nih_u8):
    """Random xrv DenseNet saved as xrv ships it -> adopted by chestdx: same probabilities within 1e-5."""
    with torch.no_grad():
        want = ref_densenet(_xrv_input(xrv, nih_u8)).numpy()
    assert 0.05 < want.std() and ((want > 0.02) & (want < 0.98)).mean() > 0.5  # not saturated: a real test
    model, info = adopt_model(densenet_file, list(NIH_LABELS))
    assert info.weights_name == "densenet121-res224-nih" and info.arch == "xrv_densenet121"
    assert info.labels == list(NIH_LABELS) and not info.dropped
    net = InferenceNet(model).eval()
    with torch.no_grad():
        got = torch.sigmoid(net(_x01(nih_u8))).numpy()
    idx = [XRV_TARGETS.index(lab) for lab in NIH_LABELS]
    np.testing.assert_allclose(got, want[:, idx], atol=1e-5, rtol=0)
    # xrv's own preprocessing of the same pixels is bit-identical to chestdx's Normalize
    assert torch.equal(net.norm(_x01(nih_u8)), _xrv_input(xrv, nih_u8))

    # an xrv model with weights resizes other sizes itself (fix_resolution): ours does the same in the net
    big = np.kron(nih_u8[:2], np.ones((2, 2), np.uint8))  # 448 px
    ref_densenet.input_resolution = 224
    try:
        with torch.no_grad():
            want_big = ref_densenet(_xrv_input(xrv, big)).numpy()
            got_big = torch.sigmoid(net(_x01(big))).numpy()
    finally:
        del ref_densenet.input_resolution
    np.testing.assert_allclose(got_big, want_big[:, idx], atol=1e-5, rtol=0)

    # xrv's op_norm (applied by xrv when weights are loaded) is reproduced from our probabilities
    th = torch.tensor(XRV_WEIGHTS["densenet121-res224-all"].op_threshs)
    ref_densenet.op_threshs = th
    try:
        with torch.no_grad():
            want_op = ref_densenet(_xrv_input(xrv, nih_u8)).numpy()
    finally:
        ref_densenet.op_threshs = None
    np.testing.assert_allclose(xrv_op_norm(got, th.numpy()[idx]), want_op[:, idx], atol=1e-5, rtol=0)


def test_pickled_module_read_safely(xrv, ref_densenet, densenet_file, tmp_path):
    want = {k: v for k, v in ref_densenet.state_dict().items()}
    for path in (densenet_file, tmp_path / "legacy.pt", tmp_path / "state.pt"):
        if path.name == "legacy.pt":
            torch.save(ref_densenet, path, _use_new_zipfile_serialization=False)
        elif path.name == "state.pt":  # an xrv DenseNet built with weights carries op_threshs in its state dict
            ref_densenet.op_threshs = torch.tensor(XRV_WEIGHTS["densenet121-res224-all"].op_threshs)
            try:
                torch.save(ref_densenet.state_dict(), path)
            finally:
                ref_densenet.op_threshs = None
        got = read_xrv_file(path)
        assert set(got) - {"op_threshs"} == set(want), path.name
        assert all(torch.equal(got[k], want[k]) for k in want), path.name
        build_model("xrv_densenet121", 2, pretrained=str(path))  # strict check passes (op_threshs allowed)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Evil()}, bad)
    with pytest.raises(PretrainedWeightsError, match=r"refused global builtins\.print.*refusing to unpickle"):
        read_xrv_file(bad)


def test_wrong_shape_or_missing_key_lists_what_is_wrong(ref_densenet, tmp_path):
    state = ref_densenet.state_dict()
    del state["features.denseblock2.denselayer5.norm2.running_mean"]
    state["features.transition1.conv.weight"] = torch.zeros(128, 256, 3, 3)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError) as err:
        build_model("xrv_densenet121", 3, pretrained=str(path))
    msg = str(err.value)
    assert "broken.pt" in msg
    assert re.search(r"missing \(1\): features\.denseblock2\.denselayer5\.layers\.norm2\.running_mean", msg)
    assert re.search(r"shape mismatch \(1\): features\.transition1\.conv\.weight \(128, 256, 3, 3\) vs model "
                     r"\(128, 256, 1, 1\)", msg)
    # an ImageNet (torchvision) DenseNet is not an xrv one: 3-channel stem, 1000 classes
    tv = {k: v for k, v in ref_densenet.state_dict().items() if k != "op_threshs"}
    tv["features.conv0.weight"] = torch.zeros(64, 3, 7, 7)
    tv["classifier.weight"], tv["classifier.bias"] = torch.zeros(1000, 1024), torch.zeros(1000)
    torch.save(tv, path)
    with pytest.raises(PretrainedWeightsError, match=r"shape mismatch \(3\): classifier\.bias.*classifier\.weight"
                                                     r".*features\.conv0\.weight \(64, 3, 7, 7\)"):
        build_model("xrv_densenet121", 3, pretrained=str(path))


def test_names_cache_and_offline_error(densenet_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTDX_XRV_CACHE", str(tmp_path / "cache"))

    def offline(url, dst):
        raise OSError("network is unreachable")

    monkeypatch.setattr(xw, "_download", offline)
    url = XRV_WEIGHTS["densenet121-res224-all"].url
    with pytest.raises(PretrainedWeightsError) as err:
        build_model("xrv_densenet121", 3, pretrained="xrv:densenet121-res224-all")
    assert url in str(err.value) and "--set model.pretrained=/path/" in str(err.value)
    assert str(tmp_path / "cache") in str(err.value)
    with pytest.raises(PretrainedWeightsError, match="set model.arch: xrv_resnet50"):
        build_model("xrv_densenet121", 3, pretrained="xrv:resnet50-res512-all")
    with pytest.raises(ValueError, match="no ImageNet weights: use pretrained: xrv:"):
        build_model("xrv_resnet50", 3, pretrained="imagenet")
    with pytest.raises(PretrainedWeightsError, match="unknown torchxrayvision weights 'nope'; known: densenet121"):
        build_model("xrv_densenet121", 3, pretrained="xrv:nope")
    # a file in the cache is used without any download; short names work
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / densenet_file.name).write_bytes(densenet_file.read_bytes())
    model = build_model("xrv_densenet121", 2, pretrained="xrv:nih", labels=["Effusion", "Lung Opacity"])
    assert model.pretrained == "xrv:nih" and model.xrv_head == {"Effusion": "Effusion"}


def test_label_mapping_aliases_and_untrained_outputs(densenet_file, tmp_path, monkeypatch):
    chex = XRV_WEIGHTS["densenet121-res224-chex"].labels
    kept, dropped = map_xrv_labels(chex, ["Pleural Effusion", "Infiltration", "Cardiomegaly", "Situs inversus",
                                          "Lung Opacity", "pleural_thickening"])
    assert kept == {"Pleural Effusion": 7, "Cardiomegaly": 10, "Lung Opacity": 16}
    assert set(dropped) == {"Infiltration", "Situs inversus", "pleural_thickening"}
    assert "not trained" in dropped["Infiltration"] and "no output" in dropped["Situs inversus"]
    # adopting -chex weights for the NIH labels drops the 6 it was not trained on, with messages
    monkeypatch.setenv("CHESTDX_XRV_CACHE", str(tmp_path))
    (tmp_path / XRV_WEIGHTS["densenet121-res224-chex"].file_name).write_bytes(densenet_file.read_bytes())
    model, info = adopt_model("xrv:densenet121-res224-chex", list(NIH_LABELS))
    assert info.labels == ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "Pneumothorax",
                           "Consolidation", "Edema"]
    assert set(info.dropped) == {"Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Pleural_Thickening",
                                 "Hernia"} and model.num_labels == 7
    assert info.op_threshs["Effusion"] == pytest.approx(0.27212676) and info.source.startswith("https://")
    assert any(m.startswith("dropped Hernia:") for m in info.messages())
    with pytest.raises(ValueError, match="none of the labels"):
        adopt_model("xrv:densenet121-res224-chex", ["Hernia"])


def test_adopted_model_rebuilds_and_fine_tunes_with_densenet_freeze_points(densenet_file, ref_densenet):
    model, info = adopt_model(densenet_file, ["Effusion", "Mass"])
    again = build_model(info.arch, len(info.labels))  # what a run dir reader does
    again.load_state_dict(model.state_dict(), strict=True)
    assert again.mean == model.mean and again.input_size == 224
    assert freeze_points("xrv_densenet121") == freeze_points("densenet121")
    tuned = build_model("xrv_densenet121", 3, pretrained=str(densenet_file), freeze="seed",
                        labels=["Mass", "Hernia", "Fracture"])
    w = ref_densenet.classifier.weight
    assert torch.equal(tuned.head.weight[0], w[XRV_TARGETS.index("Mass")])
    assert torch.equal(tuned.backbone.features.conv0.weight, ref_densenet.features.conv0.weight)
    assert tuned.xrv_head == {"Mass": "Mass", "Hernia": "Hernia"}  # -nih file: Fracture untrained, head row random
    frozen = {n.split(".")[2] for n, p in tuned.named_parameters() if not p.requires_grad}
    assert frozen == {"conv0", "norm0", "denseblock1", "transition1"}


def test_adopt_evaluate_serve_export_end_to_end(xrv, ref_densenet, densenet_file, nih_sample, nih_u8, tmp_path):
    """`chestdx adopt` writes a run dir; evaluate, the Predictor, serve and the ONNX export all work on it, and its
    probabilities are xrv's own (<= 1e-5 torch, <= 1e-4 ONNX)."""
    import json

    import onnxruntime as ort
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    import chestdx
    from chestdx.cli import app
    from chestdx.data.readers import build_index
    from chestdx.serve.app import create_app

    index = build_index(nih_sample).sort_values("image_id").head(36).reset_index(drop=True)
    index["split"] = ["train"] * 12 + ["val"] * 12 + ["test"] * 12
    index.to_csv(tmp_path / "split.csv", index=False)
    run = tmp_path / "xrv-run"
    runner = CliRunner()
    res = runner.invoke(app, ["adopt", str(densenet_file), "--split", str(tmp_path / "split.csv"), "--out", str(run),
                              "--set", f"cache_root={tmp_path / 'cache'}"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(run), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert (run / "calibration.json").is_file() and (run / "metrics.json").is_file()
    pred = chestdx.load(run, gate=None)
    files = sorted((nih_sample / "images").glob("*.png"))[:N_IMAGES]
    with torch.no_grad():
        want = ref_densenet(_xrv_input(xrv, nih_u8)).numpy()[:, [XRV_TARGETS.index(lab) for lab in pred.labels]]
    got = np.array([[p.raw_probabilities[lab] for lab in pred.labels] for p in pred.predict(files)])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    res = runner.invoke(app, ["export", str(run), "--onnx", str(tmp_path / "xrv.onnx")])
    assert res.exit_code == 0, res.output
    sess = ort.InferenceSession(str(tmp_path / "xrv.onnx"), providers=["CPUExecutionProvider"])
    z = sess.run(None, {"image": _x01(nih_u8).numpy()})[0]
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), want, atol=1e-4, rtol=0)
    client = TestClient(create_app(pred), base_url="http://localhost")
    out = client.post("/api/predict?heatmaps=none", files={"file": (files[0].name, files[0].read_bytes(), "image/png")})
    assert out.status_code == 200, out.text
    body = out.json()
    assert [r["label"] for r in body["labels"]] == pred.labels
    assert abs(body["labels"][0]["raw_probability"] - float(want[0, 0])) <= 1e-5
    assert json.loads((run / "model.json").read_text())["adopted"] is True


@pytest.mark.parametrize("arch", ["xrv_densenet121", "xrv_resnet50"])
def test_gradcam_layer_and_onnx_resize_error(arch, tmp_path):
    from monai.visualize import GradCAM

    torch.manual_seed(0)
    model = build_model(arch, 2, input_size=64).eval()
    x = torch.rand(1, 1, 64, 64)
    net = InferenceNet(model).eval()
    maps = GradCAM(nn_module=net, target_layers=net.cam_layer)(x, class_idx=1)
    assert maps.shape == (1, 1, 64, 64) and torch.isfinite(maps).all()
    with pytest.raises(ValueError, match=r"use image_size (224|512) for xrv models"):
        torch.onnx.export(net, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)


def test_resnet50_parity(xrv, nih_u8, tmp_path, monkeypatch):
    """xrv.models.ResNet (its loader reads the -state.pt file from cache_dir) vs chestdx's xrv_resnet50."""
    torch.manual_seed(2)
    w = XRV_WEIGHTS["resnet50-res512-all"]
    u8 = nih_u8[:2]
    tv = _TVResNet50(18)
    tv.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    x512 = nn.functional.interpolate(_xrv_input(xrv, u8), size=(512, 512), mode="bilinear", antialias=True)
    _realistic(tv, x512, seed=3)
    torch.save(tv.state_dict(), tmp_path / w.file_name)
    ref = xrv.models.ResNet(weights=w.name, cache_dir=str(tmp_path), apply_sigmoid=True)
    ref.op_threshs = None  # raw sigmoid, as chestdx
    with torch.no_grad():
        want = ref(_xrv_input(xrv, u8)).numpy()  # 224 input: xrv resizes to 512 itself
    assert 0.05 < want.std()
    monkeypatch.setenv("CHESTDX_XRV_CACHE", str(tmp_path))
    model, info = adopt_model("xrv:resnet50-res512-all", list(XRV_TARGETS))
    assert info.arch == "xrv_resnet50" and info.input_size == 512 and len(info.labels) == 18
    net = InferenceNet(model).eval()
    with torch.no_grad():
        got = torch.sigmoid(net(_x01(u8))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert freeze_points("xrv_resnet50") == ["none", "seed", "all-but-head", "stem+layer1"]


def test_op_norm_numpy_edges():
    p = np.array([[0.0, 0.1, 0.2, 0.9, 0.3]])
    t = [0.2, 0.2, 0.2, 0.2, math.nan]
    np.testing.assert_allclose(xrv_op_norm(p, t), [[0.0, 0.25, 0.5, 1 - 0.1 / 1.6, 0.5]])
