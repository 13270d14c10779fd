"""Inference on a run dir: the Predictor, shared by evaluate, explain, serve and the CLI, and the
out-of-distribution gate it applies (``ood``: numpy only; ``ood_fit``: fit it for a run).

Sits between ``train`` and ``evaluate``/``explain``/``serve`` in the import order. The package imports its
torch-using members lazily, so ``chestdx.inference.ood`` stays importable without torch (ONNX predictor).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DISCLAIMER", "Prediction", "Predictor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from chestdx.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'chestdx.inference' has no attribute {name!r}")
