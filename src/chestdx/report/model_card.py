"""Model card of a run (Mitchell et al. 2019 style): intended use, data, evaluation, limits, failure modes.

Built from the run dir (checkpoint, split.csv, metrics.json, train_summary.json); rendered as Markdown
(``RUN_DIR/MODEL_CARD.md``) and as HTML for ``report.html``. Sections are plain data so both renderings agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chestdx.notice import DISCLAIMER
from chestdx.report.html import esc, fmt, fmt_ci
from chestdx.report.html import table as html_table

NOTICE = DISCLAIMER + " It must not be used to diagnose, triage or treat patients without that review."
SECTIONS = ("Model details", "Intended use", "Training data", "Evaluation", "Limitations", "Known failure modes")


@dataclass
class Tab:
    """A table block."""

    header: list[str]
    rows: list[list[str]]


Block = str | list[str] | Tab
Card = list[tuple[str, list[Block]]]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def metrics_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """label, n (pos), AUROC [CI], AUPRC [CI], sensitivity / specificity at the val threshold; n.e. spelled out."""
    rows = []
    for label, r in metrics.get("labels", {}).items():
        n = f"{r.get('n', '—')} ({r.get('n_pos', '—')} pos)"
        if not r.get("estimable"):
            rows.append([label, n, f"not estimable ({r.get('reason') or 'too few cases'})", "—", "—", "—"])
            continue
        op = r.get("operating_point") or {}
        rows.append([label, n, fmt_ci(r.get("auroc"), r.get("auroc_ci")), fmt_ci(r.get("auprc"), r.get("auprc_ci")),
                     fmt_ci(op.get("sensitivity"), op.get("sensitivity_ci"), 2),
                     fmt_ci(op.get("specificity"), op.get("specificity_ci"), 2)])
    macro = metrics.get("macro") or {}
    if macro.get("auroc") is not None:
        rows.append(["macro mean", f"{len(macro.get('labels', []))} labels",
                     fmt_ci(macro["auroc"], macro.get("auroc_ci")), fmt_ci(macro.get("auprc"), macro.get("auprc_ci")),
                     "", ""])
    return rows


METRIC_HEADER = ["label", "test n", "AUROC [95% CI]", "AUPRC [95% CI]", "sensitivity", "specificity"]


def _data_facts(summary: dict[str, Any]) -> tuple[str, bool, bool]:
    sources = summary.get("sources", {})
    synthetic = bool(summary.get("synthetic"))
    nih = any(str(s).lower().startswith("nih") for s in sources)
    src = ", ".join(f"{s} ({n} images)" for s, n in sources.items()) or "unknown"
    return src, synthetic, nih


def build_model_card(run_dir: str | Path, summary: dict[str, Any] | None = None,
                     metrics: dict[str, Any] | None = None) -> Card:
    """The card's sections for ``run_dir`` (``summary`` = :func:`chestdx.report.data_summary.data_summary`)."""
    from chestdx.report.data_summary import data_summary, read_split
    from chestdx.rundir import RunDir

    run = Path(run_dir)
    rd = RunDir(run)
    ckpt = rd.manifest()
    side = rd.read_calibration()
    labels = list(ckpt["labels"])
    metrics = metrics if metrics is not None else _json(run / "metrics.json")
    summary = summary or data_summary(read_split(run), labels)
    train = _json(run / "train_summary.json")
    config = {"name": ckpt.get("config_name"), "seed": train.get("seed", "?")}
    src, synthetic, nih = _data_facts(summary)
    size = int(ckpt["input_size"])

    details = [[
        f"Architecture: {ckpt['arch']} (pretrained: {ckpt.get('pretrained') or 'none'}; "
        f"freeze: {ckpt.get('freeze') or 'none'}; metadata inputs: {', '.join(ckpt.get('metadata') or []) or 'none'})",
        f"Input: {size}x{size} px grayscale (every image resized, aspect squashed, to this size)",
        f"Outputs: independent probabilities for {len(labels)} labels: {', '.join(labels)}",
        f"Run: {run.name} (config {config.get('name', '?')}, seed {config.get('seed', '?')}); best validation macro "
        f"AUROC {fmt(train.get('best_val_macro_auroc'))} at epoch {train.get('best_epoch', '?')}",
        f"Ensemble of {len(ckpt['members'])} member(s) (mean logit); per-label calibration and operating points "
        f"(policy {side.get('policy')}) fitted on {side.get('source')} predictions of {side.get('n_images')} images"
        if side else "Not calibrated yet: run `chestdx evaluate` first (no finding is called until then)",
    ]]
    intended = [
        NOTICE,
        ["Intended users: qualified clinicians (radiologists, emergency and chest physicians) and researchers.",
         "Intended use: a second look that flags findings and shows where the model looked (saliency maps), "
         "alongside the clinician's own reading of the image.",
         "Out of scope: autonomous diagnosis, triage or reporting without review; lateral views, children, CT, "
         "or any population or device unlike the training data."],
    ]
    splits = summary.get("splits", {})
    data: list[Block] = [f"Source: {src}. {summary.get('n_images', '?')} images of "
                         f"{summary.get('n_patients', '?')} patients; patient-disjoint splits: "
                         + ", ".join(f"{s} {v['images']} images / {v['patients']} patients" for s, v in splits.items())
                         + "."]
    if synthetic:
        data.append("SYNTHETIC DATA: the images are generated phantoms (source 'phantom-synthetic'), not real "
                    "patients. Nothing in this card says anything about real chest X-rays.")
    prev = summary.get("prevalence", {})
    data.append(Tab(["label"] + [f"{s} positives / graded (prevalence)" for s in splits],
                    [[lb] + [f"{c['positives']} / {c['graded']} ({fmt(c['prevalence'], 2)})" for c in prev[lb].values()]
                     for lb in prev]))
    evaluation: list[Block] = []
    if metrics:
        evaluation.append(f"Test split: {metrics.get('n_test_images', '?')} images of "
                          f"{metrics.get('n_test_patients', '?')} patients. 95% CIs from a bootstrap over patients; "
                          f"labels with too few positives or negatives are marked not estimable. Per-label "
                          f"calibration and thresholds (policy {metrics.get('policy', '?')}) were fitted on "
                          f"{metrics.get('calibration_source', '?')} predictions, never on test.")
        evaluation.append(Tab(METRIC_HEADER, metrics_rows(metrics)))
        cal = metrics.get("calibration") or {}
        if cal.get("before"):
            after = cal.get("after") or {}
            evaluation.append(f"Calibration (test ECE): {fmt(cal['before'].get('ece'))} raw, {fmt(after.get('ece'))} "
                              f"after per-label calibration (median per-label ECE "
                              f"{fmt(after.get('median_per_label'))}).")
        fpi = metrics.get("findings_per_image") or {}
        if fpi:
            evaluation.append(f"Findings called per test image: {fmt(fpi.get('called_per_image'))} vs "
                              f"{fmt(fpi.get('true_per_image'))} truly present.")
    else:
        evaluation.append("Not evaluated yet (no metrics.json): run `chestdx evaluate RUN_DIR`.")
    robust = _json(rd.robustness)
    if robust.get("settings"):
        worst = {}
        for st in robust["settings"]:
            if st["delta_auroc"] is not None and (st["corruption"] not in worst
                                                  or st["delta_auroc"] < worst[st["corruption"]]["delta_auroc"]):
                worst[st["corruption"]] = st
        evaluation.append(
            f"Robustness ({robust['split']} rows, `chestdx robustness`): largest macro AUROC drop over the tested "
            "strengths of each acquisition change: " + "; ".join(
                f"{name} {st['delta_auroc']:+.3f} (level {st['level']:g})" for name, st in worst.items())
            + ". Large drops mean the model is unreliable for images processed that way.")
    n_train = splits.get("train", {}).get("images", summary.get("n_images", 0))
    limits = [
        f"Small training set ({n_train} training images): wide confidence intervals, unstable rare labels.",
        "Single source: " + ("NIH Clinical Center (one US hospital, mostly adults, 1992-2015 archive)." if nih else
                             f"{src}; no external validation on another hospital or device."),
        f"Downscaled images: {size} px instead of the original resolution (NIH: 1024 px); small findings "
        "(nodules, thin pneumothorax lines) may be lost.",
        "NIH labels were text-mined from radiology reports by NLP, not read from the images: they contain errors, "
        "and 'No Finding' is not a verified normal." if nih else
        "Labels come from the source dataset's own process; their error rate is not known here.",
        "Not validated prospectively, nor in a clinical workflow; no reader study.",
        f"Calibration and thresholds were fitted on {side.get('n_images', '?') if side else '?'} out-of-fold or "
        "validation images of the same hospital: probabilities may be miscalibrated elsewhere; re-calibrate on "
        "local data (`chestdx evaluate` on a local split) before use.",
        "Performance across sex, age groups and view position was not separately established.",
    ]
    if synthetic:
        limits.insert(0, "Trained and tested on SYNTHETIC phantoms: a demonstration of the software, not a model.")
    failures = [
        "Shortcut learning: chest tubes, drains, ECG leads, pacemakers (treated pneumothorax/effusion), text "
        "markers, laterality tokens and hospital-specific burn-ins can drive predictions instead of the lesion; "
        "check the saliency map.",
        "Portable AP (bedside, sicker patients) versus PA views: the view itself correlates with findings.",
        "Lateral views and rotated or cropped images are out of distribution (trained on frontal views).",
        "Pediatric versus adult shift: anatomy and disease mix differ (e.g. Kermany pediatric pneumonia images).",
        "Different scanners, DICOM windowing or inverted (MONOCHROME1) images change intensities.",
        "Saliency maps are coarse (Grad-CAM at the last feature map) and can highlight correlates, not causes; "
        "their localization was measured against boxes, see the localization table.",
    ]
    return [("Model details", details), ("Intended use", intended), ("Training data", data),
            ("Evaluation", evaluation), ("Limitations", [limits]), ("Known failure modes", [failures])]


def card_markdown(card: Card, title: str = "Model card") -> str:
    """Markdown rendering (MODEL_CARD.md)."""
    lines = [f"# {title}", "", f"> **{NOTICE}**", ""]
    for name, blocks in card:
        lines += [f"## {name}", ""]
        for b in blocks:
            if isinstance(b, Tab):
                lines += ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
                lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in b.rows]
            elif isinstance(b, list):
                lines += [f"- {item}" for item in b]
            else:
                lines.append(b)
            lines.append("")
    return "\n".join(lines)


def card_html(card: Card) -> str:
    """HTML rendering (one <h3> per section) for report.html."""
    parts = []
    for name, blocks in card:
        parts.append(f"<h3>{esc(name)}</h3>")
        for b in blocks:
            if isinstance(b, Tab):
                parts.append(html_table(b.header, b.rows))
            elif isinstance(b, list):
                parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b) + "</ul>")
            else:
                parts.append(f"<p>{esc(b)}</p>")
    return "\n".join(parts)


def write_model_card(run_dir: str | Path, card: Card | None = None) -> Path:
    """Write ``RUN_DIR/MODEL_CARD.md``."""
    run = Path(run_dir)
    path = run / "MODEL_CARD.md"
    path.write_text(card_markdown(card or build_model_card(run), f"Model card: {run.name}"), encoding="utf-8")
    return path
