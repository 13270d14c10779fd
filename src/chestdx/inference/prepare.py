"""One image -> the model's input: decode, image checks, quality gate (refuse / correct), resize.

``ImagePreparer`` is the step the Predictor runs before its backend, split out so that it can run elsewhere:
distributed prediction runs it in DataLoader worker processes (full-resolution decode and gate there, only the
(S,S) uint8 model input travels). It pickles (the quality gate is rebuilt from its ONNX bytes), so it works
with fork and spawn workers alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from chestdx.data.transforms import resize_square_u8, to_uint8_square
from chestdx.inference.prediction import Prediction, QualityRefused
from chestdx.io import GrayImage, ImageReadError, decode_image_gray
from chestdx.io.reader import read_bytes

__all__ = ["ImagePreparer"]


class ImagePreparer:
    """``prepare(item) -> (Prediction with gate/check facts, (S,S) uint8 model input or None + error)``."""

    def __init__(self, input_size: int, gate: Any = None):
        self.input_size = int(input_size)
        self.gate = gate
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "gate": self.gate}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["input_size"], state["gate"])

    def _own_gate(self) -> Any:
        """The gate, rebuilt once in a forked child (an onnxruntime session is not shared across fork)."""
        if self.gate is not None and os.getpid() != self._pid and hasattr(self.gate, "fresh"):
            self.gate, self._pid = self.gate.fresh(), os.getpid()
        return self.gate

    def preprocess(self, image01: np.ndarray) -> np.ndarray:
        """[0,1] grayscale image of any size -> uint8 (S,S): the same function that fills the training cache."""
        return to_uint8_square(image01, self.input_size)

    def prepare(self, item: str | Path | np.ndarray | bytes, source: str | None = None
                ) -> tuple[Prediction, np.ndarray | None]:
        """Model input of one file / bytes / [0,1] array; an unreadable or refused image gives None and the
        Prediction's ``error`` (the reason, naming the file)."""
        pred = Prediction(source=source or (str(item) if not isinstance(item, (bytes, np.ndarray)) else "image"))
        try:
            img, gray = self.gated(item, pred)
        except (ImageReadError, OSError, ValueError) as err:
            pred.error = str(err)
            return pred, None
        return pred, self.model_input(img, gray)

    def model_input(self, img01: np.ndarray, gray: GrayImage | None) -> np.ndarray:
        """The model's (S,S) uint8 pixels: ``preprocess(img01)``, resized from the decoder's own uint8 image when
        there is one (a decoded file the gate did not correct): the same pixels, no full-size float round trip."""
        return self.preprocess(img01) if gray is None else resize_square_u8(gray.u8, self.input_size)

    def gated(self, item: str | Path | np.ndarray | bytes, pred: Prediction) -> tuple[np.ndarray, GrayImage | None]:
        """Decode, image statistics, then the quality gate: refuse (raises ``QualityRefused``) or correct (and say
        so in ``pred``). Returns the [0,1] image to predict on and, when it is a decoded file left as decoded,
        the decoded image (its ``u8`` is that image quantized, for :meth:`model_input`)."""
        from chestdx.inference.ood import image_checks

        stats: dict[str, Any] = {}
        gray = None
        if isinstance(item, np.ndarray):
            img = item
        else:
            data = item if isinstance(item, bytes) else read_bytes(item)
            gray = decode_image_gray(data, pred.source, stats=stats)  # one decode: the colour check rides along
            img = gray.img01
        pred.ood_reasons = image_checks(img, stats.get("colour_spread"))
        gate = self._own_gate()
        if gate is None:
            return img, gray
        res = gate.assess(img)
        pred.quality, pred.quality_prob = res.verdict, float(res.prob)
        if res.action == "refused":
            raise QualityRefused(pred.source, res.note or f"{res.verdict} (p={res.prob:.2f})")
        if res.action == "corrected":
            pred.corrected = res.note or f"{res.corrected}; corrected"
            return gate.correct(img, res), None
        if res.action == "uncertain" and res.note:
            pred.ood_reasons.append(res.note)
        return img, gray
