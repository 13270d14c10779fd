"""``InferenceNet``: normalization + ChestModel in one module taking (B,1,S,S) pixels in [0,1].

Used by evaluation, saliency, the Predictor and the ONNX export, so none of them can normalize differently.
"""

from __future__ import annotations

import torch
from torch import nn

from chestdx.data.normalize import Normalize


class InferenceNet(nn.Module):
    """``forward(x01, meta=None) -> logits``; ``cam_layer``/``patch_grid`` point into the wrapped model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.norm = Normalize(model.mean, model.std)
        self.model = model
        self.cam_layer = f"model.{model.cam_layer}"
        self.patch_grid = model.patch_grid
        self.metadata = model.metadata
        self.input_size = model.input_size

    def forward(self, x01: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(self.norm(x01), meta)
