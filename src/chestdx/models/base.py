"""``ChestModel``: a backbone giving pooled features, optional metadata fusion, and a linear head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from chestdx.models.metadata import metadata_dim, missing_metadata, validate_fields

__all__ = ["ALL_BUT_HEAD", "ChestModel", "IMAGENET_MEAN", "IMAGENET_STD", "tokens_to_grid"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
ALL_BUT_HEAD: tuple[str, ...] = ("backbone",)


class ChestModel(nn.Module):
    """Multi-label classifier: ``logits = head(cat(dropout(backbone(x)), meta))``.

    Attributes: ``arch``, ``num_labels``, ``num_features`` (F), ``input_size``, ``mean``/``std`` (per-channel
    normalization of [0, 1] pixels), ``metadata`` (field names), ``cam_layer`` (dotted submodule name for
    Grad-CAM), ``patch_grid`` (None for CNNs; (gh, gw) for ViT, whose ``cam_layer`` outputs tokens
    (B, 1 + gh*gw, C), class token first), ``freeze`` and ``frozen`` (names of frozen modules/parameters).
    """

    def __init__(self, arch: str, backbone: nn.Module, num_features: int, num_labels: int, *,
                 input_size: int, mean: Sequence[float], std: Sequence[float], cam_layer: str,
                 patch_grid: tuple[int, int] | None = None, metadata: Sequence[str] = (),
                 dropout: float = 0.0, pretrained: str | None = None) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.arch = arch
        self.num_labels = int(num_labels)
        self.num_features = int(num_features)
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.cam_layer = cam_layer
        self.patch_grid = patch_grid
        self.metadata = validate_fields(metadata)
        self.meta_dim = metadata_dim(self.metadata)
        self.pretrained = pretrained
        self.freeze = "none"
        self.frozen: tuple[str, ...] = ()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.num_features + self.meta_dim, self.num_labels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image features (B, F) (without metadata)."""
        return self.backbone(x)

    def _meta(self, meta: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if not self.metadata:
            if meta is not None and meta.numel() and meta.shape[-1]:
                raise ValueError(f"{self.arch} was built without metadata but got meta {tuple(meta.shape)}")
            return None
        if meta is None:  # unknown metadata: the same encoding as missing values
            return torch.from_numpy(missing_metadata(like.shape[0], self.metadata)).to(like)
        if meta.shape != (like.shape[0], self.meta_dim):
            raise ValueError(f"meta must be (B, {self.meta_dim}) for fields {self.metadata}, "
                             f"got {tuple(meta.shape)}")
        return meta.to(like)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_labels). ``meta`` (B, 2*len(metadata)) from ``encode_metadata``; None = unknown."""
        f = self.dropout(self.features(x))
        m = self._meta(meta, f)
        return self.head(f if m is None else torch.cat([f, m], dim=1))

    def apply_freeze(self, point: str, names: Sequence[str]) -> None:
        """Freeze the named submodules/parameters (requires_grad False; their modules stay in eval)."""
        for name in names:
            for p in self._params_of(name):
                p.requires_grad_(False)
        self.freeze = point
        self.frozen = tuple(names)
        self.train(self.training)

    def _params_of(self, name: str) -> list[nn.Parameter]:
        try:
            return list(self.get_submodule(name).parameters())
        except AttributeError:
            return [self.get_parameter(name)]

    def train(self, mode: bool = True) -> ChestModel:
        """Like ``nn.Module.train`` but frozen modules (BatchNorm statistics, dropout) stay in eval mode."""
        super().train(mode)
        if mode:
            modules: Mapping[str, nn.Module] = dict(self.named_modules())
            for name in self.frozen:
                if name in modules:
                    modules[name].eval()
        return self

    def describe(self) -> dict[str, Any]:
        """The facts a checkpoint needs to rebuild this model."""
        return {"arch": self.arch, "num_labels": self.num_labels, "input_size": self.input_size,
                "mean": list(self.mean), "std": list(self.std), "metadata": list(self.metadata),
                "freeze": self.freeze, "pretrained": self.pretrained, "cam_layer": self.cam_layer,
                "patch_grid": list(self.patch_grid) if self.patch_grid else None}


def tokens_to_grid(tokens: torch.Tensor, patch_grid: tuple[int, int]) -> torch.Tensor:
    """ViT tokens (B, 1 + gh*gw, C) -> patch map (B, C, gh, gw), dropping the leading class token."""
    gh, gw = patch_grid
    if tokens.ndim != 3 or tokens.shape[1] < gh * gw:
        raise ValueError(f"expected tokens (B, >= {gh * gw}, C), got {tuple(tokens.shape)}")
    patches = tokens[:, tokens.shape[1] - gh * gw:, :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)
