"""``calibrate_run``: per-label calibrators + operating points fitted on a run's ``oof.csv``, written as the
calibration sidecar ``calibration.json`` (format ``chestdx-calibration/1``, docs/contracts.md).

Only out-of-fold (K > 1) or validation (K = 1) rows are used: rows of ``oof.csv`` marked ``split == "test"``
are dropped, and nothing else of the run (split.csv, predictions.csv) is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestdx.evaluate.bootstrap import group_codes, patient_counts
from chestdx.evaluate.calibration import expected_calibration_error, fit_temperature
from chestdx.evaluate.calibrators import apply_calibrator, logits_from_probs, select_calibrator
from chestdx.evaluate.operating_points import DEFAULT_POLICIES, operating_point, policy_key
from chestdx.labels import label_column
from chestdx.policies import AUTO
from chestdx.rundir import RunDir, RunDirError

log = logging.getLogger(__name__)
DEFAULT_MIN_POSITIVES = 10
ECE_BINS = 10


def read_oof(run: RunDir) -> pd.DataFrame:
    """The run's out-of-fold / validation predictions, without any test row."""
    if not run.oof.is_file():
        raise FileNotFoundError(f"{run.oof}: no out-of-fold predictions to calibrate on; run `chestdx evaluate "
                                f"{run.path}` (K = 1 runs) or train the run first (`chestdx train`)")
    oof = pd.read_csv(run.oof, dtype={"image_id": str, "patient_id": str})
    if "split" in oof.columns:
        test = oof["split"] == "test"
        if test.any():
            log.warning("%s: %d test rows ignored (calibration never uses test data)", run.oof, int(test.sum()))
            oof = oof[~test].reset_index(drop=True)
    if oof.empty:
        raise RunDirError(f"{run.oof}: no out-of-fold rows")
    return oof


def check_prevalence(prevalence: dict[str, float] | None, labels: list[str]) -> dict[str, float]:
    """User-stated prevalences: known labels, 0 < p < 1."""
    out = {}
    for label, value in (prevalence or {}).items():
        if label not in labels:
            raise ValueError(f"prevalence for unknown label {label!r}; labels: {', '.join(labels)}")
        value = float(value)
        if not 0.0 < value < 1.0:
            raise ValueError(f"prevalence {label}={value}: must be strictly between 0 and 1")
        out[label] = value
    return out


def calibrate_oof(oof: pd.DataFrame, labels: list[str], policy: str = AUTO,
                  prevalence: dict[str, float] | None = None, min_positives: int = DEFAULT_MIN_POSITIVES,
                  n_boot: int = 1000, seed: int = 0) -> tuple[dict[str, Any], dict[str, dict]]:
    """The sidecar (without format/manifest hash) and, per label, the reliability numbers before/after."""
    requested = policy_key(policy)
    prevalence = check_prevalence(prevalence, labels)
    policies = list(dict.fromkeys([*DEFAULT_POLICIES, *([] if requested == AUTO else [requested])]))
    missing = [lb for lb in labels if label_column(lb) not in oof.columns or lb not in oof.columns]
    if missing:
        raise ValueError(f"oof predictions lack columns for labels {missing}")
    y_all = oof[labels].to_numpy(np.float64)
    z_all = logits_from_probs(oof[[label_column(lb) for lb in labels]].to_numpy(np.float64))
    temperature = fit_temperature(y_all, 1.0 / (1.0 + np.exp(-z_all)))
    codes = group_codes(oof["patient_id"], len(oof))
    counts = patient_counts(codes, n_boot, seed)
    entries, reliability = {}, {}
    for j, label in enumerate(labels):
        known = ~np.isnan(y_all[:, j])
        y, z, c = y_all[known, j], z_all[known, j], codes[known]
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        cal, selection, held_out = select_calibrator(z, y, c, temperature, seed)
        p = apply_calibrator(cal, z)
        entry: dict[str, Any] = {"calibrator": cal, "selection": selection, "n_pos": n_pos, "n_neg": n_neg,
                                 "prevalence": round(n_pos / max(len(y), 1), 4), "callable": True, "reason": None,
                                 "operating_points": {}}
        if n_pos < min_positives or n_neg < min_positives:
            entry["callable"] = False
            entry["reason"] = (f"{n_pos} out-of-fold positives and {n_neg} negatives; >= {min_positives} of each "
                               f"needed to state what a threshold means (score only)")
        else:
            for name in policies:
                entry["operating_points"][name] = operating_point(y, p, name, c, counts, prevalence.get(label))
        before = expected_calibration_error(y, 1.0 / (1.0 + np.exp(-z)), ECE_BINS)
        # no cross-fitted probabilities (< 2 positives): no honest "after", so none is shown
        after = expected_calibration_error(y[:0] if held_out is None else y,
                                           z[:0] if held_out is None else held_out, ECE_BINS)
        entry["ece"] = {"before": _r(before["ece"]), "after_cross_fitted": _r(after["ece"])}
        entries[label] = entry
        reliability[label] = {"before": before, "after": after, "n_pos": n_pos, "n_neg": n_neg,
                              "method": cal["method"]}
    side_calls = _findings_per_image(entries, labels, y_all, z_all, policies)
    true_per_image = float(np.nansum(y_all, 1).mean())
    policy = auto_policy(side_calls, true_per_image) if requested == AUTO else requested
    side = {"source": "oof" if oof.get("fold", pd.Series([0])).nunique() > 1 else "val",
            "n_images": int(len(oof)), "n_patients": int(oof["patient_id"].nunique()), "policy": policy,
            "policy_requested": requested,
            "policies": policies, "min_positives": int(min_positives), "n_boot": int(n_boot), "seed": int(seed),
            "labels": entries, "prevalence": prevalence, "temperature": round(float(temperature), 5),
            "oof_findings_per_image": side_calls, "oof_true_per_image": round(true_per_image, 4)}
    return side, reliability


def auto_policy(calls_per_image: dict[str, float], true_per_image: float) -> str:
    """The ``auto`` rule: the policy whose out-of-fold calls per image are closest to the true count per image
    (ties: the first in ``DEFAULT_POLICIES`` order)."""
    return min(calls_per_image, key=lambda name: abs(calls_per_image[name] - true_per_image))


def _findings_per_image(entries: dict[str, dict], labels: list[str], y: np.ndarray, z: np.ndarray,
                        policies: list[str]) -> dict[str, float]:
    """Mean number of findings called per OOF image at each policy (callable labels only): the OOF evidence for
    choosing a policy whose calls match the true number of findings per image (``oof_true_per_image``)."""
    out = {}
    for name in policies:
        calls = np.zeros(len(y))
        for j, label in enumerate(labels):
            point = entries[label]["operating_points"].get(name)
            if entries[label]["callable"] and point:
                calls += apply_calibrator(entries[label]["calibrator"], z[:, j]) >= point["threshold"]
        out[name] = round(float(calls.mean()), 4)
    return out


def parse_prevalence(items: list[str] | None) -> dict[str, float]:
    """CLI ``--prevalence Effusion=0.02`` items -> {"Effusion": 0.02} (values checked by ``calibrate_run``)."""
    out = {}
    for item in items or []:
        label, sep, value = item.partition("=")
        try:
            out[label.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label.strip():
            raise ValueError(f"--prevalence {item!r}: expected Label=probability, e.g. Effusion=0.02")
    return out


def config_defaults(run: RunDir) -> dict[str, Any]:
    """The run config's ``calibration`` section (policy, min_positives), {} when absent."""
    import yaml

    if not run.config.is_file():
        return {}
    return dict((yaml.safe_load(run.config.read_text()) or {}).get("calibration") or {})


def calibrate_run(run_dir: str | Path, policy: str | None = None, prevalence: dict[str, float] | None = None,
                  min_positives: int | None = None, n_boot: int = 1000, seed: int = 0,
                  plots: bool = True) -> dict[str, Any]:
    """Fit calibration + operating points on ``RUN/oof.csv``, write ``RUN/calibration.json`` (and, with
    ``plots``, ``RUN/plots/reliability.{png,json}``); returns the sidecar as written.

    ``policy`` / ``min_positives`` default to the run config's ``calibration`` section, then to "auto" / 10.
    """
    run = RunDir(run_dir)
    labels = list(run.manifest()["labels"])
    defaults = config_defaults(run)
    policy = policy or defaults.get("policy") or AUTO
    min_positives = int(min_positives if min_positives is not None
                        else defaults.get("min_positives", DEFAULT_MIN_POSITIVES))
    side, reliability = calibrate_oof(read_oof(run), labels, policy, prevalence, min_positives, n_boot, seed)
    run.write_calibration(side)
    if plots:
        from chestdx.evaluate.reliability import plot_reliability

        plot_reliability(reliability, run.path / "plots" / "reliability.png", source=side["source"])
    return run.read_calibration() or side


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)
