"""Saliency maps for ChestModels: Grad-CAM / Grad-CAM++ (MONAI), vanilla gradients and SmoothGrad.

Every method returns float32 maps (B, H, W) at the input size, each scaled to [0, 1]. The model is left as
found: training flag, ``requires_grad`` and ``.grad`` of its parameters are restored and all hooks removed.
ViT models (``patch_grid`` set) have their token activations (B, n_extra + gh*gw, C) reshaped to a
(B, C, gh, gw) grid inside the hooks (leading class/extra tokens dropped), so MONAI's CAM code is used as is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.visualize import GradCAM, GradCAMpp, ModelWithHooks, VanillaGrad
from torch import nn
from torch.nn import functional as F

from chestdx.models.base import tokens_to_grid as grid_from_tokens

METHODS = ("gradcam", "gradcampp", "smoothgrad", "vanilla")
CAM_METHODS = ("gradcam", "gradcampp")

__all__ = ["CAM_METHODS", "METHODS", "normalize_maps", "saliency_maps", "tokens_to_grid"]


def tokens_to_grid(t: torch.Tensor, patch_grid: tuple[int, int] | None) -> torch.Tensor:
    """ViT tokens -> (B, C, gh, gw) via ``chestdx.models.tokens_to_grid``; CNN maps (4-D or no grid) pass through."""
    if patch_grid is None or t.ndim == 4:
        return t
    return grid_from_tokens(t, patch_grid)


def normalize_maps(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min-max scale each map of a (B, H, W) stack to [0, 1]; constant (or non-finite) maps become zeros."""
    a = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo = a.reshape(len(a), -1).min(1)[:, None, None]
    span = a.reshape(len(a), -1).max(1)[:, None, None] - lo
    out = np.divide(a - lo, span, out=np.zeros_like(a), where=span > 0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class _HookedModel(ModelWithHooks):
    """MONAI's ModelWithHooks with removable hooks, tensor (not module) gradient hooks, token->grid
    reshaping and one class index per image (``score`` shaped (B, 1, 1, 1) so Grad-CAM++ broadcasts)."""

    def __init__(self, model: nn.Module, layer: str | None, patch_grid: tuple[int, int] | None = None):
        super().__init__(model, target_layer_names=(), register_forward=False, register_backward=True)
        self.patch_grid = patch_grid
        self.handles: list[Any] = []
        if layer is not None:
            modules = dict(model.named_modules())
            if layer not in modules:
                raise KeyError(f"cam_layer {layer!r} is not a submodule of {type(model).__name__}")
            self.target_layers = (layer,)
            self.register_forward = True
            self.handles.append(modules[layer].register_forward_hook(self._fwd_hook(layer)))

    def _fwd_hook(self, name: str):
        def hook(_module: nn.Module, _inp: Any, out: Any) -> Any:
            t = out[0] if isinstance(out, (tuple, list)) else out
            # clone: a later in-place op (e.g. F.relu(inplace=True)) must not change the stored activation
            self.activations[name] = tokens_to_grid(t.detach().clone(), self.patch_grid)
            replaced = None
            if not t.requires_grad and torch.is_grad_enabled():
                # Grad-CAM needs d score / d activation only: start the autograd graph here (the input and the
                # frozen parameters do not require grad), so the backward pass stops at this layer instead of
                # running through the whole backbone to the pixels. Same gradient, a fraction of the cost.
                # clone(): a non-leaf, so later in-place ops (ReLU(inplace=True)) stay legal.
                t = replaced = t.detach().requires_grad_(True).clone()
            if t.requires_grad:  # a tensor hook sees the gradient of this version, even if modified in place later
                t.register_hook(lambda g: self.gradients.__setitem__(name, tokens_to_grid(g, self.patch_grid)))
            if replaced is None:
                return None
            return replaced if not isinstance(out, (tuple, list)) else type(out)([replaced, *out[1:]])

        return hook

    def class_score(self, logits: torch.Tensor, class_idx: Any) -> torch.Tensor:
        idx = torch.as_tensor(class_idx, device=logits.device, dtype=torch.long).reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(logits.shape[0])
        return logits.gather(1, idx[:, None]).reshape(-1, 1, 1, 1)

    def __call__(self, x: torch.Tensor, class_idx: Any = None, retain_graph: bool = False, **kwargs: Any):
        self.activations.clear()  # never let a previous batch's tensors stand in for this one's
        self.gradients.clear()
        try:
            return super().__call__(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        finally:
            # MONAI keeps ``score`` (with its autograd graph) and ``class_idx`` on the wrapper. The graph holds the
            # activation tensor hook, whose closure holds this wrapper: a cycle through C++ autograd nodes that
            # Python's gc cannot collect, leaking the graph's tensors and the model on every call. Drop them.
            self.score = None
            self.class_idx = None

    def remove(self) -> None:
        """Remove the hooks and drop every stored tensor (activations, gradients, score)."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.activations.clear()
        self.gradients.clear()
        self.score = None
        self.class_idx = None


class _GradCAMpp(GradCAMpp):
    """MONAI's Grad-CAM++ without its ``exp(score)`` factor.

    MONAI multiplies the gradients by ``exp(score)``: a positive factor per image that cancels in the per-image
    min-max normalisation, but overflows float32 to inf (then nan) for logits above ~88 and underflows to 0
    below ~-103, turning the map all-zero. Dropping it gives the same normalised map without the overflow.
    """

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):  # type: ignore[override]
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        acti, grad = acti[layer_idx], grad[layer_idx]
        b, c, *spatial = grad.shape
        ones = [1] * len(spatial)
        alpha_nr = grad.pow(2)
        alpha_dr = alpha_nr.mul(2) + acti.mul(grad.pow(3)).view(b, c, -1).sum(-1).view(b, c, *ones)
        alpha_dr = torch.where(alpha_dr != 0.0, alpha_dr, torch.ones_like(alpha_dr))
        alpha = alpha_nr.div(alpha_dr + 1e-7)
        weights = (alpha * F.relu(grad)).view(b, c, -1).sum(-1).view(b, c, *ones)
        return F.relu((weights * acti).sum(1, keepdim=True))


class _BatchVanillaGrad(VanillaGrad):
    """MONAI VanillaGrad without its batch-size-1 restriction (each image backpropagates its own score)."""

    def get_grad(self, x: torch.Tensor, index: Any, retain_graph: bool = False, **kwargs: Any) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        self._model(x, class_idx=index, retain_graph=retain_graph, **kwargs)
        if x.grad is None:
            raise RuntimeError("no gradient reached the input: is the model's forward differentiable?")
        return x.grad.detach()


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode, parameters not requiring grad; restores training flag, requires_grad and .grad after."""
    was_training = model.training
    params = list(model.parameters())
    state = [(p, p.requires_grad, p.grad) for p in params]
    model.eval()
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, req, grad in state:
            p.requires_grad_(req)
            p.grad = grad
        model.train(was_training)


def _class_tensor(class_indices: int | Sequence[int] | torch.Tensor | np.ndarray, b: int) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(class_indices), dtype=torch.long).reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(b)
    if idx.numel() != b:
        raise ValueError(f"class_indices has {idx.numel()} entries for {b} images")
    return idx.clone()


def _as_float(a: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.detach().clone().float().to(device)


def _kw(meta: torch.Tensor | None, sl: slice | torch.Tensor) -> dict[str, Any]:
    return {} if meta is None else {"meta": meta[sl]}


def saliency_maps(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    class_indices: int | Sequence[int] | torch.Tensor | np.ndarray,
    method: str = "gradcam",
    meta: torch.Tensor | np.ndarray | None = None,
    n_samples: int = 25,
    noise: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
    cam_layer: str | None = None,
) -> np.ndarray:
    """Saliency maps (B, H, W) float32 in [0, 1] for ``x`` (B, C, H, W), one class index per image (or one for all).

    ``method``: "gradcam" / "gradcampp" (MONAI, at ``model.cam_layer`` unless ``cam_layer`` is given, upsampled
    bilinearly), "vanilla" (|d score / d x|, max over channels) or "smoothgrad" (root mean square of the
    gradients of ``n_samples`` noisy copies, noise std = ``noise`` * (max - min) of each image; seeded).
    ``meta`` (B, M) is passed to ``model(x, meta=...)`` for metadata-fusion models. ``batch_size`` bounds
    images (CAM, vanilla) or noisy copies (SmoothGrad) per forward pass. Scores are the raw logits.
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose from {METHODS}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.inference_mode(False):
        xt = _as_float(x, device)
        if xt.ndim != 4:
            raise ValueError(f"x must be (B, C, H, W), got {tuple(xt.shape)}")
        mt = None if meta is None else _as_float(meta, device)
        idx = _class_tensor(class_indices, len(xt)).to(device)
    b = xt.shape[0]
    if mt is not None and mt.shape[0] != b:
        raise ValueError(f"meta has {mt.shape[0]} rows for {b} images")
    bs = max(1, int(batch_size))

    layer = (cam_layer or getattr(model, "cam_layer", None)) if method in CAM_METHODS else None
    if method in CAM_METHODS and not layer:
        raise ValueError("Grad-CAM needs model.cam_layer (or cam_layer=...)")
    hooked = _HookedModel(model, layer, getattr(model, "patch_grid", None))
    try:
        with _frozen_eval(model):
            if method == "smoothgrad":
                grads = _BatchVanillaGrad(hooked)
                out = [
                    _smoothgrad_one(grads, xt[i], idx[i], None if mt is None else mt[i], n_samples, noise, bs, seed + i)
                    for i in range(b)
                ]
            else:
                out = []
                for i in range(0, b, bs):
                    sl = slice(i, i + bs)
                    # CAM methods start the graph at the target layer (see _HookedModel); only the input-gradient
                    # methods need the pixels to require grad.
                    xb = xt[sl].detach().clone().requires_grad_(method == "vanilla")
                    if method == "vanilla":
                        out.extend(_BatchVanillaGrad(hooked)(xb, idx[sl], **_kw(mt, sl)).abs().amax(1))
                    else:
                        cam_cls = GradCAM if method == "gradcam" else _GradCAMpp
                        cam = cam_cls(hooked, target_layers=layer, postprocessing=lambda t: t)
                        out.extend(cam(xb, class_idx=idx[sl], **_kw(mt, sl))[:, 0])
            maps = torch.stack(out)
    finally:
        hooked.remove()
    return normalize_maps(maps)


def _smoothgrad_one(
    grads: _BatchVanillaGrad,
    x: torch.Tensor,
    cls: torch.Tensor,
    meta: torch.Tensor | None,
    n_samples: int,
    noise: float,
    bs: int,
    seed: int,
) -> torch.Tensor:
    """SmoothGrad (magnitude form, as MONAI's SmoothGrad) of one image (C, H, W) -> (H, W), noisy copies batched."""
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    std = float(noise) * float(x.max() - x.min())
    total = torch.zeros_like(x)
    done = 0
    while done < n_samples:
        k = min(bs, n_samples - done)
        eps = torch.randn((k, *x.shape), generator=gen, device=x.device, dtype=x.dtype) * std
        kw = {} if meta is None else {"meta": meta[None].expand(k, -1)}
        g = grads(x[None] + eps, cls.expand(k), **kw)
        total += (g * g).sum(0)
        done += k
    return (total / max(n_samples, 1)).sqrt().amax(0)
