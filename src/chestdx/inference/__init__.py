"""Inference on a run dir: the Predictor, shared by evaluate, explain, serve and the CLI.

Sits between ``train`` and ``evaluate``/``explain``/``serve`` in the import order.
"""

from chestdx.inference.predictor import DISCLAIMER, Prediction, Predictor

__all__ = ["DISCLAIMER", "Prediction", "Predictor"]
