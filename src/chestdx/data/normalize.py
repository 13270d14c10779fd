"""Torch normalization module shared by training, evaluation, serving and ONNX export."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(B,1,H,W) in [0,1] -> (B,C,H,W) normalized with the model's mean/std (C = len(mean)).

    Part of every exported/served model, so inference cannot use another normalization.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01.expand(-1, self.mean.shape[1], -1, -1) - self.mean) / self.std
