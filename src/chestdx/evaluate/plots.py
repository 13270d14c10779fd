"""Evaluation figures (matplotlib, Agg canvas, no pyplot state). Each writes a PNG and, with the same
stem, a JSON (or CSV for the comparison) of the plotted numbers. Non-estimable labels are marked
"n/a" and never drawn as curves.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import precision_recall_curve, roc_curve

from chestdx.evaluate.calibration import expected_calibration_error
from chestdx.evaluate.tables import split_arrays

DPI = 100


def _figure(n_panels: int) -> tuple[Figure, list]:
    ncols = min(4, max(1, n_panels))
    nrows = math.ceil(max(1, n_panels) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Figure, path: str | Path, data: dict | pd.DataFrame) -> Path:
    """Write the PNG and its numbers (same stem: .json for dicts, .csv for tables)."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    if isinstance(data, pd.DataFrame):
        data.to_csv(path.with_suffix(".csv"), index=False)
    else:
        path.with_suffix(".json").write_text(json.dumps(data, indent=1, allow_nan=False))
    return path


def _fmt(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _na(ax, res: dict) -> None:
    reason = textwrap.fill(str(res.get("reason") or "not estimable"), 28)
    ax.text(0.5, 0.5, "n/a\n" + reason, ha="center", va="center", transform=ax.transAxes, fontsize=8)


def _curves(y: np.ndarray, p: np.ndarray, labels: Sequence[str], results: dict, kind: str) -> dict:
    """Plotted numbers per label: curve points for estimable labels, the reason otherwise."""
    out = {}
    for j, lab in enumerate(labels):
        res = results[lab]
        row = {"estimable": bool(res["estimable"]), "reason": res.get("reason")}
        metric = "auroc" if kind == "roc" else "auprc"
        row[metric], row[f"{metric}_ci"] = res[metric], res[f"{metric}_ci"]
        if res["estimable"]:
            known = ~np.isnan(y[:, j])
            yk, pk = y[known, j], p[known, j]
            if kind == "roc":
                fpr, tpr, _ = roc_curve(yk, pk)
                row.update(fpr=fpr.tolist(), tpr=tpr.tolist())
            else:
                prec, rec, _ = precision_recall_curve(yk, pk, drop_intermediate=True)
                row.update(recall=rec.tolist(), precision=prec.tolist(), prevalence=res["prevalence"])
        out[lab] = row
    return out


def plot_roc_panels(y: np.ndarray, p: np.ndarray, labels: Sequence[str], results: dict, path: str | Path) -> Path:
    """One ROC panel per label; ``results`` is the ``"labels"`` dict of the metric functions."""
    data = _curves(np.asarray(y, float), np.asarray(p, float), labels, results, "roc")
    fig, axes = _figure(len(labels))
    for ax, lab in zip(axes, labels, strict=True):
        row = data[lab]
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        if row["estimable"]:
            ax.plot(row["fpr"], row["tpr"], lw=1.5)
        else:
            _na(ax, row)
        ax.set_title(f"{lab}\nAUROC {_fmt(row['auroc'], row['auroc_ci'])}", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="1 - specificity", ylabel="sensitivity")
    return _save(fig, path, {"kind": "roc_panels", "labels": data})


def plot_roc_overlay(y: np.ndarray, p: np.ndarray, labels: Sequence[str], results: dict, path: str | Path) -> Path:
    """All estimable labels' ROC curves on one axis; legend gives AUROC and CI, "n/a" for the rest."""
    data = _curves(np.asarray(y, float), np.asarray(p, float), labels, results, "roc")
    fig = Figure(figsize=(7.5, 6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    handles = []
    for lab in labels:
        row = data[lab]
        text = f"{lab}: {_fmt(row['auroc'], row['auroc_ci'])}"
        if row["estimable"]:
            handles.append(ax.plot(row["fpr"], row["tpr"], lw=1.2, label=text)[0])
        else:
            handles.append(Line2D([], [], lw=0, label=text))
    ax.legend(handles=handles, fontsize=7, loc="lower right", title="AUROC [95% CI]", title_fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="1 - specificity", ylabel="sensitivity", title="ROC curves (test)")
    return _save(fig, path, {"kind": "roc_overlay", "labels": data})


def plot_pr_panels(y: np.ndarray, p: np.ndarray, labels: Sequence[str], results: dict, path: str | Path) -> Path:
    """One precision-recall panel per label with AUPRC and CI; prevalence as the chance line."""
    data = _curves(np.asarray(y, float), np.asarray(p, float), labels, results, "pr")
    fig, axes = _figure(len(labels))
    for ax, lab in zip(axes, labels, strict=True):
        row = data[lab]
        if row["estimable"]:
            ax.step(row["recall"], row["precision"], where="post", lw=1.5)
            ax.axhline(row["prevalence"], color="0.7", lw=0.8, ls="--")
        else:
            _na(ax, row)
        ax.set_title(f"{lab}\nAUPRC {_fmt(row['auprc'], row['auprc_ci'])}", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    return _save(fig, path, {"kind": "pr_panels", "labels": data})


def plot_reliability(
    y: np.ndarray,
    p_before: np.ndarray,
    p_after: np.ndarray,
    path: str | Path,
    n_bins: int = 15,
    method: str = "calibration",
) -> Path:
    """Pooled reliability diagram before and after calibration (equal-width bins)."""
    fig = Figure(figsize=(5.5, 5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="perfect calibration")
    data: dict = {"kind": "reliability", "n_bins": n_bins, "method": method}
    for name, probs in (("before", p_before), ("after", p_after)):
        cal = expected_calibration_error(y, probs, n_bins)
        data[name] = cal
        rows = [r for r in cal["table"] if r["count"] > 0]
        ece = "n/a" if cal["ece"] is None else f"{cal['ece']:.3f}"
        label = f"{name} {method} (ECE {ece})"
        ax.plot([r["mean_pred"] for r in rows], [r["frac_pos"] for r in rows], marker="o", ms=3, label=label)
    title = "Reliability (test)"
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="fraction positive", title=title)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path, data)


def plot_compare(table: pd.DataFrame, path: str | Path) -> Path:
    """AUROC with CI per label per run, from ``compare_predictions``; n/a labels are not drawn."""
    labels = list(dict.fromkeys(table["label"]))
    runs = list(dict.fromkeys(table["run"]))
    fig = Figure(figsize=(max(6, 0.6 * len(labels) * max(1, len(runs)) ** 0.5 + 2), 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        sub = table[(table["run"] == run) & table["estimable"].astype(bool)]
        x = np.array([labels.index(lab) for lab in sub["label"]]) + (k - (len(runs) - 1) / 2) * width
        auc = sub["auroc"].to_numpy(float)
        lo, hi = sub["auroc_lo"].to_numpy(float), sub["auroc_hi"].to_numpy(float)
        err = np.vstack([auc - np.where(np.isnan(lo), auc, lo), np.where(np.isnan(hi), auc, hi) - auc])
        ax.errorbar(x, auc, yerr=err, fmt="o", ms=4, capsize=2, label=run)
    est = table.groupby("label", sort=False)["estimable"].any()
    ax.set_xticks(
        range(len(labels)),
        [lab if est[lab] else f"{lab}\n(n/a)" for lab in labels],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    ax.set(ylabel="AUROC [95% CI]", title=f"AUROC per label ({table.attrs.get('split', 'test')})")
    ax.legend(fontsize=8)
    return _save(fig, path, table)


def plot_evaluation(pred: pd.DataFrame, result: dict, out_dir: str | Path, test_split: str = "test") -> dict[str, Path]:
    """The standard figures of an evaluation: roc, roc_overlay, pr, reliability (needs ``cal_<Label>`` columns)."""
    labels = list(result["labels"])
    test = split_arrays(pred, labels, test_split)
    part = pred[pred["split"] == test_split]
    part = part.iloc[np.argsort(part["image_id"].astype(str).to_numpy(), kind="mergesort")]
    p_cal = part[[f"cal_{lab}" for lab in labels]].to_numpy(dtype=np.float64)
    out = Path(out_dir)
    return {
        "roc": plot_roc_panels(test.y, test.p, labels, result["labels"], out / "roc.png"),
        "roc_overlay": plot_roc_overlay(test.y, test.p, labels, result["labels"], out / "roc_overlay.png"),
        "pr": plot_pr_panels(test.y, test.p, labels, result["labels"], out / "pr.png"),
        "reliability_test": plot_reliability(
            test.y, test.p, p_cal, out / "reliability_test.png", result["calibration"]["n_bins"],
            "per-label calibration",
        ),
    }
