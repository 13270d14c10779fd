"""calibrate_run writes the sidecar from out-of-fold rows only; Calibration reads it (numpy only) and states
what each called finding means."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit

from chestdx.evaluate.calibrate import calibrate_run
from chestdx.inference.calibration import NOT_CALIBRATED, Calibration
from chestdx.rundir import RunDir

LABELS = ["Effusion", "Pneumonia", "Hernia"]


def _rows(n_patients: int, split: str, fold_of, rng) -> list[dict]:
    rows = []
    for p in range(n_patients):
        pid = f"{split}{p}"
        for i in range(int(rng.integers(1, 3))):
            truth = {"Effusion": float(rng.random() < 0.25), "Pneumonia": float(rng.random() < 0.4),
                     "Hernia": float(rng.random() < 0.01)}
            row = {"image_id": f"{pid}_{i}", "patient_id": pid, "split": split, "fold": fold_of(p), **truth}
            for lb in LABELS:  # overconfident logits: calibration has work to do
                row[f"prob_{lb}"] = float(expit(3.0 * (1.5 * truth[lb] - 0.9 + rng.normal(0, 0.8))))
            rows.append(row)
    return rows


@pytest.fixture()
def run(tmp_path) -> RunDir:
    rng = np.random.default_rng(0)
    run = RunDir(tmp_path / "run")
    member = run.write_member(0, {"w": torch.zeros(2)}, fold=0, best_epoch=1)
    run.write_manifest({"arch": "simple_cnn", "labels": LABELS, "input_size": 64, "mean": [0.5] * 3,
                        "std": [0.25] * 3, "metadata": []}, [member])
    oof = pd.DataFrame(_rows(300, "train", lambda p: p % 3, rng))
    oof.to_csv(run.oof, index=False)
    test = pd.DataFrame(_rows(80, "test", lambda p: -1, rng))
    pd.concat([oof, test]).drop(columns=[f"prob_{lb}" for lb in LABELS]).to_csv(run.split, index=False)
    test.to_csv(run.predictions, index=False)
    return run


def test_sidecar_format_and_meaning(run):
    side = calibrate_run(run.path, policy="sensitivity:0.9", prevalence={"Effusion": 0.02}, n_boot=200)
    on_disk = json.loads(run.calibration_path.read_text())
    assert on_disk["format"] == "chestdx-calibration/1" and on_disk["manifest_sha256"] == run.manifest_sha256()
    assert side["source"] == "oof" and side["policy"] == "sensitivity:0.90" and side["prevalence"] == {"Effusion": 0.02}
    eff = side["labels"]["Effusion"]
    assert eff["callable"] and eff["calibrator"]["method"] in ("platt", "isotonic")
    assert set(eff["operating_points"]) == {"balanced", "sensitivity:0.90", "specificity:0.90", "f1"}
    assert side["oof_findings_per_image"]["sensitivity:0.90"] > side["oof_findings_per_image"]["specificity:0.90"]
    assert eff["operating_points"]["sensitivity:0.90"]["sensitivity"] >= 0.9
    hernia = side["labels"]["Hernia"]
    assert not hernia["callable"] and "needed" in hernia["reason"] and hernia["operating_points"] == {}
    assert (run.path / "plots" / "reliability.png").is_file() and (run.path / "plots" / "reliability.json").is_file()
    assert eff["ece"]["after_cross_fitted"] < eff["ece"]["before"]  # overconfident input gets better


def test_poisoning_test_rows_changes_nothing(run):
    calibrate_run(run.path, n_boot=100)
    clean = run.calibration_path.read_bytes()
    for table in (run.split, run.predictions):  # flip every test label and test prediction
        df = pd.read_csv(table)
        test = df["split"] == "test"
        for lb in LABELS:
            df.loc[test, lb] = 1.0 - df.loc[test, lb]
            if f"prob_{lb}" in df:
                df.loc[test, f"prob_{lb}"] = 1.0 - df.loc[test, f"prob_{lb}"]
        df.to_csv(table, index=False)
    oof = pd.read_csv(run.oof)
    poisoned = pd.read_csv(run.predictions)  # even test rows slipped into oof.csv are ignored
    pd.concat([oof, poisoned]).to_csv(run.oof, index=False)
    calibrate_run(run.path, n_boot=100)
    assert run.calibration_path.read_bytes() == clean


def test_missing_oof_is_a_clear_error(run):
    run.oof.unlink()
    with pytest.raises(FileNotFoundError, match="chestdx evaluate"):
        calibrate_run(run.path)


@pytest.mark.parametrize("prevalence, message", [({"Nope": 0.1}, "unknown label"), ({"Effusion": 1.5}, "between")])
def test_bad_prevalence_is_a_clear_error(run, prevalence, message):
    with pytest.raises(ValueError, match=message):
        calibrate_run(run.path, prevalence=prevalence, n_boot=10)


def test_config_defaults_and_prevalence_parsing(run):
    from chestdx.evaluate.calibrate import parse_prevalence

    run.config.write_text("calibration: {policy: 'specificity:0.9', min_positives: 50}\n")
    side = calibrate_run(run.path, n_boot=20, plots=False)
    assert side["policy"] == "specificity:0.90" and side["min_positives"] == 50
    assert not side["labels"]["Effusion"]["callable"] or side["labels"]["Effusion"]["n_pos"] >= 50
    assert calibrate_run(run.path, policy="balanced", n_boot=20, plots=False)["policy"] == "balanced"
    assert parse_prevalence(["Effusion=0.02", "Hernia = 0.001"]) == {"Effusion": 0.02, "Hernia": 0.001}
    for bad in ("Effusion", "Effusion=x", "=0.1"):
        with pytest.raises(ValueError, match="Label=probability"):
            parse_prevalence([bad])


def test_calibration_reader_thresholds_statements_and_policies(run):
    side = calibrate_run(run.path, policy="balanced", prevalence={"Effusion": 0.02}, n_boot=200)
    cal = Calibration.from_sidecar(run.read_calibration(), LABELS)
    op = side["labels"]["Effusion"]["operating_points"]["balanced"]
    assert cal.threshold("Effusion") == op["threshold"] and cal.callable("Pneumonia")
    assert cal.threshold("Hernia") is None and "needed" in cal.not_callable_reason("Hernia")
    text = cal.statement("Effusion")
    assert text.startswith("at this threshold, out-of-fold: finds ")
    assert f"{100 * op['sensitivity']:.0f}% [" in text and "false alarms" in text and "at 2.0%" in text
    assert "training prevalence" in text
    assert "score only" in cal.statement("Hernia")
    assert "at 10.0%" in cal.statement("Pneumonia", prevalence=0.10)
    cal.set_policy("specificity:0.9")
    assert cal.policy == "specificity:0.90" and cal.threshold("Effusion") != op["threshold"]
    with pytest.raises(ValueError, match="available: balanced"):
        cal.set_policy("sensitivity:0.99")
    # apply: per-label calibrators on logits, probabilities in [0, 1], monotone in the logit
    z = np.linspace(-8, 8, 50)[:, None].repeat(3, axis=1)
    probs = cal.apply(z)
    assert probs.shape == (50, 3) and np.all(np.diff(probs, axis=0) >= -1e-12)
    with pytest.raises(ValueError, match="expected"):
        cal.apply(np.zeros((2, 2)))


def test_auto_policy_matches_the_out_of_fold_finding_count(run):
    """``auto`` picks, on out-of-fold rows only, the policy whose calls per image are closest to the true count."""
    side = calibrate_run(run.path, n_boot=50)  # the config default: auto
    calls, true = side["oof_findings_per_image"], side["oof_true_per_image"]
    assert side["policy_requested"] == "auto" and side["policy"] in calls
    assert abs(calls[side["policy"]] - true) == min(abs(v - true) for v in calls.values())


def test_uncalibrated_run_calls_nothing():
    cal = Calibration.from_sidecar(None, LABELS)
    z = np.array([[0.0, 2.0, -2.0]])
    np.testing.assert_allclose(cal.apply(z), expit(z))
    assert all(cal.threshold(lb) is None for lb in LABELS) and cal.statements() == {}
    assert cal.not_callable_reason("Effusion") == NOT_CALIBRATED
    with pytest.raises(ValueError, match="labels"):
        Calibration.from_sidecar(None)


def test_reader_is_numpy_only():
    code = ("import sys; import chestdx.inference.calibration; "
            "bad = [m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
