"""Build chestdx-run/2 run dirs without training (untrained members + a hand-written calibration sidecar)."""

from __future__ import annotations

from pathlib import Path

import torch

from chestdx.models import build_model
from chestdx.rundir import RunDir

LABELS = ["Effusion", "Mass", "Nodule"]


def make_run(path: Path, arch: str = "simple_cnn", members: int = 2, input_size: int = 64,
             metadata: tuple[str, ...] = (), labels: list[str] = LABELS, calibrated: bool = True) -> RunDir:
    """Untrained ``arch`` members (different seeds) written through RunDir; optional Platt/isotonic sidecar."""
    run = RunDir(path)
    entries = []
    for k in range(members):
        torch.manual_seed(100 + k)
        model = build_model(arch, len(labels), pretrained=None, metadata=metadata, input_size=input_size)
        entries.append(run.write_member(k, model.state_dict(), fold=k, best_epoch=1))
    run.write_manifest({"arch": arch, "labels": labels, "input_size": input_size, "mean": list(model.mean),
                        "std": list(model.std), "metadata": list(metadata), "pretrained": None, "freeze": "none",
                        "config_name": "factory"}, entries)
    if calibrated:
        run.write_calibration(sidecar(labels))
    return run


def _op(threshold: float) -> dict:
    return {"threshold": threshold, "sensitivity": 0.8, "sensitivity_ci": [0.7, 0.9], "specificity": 0.75,
            "specificity_ci": [0.7, 0.8], "ppv": 0.3, "ppv_ci": [0.2, 0.4], "npv": 0.97, "npv_ci": [0.95, 0.99],
            "n_pos": 40, "n_neg": 400}


def sidecar(labels: list[str]) -> dict:
    """One label per calibrator kind; the last label is not callable (too few positives)."""
    kinds = [{"method": "platt", "a": 0.8, "b": -1.0},
             {"method": "isotonic", "x": [-3.0, -1.0, 0.0, 1.0, 3.0], "y": [0.01, 0.05, 0.2, 0.5, 0.9]},
             {"method": "temperature", "t": 1.5}]
    out = {}
    for j, lb in enumerate(labels):
        callable_ = j < len(labels) - 1
        out[lb] = {"calibrator": kinds[j % len(kinds)], "n_pos": 40 if callable_ else 3, "n_neg": 400,
                   "prevalence": 0.09, "callable": callable_,
                   "reason": None if callable_ else "3 out-of-fold positives; 10 needed",
                   "selection": {"chosen": kinds[j % len(kinds)]["method"], "reason": "test"},
                   "operating_points": {"balanced": _op(0.1), "sensitivity:0.90": _op(0.05),
                                        "specificity:0.90": _op(0.3)} if callable_ else {}}
    return {"source": "oof", "n_images": 440, "n_patients": 300, "policy": "balanced", "labels": out,
            "prevalence": {}, "temperature": 1.2}
