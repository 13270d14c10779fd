"""ViT-B/16 (MONAI ``ViT``) with a checked mapping of torchvision's ``vit_b_16`` weights.

torchvision layout -> MONAI layout (``D`` hidden size, ``N`` patches):
  ``conv_proj.{weight,bias}``                        -> ``patch_embedding.patch_embeddings.*``
  ``class_token`` (1,1,D) + ``encoder.pos_embedding[:, :1]``  -> ``cls_token``
  ``encoder.pos_embedding[:, 1:]`` (1,N,D)           -> ``patch_embedding.position_embeddings``
      (torchvision adds the class position after concatenation, MONAI adds patch positions before it and
      none to the class token; dropout is 0 so folding it into ``cls_token`` is exact.) A different patch
      grid is reached by bicubic interpolation of the position grid (as torchvision does).
  ``encoder.layers.encoder_layer_i.ln_1|ln_2``       -> ``blocks.i.norm1|norm2``
  ``...self_attention.in_proj_{weight,bias}`` [q;k;v] -> ``blocks.i.attn.qkv`` (MONAI splits its output as
      "(qkv heads d)", i.e. the same [q;k;v] stacking with heads contiguous: copied as is)
  ``...self_attention.out_proj``                     -> ``blocks.i.attn.out_proj``
  ``...mlp.0|mlp.3`` (older ``mlp.linear_1|linear_2``) -> ``blocks.i.mlp.linear1|linear2``
  ``encoder.ln``                                     -> ``norm``
  ``heads.*`` (ImageNet classifier)                  -> dropped.
LayerNorm eps is 1e-6 as in torchvision; MONAI's unused ``norm_cross_attn`` layers are removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chestdx.models.base import ALL_BUT_HEAD, IMAGENET_MEAN, IMAGENET_STD, ChestModel
from chestdx.models.weights import PretrainedWeightsError, is_no_weights, load_checked, resolve_state_dict

__all__ = ["FREEZE_POINTS", "VIT_B16", "VIT_B16_URL", "ViTConfig", "ViTFeatures", "build_vit_b16",
           "freeze_points_for", "load_torchvision_vit", "torchvision_vit_to_monai"]

VIT_B16_URL = "https://download.pytorch.org/models/vit_b_16-c867db91.pth"
LN_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a plain ViT (defaults: ViT-B/16 at 224 px)."""

    img_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_layers: int = 12
    num_heads: int = 12

    @property
    def grid(self) -> tuple[int, int]:
        g = self.img_size // self.patch_size
        return (g, g)


VIT_B16 = ViTConfig()


def _monai_vit(cfg: ViTConfig) -> nn.Module:
    try:
        from monai.networks.nets import ViT

        return ViT(in_channels=3, img_size=cfg.img_size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                   mlp_dim=cfg.mlp_dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads, proj_type="conv",
                   pos_embed_type="learnable", classification=True, num_classes=1, dropout_rate=0.0,
                   spatial_dims=2, post_activation=None, qkv_bias=True)
    except Exception as exc:
        if "einops" in str(exc):
            raise ImportError("MONAI's ViT needs the 'einops' package: pip install einops") from exc
        raise


class ViTFeatures(nn.Module):
    """MONAI ViT returning the final-norm class token (B, D); ``vit.classification_head`` removed."""

    def __init__(self, cfg: ViTConfig = VIT_B16) -> None:
        super().__init__()
        if cfg.img_size % cfg.patch_size:
            raise ValueError(f"ViT input size {cfg.img_size} is not a multiple of the patch size {cfg.patch_size}")
        self.cfg = cfg
        self.num_features = cfg.hidden_size
        self.vit = _monai_vit(cfg)
        self.vit.classification_head = nn.Identity()
        for block in self.vit.blocks:
            block.norm_cross_attn = nn.Identity()  # only used with cross attention (off): no dead params
        for m in self.vit.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = LN_EPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0]


_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$")
_LAYER_PARTS = {
    "ln_1": "norm1", "ln_2": "norm2",
    "self_attention.in_proj_weight": "attn.qkv.weight", "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.out_proj",
    "mlp.0": "mlp.linear1", "mlp.3": "mlp.linear2", "mlp.linear_1": "mlp.linear1", "mlp.linear_2": "mlp.linear2",
}


def _resize_positions(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, n*n, D) square position grid -> (1, gh*gw, D), bicubic (align_corners=True, as torchvision)."""
    n = int(round(pos.shape[1] ** 0.5))
    if n * n != pos.shape[1]:
        raise PretrainedWeightsError(f"vit: position embedding of {pos.shape[1]} patches is not a square grid")
    if (n, n) == tuple(grid):
        return pos
    d = pos.shape[2]
    img = pos.reshape(1, n, n, d).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=grid, mode="bicubic", align_corners=True)
    return img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d).to(pos.dtype)


def torchvision_vit_to_monai(state: Mapping[str, torch.Tensor],
                             grid: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Rename/reshape a torchvision ViT state dict to MONAI's ``ViT`` layout (ImageNet ``heads.*`` dropped).

    Keys that are not recognised are kept under their own name, so the completeness check reports them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("heads."):
            continue
        m = _LAYER.match(key)
        if m:
            i, rest = m.groups()
            for src, dst in _LAYER_PARTS.items():
                if rest == src or rest.startswith(src + "."):
                    out[f"blocks.{i}.{dst}{rest[len(src):]}"] = value
                    break
            else:
                out[key] = value
        elif key.startswith("conv_proj."):
            out["patch_embedding.patch_embeddings." + key[len("conv_proj."):]] = value
        elif key.startswith("encoder.ln."):
            out["norm." + key[len("encoder.ln."):]] = value
        elif key not in ("class_token", "encoder.pos_embedding"):
            out[key] = value
    if "class_token" in state and "encoder.pos_embedding" in state:
        pos = state["encoder.pos_embedding"]
        out["cls_token"] = state["class_token"] + pos[:, :1]
        patches = pos[:, 1:]
        out["patch_embedding.position_embeddings"] = _resize_positions(patches, grid) if grid else patches
    else:  # let the completeness check name what is missing
        for key in ("class_token", "encoder.pos_embedding"):
            if key in state:
                out[key] = state[key]
    return out


def load_torchvision_vit(backbone: ViTFeatures, state: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision ViT state dict into ``backbone.vit``; every tensor is checked."""
    load_checked(backbone.vit, torchvision_vit_to_monai(state, backbone.cfg.grid), "vit_b16")


def freeze_points_for(num_layers: int) -> dict[str, tuple[str, ...]]:
    """"seed" / "embeddings+first-half": patch embedding (conv + positions), class token and the first
    ``num_layers // 2`` transformer blocks; "all-but-head": the whole backbone."""
    half = ("backbone.vit.patch_embedding", "backbone.vit.cls_token",
            *(f"backbone.vit.blocks.{i}" for i in range(num_layers // 2)))
    return {"none": (), "seed": half, "embeddings+first-half": half, "all-but-head": ALL_BUT_HEAD}


FREEZE_POINTS = freeze_points_for(VIT_B16.num_layers)


def build_vit_b16(num_labels: int, pretrained: str | None = None, metadata: Sequence[str] = (),
                  input_size: int | None = None, cfg: ViTConfig | None = None) -> ChestModel:
    """ViT-B/16; ``input_size`` (multiple of 16, default 224) sets the patch grid; ``cfg`` overrides the
    architecture (tests); ``pretrained``: None, "imagenet" (torchvision weights) or a .pth of that layout."""
    cfg = cfg or VIT_B16
    if input_size:
        cfg = ViTConfig(input_size, cfg.patch_size, cfg.hidden_size, cfg.mlp_dim, cfg.num_layers, cfg.num_heads)
    backbone = ViTFeatures(cfg)
    if not is_no_weights(pretrained):
        load_torchvision_vit(backbone, resolve_state_dict(pretrained, VIT_B16_URL, "vit_b16"))
    return ChestModel("vit_b16", backbone, backbone.num_features, num_labels, input_size=cfg.img_size,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      cam_layer=f"backbone.vit.blocks.{cfg.num_layers - 1}.norm1", patch_grid=cfg.grid,
                      metadata=metadata, pretrained=None if is_no_weights(pretrained) else str(pretrained))
