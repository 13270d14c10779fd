"""Saliency maps: shapes/ranges, model state left intact, ViT token path, and end-to-end localization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chestdx.explain import METHODS, localization_table, pointing_game_chance, pointing_game_hit, saliency_maps
from chestdx.explain.saliency import tokens_to_grid


class TinyCNN(nn.Module):
    """ChestModel-like CNN: ``cam_layer`` names the last conv (16x16 at 64 px); optional metadata fusion."""

    cam_layer = "features.6"
    patch_grid = None

    def __init__(self, num_labels: int = 1, n_meta: int = 0, pool: str = "max"):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
        )
        self.n_meta, self.pool = n_meta, pool
        self.head = nn.Linear(16 + n_meta, num_labels)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        f = F.relu(self.features(x), inplace=True)  # in place on the cam_layer output, as torchvision's DenseNet
        f = f.amax((2, 3)) if self.pool == "max" else f.mean((2, 3))
        if self.n_meta:
            if meta is None:
                raise ValueError("this model needs meta")
            f = torch.cat([f, meta], 1)
        return self.head(f)


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.norm(t + F.gelu(self.fc(t)))


class TinyViT(nn.Module):
    """Conv patch embed -> [cls] + patch tokens -> two blocks -> pool -> head; ``cam_layer`` outputs tokens."""

    cam_layer = "blocks.1.norm"

    def __init__(self, size: int = 64, patch: int = 4, d: int = 32, num_labels: int = 1, pool: str = "mean"):
        super().__init__()
        self.patch_grid = (size // patch, size // patch)
        self.patch_embed = nn.Conv2d(3, d, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 1 + self.patch_grid[0] * self.patch_grid[1], d))
        self.blocks = nn.Sequential(Block(d), Block(d))
        self.head = nn.Linear(d, num_labels)
        self.pool = pool

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = self.blocks(torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos)
        return self.head(t.amax(1) if self.pool == "max" else t.mean(1))


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def blobs(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list]:
    """Gray images in [0, 1]; odd indices (label 1) hold a bright disc of radius 3-5 px with its (x, y, w, h) box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    imgs = np.empty((n, size, size), np.float32)
    labels, boxes = np.zeros(n, np.float32), [None] * n
    for i in range(n):
        img = 0.3 + 0.05 * rng.standard_normal((size, size)) + 0.1 * rng.uniform(-1, 1) * xx / size
        if i % 2:
            r = rng.uniform(3, 5)
            cx, cy = rng.uniform(r + 2, size - r - 2, 2)
            img += 0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
            labels[i], boxes[i] = 1.0, (cx - r, cy - r, 2 * r, 2 * r)
        imgs[i] = np.clip(img, 0, 1)
    return imgs, labels, boxes


def to3(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs)[:, None].repeat(1, 3, 1, 1)


def train(model: nn.Module, imgs: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0, prep=to3) -> nn.Module:
    """Plain Adam loop, batches of 32, BCE on logits (B, 1)."""
    torch.manual_seed(seed)
    model.train()
    x, y = prep(imgs), torch.from_numpy(np.asarray(labels, np.float32))[:, None]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_shapes_range_and_model_left_intact(method, arch):
    torch.manual_seed(0)
    model = TinyCNN(num_labels=3) if arch == "cnn" else TinyViT(size=32, num_labels=3)
    model.train()
    model.head.weight.requires_grad_(False)  # a partially frozen model
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0) if p.requires_grad else None
    hooks = hook_count(model)
    x = torch.rand(3, 3, 32, 32)
    maps = saliency_maps(model, x, [0, 2, 1], method=method, n_samples=4, batch_size=2)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() == 1.0 or m.max() == 0.0 for m in maps)  # a Grad-CAM map may be all zero (ReLU)
    assert model.training and hook_count(model) == hooks
    assert not model.head.weight.requires_grad and model.head.bias.requires_grad
    assert all(p.grad is None if not p.requires_grad else bool((p.grad == 7.0).all()) for p in model.parameters())
    assert not x.requires_grad


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "vanilla"])
def test_batched_class_indices_match_single_images(method):
    torch.manual_seed(1)
    model = TinyCNN(num_labels=2)
    x = torch.rand(4, 3, 32, 32)
    cls = [0, 1, 1, 0]
    batched = saliency_maps(model, x, cls, method=method, batch_size=3)
    single = np.concatenate([saliency_maps(model, x[i : i + 1], cls[i], method=method) for i in range(4)])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    other = saliency_maps(model, x, 1 - np.array(cls), method=method)
    assert not np.allclose(batched, other, atol=1e-3)  # the class index matters


def test_smoothgrad_seeded_and_under_no_grad_or_inference_mode():
    torch.manual_seed(2)
    model = TinyCNN()
    x = torch.rand(2, 3, 32, 32)
    a = saliency_maps(model, x, 0, method="smoothgrad", n_samples=5, batch_size=2, seed=3)
    with torch.no_grad():
        b = saliency_maps(model, x, 0, method="smoothgrad", n_samples=5, batch_size=4, seed=3)
    np.testing.assert_allclose(a, b, atol=1e-5)  # batch size does not change the noise draws
    with torch.inference_mode():
        xi = torch.rand(1, 3, 32, 32)
        m = saliency_maps(model, xi, 0, method="gradcam")
    assert m.shape == (1, 32, 32)


def test_metadata_model_gets_meta():
    torch.manual_seed(3)
    model = TinyCNN(num_labels=2, n_meta=4)
    x, meta = torch.rand(2, 3, 32, 32), torch.rand(2, 4)
    for method in METHODS:
        assert saliency_maps(model, x, [1, 0], method=method, meta=meta, n_samples=3).shape == (2, 32, 32)
    with pytest.raises(ValueError, match="meta"):
        saliency_maps(model, x, 0, method="gradcam")


def test_errors_and_token_grid_order():
    model = TinyCNN()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency_maps(model, x, 0, method="lime")
    with pytest.raises(KeyError, match="nope"):
        saliency_maps(model, x, 0, cam_layer="nope")
    with pytest.raises(ValueError, match="entries"):
        saliency_maps(model, torch.rand(2, 3, 32, 32), [0, 0, 0])
    assert hook_count(model) == 0
    # token k (after the class token) lands at row k // gw, column k % gw
    t = torch.zeros(1, 1 + 6, 2)
    t[0, 1:, 0] = torch.arange(6.0)
    t[0, 0, 0] = 99.0
    g = tokens_to_grid(t, (2, 3))
    assert g.shape == (1, 2, 2, 3)
    assert g[0, 0].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.fixture(scope="module")
def blob_data():
    return blobs(512, seed=0), blobs(64, seed=1)


def _hit_rates(model, test, methods, tolerance=0.0):
    imgs, labels, boxes = test
    pos = np.nonzero(labels)[0]
    out = {}
    for method in methods:
        maps = saliency_maps(model, to3(imgs[pos]), 0, method=method, n_samples=16)
        out[method] = np.mean([pointing_game_hit(m, boxes[j], tolerance) for m, j in zip(maps, pos, strict=True)])
    chance = np.mean([pointing_game_chance(boxes[j], imgs.shape[1:], tolerance) for j in pos])
    return out, chance


def _accuracy(model, test) -> float:
    imgs, labels, _ = test
    with torch.no_grad():
        return float(((model(to3(imgs))[:, 0] > 0).numpy() == labels).mean())


@pytest.mark.slow
def test_end_to_end_cnn_maps_point_at_the_blob(blob_data):
    train_set, test_set = blob_data
    torch.manual_seed(0)
    model = train(TinyCNN(), train_set[0], train_set[1], steps=60)
    assert _accuracy(model, test_set) >= 0.95
    rates, chance = _hit_rates(model, test_set, ["gradcam", "gradcampp", "smoothgrad"])
    assert chance <= 0.05
    assert all(r >= 0.8 for r in rates.values()), rates


@pytest.mark.slow
def test_end_to_end_vit_token_cam_points_at_the_blob(blob_data):
    train_set, test_set = blob_data
    torch.manual_seed(0)
    model = train(TinyViT(pool="max"), train_set[0], train_set[1], steps=60)
    assert _accuracy(model, test_set) >= 0.9
    rates, chance = _hit_rates(model, test_set, ["gradcam"], tolerance=2.0)
    assert chance <= 0.1
    assert rates["gradcam"] >= 0.7, rates


@pytest.mark.slow
def test_end_to_end_on_phantom_masses():
    """SimpleCNN (registry) trained on phantom Masses at 64 px: maps hit the planted boxes far above chance."""
    phantom = pytest.importorskip("chestdx.data.phantom")
    registry = pytest.importorskip("chestdx.models.registry")
    tr = phantom.generate_phantom(384, 64, seed=0, labels=("Mass",), prevalence=0.5)
    te = phantom.generate_phantom(64, 64, seed=1, labels=("Mass",), prevalence=0.5)
    torch.manual_seed(0)
    model = registry.build_model("simple_cnn", 1, input_size=64)
    mean, std = torch.tensor(model.mean)[:, None, None], torch.tensor(model.std)[:, None, None]

    def prep(u8: np.ndarray) -> torch.Tensor:
        return (to3(u8.astype(np.float32) / 255.0) - mean) / std

    train(model, tr.images, tr.labels[:, 0], steps=60, prep=prep)
    model.eval()
    with torch.no_grad():
        p = torch.sigmoid(model(prep(te.images)))[:, 0].numpy()
    assert p[te.labels[:, 0] == 1].min() > np.median(p[te.labels[:, 0] == 0])  # it learned the finding
    boxes = te.boxes
    x = prep(te.images[boxes.image_index.to_numpy()])
    records = []
    for method in ("gradcam", "gradcampp", "smoothgrad"):
        maps = saliency_maps(model, x, 0, method=method, n_samples=8)
        records += [
            (r.image_id, r.label, method, m, (r.x, r.y, r.w, r.h))
            for r, m in zip(boxes.itertuples(), maps, strict=True)
        ]
    exact = localization_table(records).query("label == 'overall' and metric == 'pointing'").set_index("method")
    # block4 is an 8x8 grid at 64 px: allow half a cell for the coarse CAMs
    coarse = localization_table(records, tolerance=4.0).query("label == 'overall' and metric == 'pointing'")
    coarse = coarse.set_index("method")
    assert exact.loc["smoothgrad", "hit_rate"] >= 0.7 and exact.loc["smoothgrad", "chance"] <= 0.05, exact
    for method in ("gradcam", "gradcampp"):
        assert coarse.loc[method, "hit_rate"] >= 0.5 and coarse.loc[method, "chance"] <= 0.1, coarse


def _reference_cam(model: nn.Module, x: torch.Tensor, idx: torch.Tensor, plus: bool) -> np.ndarray:
    """Grad-CAM / Grad-CAM++ written out with plain autograd on the FULL graph (pixels and parameters requiring
    grad, no MONAI): the independent check of the graph-cut shortcut in ``saliency_maps``."""
    model.eval()
    layer = dict(model.named_modules())[model.cam_layer]
    grid = getattr(model, "patch_grid", None)
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        store["a"] = out.detach().clone()
        out.register_hook(lambda g: store.__setitem__("g", g))

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(x.clone().requires_grad_(True))
        logits.gather(1, idx[:, None]).sum().backward()
    finally:
        handle.remove()
    a, g = store["a"], store["g"]
    if grid is not None:
        a, g = tokens_to_grid(a, grid), tokens_to_grid(g, grid)
    if plus:
        alpha = g.pow(2) / (2 * g.pow(2) + (a * g.pow(3)).sum((2, 3), keepdim=True) + 1e-7)
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    else:
        w = g.mean((2, 3), keepdim=True)
    cam = F.relu((w * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.amin((1, 2), keepdim=True)
    span = cam.amax((1, 2), keepdim=True) - lo
    return (torch.where(span > 0, (cam - lo) / span.clamp_min(1e-30), 0.0)).detach().numpy()


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("arch", ["simple_cnn", "densenet121", "efficientnet_lite0", "vit_b16"])
def test_cam_matches_full_graph_reference_on_chestdx_models(method, arch):
    """The CAM path starts autograd at the target layer (cheap backward); maps must equal the full-graph ones.
    Models as the Predictor runs them (``InferenceNet``: 1-channel [0, 1] pixels in)."""
    from chestdx.models import build_model
    from chestdx.models.inference_net import InferenceNet
    from chestdx.models.vit import ViTConfig

    torch.manual_seed(0)
    small_vit = ViTConfig(img_size=32, patch_size=16, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)
    kw = {"cfg": small_vit} if arch == "vit_b16" else {}
    size = 32 if arch == "vit_b16" else 64
    net = InferenceNet(build_model(arch, 3, input_size=size, **kw))
    before = [p.requires_grad for p in net.parameters()]
    x, idx = torch.rand(3, 1, size, size), torch.tensor([0, 2, 1])
    got = saliency_maps(net, x, idx, method=method)
    ref = _reference_cam(net, x, idx, plus=method == "gradcampp")
    assert got.shape == ref.shape == (3, size, size)
    assert float(ref.max()) == pytest.approx(1.0)  # a real map, not all zeros
    assert float(np.abs(got - ref).max()) < 1e-4
    assert [p.requires_grad for p in net.parameters()] == before
