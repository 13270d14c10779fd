"""The one object that turns a run dir + images into calibrated probabilities, findings and heatmaps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chestdx.data.transforms import to_uint8_square
from chestdx.inference.prediction import DISCLAIMER, Prediction
from chestdx.io import ImageReadError, decode_image_bytes
from chestdx.io.reader import read_bytes
from chestdx.models.inference import InferenceNet
from chestdx.train.checkpoint import model_from_checkpoint, read_checkpoint

log = logging.getLogger(__name__)

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
        self.ood = _ood_stats(payload.get("ood"))
        # One lock around every use of the model: saliency hooks live on the shared modules, so a Grad-CAM
        # in one thread must not see another thread's forward pass (web server threads).
        self._lock = threading.RLock()
        self._tls = threading.local()  # per-thread list collecting pooled backbone features
        backbone = getattr(self.net.model, "backbone", None)
        if backbone is not None:
            backbone.register_forward_hook(self._capture_features)

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
    def _capture_features(self, _module: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        sink = getattr(self._tls, "features", None)
        if sink is not None:
            sink.append(out.detach().float().cpu())

    @torch.no_grad()
    def forward(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(B,S,S) uint8 -> (logits (B,L), pooled backbone features (B,F) or None) in one pass."""
        out, feats = [], []
        with self._lock:
            self._tls.features = feats
            try:
                for i in range(0, len(batch_u8), batch_size):
                    m = None if meta is None else torch.from_numpy(np.asarray(meta[i:i + batch_size], np.float32))
                    out.append(self.net(self._tensor(batch_u8[i:i + batch_size]), m).float().cpu().numpy())
            finally:
                self._tls.features = None
        z = np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)
        f = torch.cat(feats).numpy() if feats and len(feats) == len(out) else None
        return z, f

    def logits(self, batch_u8: np.ndarray, meta: np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
        """(B,S,S) uint8 -> logits (B,L)."""
        return self.forward(batch_u8, meta, batch_size)[0]

    def features(self, batch_u8: np.ndarray, meta: np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
        """(B,S,S) uint8 -> pooled backbone features (B,F) (what the OOD gate measures)."""
        f = self.forward(batch_u8, meta, batch_size)[1]
        if f is None:
            raise RuntimeError(f"{self.arch}: no pooled backbone features (model has no .backbone)")
        return f

    def probabilities(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                      calibrated: bool = False) -> np.ndarray:
        """Sigmoid probabilities (B,L); ``calibrated`` divides the logits by the fitted temperature first."""
        z = self.logits(batch_u8, meta)
        return 1.0 / (1.0 + np.exp(-(z / self.temperature if calibrated else z)))

    def heatmaps(self, batch_u8: np.ndarray, class_indices: Sequence[int], method: str = "gradcam",
                 meta: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Saliency maps (B,S,S) in [0,1] w.r.t. the input pixels."""
        from chestdx.explain import saliency_maps

        with self._lock:
            return saliency_maps(self.net, self._tensor(batch_u8), list(class_indices), method=method,
                                 meta=None if meta is None else torch.from_numpy(np.asarray(meta, np.float32)),
                                 **kwargs)

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
                    img, pred.ood_reasons = self._load(item)
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

    @staticmethod
    def _load(item: str | Path | np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Decode a file (or take an array) -> ([0,1] image, OOD image-statistics reasons)."""
        from chestdx.inference.ood import colour_spread, image_checks

        if isinstance(item, np.ndarray):
            return item, image_checks(item)
        data = read_bytes(item)
        img = decode_image_bytes(data, str(item))
        return img, image_checks(img, colour_spread(data))

    def predict_bytes(self, data: bytes, name: str = "upload", heatmaps: bool | Sequence[str] = False,
                      method: str = "gradcam") -> tuple[Prediction, np.ndarray]:
        """Decode in-memory bytes (no disk) and predict; returns (prediction, decoded [0,1] image).

        Raises :class:`ImageReadError` for undecodable data (the web app maps it to an HTTP status).
        """
        from chestdx.inference.ood import colour_spread, image_checks

        img = decode_image_bytes(data, name)
        pred = Prediction(source=name, ood_reasons=image_checks(img, colour_spread(data)))
        self._fill([pred], [0], self.preprocess(img)[None], None, heatmaps, method)
        return pred, img

    def _fill(self, preds: list[Prediction], idx: list[int], batch: np.ndarray, meta: np.ndarray | None,
              heatmaps: bool | Sequence[str], method: str) -> None:
        z, feats = self.forward(batch, meta)
        ood = self._ood_scores(feats)
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
            self._gate(p, None if ood is None else float(ood[row]))
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

    def _ood_scores(self, feats: np.ndarray | None) -> np.ndarray | None:
        if self.ood is None or feats is None:
            return None
        from chestdx.inference.ood import mahalanobis_sq, scores

        return scores(mahalanobis_sq(feats, self.ood), self.ood)

    @staticmethod
    def _gate(p: Prediction, score: float | None) -> None:
        from chestdx.inference.ood import assess

        res = assess(score, p.ood_reasons)
        p.ood_score, p.ood_flag, p.ood_reasons, p.warning = res.score, res.flag, res.reasons, res.warning

    def describe(self) -> dict[str, Any]:
        """Model facts for the API and the report."""
        return {"arch": self.arch, "labels": self.labels, "input_size": self.input_size,
                "temperature": self.temperature, "thresholds": self.thresholds, "metadata": list(self.metadata),
                "calibrated": self.payload.get("temperature") is not None,
                "thresholds_from": "validation split" if self.thresholds else None,
                "ood": None if self.ood is None else self.ood.to_dict(arrays=False), "note": DISCLAIMER}


def _ood_stats(d: dict[str, Any] | None) -> Any:
    """The checkpoint's fitted OOD statistics (``chestdx.inference.ood.OODStats``) or None."""
    if not d:
        return None
    from chestdx.inference.ood import OODStats

    return OODStats.from_dict({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in d.items()})

