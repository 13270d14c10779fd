"""Model registry: ``build_model(name, ...)`` -> ``ChestModel``; names, freeze points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from chestdx.models import densenet, efficientnet, simple_cnn, vit, xrv
from chestdx.models.base import ChestModel

__all__ = ["MODELS", "ModelEntry", "available_models", "build_model", "freeze_points"]


@dataclass(frozen=True)
class ModelEntry:
    """A builder ``(num_labels, pretrained, metadata, input_size) -> ChestModel`` and its freeze points
    (``freeze_for(model)`` gives {point: names}, as they may depend on the built model)."""

    build: Callable[..., ChestModel]
    freeze_for: Callable[[ChestModel], dict[str, tuple[str, ...]]]
    points: tuple[str, ...]
    summary: str


def _static(points: dict[str, tuple[str, ...]]) -> Callable[[ChestModel], dict[str, tuple[str, ...]]]:
    return lambda _model: points


MODELS: dict[str, ModelEntry] = {
    "densenet121": ModelEntry(densenet.build_densenet121, _static(densenet.FREEZE_POINTS),
                              tuple(densenet.FREEZE_POINTS), "MONAI DenseNet-121, torchvision ImageNet weights"),
    "vit_b16": ModelEntry(vit.build_vit_b16, lambda m: vit.freeze_points_for(m.backbone.cfg.num_layers),
                          tuple(vit.FREEZE_POINTS), "MONAI ViT-B/16, torchvision ImageNet weights"),
    **{name: ModelEntry(partial(efficientnet.build_efficientnet_lite, name),
                        lambda m: efficientnet.freeze_points_for(m.backbone.net),
                        ("none", "seed", "all-but-head"),
                        f"EfficientNet-{name[-5:]}" + (", ImageNet weights shipped offline"
                                                      if name.endswith("0") else ", no shipped weights"))
       for name in efficientnet.VARIANTS},
    "xrv_densenet121": ModelEntry(xrv.build_xrv_densenet121, _static(xrv.DENSENET_FREEZE_POINTS),
                                  tuple(xrv.DENSENET_FREEZE_POINTS),
                                  "torchxrayvision DenseNet-121 (1 channel, 224 px), pretrained: xrv:<weights name>"),
    "xrv_resnet50": ModelEntry(xrv.build_xrv_resnet50, _static(xrv.RESNET_FREEZE_POINTS),
                               tuple(xrv.RESNET_FREEZE_POINTS),
                               "torchxrayvision ResNet-50 (1 channel, 512 px), pretrained: xrv:resnet50-res512-all"),
    "simple_cnn": ModelEntry(simple_cnn.build_simple_cnn, _static(simple_cnn.FREEZE_POINTS),
                             tuple(simple_cnn.FREEZE_POINTS), "tiny 4-conv CNN for tests and demos"),
}


def available_models() -> list[str]:
    """Registered architecture names."""
    return list(MODELS)


def _entry(name: str) -> ModelEntry:
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[key]


def freeze_points(name: str) -> list[str]:
    """Valid ``freeze`` values for architecture ``name``."""
    return list(_entry(name).points)


def build_model(name: str, num_labels: int, pretrained: str | None = None, freeze: str = "none",
                metadata: Sequence[str] = (), input_size: int | None = None, **kwargs) -> ChestModel:
    """Build a ``ChestModel``.

    ``pretrained``: None (random init), "imagenet", or a path to a state dict in the architecture's source
    layout (torchvision for densenet121/vit_b16, efficientnet_lite_pytorch for the lite models); for the
    ``xrv_*`` models ``xrv:<torchxrayvision weights name>`` or a torchxrayvision ``.pt`` file (``labels=``
    then starts the head from xrv's classifier rows of those labels, see ``chestdx.models.xrv``).
    ``freeze``: one of ``freeze_points(name)``. ``metadata``: subset of ("age", "sex", "view").
    ``input_size``: overrides the default input size (vit_b16: multiple of 16, positions interpolated).
    ``kwargs`` go to the architecture builder (e.g. ``cfg=ViTConfig(...)`` for a small ViT in tests).
    """
    entry = _entry(name)
    model = entry.build(num_labels=num_labels, pretrained=pretrained, metadata=tuple(metadata),
                        input_size=input_size, **kwargs)
    points = entry.freeze_for(model)
    point = str(freeze or "none").strip().lower()
    if point not in points:
        raise ValueError(f"unknown freeze point {freeze!r} for {name}; choose from {list(points)}")
    model.apply_freeze(point, points[point])
    return model
