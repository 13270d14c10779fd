"""report.html is self-contained and faithful to metrics.json; the model card has its sections."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from chestdx.report import build_report
from chestdx.report.curves import epoch_table
from chestdx.report.gallery import pick_examples
from chestdx.report.model_card import SECTIONS


@pytest.fixture(scope="module")
def report_run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_run, run)
    return run, build_report(run, n_gallery=2)


def test_report_is_self_contained(report_run):
    run, path = report_run
    html = path.read_text()
    assert path == run / "report.html"
    assert 'src="http' not in html and "href=\"http" not in html and "<script" not in html
    assert "<link" not in html and "@import" not in html
    imgs = re.findall(r"<img[^>]*>", html)
    assert len(imgs) >= 8  # EDA (3) + curves + 4 evaluation plots + gallery
    assert all('src="data:image/png;base64,' in tag for tag in imgs)


def test_report_content_matches_metrics(report_run):
    run, path = report_run
    html = path.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "not a diagnosis" in html[: html.index("<h2")]  # notice at the top
    assert "SYNTHETIC DATA" in html
    for label, r in metrics["labels"].items():
        assert label in html
        if r["estimable"]:
            assert f"{r['auroc']:.3f} [{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}]" in html
            if metrics["thresholds"][label] is not None:
                assert f"{metrics['thresholds'][label]:.3f}" in html
    assert f"{metrics['macro']['auroc']:.3f}" in html
    assert "Calibration and operating points" in html and "calibrator" in html
    for section in SECTIONS:
        assert f"<h3>{section}</h3>" in html
    for name in ("Intended use", "decision support", "Known failure modes", "Limitations"):
        assert name.lower() in html.lower()
    assert "Training curves" in html and (run / "plots" / "training_curves.csv").is_file()
    assert "TP" in html and "FP" in html and "FN" in html


def test_model_card_markdown(report_run):
    run, _ = report_run
    card = (run / "MODEL_CARD.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in card
    assert "not a diagnosis" in card and "phantom-synthetic" in card and "qualified clinicians" in card
    assert "Shortcut learning" in card and "not validated prospectively".lower() in card.lower()


def test_not_estimable_label_is_spelled_out(report_run, tmp_path):
    run, _ = report_run
    other = tmp_path / "run"
    shutil.copytree(run, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["labels"]["Nodule"].update(estimable=False, reason="only 3 positives (< 5)", auroc=None, auroc_ci=None)
    (other / "metrics.json").write_text(json.dumps(metrics))
    (other / "localization").mkdir(exist_ok=True)
    pd.DataFrame([{"method": "gradcam", "label": "overall", "metric": "pointing", "n": 10, "hits": 7,
                   "hit_rate": 0.7, "ci_low": 0.4, "ci_high": 0.89, "chance": 0.05}]).to_csv(
        other / "localization" / "localization.csv", index=False)
    html = build_report(other, n_gallery=1).read_text()
    assert "not estimable (only 3 positives (&lt; 5))" in html
    assert "0.70 [0.40, 0.89]" in html and "<td>0.05</td>" in html


def test_helpers(report_run):
    run, _ = report_run
    ep = epoch_table(run / "folds" / "0" / "logs" / "metrics.csv")
    assert list(ep["epoch"]) == [1, 2] and ep[["train_loss", "val_loss", "val_macro_auroc"]].notna().all().all()
    pred = pd.DataFrame({"split": "test", "A": [1, 1, 0, 0, 1], "cal_A": [0.9, 0.2, 0.8, 0.1, 0.6]})
    picks = pick_examples(pred, "A", 0.5)
    assert [len(picks[c]) for c in ("TP", "FP", "FN")] == [2, 1, 1]
    assert picks["TP"]["p_cal"].tolist() == [0.9, 0.6]  # most confident true positive first


def test_cli_report(report_run, tmp_path):
    from chestdx.cli import app

    run, _ = report_run
    other = tmp_path / "run"
    shutil.copytree(run, other)
    (other / "report.html").unlink()
    res = CliRunner().invoke(app, ["report", str(other), "--n-gallery", "1"])
    assert res.exit_code == 0, res.output
    assert (other / "report.html").is_file() and (other / "MODEL_CARD.md").is_file()
