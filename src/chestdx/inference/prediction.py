"""The per-image result of the :class:`~chestdx.inference.Predictor` (both backends), and the one disclaimer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chestdx.io import ImageReadError
from chestdx.notice import DISCLAIMER

__all__ = ["DISCLAIMER", "Prediction", "QualityRefused"]




class QualityRefused(ImageReadError):
    """The quality gate refused the image (not a usable frontal chest X-ray); the message says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        ValueError.__init__(self, f"{self.path}: refused by the quality gate: {reason}")


@dataclass
class Prediction:
    """Per-image output: gate verdict, calibrated probabilities, called findings with their meaning, heatmaps."""

    source: str
    probabilities: dict[str, float] = field(default_factory=dict)  # calibrated (calibration.json)
    raw_probabilities: dict[str, float] = field(default_factory=dict)  # sigmoid of the ensemble logit
    thresholds: dict[str, float | None] = field(default_factory=dict)  # None: label is shown as a score only
    findings: list[str] = field(default_factory=list)  # labels with probability >= threshold
    statements: dict[str, str] = field(default_factory=dict)  # called label -> what its threshold means
    not_callable: dict[str, str] = field(default_factory=dict)  # label -> why it is never called
    policy: str | None = None  # operating point used for the thresholds
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (S,S) in [0,1]
    error: str | None = None
    # input quality gate (chestdx.inference.quality): verdict, its probability, and the correction applied
    quality: str | None = None
    quality_prob: float | None = None
    corrected: str | None = None
    # feature-space OOD information (never a refusal): score > 1 or an image-statistics reason -> flag
    ood_score: float | None = None
    ood_flag: bool = False
    ood_reasons: list[str] = field(default_factory=list)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error": self.error, "quality": self.quality,
                "quality_prob": self.quality_prob, "corrected": self.corrected,
                "probabilities": self.probabilities, "raw_probabilities": self.raw_probabilities,
                "thresholds": self.thresholds, "policy": self.policy, "findings": self.findings,
                "statements": self.statements, "not_callable": self.not_callable, "ood_score": self.ood_score,
                "ood_flag": self.ood_flag, "ood_reasons": self.ood_reasons, "warning": self.warning,
                "note": DISCLAIMER}
