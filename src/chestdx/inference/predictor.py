"""The one object that turns a run dir + images into calibrated probabilities, findings and heatmaps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chestdx.data.transforms import to_uint8_square
from chestdx.io import ImageReadError, read_image
from chestdx.models.inference import InferenceNet
from chestdx.train.checkpoint import model_from_checkpoint, read_checkpoint

log = logging.getLogger(__name__)

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

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "probabilities": self.probabilities,
                "raw_probabilities": self.raw_probabilities, "thresholds": self.thresholds,
                "findings": self.findings, "error": self.error, "note": DISCLAIMER}


class Predictor:
    """Loads ``RUN_DIR/model.pt`` and applies exactly the training-time preprocessing."""

    def __init__(self, payload: dict[str, Any], device: str = "cpu"):
        self.payload = payload
        self.labels: list[str] = list(payload["labels"])
        self.input_size = int(payload["input_size"])
        self.temperature = float(payload.get("temperature") or 1.0)
        self.thresholds: dict[str, float | None] = dict(payload.get("thresholds") or {})
        self.device = torch.device(device)
        self.net = InferenceNet(model_from_checkpoint(payload)).to(self.device).eval()
        self.metadata = tuple(payload.get("metadata") or ())
        self.arch = payload["arch"]

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Predictor:
        return cls(read_checkpoint(run_dir), device=device)

    # -- preprocessing ---------------------------------------------------------------------------------
    def preprocess(self, image01: np.ndarray) -> np.ndarray:
        """[0,1] grayscale image of any size -> uint8 (S,S): the same function that fills the training cache."""
        return to_uint8_square(image01, self.input_size)

    def _tensor(self, batch_u8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(batch_u8, dtype=np.float32) / 255.0)[:, None].to(self.device)

    # -- inference -------------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, batch_u8: np.ndarray, meta: np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
        """(B,S,S) uint8 -> logits (B,L)."""
        out = []
        for i in range(0, len(batch_u8), batch_size):
            m = None if meta is None else torch.from_numpy(np.asarray(meta[i:i + batch_size], np.float32))
            out.append(self.net(self._tensor(batch_u8[i:i + batch_size]), m).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def probabilities(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                      calibrated: bool = False) -> np.ndarray:
        """Sigmoid probabilities (B,L); ``calibrated`` divides the logits by the fitted temperature first."""
        z = self.logits(batch_u8, meta)
        return 1.0 / (1.0 + np.exp(-(z / self.temperature if calibrated else z)))

    def heatmaps(self, batch_u8: np.ndarray, class_indices: Sequence[int], method: str = "gradcam",
                 meta: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Saliency maps (B,S,S) in [0,1] w.r.t. the input pixels."""
        from chestdx.explain import saliency_maps

        return saliency_maps(self.net, self._tensor(batch_u8), list(class_indices), method=method,
                             meta=None if meta is None else torch.from_numpy(np.asarray(meta, np.float32)), **kwargs)

    def predict(self, images: Sequence[str | Path | np.ndarray], batch_size: int = 16,
                heatmaps: bool | Sequence[str] = False, method: str = "gradcam",
                meta: np.ndarray | None = None) -> list[Prediction]:
        """Files or [0,1] arrays -> predictions; unreadable files give a Prediction with ``error`` set.

        ``heatmaps``: True = a map for every positive finding (or the top label when none), or a list of labels.
        """
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            preds, pixels, rows = [], [], []
            for j, item in enumerate(chunk):
                name = str(item) if not isinstance(item, np.ndarray) else f"array[{start + j}]"
                pred = Prediction(source=name)
                try:
                    img = item if isinstance(item, np.ndarray) else read_image(item)
                    pixels.append(self.preprocess(img))
                    rows.append(start + j)
                except (ImageReadError, OSError, ValueError) as err:
                    pred.error = str(err)
                preds.append(pred)
            if pixels:
                batch = np.stack(pixels)
                m = None if meta is None else meta[rows]
                self._fill(preds, [r - start for r in rows], batch, m, heatmaps, method)
            results.extend(preds)
        return results

    def _fill(self, preds: list[Prediction], idx: list[int], batch: np.ndarray, meta: np.ndarray | None,
              heatmaps: bool | Sequence[str], method: str) -> None:
        z = self.logits(batch, meta)
        raw = 1.0 / (1.0 + np.exp(-z))
        cal = 1.0 / (1.0 + np.exp(-z / self.temperature))
        wanted: list[tuple[int, int]] = []  # (row in batch, label index)
        for row, k in enumerate(idx):
            p = preds[k]
            p.raw_probabilities = {lb: float(raw[row, j]) for j, lb in enumerate(self.labels)}
            p.probabilities = {lb: float(cal[row, j]) for j, lb in enumerate(self.labels)}
            p.thresholds = {lb: self.thresholds.get(lb) for lb in self.labels}
            p.findings = [lb for lb in self.labels if p.thresholds[lb] is not None
                          and p.probabilities[lb] >= p.thresholds[lb]]
            if heatmaps is True:
                names = p.findings or [max(p.probabilities, key=p.probabilities.get)]
            else:
                names = [lb for lb in (heatmaps or []) if lb in self.labels]
            wanted += [(row, self.labels.index(lb)) for lb in names]
        if wanted:
            rows = [r for r, _ in wanted]
            maps = self.heatmaps(batch[rows], [c for _, c in wanted], method=method,
                                 meta=None if meta is None else meta[rows])
            for (row, c), hm in zip(wanted, maps, strict=True):
                preds[idx[row]].heatmaps[self.labels[c]] = hm

    def describe(self) -> dict[str, Any]:
        """Model facts for the API and the report."""
        return {"arch": self.arch, "labels": self.labels, "input_size": self.input_size,
                "temperature": self.temperature, "thresholds": self.thresholds, "metadata": list(self.metadata),
                "calibrated": self.payload.get("temperature") is not None,
                "thresholds_from": "validation split" if self.thresholds else None, "note": DISCLAIMER}

