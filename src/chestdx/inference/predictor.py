"""The one Predictor: decode -> quality gate -> resize -> backend (torch or onnxruntime) -> calibrate -> call.

Torch-free at import: the torch backend is imported only when a run dir is loaded with it, so an ``.onnx``
export is served with numpy, Pillow and onnxruntime alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chestdx.inference.calibration import Calibration
from chestdx.inference.prediction import DISCLAIMER, Prediction
from chestdx.inference.prepare import ImagePreparer

log = logging.getLogger(__name__)

# which heatmaps to compute: True (called findings, else the top label), labels, or Prediction -> labels
HeatmapRequest = bool | Sequence[str] | Callable[[Prediction], Sequence[str]]


class Predictor:
    """Gated, calibrated predictions of a run dir's ensemble (``from_run``) or of its ONNX export (``from_onnx``)."""

    def __init__(self, backend: Any, info: dict[str, Any], calibration: Calibration | None = None,
                 ood: dict[str, Any] | None = None, gate: Any = None):
        self.backend = backend
        self.info = info
        self.labels: list[str] = list(info["labels"])
        self.input_size = int(info["input_size"])
        self.metadata = tuple(info.get("metadata") or ())
        self.arch = info.get("arch")
        self.calibration = calibration or Calibration.none(self.labels)
        self.ood = _ood_stats(ood)
        # facts for describe(): the ONNX sidecar holds them without the arrays (they are graph constants)
        self._ood_summary = None if not ood else {k: v for k, v in ood.items() if k not in ("mean", "precision")}
        self.preparer = ImagePreparer(self.input_size, gate)  # decode -> checks -> gate -> model input

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", trust: bool = False, gate: Any = "default",
                 policy: str | None = None) -> Predictor:
        """A ``chestdx-run/2`` run dir (weights_only loading), or a legacy one (see ``chestdx.rundir``)."""
        from chestdx.inference.backend_torch import TorchBackend, build_member, load_members
        from chestdx.rundir import RunDir, read_legacy

        run = RunDir(run_dir)
        if run.is_legacy():
            payload = read_legacy(run.path, trust=trust)
            info = {k: payload.get(k) for k in ("arch", "labels", "input_size", "mean", "std", "metadata",
                                                 "pretrained", "freeze")}
            backend = TorchBackend([build_member(info, payload["state_dict"])], device=device)
            log.warning("%s: legacy run dir: no calibration sidecar, findings are not called; run "
                        "`chestdx migrate` then `chestdx evaluate`", run.path)
            ood = payload.get("ood")
            ood = None if not ood else {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ood.items()}
            return cls(backend, info, None, ood, _gate(gate))
        info = run.manifest()
        backend = TorchBackend(load_members(run, info), device=device)
        return cls(backend, info, _calibration(run.read_calibration(), info["labels"], policy), run.read_ood(),
                   _gate(gate))

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, threads: int | None = None, gate: Any = "default",
                  policy: str | None = None) -> Predictor:
        """An ``.onnx`` export with its ``model.json`` sidecar (torch-free; no heatmaps)."""
        from chestdx.inference.backend_onnx import OnnxBackend, read_sidecar

        side = read_sidecar(onnx_path)
        backend = OnnxBackend(onnx_path, side.get("meta_missing"), threads=threads)
        calibration = _calibration(side.get("calibration"), side["manifest"]["labels"], policy)
        return cls(backend, side["manifest"], calibration, side.get("ood"), _gate(gate))

    # -- model access -------------------------------------------------------------------------------------
    @property
    def can_explain(self) -> bool:
        return hasattr(self.backend, "heatmaps")

    @property
    def net(self) -> Any:
        """The torch backend's first member (``InferenceNet``)."""
        return self.backend.net

    @property
    def gate(self) -> Any:
        """The input quality gate (None: images are not checked)."""
        return self.preparer.gate

    def preprocess(self, image01: np.ndarray) -> np.ndarray:
        """[0,1] grayscale image of any size -> uint8 (S,S): the same function that fills the training cache."""
        return self.preparer.preprocess(image01)

    def forward(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(B,S,S) uint8 -> (ensemble logits (B,L), backend extra: torch pooled features / onnx ood_d2)."""
        return self.backend.forward(batch_u8, meta, batch_size)

    def logits(self, batch_u8: np.ndarray, meta: np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
        return self.forward(batch_u8, meta, batch_size)[0]

    def features(self, batch_u8: np.ndarray, meta: np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
        """(B,S,S) uint8 -> pooled backbone features of member 0 (what the OOD statistics measure)."""
        if self.backend.name != "torch":
            raise RuntimeError("features need the torch backend (load the run dir, not the .onnx)")
        f = self.forward(batch_u8, meta, batch_size)[1]
        if f is None:
            raise RuntimeError(f"{self.arch}: no pooled backbone features (model has no .backbone)")
        return f

    def probabilities(self, batch_u8: np.ndarray, meta: np.ndarray | None = None,
                      calibrated: bool = False) -> np.ndarray:
        """(B,L) sigmoid of the ensemble logit, or the calibrated probability (calibration sidecar)."""
        z = self.logits(batch_u8, meta)
        return self.calibration.apply(z) if calibrated else _sigmoid(z)

    def heatmaps(self, batch_u8: np.ndarray, class_indices: Sequence[int], method: str = "gradcam",
                 meta: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Saliency maps (B,S,S) in [0,1] (mean over ensemble members); torch backend only."""
        if not self.can_explain:
            raise ValueError("heatmaps need gradients: load the run dir (torch backend), not the .onnx export")
        return self.backend.heatmaps(batch_u8, class_indices, method=method, meta=meta, **kwargs)

    # -- prediction -----------------------------------------------------------------------------------------
    def predict(self, images: Sequence[str | Path | np.ndarray], batch_size: int = 16,
                heatmaps: HeatmapRequest = False, method: str = "gradcam",
                meta: np.ndarray | None = None) -> list[Prediction]:
        """Files or [0,1] arrays -> predictions; unreadable or refused images give a Prediction with ``error``.

        ``heatmaps``: True = a map for every called finding (or the top label when none), a list of labels, or a
        function ``Prediction -> labels`` called once the probabilities are in (e.g. the top k).
        """
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            prepared = [self.preparer.prepare(item, f"array[{start + j}]" if isinstance(item, np.ndarray) else None)
                        for j, item in enumerate(chunk)]
            results += self.predict_prepared(prepared, heatmaps, method,
                                             None if meta is None else meta[start:start + len(chunk)])
        return results

    def predict_prepared(self, prepared: Sequence[tuple[Prediction, np.ndarray | None]],
                         heatmaps: HeatmapRequest = False, method: str = "gradcam",
                         meta: np.ndarray | None = None) -> list[Prediction]:
        """Finish predictions from :meth:`ImagePreparer.prepare` results ((Prediction, model input or None));
        ``meta`` has one row per item. Items without an input keep their ``error``."""
        preds = [p for p, _ in prepared]
        rows = [k for k, (_, x) in enumerate(prepared) if x is not None]
        if rows:
            batch = np.stack([prepared[k][1] for k in rows])
            self._fill(preds, rows, batch, None if meta is None else meta[rows], heatmaps, method)
        return preds

    def predict_bytes(self, data: bytes, name: str = "upload", heatmaps: HeatmapRequest = False,
                      method: str = "gradcam") -> tuple[Prediction, np.ndarray]:
        """Decode in-memory bytes (no disk) and predict; returns (prediction, the [0,1] image predicted on).

        Raises :class:`ImageReadError` for undecodable data and :class:`QualityRefused` for a refused image.
        """
        pred = Prediction(source=name)
        img, gray = self.preparer.gated(data, pred)
        self._fill([pred], [0], self.preparer.model_input(img, gray)[None], None, heatmaps, method)
        return pred, img

    def _fill(self, preds: list[Prediction], idx: list[int], batch: np.ndarray, meta: np.ndarray | None,
              heatmaps: HeatmapRequest, method: str) -> None:
        z, extra = self.forward(batch, meta)
        ood = self._ood_scores(extra)
        raw, cal = _sigmoid(z), self.calibration.apply(z)
        thresholds = {lb: self.calibration.threshold(lb) for lb in self.labels}
        not_callable = {lb: self.calibration.not_callable_reason(lb) or "not callable"
                        for lb in self.labels if thresholds[lb] is None}
        wanted: list[tuple[int, int]] = []  # (row in batch, label index)
        for row, k in enumerate(idx):
            p = preds[k]
            p.raw_probabilities = {lb: float(raw[row, j]) for j, lb in enumerate(self.labels)}
            p.probabilities = {lb: float(cal[row, j]) for j, lb in enumerate(self.labels)}
            p.thresholds, p.not_callable, p.policy = dict(thresholds), dict(not_callable), self.calibration.policy
            p.findings = [lb for lb in self.labels if thresholds[lb] is not None
                          and p.probabilities[lb] >= thresholds[lb]]
            p.statements = {lb: self.calibration.statement(lb) for lb in p.findings}
            self._ood_info(p, None if ood is None else float(ood[row]))
            if heatmaps is True:
                names = p.findings or [max(p.probabilities, key=p.probabilities.get)]
            else:
                asked = heatmaps(p) if callable(heatmaps) else heatmaps or []
                names = [lb for lb in dict.fromkeys(asked) if lb in self.labels]
            wanted += [(row, self.labels.index(lb)) for lb in names]
        if wanted and self.can_explain:
            rows = [r for r, _ in wanted]
            maps = self.heatmaps(batch[rows], [c for _, c in wanted], method=method,
                                 meta=None if meta is None else meta[rows])
            for (row, c), hm in zip(wanted, maps, strict=True):
                preds[idx[row]].heatmaps[self.labels[c]] = hm

    def _ood_scores(self, extra: np.ndarray | None) -> np.ndarray | None:
        if self.ood is None or extra is None:
            return None
        from chestdx.inference.ood import mahalanobis_sq, scores

        d2 = mahalanobis_sq(extra, self.ood) if self.backend.name == "torch" else extra
        return scores(d2, self.ood)

    @staticmethod
    def _ood_info(p: Prediction, score: float | None) -> None:
        from chestdx.inference.ood import assess

        res = assess(score, p.ood_reasons)
        p.ood_score, p.ood_flag, p.ood_reasons, p.warning = res.score, res.flag, res.reasons, res.warning

    def describe(self) -> dict[str, Any]:
        """Model facts for the API, the page and the report."""
        return {"arch": self.arch, "labels": self.labels, "input_size": self.input_size,
                "metadata": list(self.metadata), "backend": self.backend.name,
                "members": len(self.info.get("members") or [None]), "ensemble": self.info.get("ensemble"),
                "calibration": self.calibration.to_dict(), "thresholds": self.calibration.thresholds(),
                "quality_gate": None if self.gate is None else _gate_info(self.gate),
                "ood": self._ood_summary, "note": DISCLAIMER}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _calibration(side: dict[str, Any] | None, labels: list[str], policy: str | None) -> Calibration | None:
    """The run's calibration sidecar (None: uncalibrated) at ``policy`` (None: the sidecar's own)."""
    if not side:
        return None
    calibration = Calibration.from_sidecar(side, labels)
    if policy:
        calibration.set_policy(policy)
    return calibration


def _gate(gate: Any) -> Any:
    """``"default"`` -> the packaged quality gate; None/False -> no gate; an object -> itself."""
    if gate is None or gate is False:
        return None
    if gate != "default":
        return gate
    try:
        from chestdx.inference.quality import QualityGate

        return QualityGate.default()
    except (ImportError, FileNotFoundError) as err:  # pragma: no cover - packaging error
        log.warning("quality gate unavailable (%s): images are not checked", err)
        return None


def _gate_info(gate: Any) -> dict[str, Any]:
    card = getattr(gate, "card", None) or {}
    return {k: card.get(k) for k in ("format", "version", "classes", "thresholds", "input_size", "training_sources")
            if k in card}


def _ood_stats(d: dict[str, Any] | None) -> Any:
    """OOD statistics (``chestdx.inference.ood.OODStats``) from ood.npz / a sidecar, or None."""
    if not d or "mean" not in d and "threshold" not in d:
        return None
    from chestdx.inference.ood import OODStats

    if "mean" not in d:  # ONNX sidecar: the arrays are graph constants; only the threshold is needed
        return OODStats.from_dict({**d, "mean": np.zeros(1, np.float32), "precision": np.zeros((1, 1), np.float32)})
    return OODStats.from_dict(d)
