"""DenseNet-121 (MONAI) with our own, checked mapping of torchvision's ImageNet weights.

torchvision layout -> MONAI layout:
  ``features.conv0|norm0|transitionN|norm5.*``                   -> unchanged
  ``features.denseblockB.denselayerL.{norm,conv}{1,2}.*``        -> ``...denselayerL.layers.{norm,conv}{1,2}.*``
  old-style ``...denselayerL.norm.1.weight`` (the .pth on the hub) -> first renamed ``norm1.weight`` (the
  regex torchvision itself uses), then as above
  ``classifier.*`` (ImageNet, 1000 classes)                      -> dropped: our head is new.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from monai.networks.nets import DenseNet121
from torch import nn

from chestdx.models.base import ALL_BUT_HEAD, IMAGENET_MEAN, IMAGENET_STD, ChestModel
from chestdx.models.weights import is_no_weights, load_checked, resolve_state_dict

__all__ = ["DENSENET121_URL", "FREEZE_POINTS", "build_densenet121", "load_torchvision_densenet",
           "torchvision_densenet_to_monai"]

DENSENET121_URL = "https://download.pytorch.org/models/densenet121-a639ec97.pth"

# torchvision's own regex for the old ``norm.1`` / ``conv.2`` names (torchvision.models.densenet).
_OLD_STYLE = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_DENSE_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.((?:norm|conv)[12]\..+)$")

# "seed" = the seed's "first 50 Keras layers" of DenseNet121: the stem (conv0, norm0, relu0, pool0),
# dense block 1 (6 layers, 7 Keras layers each) and transition 1 (Keras stops at its BN; we freeze
# the whole transition: norm, conv, pool).
FREEZE_POINTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "seed": tuple(f"backbone.features.{m}" for m in
                  ("conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1")),
    "all-but-head": ALL_BUT_HEAD,
}
FREEZE_POINTS["stem+block1"] = FREEZE_POINTS["seed"]

CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


def torchvision_densenet_to_monai(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision DenseNet state dict (new or old style) to MONAI's DenseNet layout.

    The ImageNet ``classifier.*`` keys keep their name (the caller drops them).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _OLD_STYLE.match(key)
        if m:
            key = m.group(1) + m.group(2)
        m = _DENSE_LAYER.match(key)
        if m:
            key = f"{m.group(1)}.layers.{m.group(2)}"
        if key in out:
            raise ValueError(f"two source keys map to {key!r} (mixed old/new naming?)")
        out[key] = value
    return out


class DenseNetFeatures(DenseNet121):
    """MONAI DenseNet121 whose forward returns pooled features (B, 1024): ``class_layers.out`` removed."""

    def __init__(self) -> None:
        super().__init__(spatial_dims=2, in_channels=3, out_channels=1, pretrained=False)
        self.num_features = self.class_layers.out.in_features
        self.class_layers.out = nn.Identity()
        # not in place: Grad-CAM hooks on this layer need its output untouched by later ops
        self.class_layers.relu = nn.ReLU(inplace=False)


def load_torchvision_densenet(backbone: DenseNetFeatures, state: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision DenseNet-121 state dict into ``backbone``; every tensor is checked."""
    mapped = torchvision_densenet_to_monai(state)
    load_checked(backbone, mapped, "densenet121", ignore_extra=CLASSIFIER_KEYS)


def build_densenet121(num_labels: int, pretrained: str | None = None, metadata: Sequence[str] = (),
                      input_size: int | None = None) -> ChestModel:
    """DenseNet-121; ``pretrained``: None, "imagenet" (torchvision weights) or a .pth path of that layout."""
    backbone = DenseNetFeatures()
    if not is_no_weights(pretrained):
        load_torchvision_densenet(backbone, resolve_state_dict(pretrained, DENSENET121_URL, "densenet121"))
    return ChestModel("densenet121", backbone, backbone.num_features, num_labels,
                      input_size=input_size or 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      cam_layer="backbone.class_layers.relu", metadata=metadata,
                      pretrained=None if is_no_weights(pretrained) else str(pretrained))
