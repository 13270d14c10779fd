"""``OnnxPredictor``: the Predictor's outputs (no heatmaps) from an exported ONNX model, without torch.

Imports only numpy, Pillow, onnxruntime and chestdx's torch-free modules (``chestdx.io``,
``chestdx.data.transforms``, ``chestdx.inference.ood``). Same decoding, same resize, same temperature, thresholds
and OOD gate as the torch :class:`chestdx.inference.Predictor`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chestdx.data.transforms import to_uint8_square
from chestdx.inference.ood import assess, colour_spread, image_checks
from chestdx.inference.prediction import DISCLAIMER, Prediction
from chestdx.io import ImageReadError, decode_image_bytes
from chestdx.io.reader import read_bytes

#: Same result type as the torch Predictor (``heatmaps`` always empty here: Grad-CAM needs gradients).
OnnxPrediction = Prediction


class OnnxPredictor:
    """``OnnxPredictor("model.onnx")`` (sidecar ``model.json`` next to it) -> ``predict(paths_or_arrays)``."""

    def __init__(self, onnx_path: str | Path, sidecar: str | Path | None = None, threads: int | None = None):
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        side_path = Path(sidecar) if sidecar else onnx_path.with_suffix(".json")
        if not side_path.is_file():
            raise FileNotFoundError(f"{side_path}: sidecar JSON missing (written by `chestdx export`)")
        self.info: dict[str, Any] = json.loads(side_path.read_text())
        self.labels: list[str] = list(self.info["labels"])
        self.input_size = int(self.info["input_size"])
        self.temperature = float(self.info.get("temperature") or 1.0)
        self.thresholds: dict[str, float | None] = dict(self.info.get("thresholds") or {})
        self.arch = self.info.get("arch")
        self.ood_threshold = (self.info.get("ood") or {}).get("threshold")
        self._meta_missing = self.info.get("meta_missing")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self.session.get_outputs()]

    def preprocess(self, image01: np.ndarray) -> np.ndarray:
        """[0,1] grayscale -> uint8 (S,S): the training cache's resize."""
        return to_uint8_square(image01, self.input_size)

    def forward(self, batch_u8: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(B,S,S) uint8 -> (logits (B,L), ood_d2 (B,) or None)."""
        zs, ds = [], []
        for i in range(0, len(batch_u8), batch_size):
            x = np.asarray(batch_u8[i:i + batch_size], np.float32)[:, None] / np.float32(255.0)
            feeds = {"image": x}
            if self._meta_missing is not None:
                feeds["meta"] = np.repeat(np.asarray(self._meta_missing, np.float32)[None], len(x), axis=0)
            res = dict(zip(self._outputs, self.session.run(None, feeds), strict=True))
            zs.append(res["logits"])
            if "ood_d2" in res:
                ds.append(res["ood_d2"])
        z = np.concatenate(zs) if zs else np.zeros((0, len(self.labels)), np.float32)
        return z, (np.concatenate(ds) if ds else None)

    def logits(self, batch_u8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self.forward(batch_u8, batch_size)[0]

    def predict(self, images: Sequence[str | Path | np.ndarray], batch_size: int = 16,
                heatmaps: bool | Sequence[str] = False, **_: Any) -> list[OnnxPrediction]:
        """Files or [0,1] arrays -> predictions; unreadable files give an ``error``. No heatmaps (no gradients)."""
        if heatmaps:
            raise ValueError("heatmaps need gradients: use the torch Predictor (chestdx.load) for them")
        results: list[OnnxPrediction] = []
        for start in range(0, len(images), batch_size):
            preds, pixels, rows = [], [], []
            for j, item in enumerate(images[start:start + batch_size]):
                pred = OnnxPrediction(source=str(item) if not isinstance(item, np.ndarray) else f"array[{start + j}]")
                try:
                    img, pred.ood_reasons = _load(item)
                    pixels.append(self.preprocess(img))
                    rows.append(j)
                except (ImageReadError, OSError, ValueError) as err:
                    pred.error = str(err)
                preds.append(pred)
            if pixels:
                self._fill([preds[r] for r in rows], np.stack(pixels))
            results.extend(preds)
        return results

    def predict_bytes(self, data: bytes, name: str = "upload") -> tuple[OnnxPrediction, np.ndarray]:
        """Decode in-memory bytes and predict; raises ImageReadError on undecodable data."""
        img = decode_image_bytes(data, name)
        pred = OnnxPrediction(source=name, ood_reasons=image_checks(img, colour_spread(data)))
        self._fill([pred], self.preprocess(img)[None])
        return pred, img

    def _fill(self, preds: list[OnnxPrediction], batch: np.ndarray) -> None:
        z, d2 = self.forward(batch)
        raw = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        cal = 1.0 / (1.0 + np.exp(-z.astype(np.float64) / self.temperature))
        for row, p in enumerate(preds):
            p.raw_probabilities = {lb: float(raw[row, j]) for j, lb in enumerate(self.labels)}
            p.probabilities = {lb: float(cal[row, j]) for j, lb in enumerate(self.labels)}
            p.thresholds = {lb: self.thresholds.get(lb) for lb in self.labels}
            p.findings = [lb for lb in self.labels if p.thresholds[lb] is not None
                          and p.probabilities[lb] >= p.thresholds[lb]]
            score = None
            if d2 is not None and self.ood_threshold:
                score = float(np.sqrt(max(float(d2[row]), 0.0) / max(float(self.ood_threshold), 1e-12)))
            res = assess(score, p.ood_reasons)
            p.ood_score, p.ood_flag, p.ood_reasons, p.warning = res.score, res.flag, res.reasons, res.warning

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "labels": self.labels, "input_size": self.input_size, "backend": "onnxruntime",
                "temperature": self.temperature, "thresholds": self.thresholds, "ood": self.info.get("ood"),
                "note": DISCLAIMER}


def _load(item: str | Path | np.ndarray) -> tuple[np.ndarray, list[str]]:
    if isinstance(item, np.ndarray):
        return item, image_checks(item)
    data = read_bytes(item)
    img = decode_image_bytes(data, str(item))
    return img, image_checks(img, colour_spread(data))
