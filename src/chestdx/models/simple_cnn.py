"""A tiny 4-conv CNN for tests and the phantom demo (any input size; trains in seconds on CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chestdx.models.base import ALL_BUT_HEAD, ChestModel
from chestdx.models.weights import is_no_weights, load_checked, load_weights_file

__all__ = ["FREEZE_POINTS", "SimpleCNN", "build_simple_cnn"]

SIMPLE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SIMPLE_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
FREEZE_POINTS: dict[str, tuple[str, ...]] = {"none": (), "seed": ("backbone.block1",), "all-but-head": ALL_BUT_HEAD}


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    """conv-BN-ReLU x4 (16, 32, 64, 128 channels; max-pool after the first three) + global mean (B, 128)."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        c = [3, *widths]
        self.block1 = _block(c[0], c[1], True)
        self.block2 = _block(c[1], c[2], True)
        self.block3 = _block(c[2], c[3], True)
        self.block4 = _block(c[3], c[4], False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.pool(x).flatten(1)


def build_simple_cnn(num_labels: int, pretrained: str | None = None, metadata: Sequence[str] = (),
                     input_size: int | None = None) -> ChestModel:
    """Tiny CNN (default input 128); ``pretrained`` may only be a path to a SimpleCNN backbone state dict."""
    backbone = SimpleCNN()
    if not is_no_weights(pretrained):
        if str(pretrained).strip().lower() == "imagenet":
            raise ValueError("simple_cnn has no ImageNet weights; use pretrained=None")
        load_checked(backbone, load_weights_file(pretrained), "simple_cnn")
    return ChestModel("simple_cnn", backbone, backbone.num_features, num_labels, input_size=input_size or 128,
                      mean=SIMPLE_MEAN, std=SIMPLE_STD, cam_layer="backbone.block4", metadata=metadata,
                      pretrained=None if is_no_weights(pretrained) else str(pretrained))
