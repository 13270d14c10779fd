"""``build_report(run_dir)``: one self-contained ``report.html`` (images inlined, no external resources)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from chestdx.report import html as H
from chestdx.report.curves import training_curves
from chestdx.report.data_summary import data_summary, ensure_eda, read_split
from chestdx.report.gallery import saliency_gallery
from chestdx.report.model_card import METRIC_HEADER, NOTICE, build_model_card, card_html, metrics_rows, write_model_card

log = logging.getLogger(__name__)

PLOT_TITLES = {"roc": "ROC curves per label (test)", "roc_overlay": "ROC curves overlaid (test)",
               "pr": "Precision-recall curves (test)",
               "reliability_test": "Reliability before/after calibration (test, pooled)",
               "reliability_oof": "Reliability per label before/after calibration (out-of-fold / validation)"}


def _data_section(run: Path, summary: dict[str, Any], eda: dict[str, Any] | None) -> str:
    splits = summary["splits"]
    parts = [H.table(["split", "images", "patients"],
                     [[s, v["images"], v["patients"]] for s, v in splits.items()]
                     + [["all", summary["n_images"], summary["n_patients"]]]),
             f"<p>Sources: {H.esc(', '.join(f'{k} ({v})' for k, v in summary['sources'].items()))}. "
             f"Splits are grouped by patient (no patient in two splits).</p>",
             "<h3>Label prevalence (positives / graded)</h3>",
             H.table(["label", *splits], [[lb, *(f"{c['positives']} / {c['graded']} ({H.fmt(c['prevalence'], 2)})"
                                                 for c in per.values())] for lb, per in summary["prevalence"].items()])]
    if eda:
        for name in ("prevalence.png", "cooccurrence.png", "demographics.png"):
            parts.append(H.img_tag(run / "eda" / name, caption=f"EDA: {name[:-4]} (all labels of the dataset)"))
    return "\n".join(parts)


def _training_section(run: Path) -> str:
    curves = training_curves(run)
    if curves is None:
        return "<p>No training log (folds/*/logs/metrics.csv) in this run dir.</p>"
    png, csv = curves
    table = pd.read_csv(csv)
    rows = [[int(r.fold), int(r.epoch), *(H.fmt(getattr(r, c, None), 4)
                                          for c in ("train_loss", "val_loss", "val_macro_auroc"))]
            for r in table.itertuples(index=False)]
    train = json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").is_file() else {}
    note = (f"<p>Each member's best epoch (by its validation macro AUROC; mean "
            f"{H.fmt(train.get('best_val_macro_auroc'))}) gives its weights. Numbers: plots/{csv.name}.</p>")
    return H.img_tag(png, caption="Training curves") + note + H.table(
        ["member", "epoch", "train loss", "val loss", "val macro AUROC"], rows)


def _metrics_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "<p>Not evaluated yet: run <code>chestdx evaluate RUN_DIR</code>.</p>"
    intro = (f"<p>Test split: {metrics.get('n_test_images')} images of {metrics.get('n_test_patients')} patients. "
             f"{H.esc(metrics.get('note', ''))}</p>")
    ops = []
    for label, r in metrics.get("labels", {}).items():
        op = r.get("operating_point") or {}
        if r.get("estimable") and op:
            ops.append([label, H.fmt(op.get("threshold")), op.get("tp"), op.get("fp"), op.get("fn"), op.get("tn"),
                        H.fmt_ci(op.get("ppv"), op.get("ppv_ci"), 2), H.fmt_ci(op.get("npv"), op.get("npv_ci"), 2),
                        H.fmt_ci(op.get("f1"), op.get("f1_ci"), 2)])
    out = intro + H.table(METRIC_HEADER, metrics_rows(metrics))
    if ops:
        out += "<h3>At the calibrated operating points (test)</h3>" + H.table(
            ["label", "threshold", "TP", "FP", "FN", "TN", "PPV", "NPV", "F1"], ops)
    return out


def _pct_ci(op: dict[str, Any], key: str) -> str:
    v, ci = op.get(key), op.get(f"{key}_ci")
    if v is None:
        return "—"
    return f"{100 * v:.0f}%" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")


def _threshold_section(run: Path) -> str:
    """The calibration sidecar: calibrator per label and the chosen operating point's out-of-fold meaning."""
    from chestdx.rundir import RunDir

    side = RunDir(run).read_calibration()
    if not side:
        return "<p>Not calibrated yet: run <code>chestdx evaluate RUN_DIR</code> (no finding is called until then).</p>"
    policy = side.get("policy", "balanced")
    rows = []
    for lb, d in (side.get("labels") or {}).items():
        op = (d.get("operating_points") or {}).get(policy) or {}
        method = (d.get("calibrator") or {}).get("method", "?")
        rows.append([lb, method, f"{d.get('n_pos', '—')} / {d.get('n_neg', '—')}",
                     H.fmt(op.get("threshold")) if d.get("callable") else "score only",
                     _pct_ci(op, "sensitivity"), _pct_ci(op, "specificity"), _pct_ci(op, "ppv"),
                     "" if d.get("callable") else (d.get("reason") or "")])
    text = (f"<p>Per-label calibrators and thresholds (policy <b>{H.esc(policy)}</b>) were fitted on "
            f"<b>{H.esc(side.get('source'))}</b> predictions ({side.get('n_images')} images, "
            f"{side.get('n_patients')} patients); test rows were never used. Rates are out-of-fold with "
            f"patient-bootstrap 95% CIs. A label without enough positives is shown as a score only, never called."
            f"</p>")
    return text + H.table(["label", "calibrator", "pos / neg", "threshold (calibrated p)", "sensitivity",
                           "specificity", "PPV (training prevalence)", "why not called"], rows)


def _plots_section(run: Path, metrics: dict[str, Any]) -> str:
    plots = metrics.get("plots") or {}
    figs = [H.img_tag(run / rel, caption=PLOT_TITLES.get(name, name)) for name, rel in plots.items()]
    return "\n".join(f for f in figs if f) or "<p>No evaluation plots.</p>"


def _gallery_section(run: Path, metrics: dict[str, Any], n_gallery: int, predictor: Any) -> str:
    if not metrics:
        return "<p>No predictions yet.</p>"
    items = saliency_gallery(run, metrics, run / "report_assets", n_per_cell=n_gallery, predictor=predictor)
    if not items:
        return "<p>No estimable label with a threshold: no gallery.</p>"
    parts = ["<p>Grad-CAM maps of the test images for the labels with most test positives: rows are true "
             "positives (most confident), false positives (most confident false alarms) and false negatives (most "
             "confident misses), at the calibrated operating point. Probabilities are calibrated.</p>"]
    for it in items:
        c = it["counts"]
        parts.append(f"<h3>{H.esc(it['label'])}</h3><p class='muted'>threshold {H.fmt(it['threshold'])}; test "
                     f"TP {c['TP']}, FP {c['FP']}, FN {c['FN']}</p>")
        if it["png"] is not None:
            parts.append(H.img_tag(it["png"], caption=f"{it['label']}: TP / FP / FN"))
    return "\n".join(parts)


def _localization_section(run: Path) -> str:
    loc = run / "localization"
    if not (loc / "localization.csv").is_file():
        return ("<p>No localization check in this run dir (run <code>chestdx localize RUN_DIR --boxes FILE</code> "
                "to measure the maps against boxes).</p>")
    table = pd.read_csv(loc / "localization.csv")
    meta = json.loads((loc / "localization.json").read_text()) if (loc / "localization.json").is_file() else {}
    rows = [[r.method, r.label, r.metric, int(r.n), f"{r.hit_rate:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]",
             f"{r.chance:.2f}"] for r in table.itertuples(index=False)]
    skipped = meta.get("skipped_reasons") or {}
    text = (f"<p>{meta.get('n_boxes_used', '?')} boxes on {meta.get('n_images_used', '?')} images "
            f"(boxes file {H.esc(Path(str(meta.get('boxes', '?'))).name)}, split {H.esc(meta.get('split'))}). "
            f"Pointing game: is the map's maximum inside the box? IoBB&gt;T: Wang et al. 2017 box from the "
            f"thresholded map. Chance: {H.esc(meta.get('chance', ''))}.</p>")
    if skipped:
        text += "<p class='muted'>Skipped: " + H.esc("; ".join(f"{n} {k}" for k, n in skipped.items())) + "</p>"
    return (text + H.table(["method", "label", "metric", "n", "hit rate [95% CI]", "chance"], rows)
            + H.img_tag(loc / "gallery.png", caption="Methods side by side; green box = ground truth"))


def _robustness_section(run: Path) -> str:
    from chestdx.evaluate.robustness import change_text
    from chestdx.rundir import RunDir

    path = RunDir(run).robustness
    if not path.is_file():
        return ("<p>No robustness check in this run dir (run <code>chestdx robustness RUN_DIR</code> to score the "
                "same images under gamma, contrast, noise, blur, sharpening, JPEG, low resolution and "
                "equalisation).</p>")
    res = json.loads(path.read_text())
    clean = res["clean"]
    text = (f"<p>Split <b>{H.esc(res['split'])}</b>: {res['n_images']} images, {res['n_patients']} patients, scored "
            f"clean and corrupted (paired; 95% patient-bootstrap CI of the change). Clean macro AUROC "
            f"{H.fmt(clean['macro_auroc'])}, {clean['called_per_image']:.2f} findings called per image. The "
            f"corruptions act on the model input, after the quality gate (docs/robustness.md).</p>")
    rows = []
    for st in res["settings"]:
        rows.append([st["corruption"], st["severity"], f"{st['level']:g}", H.fmt(st["macro_auroc"]), change_text(st),
                     f"{st['called_per_image']:.2f}", f"{100 * st['flip_rate']:.1f}%"])
    return text + H.table(["corruption", "severity", "level", "macro AUROC", "change [95% CI]", "findings / image",
                           "images whose findings change"], rows)


def build_report(run_dir: str | Path, n_gallery: int = 3, predictor: Any = None) -> Path:
    """Write ``RUN_DIR/report.html`` (self-contained) and ``RUN_DIR/MODEL_CARD.md``; return the HTML path.

    Runs the EDA into ``RUN_DIR/eda`` when missing, plots the training curves into ``RUN_DIR/plots`` and the
    saliency gallery (``n_gallery`` images per TP/FP/FN row) into ``RUN_DIR/report_assets``.
    """
    from chestdx.inference import Predictor

    run = Path(run_dir)
    predictor = predictor or Predictor.from_run(run, gate=None)
    split = read_split(run)
    summary = data_summary(split, predictor.labels)
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    try:
        eda = ensure_eda(run, split)
    except Exception as err:  # noqa: BLE001 - the report must not die on a plotting problem
        log.warning("EDA failed: %s", err)
        eda = None
    card = build_model_card(run, summary, metrics)
    write_model_card(run, card)
    banner = ('<p class="synthetic"><b>SYNTHETIC DATA.</b> This run was trained and tested on generated '
              'phantoms (source phantom-synthetic); its numbers say nothing about real chest X-rays.</p>'
              if summary["synthetic"] else "")
    head, _, rest = NOTICE.partition(". ")
    head += "."
    header = (f"<h1>chestdx report: {H.esc(run.name)}</h1>"
              f'<div class="notice"><b>{H.esc(head)}</b> {H.esc(rest)}</div>{banner}'
              f"<p class='muted'>{H.esc(predictor.arch)}, {predictor.input_size} px, labels "
              f"{H.esc(', '.join(predictor.labels))}. Generated {_dt.datetime.now().isoformat(timespec='seconds')}."
              f"</p>")
    body = [header,
            H.section("Data", _data_section(run, summary, eda), "data"),
            H.section("Training", _training_section(run), "training"),
            H.section("Test metrics with 95% confidence intervals", _metrics_section(metrics), "metrics"),
            H.section("Calibration and operating points (out-of-fold / validation)", _threshold_section(run),
                      "thresholds"),
            H.section("ROC, PR and calibration plots", _plots_section(run, metrics), "plots"),
            H.section("Saliency gallery: true positives, false positives, false negatives",
                      _gallery_section(run, metrics, n_gallery, predictor), "saliency"),
            H.section("Localization against boxes", _localization_section(run), "localization"),
            H.section("Robustness to acquisition changes", _robustness_section(run), "robustness"),
            H.section("Model card", card_html(card), "model-card")]
    path = run / "report.html"
    path.write_text(H.page(f"chestdx report: {run.name}", "\n".join(body)), encoding="utf-8")
    return path
