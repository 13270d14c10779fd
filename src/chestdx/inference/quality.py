"""Input quality gate: is this an upright frontal chest X-ray? Correct a rotation/inversion, refuse the rest.

A small network shipped as package data (``chestdx/inference/assets/quality_gate.onnx`` + ``quality_gate.json``),
run with onnxruntime: numpy only, no torch, identical in both Predictor backends. Version 3: a frozen, truncated
EfficientNet-Lite0 trunk (ImageNet weights) + a trained head on 128 px grey images, test-time mirror averaging in
the graph. Trained and its thresholds chosen by ``scripts/qg_v3.py``; see docs/quality_gate.md.

Classes (``rotK`` = the upright image turned as ``np.rot90(img, K)``, i.e. K x 90 degrees counter-clockwise):
``frontal``, ``rot90``, ``rot180``, ``rot270``, ``inverted``, ``not_cxr``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from chestdx.data.transforms import to_uint8_square

CLASSES = ("frontal", "rot90", "rot180", "rot270", "inverted", "not_cxr")
ACTIONS = ("ok", "corrected", "refused", "uncertain")
CARD_FORMAT = "chestdx-quality-gate/3"
# /1: image (B,1,64,64) -> logits (B,6); /2: + test_time_mirror; /3: the input size S is the card's input_size
# (v3: 128) -- every format is read the same way: image (B,1,S,S) = to_uint8_square(img, S) / 255
CARD_FORMATS = ("chestdx-quality-gate/1", "chestdx-quality-gate/2", CARD_FORMAT)
_ROT_K = {"rot90": 1, "rot180": 2, "rot270": 3}
_FOUND = {
    "rot90": "image rotated 90 degrees counter-clockwise (its top was on the left)",
    "rot180": "image upside down (rotated 180 degrees)",
    "rot270": "image rotated 90 degrees clockwise (its top was on the right)",
    "inverted": "grey levels inverted (bones dark, air bright)",
}
_FIX = {
    "rot90": "turned back 90 degrees clockwise",
    "rot180": "turned back 180 degrees",
    "rot270": "turned back 90 degrees counter-clockwise",
    "inverted": "grey levels inverted back",
}


def model_input(batch_u8: np.ndarray, transform: str = "none") -> np.ndarray:
    """(B, S, S) uint8 -> (B, 1, S, S) float32 network input. ``transform="equalize"``: per-image histogram
    equalization (grey level -> its cumulative frequency), which removes exposure/contrast/gamma differences
    between hospitals but keeps polarity (bones bright vs dark) and structure."""
    u8 = np.asarray(batch_u8, dtype=np.uint8)
    if transform == "none":
        return (u8.astype(np.float32) / np.float32(255.0))[:, None]
    if transform != "equalize":
        raise ValueError(f"unknown quality gate input transform {transform!r}")
    out = np.empty(u8.shape, np.float32)
    for i, img in enumerate(u8):
        cdf = np.cumsum(np.bincount(img.ravel(), minlength=256)).astype(np.float32) / np.float32(img.size)
        out[i] = cdf[img]
    return out[:, None]


@dataclass(frozen=True)
class QualityResult:
    """The gate's answer for one image.

    verdict: the class the action rests on (when uncertain: the most probable class); probs: {class: probability};
    prob: probability of the verdict;
    action: "ok" (upright frontal CXR), "corrected" (confidently rotated/inverted: ``QualityGate.correct``
    undoes it), "refused" (confidently not a chest X-ray), "uncertain" (no confident answer: predict, but warn);
    corrected: the class that was undone ("rot90", ..., "inverted") when action == "corrected", else None;
    note: a sentence for the user (None when ok).
    """

    verdict: str
    probs: dict[str, float]
    prob: float
    action: str
    corrected: str | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(probs: np.ndarray, thresholds: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """(N, 6) class probabilities -> (verdict indices, actions) under the card's thresholds. Two stages:

    1. refused when p(not_cxr) >= thresholds["refuse"];
    2. otherwise the orientation is the most probable of the five CXR classes: frontal -> "ok" when
       p(frontal) >= thresholds["ok"]; rotated/inverted -> "corrected" when its probability GIVEN a CXR,
       p(class) / (1 - p(not_cxr)), reaches thresholds["correct"]; anything else is "uncertain".

    The verdict is the class the action rests on (not_cxr when refused, the orientation class when ok or
    corrected) and, when uncertain, the most probable of all six classes.
    """
    probs = np.asarray(probs, dtype=np.float64)
    verdict = probs.argmax(1)
    p_nc = probs[:, 5]
    orient = probs[:, :5].argmax(1)
    p_or = probs[np.arange(len(probs)), orient]
    cond = p_or / np.maximum(1 - p_nc, 1e-12)
    actions = []
    for i, (nc, o, p, q) in enumerate(zip(p_nc, orient, p_or, cond, strict=True)):
        if nc >= thresholds["refuse"]:
            actions.append("refused")
            verdict[i] = 5
        elif o == 0 and p >= thresholds["ok"]:
            actions.append("ok")
            verdict[i] = 0
        elif o != 0 and q >= thresholds["correct"]:
            actions.append("corrected")
            verdict[i] = o
        else:
            actions.append("uncertain")
    return verdict, actions


def _note(verdict: str, prob: float, action: str, p_not_cxr: float = 0.0) -> str | None:
    if action == "ok":
        return None
    if action == "corrected":
        doubt = f"; it may not be a chest X-ray (p={p_not_cxr:.2f})" if p_not_cxr >= 0.5 else ""
        return f"{_FOUND[verdict]}; {_FIX[verdict]} before prediction (quality gate p={prob:.2f}){doubt}"
    if action == "refused":
        return f"not a usable frontal chest X-ray (quality gate p={prob:.2f}); refused"
    likely = "an upright frontal chest X-ray" if verdict == "frontal" else (
        "not a chest X-ray" if verdict == "not_cxr" else _FOUND[verdict])
    return (f"quality gate uncertain (most likely {likely}, p={prob:.2f}); check the image: "
            "the prediction may be unreliable")


class QualityGate:
    """The ONNX quality model + its card (classes, input size, thresholds, version, training sources). Graph:
    ``image`` (B, 1, S, S) float32 in [0, 1] (S = card ``input_size``) -> (B, 6) logits (softmax = probabilities)."""

    def __init__(self, onnx_bytes: bytes, card: dict[str, Any], threads: int = 1, source: str = "quality gate"):
        import onnxruntime as ort

        if card.get("format") not in CARD_FORMATS:
            raise ValueError(f"{source}: card format {card.get('format')!r}, expected one of {list(CARD_FORMATS)}")
        if tuple(card.get("classes", ())) != CLASSES:
            raise ValueError(f"{source}: classes {card.get('classes')} differ from {list(CLASSES)}")
        self.card = card
        self._onnx_bytes, self._threads, self._source = onnx_bytes, int(threads), source
        self.size = int(card["input_size"])
        missing = {"ok", "correct", "refuse"} - set(card.get("thresholds", {}))
        if missing:
            raise ValueError(f"{source}: thresholds {sorted(missing)} missing")
        self.thresholds = {k: float(card["thresholds"][k]) for k in ("ok", "correct", "refuse")}
        self.version = str(card.get("version"))
        self.transform = str(card.get("input_transform", "none"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # no busy-waiting between ops: on a shared/busy 2-core machine spinning threads made 2 threads 2-3x
        # slower than 1 (measured with bench/bench_quality.py: 2500 x 2048 image 33 ms -> 15 ms)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its ONNX bytes and card (an onnxruntime session does not pickle); rebuilt on load."""
        return {"onnx": self._onnx_bytes, "card": self.card, "threads": self._threads, "source": self._source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["onnx"], state["card"], state["threads"], state["source"])

    def fresh(self, threads: int | None = None) -> QualityGate:
        """The same gate with its own onnxruntime session (e.g. in a forked worker process)."""
        return QualityGate(self._onnx_bytes, self.card, self._threads if threads is None else threads, self._source)

    @classmethod
    def from_files(cls, onnx_path, card_path, threads: int = 1) -> QualityGate:
        from pathlib import Path

        try:
            card = json.loads(Path(card_path).read_text())
            data = Path(onnx_path).read_bytes()
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"quality gate: cannot read {onnx_path} / {card_path}: {e}") from e
        return cls(data, card, threads, source=str(card_path))

    @classmethod
    def default(cls, threads: int = 1) -> QualityGate:
        """The gate shipped with the package (loaded once per thread count, then shared)."""
        return _default(threads)

    def preprocess(self, img01: np.ndarray) -> np.ndarray:
        """(H, W) float [0,1] -> (S, S) uint8 with the shared resize (any size/aspect: squashed like the cache).

        Images over 8 x S px on their short side are first block-averaged by an integer factor (to >= 4 x S px):
        a 2500 x 2048 image then costs ~10 ms instead of ~100 ms, within 1-2 grey levels of the direct resize.
        """
        img = np.asarray(img01)
        if img.ndim != 2:
            raise ValueError(f"quality gate expects a 2-D grayscale image, got shape {img.shape}")
        f = min(img.shape) // (4 * self.size)
        if f >= 2:
            h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
            cols = img[:h, :w].astype(np.float32, copy=False).reshape(h // f, f, w).sum(1)
            img = cols.reshape(h // f, w // f, f).sum(2) / np.float32(f * f)
        return to_uint8_square(img, self.size)

    def probs_u8(self, batch_u8: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 -> (B, 6) class probabilities."""
        x = model_input(batch_u8, self.transform)
        logits = self.session.run(None, {self.input_name: x})[0].astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def results(self, probs: np.ndarray) -> list[QualityResult]:
        verdicts, actions = decide(probs, self.thresholds)
        out = []
        for p, v, a in zip(probs, verdicts, actions, strict=True):
            name = CLASSES[int(v)]
            out.append(QualityResult(verdict=name, probs={c: float(x) for c, x in zip(CLASSES, p, strict=True)},
                                     prob=float(p[v]), action=a, corrected=name if a == "corrected" else None,
                                     note=_note(name, float(p[v]), a, float(p[5]))))
        return out

    def assess(self, img01: np.ndarray) -> QualityResult:
        """Judge one (H, W) float [0,1] grayscale image."""
        return self.assess_batch([img01])[0]

    def assess_batch(self, images: Iterable[np.ndarray], batch_size: int = 64) -> list[QualityResult]:
        """Judge several images (any sizes) in batches."""
        out: list[QualityResult] = []
        chunk: list[np.ndarray] = []
        for img in images:
            chunk.append(self.preprocess(img))
            if len(chunk) == batch_size:
                out += self.results(self.probs_u8(np.stack(chunk)))
                chunk = []
        if chunk:
            out += self.results(self.probs_u8(np.stack(chunk)))
        return out

    @staticmethod
    def correct(img01: np.ndarray, result: QualityResult) -> np.ndarray:
        """Undo what the gate corrected: ``np.rot90(img, -k)`` for rotK, ``1 - img`` for inverted; else unchanged.

        Rotations are exact (the original array back); inversion is exact up to float rounding (< 1e-7).
        """
        if result.action != "corrected" or result.corrected is None:
            return np.asarray(img01)
        return undo(img01, result.corrected)


def undo(img01: np.ndarray, name: str) -> np.ndarray:
    """Undo the gate class ``name`` ("rot90", "rot180", "rot270", "inverted"), e.g. a Prediction's ``quality``
    when its ``corrected`` is set: the upright image again, without running the gate."""
    img = np.asarray(img01)
    if name == "inverted":
        return (1 - img).astype(img.dtype, copy=False)
    if name not in _ROT_K:
        raise ValueError(f"{name!r}: not a correctable quality class (one of {', '.join([*_ROT_K, 'inverted'])})")
    return np.ascontiguousarray(np.rot90(img, -_ROT_K[name]))


@lru_cache(maxsize=4)
def _default(threads: int) -> QualityGate:
    assets = resources.files("chestdx.inference") / "assets"
    card_file, onnx_file = assets / "quality_gate.json", assets / "quality_gate.onnx"
    try:
        card = json.loads(card_file.read_text())
        data = onnx_file.read_bytes()
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(f"quality gate asset missing or unreadable in {assets}: {e} "
                           "(reinstall chestdx or run scripts/train_quality_gate.py)") from e
    return QualityGate(data, card, threads, source=str(card_file))


def summary(results: Sequence[QualityResult]) -> dict[str, int]:
    """Count of each action (for logs and reports)."""
    return {a: sum(r.action == a for r in results) for a in ACTIONS}
