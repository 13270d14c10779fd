"""Explanations: saliency maps (Grad-CAM, Grad-CAM++, SmoothGrad, gradients), overlays, localization vs boxes."""

from chestdx.explain.localization import (
    IOBB_THRESHOLDS,
    LocRecord,
    iobb,
    iobb_chance,
    localization_table,
    map_to_box,
    pointing_game_chance,
    pointing_game_hit,
    scale_box,
    score_records,
    wilson_ci,
)
from chestdx.explain.overlay import OverlayItem, format_caption, overlay_png, save_gallery
from chestdx.explain.saliency import METHODS, normalize_maps, saliency_maps

__all__ = [
    "IOBB_THRESHOLDS",
    "METHODS",
    "LocRecord",
    "OverlayItem",
    "format_caption",
    "iobb",
    "iobb_chance",
    "localization_table",
    "map_to_box",
    "normalize_maps",
    "overlay_png",
    "pointing_game_chance",
    "pointing_game_hit",
    "saliency_maps",
    "save_gallery",
    "scale_box",
    "score_records",
    "wilson_ci",
]
