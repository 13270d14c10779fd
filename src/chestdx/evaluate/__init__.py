"""Evaluation: metrics with patient-bootstrap CIs, calibration and operating points fitted out-of-fold, held-out
(test) evaluation, comparisons.

Plots live in :mod:`chestdx.evaluate.plots` (imported on demand: it pulls in matplotlib).
"""

from chestdx.evaluate.bootstrap import bootstrap_indices
from chestdx.evaluate.calibration import apply_temperature, expected_calibration_error, fit_temperature
from chestdx.evaluate.compare import compare_predictions, delong_test, paired_bootstrap_diff
from chestdx.evaluate.heldout import evaluate_heldout
from chestdx.evaluate.metrics import label_metrics, multilabel_metrics
from chestdx.evaluate.thresholds import operating_point

__all__ = [
    "apply_temperature",
    "bootstrap_indices",
    "compare_predictions",
    "delong_test",
    "evaluate_heldout",
    "expected_calibration_error",
    "fit_temperature",
    "label_metrics",
    "multilabel_metrics",
    "operating_point",
    "paired_bootstrap_diff",
]
