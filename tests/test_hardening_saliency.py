"""Saliency hardening: no tensors kept alive across calls (the web app's per-heatmap leak) and Grad-CAM++ maps
that survive huge / very negative logits (MONAI's exp(score) factor overflowed to an all-zero map)."""

from __future__ import annotations

import gc
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from monai.visualize import GradCAMpp, ModelWithHooks

from chestdx.explain import saliency_maps
from chestdx.explain.saliency import _HookedModel, normalize_maps
from test_explain_saliency import TinyCNN


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "vanilla", "smoothgrad"])
def test_repeated_calls_keep_no_tensors_alive(method: str) -> None:
    torch.manual_seed(0)
    model = TinyCNN(num_labels=3).eval()
    x = torch.rand(2, 3, 64, 64)
    kw = {"n_samples": 3} if method == "smoothgrad" else {}
    saliency_maps(model, x, [0, 1], method=method, **kw)  # warm-up: lazily created globals
    before = _live_tensors()
    tracemalloc.start()
    try:
        saliency_maps(model, x, [0, 1], method=method, **kw)
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(30):
            saliency_maps(model, x, [2, 0], method=method, **kw)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert _live_tensors() == before  # was +5 per call for the CAM methods (score graph <-> hook cycle)
    assert grown < 200_000, f"{grown} bytes of Python allocations kept after 30 calls"


def test_hooked_model_drops_score_after_call() -> None:
    model = TinyCNN(num_labels=2).eval()
    hooked = _HookedModel(model, model.cam_layer)
    try:
        x = torch.rand(1, 3, 64, 64, requires_grad=True)
        hooked(x, class_idx=torch.tensor([1]))
        assert hooked.score is None and hooked.class_idx is None
    finally:
        hooked.remove()
    assert not hooked.activations and not hooked.gradients and not hooked.handles


def _shifted(bias: float) -> TinyCNN:
    torch.manual_seed(1)
    model = TinyCNN(num_labels=2).eval()
    with torch.no_grad():
        model.head.bias.fill_(bias)  # same gradients, logits shifted far beyond exp()'s float32 range
    return model


@pytest.mark.parametrize("bias", [120.0, -150.0, 1e4])
def test_gradcampp_survives_extreme_logits(bias: float) -> None:
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ref = saliency_maps(_shifted(0.0), x, [0, 1, 0], method="gradcampp")
    got = saliency_maps(_shifted(bias), x, [0, 1, 0], method="gradcampp")
    with torch.no_grad():
        logits = _shifted(bias)(x)
    assert float(logits.abs().min()) > 88  # the regime where MONAI's map was all zeros
    assert (got.reshape(3, -1).max(1) > 0.99).all()
    np.testing.assert_allclose(got, ref, atol=1e-4)


class _KeepScore(_HookedModel):
    """Our hooks, but MONAI's own call (keeps ``score``) so MONAI's Grad-CAM++ can run as the reference."""

    def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
        return ModelWithHooks.__call__(self, x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)


def test_gradcampp_matches_monai_at_moderate_logits() -> None:
    model = _shifted(0.5)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = saliency_maps(model, x, [1, 0], method="gradcampp")
    hooked = _KeepScore(model, model.cam_layer)
    try:
        cam = GradCAMpp(hooked, target_layers=model.cam_layer, postprocessing=lambda t: t)
        with torch.enable_grad():
            theirs = normalize_maps(cam(x.clone().requires_grad_(True), class_idx=torch.tensor([1, 0]))[:, 0])
    finally:
        hooked.remove()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
