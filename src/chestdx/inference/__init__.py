"""Inference: the one Predictor (torch or onnxruntime backend) with its calibration, quality gate and OOD info.

Sits between ``train`` and ``evaluate``/``explain``/``serve`` in the import order. Torch-using members are
imported lazily, so an ONNX export is served without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DISCLAIMER", "Prediction", "Predictor", "QualityRefused", "load"]


def load(path: str | Path, device: str = "cpu", trust: bool = False, gate: Any = "default",
         policy: str | None = None, threads: int | None = None) -> Any:
    """A run dir (torch backend) or an exported ``.onnx`` file (onnxruntime backend) as a Predictor.

    ``trust=True`` also loads a legacy pickled ``model.pt`` (runs code from the file: only for trusted run dirs);
    ``gate=None`` disables the input quality gate; ``policy`` picks the operating point (e.g. "sensitivity:0.90").
    """
    from chestdx.inference.predictor import Predictor

    path = Path(path)
    if path.suffix == ".onnx":
        return Predictor.from_onnx(path, threads=threads, gate=gate, policy=policy)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return Predictor.from_run(path, device=device, trust=trust, gate=gate, policy=policy)


def __getattr__(name: str) -> Any:
    if name in ("Predictor",):
        from chestdx.inference import predictor

        return predictor.Predictor
    if name in ("DISCLAIMER", "Prediction", "QualityRefused"):
        from chestdx.inference import prediction

        return getattr(prediction, name)
    raise AttributeError(f"module 'chestdx.inference' has no attribute {name!r}")
