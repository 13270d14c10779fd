"""chestdx.models: registry, strict pretrained loading (densenet121, vit_b16, efficientnet_lite0),
freezing, metadata fusion and Grad-CAM layers. Small inputs (64 px) except ViT-B/16 (built once)."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from monai.visualize import GradCAM
from torch import nn

from chestdx.models import (
    ChestModel,
    PretrainedWeightsError,
    available_models,
    build_model,
    encode_metadata,
    freeze_points,
    missing_metadata,
    tokens_to_grid,
)
from chestdx.models.densenet import DenseNetFeatures, load_torchvision_densenet
from chestdx.models.efficientnet import LITE_MEAN, LITE_STD, efficientnet_lite_imagenet, lite0_weights_path
from chestdx.models.vit import ViTConfig, load_torchvision_vit, torchvision_vit_to_monai

torch.set_num_threads(1)
SMALL_VIT = ViTConfig(img_size=32, patch_size=16, hidden_size=64, mlp_dim=128, num_layers=2, num_heads=4)


def _bn_shapes(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")}


def tv_densenet121_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision densenet121 (growth 32, blocks 6/12/24/16, bn_size 4, init 64) keys and shapes."""
    shapes: dict[str, tuple[int, ...]] = {"features.conv0.weight": (64, 3, 7, 7), **_bn_shapes("features.norm0", 64)}
    c = 64
    for b, n in enumerate((6, 12, 24, 16), start=1):
        for i in range(1, n + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            shapes.update(_bn_shapes(f"{p}.norm1", c))
            shapes[f"{p}.conv1.weight"] = (128, c, 1, 1)
            shapes.update(_bn_shapes(f"{p}.norm2", 128))
            shapes[f"{p}.conv2.weight"] = (32, 128, 3, 3)
            c += 32
        if b < 4:
            shapes.update(_bn_shapes(f"features.transition{b}.norm", c))
            shapes[f"features.transition{b}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    shapes.update(_bn_shapes("features.norm5", c))
    shapes.update({"classifier.weight": (1000, c), "classifier.bias": (1000,)})
    return shapes


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        t = torch.randn(s, generator=g)
        out[k] = t.abs() + 0.5 if k.endswith("running_var") else t
    return out


@pytest.fixture(scope="module")
def tv_densenet() -> dict[str, torch.Tensor]:
    return _random_state(tv_densenet121_shapes())


@pytest.fixture(scope="module")
def densenet_backbone() -> DenseNetFeatures:
    return DenseNetFeatures()


# ----------------------------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
    names = available_models()
    for n in ("densenet121", "vit_b16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
              "simple_cnn"):
        assert n in names
    assert freeze_points("densenet121")[:3] == ["none", "seed", "all-but-head"]
    assert "embeddings+first-half" in freeze_points("vit_b16")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9000", 3)
    with pytest.raises(ValueError, match="freeze point"):
        build_model("simple_cnn", 3, freeze="everything")
    with pytest.raises(ValueError, match="metadata"):
        build_model("simple_cnn", 3, metadata=("height",))
    with pytest.raises(ValueError, match="ImageNet"):
        build_model("simple_cnn", 3, pretrained="imagenet")
    with pytest.raises(PretrainedWeightsError, match="not found"):
        build_model("densenet121", 3, pretrained="/nonexistent/densenet121.pth")


@pytest.mark.parametrize("arch", ["simple_cnn", "densenet121", "efficientnet_lite0", "efficientnet_lite2"])
def test_cnn_shapes_attributes_and_gradcam(arch):
    model = build_model(arch, 5, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 5)
    assert model.features(x).shape == (2, model.num_features)
    assert isinstance(model, ChestModel) and model.arch == arch and model.patch_grid is None
    assert len(model.mean) == len(model.std) == 3 and model.input_size == 64
    cam = GradCAM(nn_module=model, target_layers=model.cam_layer)
    maps = cam(x, class_idx=1)
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()
    # the same keys rebuild strictly (the checkpoint path)
    build_model(arch, 5, input_size=64).load_state_dict(model.state_dict(), strict=True)


def test_default_sizes_and_normalization():
    assert build_model("simple_cnn", 2).input_size == 128
    lite = build_model("efficientnet_lite0", 2)
    assert lite.input_size == 224 and lite.mean == pytest.approx((127 / 255,) * 3)
    assert lite.std == pytest.approx((128 / 255,) * 3)
    assert build_model("efficientnet_lite1", 2).input_size == 240


# ----------------------------------------------------------------------------------------------- metadata


def test_encode_metadata_values_and_missing():
    df = pd.DataFrame({"age": [50, np.nan, 150, -3, 130.0, "x"],
                       "sex": ["M", "f", None, "U", np.nan, "Female"],
                       "view": ["PA", "ap", "AP SUPINE", "LL", None, np.nan]})
    enc = encode_metadata(df, ("age", "sex", "view"))
    assert enc.dtype == np.float32 and enc.shape == (6, 6)
    np.testing.assert_allclose(enc[:, 0], [0.5, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(enc[:, 1], [0, 1, 1, 1, 1, 1])  # 150/-3/130/"x" are not ages
    np.testing.assert_allclose(enc[:, 2:4], [[1, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 1]])
    np.testing.assert_allclose(enc[:, 4:6], [[1, 0], [0, 1], [0, 1], [0, 0], [0, 0], [0, 0]])
    assert encode_metadata(pd.DataFrame({"age": [100.0, 110.0]}), ("age",)).tolist() == [[1, 0], [1, 0]]
    # field order is the caller's; an absent column is unknown
    only = encode_metadata(pd.DataFrame({"sex": ["F"]}), ("view", "sex", "age"))
    assert only.tolist() == [[0, 0, 0, 1, 0, 1]]
    assert missing_metadata(2, ("age", "sex")).tolist() == [[0, 1, 0, 0]] * 2
    assert encode_metadata(df, ()).shape == (6, 0)
    with pytest.raises(ValueError):
        encode_metadata(df, ("age", "age"))


def test_metadata_fusion_head():
    model = build_model("simple_cnn", 3, metadata=("age", "sex", "view"), input_size=32).eval()
    assert model.head.in_features == model.num_features + 6
    x = torch.randn(4, 3, 32, 32)
    meta = torch.from_numpy(encode_metadata(pd.DataFrame({"age": [30, 70, np.nan, 5],
                                                          "sex": ["M", "F", None, "M"],
                                                          "view": ["PA", "AP", None, "PA"]}), model.metadata))
    out = model(x, meta)
    assert out.shape == (4, 3)
    # metadata changes the logits; None == all-unknown encoding
    with torch.no_grad():
        model.head.weight[:, -6:] = 1.0
    assert not torch.allclose(model(x, meta), model(x, torch.zeros_like(meta)))
    unknown = torch.from_numpy(missing_metadata(4, model.metadata))
    torch.testing.assert_close(model(x), model(x, unknown))
    with pytest.raises(ValueError, match="meta must be"):
        model(x, meta[:, :4])
    with pytest.raises(ValueError, match="without metadata"):
        build_model("simple_cnn", 3)(x, meta)


# ----------------------------------------------------------------------------------------------- densenet


def test_densenet_torchvision_key_layout(tv_densenet):
    shapes = {k: tuple(v.shape) for k, v in tv_densenet.items()}
    assert shapes["features.denseblock4.denselayer16.conv2.weight"] == (32, 128, 3, 3)
    assert shapes["features.norm5.weight"] == (1024,)
    assert shapes["classifier.weight"] == (1000, 1024)
    assert shapes["features.conv0.weight"] == (64, 3, 7, 7)
    assert shapes["features.transition1.conv.weight"] == (128, 256, 1, 1)
    assert shapes["features.transition3.conv.weight"] == (512, 1024, 1, 1)
    assert shapes["features.denseblock3.denselayer24.norm1.weight"] == (256 + 23 * 32,)
    # torchvision's densenet121 has 7,978,856 parameters (running statistics are buffers)
    assert sum(v.numel() for k, v in tv_densenet.items() if "running" not in k) == 7_978_856


def _expected_monai_key(tv_key: str) -> str:
    return re.sub(r"(denselayer\d+)\.", r"\1.layers.", tv_key)


@pytest.mark.parametrize("old_style", [False, True])
def test_densenet_weights_land_exactly(tv_densenet, densenet_backbone, old_style):
    state = dict(tv_densenet)
    if old_style:  # the names of the actual densenet121-a639ec97.pth: norm.1, conv.2, ...
        state = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    load_torchvision_densenet(densenet_backbone, state)
    target = densenet_backbone.state_dict()
    n = 0
    for k, v in tv_densenet.items():
        if k.startswith("classifier."):
            continue
        assert torch.equal(target[_expected_monai_key(k)], v), k
        n += 1
    covered = {_expected_monai_key(k) for k in tv_densenet}
    left = [k for k in target if k not in covered and not k.endswith("num_batches_tracked")]
    assert left == [] and n == len(tv_densenet) - 2
    assert not any(k.startswith("class_layers.out") for k in target)  # no ImageNet head in the backbone


def test_densenet_incomplete_or_mismatched_weights_raise(tv_densenet, densenet_backbone):
    missing = dict(tv_densenet)
    del missing["features.denseblock3.denselayer7.norm2.running_var"]
    with pytest.raises(PretrainedWeightsError, match=r"missing \(1\).*denselayer7\.layers\.norm2\.running_var"):
        load_torchvision_densenet(densenet_backbone, missing)
    wrong = dict(tv_densenet)
    wrong["features.transition2.conv.weight"] = torch.zeros(256, 512, 3, 3)
    with pytest.raises(PretrainedWeightsError, match=r"shape mismatch.*transition2\.conv\.weight"):
        load_torchvision_densenet(densenet_backbone, wrong)
    extra = dict(tv_densenet)
    extra["features.denseblock5.denselayer1.conv1.weight"] = torch.zeros(1)
    with pytest.raises(PretrainedWeightsError, match="unexpected"):
        load_torchvision_densenet(densenet_backbone, extra)


def test_densenet_pretrained_from_path_and_hub_cache_and_seed_freeze(tv_densenet, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(tv_densenet, cache / "densenet121-a639ec97.pth")
    model = build_model("densenet121", 4, pretrained="imagenet", freeze="seed", input_size=64)
    conv0 = model.backbone.features.conv0.weight
    assert torch.equal(conv0, tv_densenet["features.conv0.weight"])
    assert model.pretrained == "imagenet" and model.freeze == "seed"

    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tv_densenet.items()}}, path)
    other = build_model("densenet121", 4, pretrained=str(path), freeze="all-but-head", input_size=64)
    assert torch.equal(other.backbone.features.norm5.weight, tv_densenet["features.norm5.weight"])
    assert [n for n, p in other.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]

    # seed = stem + dense block 1 + transition 1 frozen; the rest trains
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    seed = re.compile(r"^backbone\.features\.(conv0|norm0|denseblock1|transition1)\.")
    assert frozen == {n for n, _ in model.named_parameters() if seed.match(n)}
    assert "backbone.features.denseblock2.denselayer1.layers.conv1.weight" not in frozen
    model.train()
    assert not model.backbone.features.norm0.training
    assert not model.backbone.features.denseblock1.denselayer3.layers.norm2.training
    assert model.backbone.features.denseblock2.denselayer1.layers.norm1.training and model.training
    before0 = model.backbone.features.norm0.running_mean.clone()
    before5 = model.backbone.features.norm5.running_mean.clone()
    loss = model(torch.randn(2, 3, 64, 64)).sum()
    loss.backward()
    assert torch.equal(model.backbone.features.norm0.running_mean, before0)  # frozen BN: statistics kept
    assert not torch.equal(model.backbone.features.norm5.running_mean, before5)
    assert conv0.grad is None and model.head.weight.grad is not None
    model.eval()
    model.train()
    assert not model.backbone.features.transition1.norm.training


# ----------------------------------------------------------------------------------------------- vit


class _TVEncoderBlock(nn.Module):
    """torchvision.models.vision_transformer.EncoderBlock, as written there (no dropout)."""

    def __init__(self, d: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, d), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class _TVViT(nn.Module):
    """Minimal torchvision VisionTransformer (same parameter names); returns the final class token."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d, n = cfg.hidden_size, (cfg.img_size // cfg.patch_size) ** 2
        self.conv_proj = nn.Conv2d(3, d, cfg.patch_size, cfg.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.zeros(1, n + 1, d))
        self.encoder.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", _TVEncoderBlock(d, cfg.num_heads, cfg.mlp_dim)) for i in range(cfg.num_layers)))
        self.encoder.ln = nn.LayerNorm(d, eps=1e-6)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(d, 1000)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.encoder.pos_embedding
        return self.encoder.ln(self.encoder.layers(x))[:, 0]


def tv_vit_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of torchvision's vit_b_16 state dict layout for ``cfg``."""
    d, m, n = cfg.hidden_size, cfg.mlp_dim, (cfg.img_size // cfg.patch_size) ** 2
    shapes = {"class_token": (1, 1, d), "conv_proj.weight": (d, 3, cfg.patch_size, cfg.patch_size),
              "conv_proj.bias": (d,), "encoder.pos_embedding": (1, n + 1, d)}
    for i in range(cfg.num_layers):
        p = f"encoder.layers.encoder_layer_{i}"
        shapes.update({f"{p}.ln_1.weight": (d,), f"{p}.ln_1.bias": (d,),
                       f"{p}.self_attention.in_proj_weight": (3 * d, d), f"{p}.self_attention.in_proj_bias": (3 * d,),
                       f"{p}.self_attention.out_proj.weight": (d, d), f"{p}.self_attention.out_proj.bias": (d,),
                       f"{p}.ln_2.weight": (d,), f"{p}.ln_2.bias": (d,), f"{p}.mlp.0.weight": (m, d),
                       f"{p}.mlp.0.bias": (m,), f"{p}.mlp.3.weight": (d, m), f"{p}.mlp.3.bias": (d,)})
    shapes.update({"encoder.ln.weight": (d,), "encoder.ln.bias": (d,), "heads.head.weight": (1000, d),
                   "heads.head.bias": (1000,)})
    return shapes


@pytest.fixture(scope="module")
def tv_small_vit() -> _TVViT:
    torch.manual_seed(0)
    ref = _TVViT(SMALL_VIT).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            is_ln_scale = ".ln" in name and name.endswith("weight")
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if is_ln_scale else 0.0))
    return ref


@pytest.fixture(scope="module")
def vit() -> ChestModel:
    return build_model("vit_b16", 3)


def test_reference_vit_has_torchvision_layout(tv_small_vit):
    assert {k: tuple(v.shape) for k, v in tv_small_vit.state_dict().items()} == tv_vit_shapes(SMALL_VIT)


@pytest.mark.parametrize("old_mlp_names", [False, True])
def test_vit_mapping_matches_torchvision_forward(tv_small_vit, tmp_path, old_mlp_names):
    state = tv_small_vit.state_dict()
    if old_mlp_names:  # torchvision < 0.13 checkpoints
        state = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v for k, v in state.items()}
    path = tmp_path / "vit_small.pth"
    torch.save(state, path)
    model = build_model("vit_b16", 2, pretrained=str(path), cfg=SMALL_VIT).eval()
    assert model.patch_grid == (2, 2) and model.input_size == 32
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), tv_small_vit(x), atol=2e-5, rtol=1e-5)


def test_vit_mapping_incomplete_raises(tv_small_vit):
    model = build_model("vit_b16", 2, cfg=SMALL_VIT)
    state = tv_small_vit.state_dict()
    del state["encoder.layers.encoder_layer_1.self_attention.in_proj_bias"]
    with pytest.raises(PretrainedWeightsError, match=r"missing.*blocks\.1\.attn\.qkv\.bias"):
        load_torchvision_vit(model.backbone, state)
    state = tv_small_vit.state_dict()
    state["encoder.layers.encoder_layer_0.mlp.0.weight"] = torch.zeros(64, 64)
    with pytest.raises(PretrainedWeightsError, match=r"shape mismatch.*blocks\.0\.mlp\.linear1\.weight"):
        load_torchvision_vit(model.backbone, state)
    state = tv_small_vit.state_dict()
    state["encoder.layers.encoder_layer_2.ln_1.weight"] = torch.zeros(64)
    with pytest.raises(PretrainedWeightsError, match="unexpected"):
        load_torchvision_vit(model.backbone, state)


def test_vit_position_grid_interpolation(tv_small_vit):
    bigger = build_model("vit_b16", 2, cfg=SMALL_VIT, input_size=64)
    load_torchvision_vit(bigger.backbone, tv_small_vit.state_dict())
    assert bigger.patch_grid == (4, 4)
    pos = bigger.backbone.vit.patch_embedding.position_embeddings
    assert pos.shape == (1, 16, 64)
    src = tv_small_vit.encoder.pos_embedding[0, 1:]
    torch.testing.assert_close(pos[0, [0, 3, 12, 15]], src)  # corners kept (align_corners=True)


def test_vit_b16_full_size_load_cam_and_freeze(vit):
    assert vit.input_size == 224 and vit.patch_grid == (14, 14) and vit.num_features == 768
    assert vit.cam_layer == "backbone.vit.blocks.11.norm1"
    assert not any("norm_cross_attn" in k for k in vit.state_dict())
    shapes = tv_vit_shapes(ViTConfig())
    assert shapes["encoder.pos_embedding"] == (1, 197, 768)
    assert shapes["encoder.layers.encoder_layer_11.self_attention.in_proj_weight"] == (2304, 768)
    assert shapes["conv_proj.weight"] == (768, 3, 16, 16) and shapes["heads.head.weight"] == (1000, 768)
    state = _random_state(shapes, seed=1)
    load_torchvision_vit(vit.backbone, state)
    mapped = torchvision_vit_to_monai(state)
    target = vit.backbone.vit.state_dict()
    assert set(mapped) == set(target)
    for k, v in mapped.items():
        assert torch.equal(target[k], v), k
    torch.testing.assert_close(target["cls_token"], state["class_token"] + state["encoder.pos_embedding"][:, :1])
    assert torch.equal(target["blocks.11.attn.qkv.weight"],
                       state["encoder.layers.encoder_layer_11.self_attention.in_proj_weight"])

    # the Grad-CAM layer gives tokens (B, 197, 768) whose patch part receives gradient
    seen = {}
    layer = vit.get_submodule(vit.cam_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.update(act=out) or out.retain_grad())
    try:
        vit.eval()
        logits = vit(torch.randn(1, 3, 224, 224) * 0.1)
        logits[0, 1].backward()
    finally:
        handle.remove()
    assert logits.shape == (1, 3) and seen["act"].shape == (1, 197, 768)
    grid = tokens_to_grid(seen["act"].grad, vit.patch_grid)
    assert grid.shape == (1, 768, 14, 14) and grid.abs().sum() > 0
    vit.zero_grad(set_to_none=True)

    model_points = ("seed", "embeddings+first-half")
    assert all(p in freeze_points("vit_b16") for p in model_points)


def test_vit_seed_freeze():
    model = build_model("vit_b16", 2, cfg=ViTConfig(img_size=32, patch_size=16, hidden_size=32, mlp_dim=64,
                                                    num_layers=4, num_heads=2), freeze="embeddings+first-half")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "backbone.vit.cls_token" in frozen
    assert "backbone.vit.patch_embedding.position_embeddings" in frozen
    assert any(n.startswith("backbone.vit.blocks.1.") for n in frozen)
    assert not any(n.startswith(("backbone.vit.blocks.2.", "backbone.vit.norm.", "head.")) for n in frozen)


# ----------------------------------------------------------------------------------------------- efficientnet


def _grid_image(freq: float, size: int = 224) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = ((torch.sin(xx * freq) * torch.sin(yy * freq)) > 0).float().expand(3, -1, -1)[None]
    return (img - LITE_MEAN[0]) / LITE_STD[0]


def test_efficientnet_lite0_imagenet_classifies_sensibly():
    net = efficientnet_lite_imagenet()
    x = torch.cat([_grid_image(20), _grid_image(40)])
    with torch.no_grad():
        p1, p2 = net(x).softmax(1), net(x).softmax(1)
    torch.testing.assert_close(p1, p2)  # eval mode: deterministic
    entropy = -(p1 * p1.clamp_min(1e-12).log()).sum(1)
    assert (entropy < math.log(1000) - 1.0).all() and (p1.max(1).values > 0.05).all()
    # grid patterns -> ImageNet's grid classes (918 crossword puzzle, 904 window screen)
    assert set(p1.argmax(1).tolist()) <= {904, 918}


def test_efficientnet_lite0_backbone_equals_file_and_seed_freeze():
    model = build_model("efficientnet_lite0", 3, pretrained="imagenet", freeze="seed", input_size=64)
    ref = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    target = model.backbone.net.state_dict()
    assert set(ref) - set(target) == {"_fc.weight", "_fc.bias"} and set(target) <= set(ref)
    for k, v in target.items():
        assert torch.equal(v, ref[k]), k
    frozen = {n.split(".")[2] + ("." + n.split(".")[3] if n.split(".")[2] == "_blocks" else "")
              for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"_conv_stem", "_bn0", "_blocks.0", "_blocks.1", "_blocks.2"}
    model.train()
    assert not model.backbone.net._blocks[2]._bn1.training and model.backbone.net._blocks[3]._bn1.training
    # our feature map is the package's extract_features
    model.eval()
    package = efficientnet_lite_imagenet()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.feature_map(x), package.extract_features(x))


def test_efficientnet_strict_load_and_unavailable_weights(tmp_path):
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    del state["_blocks.5._bn2.running_mean"]
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match=r"_blocks\.5\._bn2\.running_mean"):
        build_model("efficientnet_lite0", 3, pretrained=str(path))
    with pytest.raises(PretrainedWeightsError, match="only efficientnet_lite0"):
        build_model("efficientnet_lite1", 3, pretrained="imagenet")
