"""The per-image result shared by the torch :class:`Predictor` and the torch-free ONNX predictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DISCLAIMER", "Prediction"]

DISCLAIMER = ("Decision support only: probabilities from a research model, not a diagnosis. "
              "A qualified clinician must review the image.")


@dataclass
class Prediction:
    """Per-image output: calibrated probabilities, thresholds, positive findings, optional heatmaps."""

    source: str
    probabilities: dict[str, float] = field(default_factory=dict)  # temperature-scaled
    raw_probabilities: dict[str, float] = field(default_factory=dict)  # plain sigmoid (as in predictions.csv)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # labels with probability >= threshold
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (S,S) in [0,1]
    error: str | None = None
    # out-of-distribution gate (chestdx.inference.ood): score > 1 or an image-statistics reason -> flag
    ood_score: float | None = None  # None when the run has no fitted OOD statistics
    ood_flag: bool = False
    ood_reasons: list[str] = field(default_factory=list)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "probabilities": self.probabilities,
                "raw_probabilities": self.raw_probabilities, "thresholds": self.thresholds,
                "findings": self.findings, "error": self.error, "ood_score": self.ood_score,
                "ood_flag": self.ood_flag, "ood_reasons": self.ood_reasons, "warning": self.warning,
                "note": DISCLAIMER}
