"""torchxrayvision's chest X-ray DenseNet-121 and ResNet-50 as chestdx models (``xrv_densenet121``, ``xrv_resnet50``).

Architecture. torchxrayvision 1.5.7's ``xrv.models.DenseNet`` is torchvision's DenseNet-121 layout with a
1-channel ``features.conv0`` and an 18-output ``classifier``; ``xrv.models.ResNet`` wraps torchvision's
``resnet50`` with a 1-channel ``conv1`` and an 18-output ``fc``. We build them from MONAI (``DenseNet121`` /
``ResNet``, whose key layouts differ from torchvision only by DenseNet's ``denselayerL.layers.`` level), map
the file with the same strict check as the ImageNet weights (every tensor, every shape, listed when wrong;
``classifier`` / ``fc`` included) and pool features exactly as xrv (``relu -> adaptive avg pool``; ResNet:
``avgpool``). xrv's classifier becomes chestdx's linear ``head``: its rows for our labels are copied in when
``labels`` are given (adopt, fine-tune start), so logit_k = W[xrv index of label k] . f + b[...].

Input convention (xrv: ``xrv.datasets.normalize(img, maxval=255)`` = (img/255)*2048 - 1024, 1 channel,
``XRayCenterCrop`` then ``XRayResizer(224)``; its forward resizes anything else to the native resolution with
``F.interpolate(bilinear, antialias=True)``). chestdx networks take (B,1,S,S) pixels x = u8/255 in [0, 1];
``mean = (0.5,)``, ``std = (1/2048,)`` make chestdx's ``Normalize`` compute (x - 0.5) * 2048 = 2048 x - 1024,
bit-identical to xrv's scaling of the same uint8 pixels (both scale factors are powers of two), on 1 channel.
The backbone then resizes to the native resolution exactly as xrv's ``fix_resolution`` when S differs (by
default ``input_size`` is the native resolution, so this is a no-op and the graph has no resize). Spatially,
chestdx's ``to_uint8_square`` (quantize to uint8, then PIL bilinear-antialiased resize of the whole image,
squashing a non-square one) replaces xrv's center crop of the long side + skimage resize of float pixels:
for square sources (NIH) no crop happens and only the resampling filter differs; for non-square sources
chestdx keeps the whole image squashed where xrv would cut the long side. Parity is therefore exact on the
same pixel input; docs/training.md gives the measured difference of the two preprocessing paths.

Outputs: raw logits. xrv's forward applies ``op_norm`` (a per-label piecewise-linear rescaling of the sigmoid
that maps its ``op_threshs`` to 0.5) when weights are loaded; chestdx does not: op_norm is monotone (same
AUROC) and not a logit, and chestdx fits its own calibration and thresholds on out-of-fold / validation
predictions. :func:`xrv_op_norm` reproduces xrv's numbers from our probabilities when wanted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, ResNet
from torch import nn

from chestdx.labels import canonical_label
from chestdx.models.base import ALL_BUT_HEAD, ChestModel
from chestdx.models.densenet import FREEZE_POINTS as DENSENET_FREEZE_POINTS
from chestdx.models.densenet import torchvision_densenet_to_monai
from chestdx.models.weights import is_no_weights, load_checked
from chestdx.models.xrv_weights import XRV_TARGETS, XrvSource, load_xrv_source

__all__ = ["DENSENET_FREEZE_POINTS", "RESNET_FREEZE_POINTS", "XRV_MEAN", "XRV_STD", "XrvDenseNetFeatures",
           "XrvResNetFeatures", "build_xrv", "build_xrv_densenet121", "build_xrv_resnet50", "map_xrv_labels",
           "xrv_op_norm"]

XRV_MEAN: tuple[float] = (0.5,)
XRV_STD: tuple[float] = (1.0 / 2048.0,)  # (x - 0.5) / (1/2048) = 2048 x - 1024 = xrv.datasets.normalize(u8, 255)

RESNET_FREEZE_POINTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "seed": tuple(f"backbone.{m}" for m in ("conv1", "bn1", "layer1")),
    "all-but-head": ALL_BUT_HEAD,
}
RESNET_FREEZE_POINTS["stem+layer1"] = RESNET_FREEZE_POINTS["seed"]


def fix_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """xrv's ``utils.fix_resolution``: square input resized to ``resolution`` (bilinear, antialiased)."""
    if x.shape[-2] != x.shape[-1]:
        raise ValueError(f"xrv models need square inputs, got {tuple(x.shape[-2:])} (center-crop first)")
    if x.shape[-1] == resolution:
        return x
    if torch.onnx.is_in_onnx_export():
        raise ValueError(f"cannot export the resize {x.shape[-1]} -> {resolution} px inside this xrv model to ONNX "
                         f"(antialiased bilinear has no opset-17 op): use image_size {resolution} for xrv models")
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)


class XrvDenseNetFeatures(DenseNet121):
    """MONAI DenseNet-121 on 1 channel; forward: resize to ``resolution``, features, relu, pool -> (B, 1024)."""

    classifier_key = "classifier"

    def __init__(self, resolution: int = 224) -> None:
        super().__init__(spatial_dims=2, in_channels=1, out_channels=1, pretrained=False)
        self.resolution = int(resolution)
        self.num_features = self.class_layers.out.in_features
        self.class_layers.out = nn.Identity()
        self.class_layers.relu = nn.ReLU(inplace=False)  # Grad-CAM reads its output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(fix_resolution(x, self.resolution))

    def from_xrv(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """xrv (torchvision) layout -> this module's layout (the classifier keeps its name)."""
        return torchvision_densenet_to_monai(state)


class XrvResNetFeatures(ResNet):
    """MONAI ResNet-50 (torchvision layout) on 1 channel; forward: resize, ..., avgpool -> (B, 2048)."""

    classifier_key = "fc"

    def __init__(self, resolution: int = 512) -> None:
        super().__init__(block="bottleneck", layers=[3, 4, 6, 3], block_inplanes=[64, 128, 256, 512],
                         spatial_dims=2, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B",
                         bias_downsample=False, num_classes=1)
        self.resolution = int(resolution)
        self.num_features = self.fc.in_features
        self.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(fix_resolution(x, self.resolution))

    def from_xrv(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state)


_BACKBONES = {"xrv_densenet121": (XrvDenseNetFeatures, 224, "backbone.class_layers.relu", DENSENET_FREEZE_POINTS),
              "xrv_resnet50": (XrvResNetFeatures, 512, "backbone.layer4", RESNET_FREEZE_POINTS)}


def load_xrv_backbone(backbone: XrvDenseNetFeatures | XrvResNetFeatures, src: XrvSource,
                      what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy ``src`` into ``backbone`` after the strict check; returns xrv's classifier (weight, bias).

    The check covers the classifier too (its shape must be (18, F)); ``op_threshs`` (a buffer in the state dict
    of an ``xrv.models.DenseNet`` built with weights) is the only key allowed to be left over.
    """
    holder = nn.Module()
    for name, child in backbone.named_children():
        holder.add_module(name, child)  # shared: load_checked writes into the backbone itself
    classifier = nn.Linear(backbone.num_features, len(src.labels))
    holder.add_module(backbone.classifier_key, classifier)
    load_checked(holder, backbone.from_xrv(src.state), what, ignore_extra=("op_threshs",))
    return classifier.weight.detach().clone(), classifier.bias.detach().clone()


def map_xrv_labels(xrv_labels: Sequence[str], labels: Sequence[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Our labels -> index of the xrv output (aliases via ``canonical_label``); and {dropped label: reason}."""
    trained = {canonical_label(t): i for i, t in enumerate(xrv_labels) if t}
    untrained = {canonical_label(t) for t in (*xrv_labels, *XRV_TARGETS) if t} - set(trained)
    kept: dict[str, int] = {}
    dropped: dict[str, str] = {}
    for label in labels:
        key = canonical_label(label)
        if key in trained:
            kept[label] = trained[key]
        elif key in untrained:
            dropped[label] = "these torchxrayvision weights were not trained on it (no output)"
        else:
            dropped[label] = "torchxrayvision has no output for it"
    return kept, dropped


def build_xrv(arch: str, num_labels: int, pretrained: str | XrvSource | None = None, metadata: Sequence[str] = (),
              input_size: int | None = None, labels: Sequence[str] | None = None) -> ChestModel:
    """An ``xrv_*`` ChestModel. ``pretrained``: None, ``xrv:<name>``, a ``.pt`` path, or an ``XrvSource``.

    With weights and ``labels`` (len == num_labels), head rows of labels that have an xrv output are xrv's
    classifier rows (the rest keep their random init); ``model.xrv_head`` records {label: xrv output}.
    """
    cls, native, cam_layer, _ = _BACKBONES[arch]
    src = None
    if isinstance(pretrained, XrvSource):
        src = pretrained
    elif not is_no_weights(pretrained):
        if str(pretrained).strip().lower() == "imagenet":
            raise ValueError(f"{arch} has no ImageNet weights: use pretrained: xrv:<torchxrayvision weights name> "
                             f"(e.g. xrv:densenet121-res224-all) or a torchxrayvision .pt file")
        src = load_xrv_source(str(pretrained), arch)
    if src is not None and src.arch != arch:
        raise ValueError(f"{src.spec} holds {src.arch} weights, not {arch}")
    resolution = native  # all xrv weights of an arch share it; a rebuild (no weights) must get the same net
    backbone = cls(resolution)
    weight = bias = None
    if src is not None:
        weight, bias = load_xrv_backbone(backbone, src, f"{arch} <- {src.spec}")
    model = ChestModel(arch, backbone, backbone.num_features, num_labels, input_size=input_size or resolution,
                       mean=XRV_MEAN, std=XRV_STD, cam_layer=cam_layer, metadata=metadata,
                       pretrained=None if src is None else src.spec)
    model.xrv_head = {}
    if src is not None and labels is not None:
        if len(labels) != num_labels:
            raise ValueError(f"{len(labels)} labels for {num_labels} outputs")
        kept, _ = map_xrv_labels(src.labels, labels)
        with torch.no_grad():
            for row, label in enumerate(labels):
                if label in kept:
                    model.head.weight[row].zero_()
                    model.head.weight[row, :backbone.num_features] = weight[kept[label]]
                    model.head.bias[row] = bias[kept[label]]
                    model.xrv_head[label] = src.labels[kept[label]]
    return model


def build_xrv_densenet121(num_labels: int, pretrained: str | XrvSource | None = None, metadata: Sequence[str] = (),
                          input_size: int | None = None, labels: Sequence[str] | None = None) -> ChestModel:
    """torchxrayvision DenseNet-121 (``pretrained``: ``xrv:densenet121-res224-all`` etc. or a .pt path)."""
    return build_xrv("xrv_densenet121", num_labels, pretrained, metadata, input_size, labels)


def build_xrv_resnet50(num_labels: int, pretrained: str | XrvSource | None = None, metadata: Sequence[str] = (),
                       input_size: int | None = None, labels: Sequence[str] | None = None) -> ChestModel:
    """torchxrayvision ResNet-50 at 512 px (``pretrained``: ``xrv:resnet50-res512-all`` or a .pt path)."""
    return build_xrv("xrv_resnet50", num_labels, pretrained, metadata, input_size, labels)


def xrv_op_norm(probs: np.ndarray, op_threshs: Sequence[float]) -> np.ndarray:
    """xrv's ``models.op_norm`` in numpy: p < t -> p / (2t); else 1 - (1 - p) / (2(1 - t)); NaN t -> 0.5."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.broadcast_to(np.asarray(op_threshs, dtype=np.float64), p.shape)
    out = np.full(p.shape, 0.5)
    ok = ~np.isnan(t)
    low = ok & (p < t)
    high = ok & ~(p < t)
    out[low] = p[low] / (t[low] * 2)
    out[high] = 1.0 - (1.0 - p[high]) / ((1.0 - t[high]) * 2)
    return out
