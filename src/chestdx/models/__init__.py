"""Chest X-ray classifiers: registry, strict pretrained-weight loading, metadata fusion.

``build_model(name, num_labels, pretrained=None, freeze="none", metadata=())`` -> :class:`ChestModel`.
"""

from chestdx.models.base import IMAGENET_MEAN, IMAGENET_STD, ChestModel, tokens_to_grid
from chestdx.models.metadata import METADATA_FIELDS, encode_metadata, metadata_dim, missing_metadata
from chestdx.models.registry import available_models, build_model, freeze_points
from chestdx.models.weights import PretrainedWeightsError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METADATA_FIELDS",
    "ChestModel",
    "PretrainedWeightsError",
    "available_models",
    "build_model",
    "encode_metadata",
    "freeze_points",
    "metadata_dim",
    "missing_metadata",
    "tokens_to_grid",
]
