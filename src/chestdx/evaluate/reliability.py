"""Reliability diagrams per label, before and after calibration (PNG + JSON of the plotted numbers).

``calibrate_run`` draws them on the out-of-fold rows: "before" is the raw ensemble probability, "after" the
chosen calibrator's cross-fitted probability (fitted without the row itself, so not flattered by the fit).
``reliability_numbers`` builds the same input from any (y, p_before, p_after), e.g. the test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chestdx.evaluate.calibration import expected_calibration_error
from chestdx.evaluate.plots import _save

N_BINS = 10


def reliability_numbers(y: np.ndarray, p_before: np.ndarray, p_after: np.ndarray, labels: Sequence[str],
                        n_bins: int = N_BINS) -> dict[str, dict]:
    """Per label: ECE + bin table before and after (known labels only), positives and negatives."""
    out = {}
    for j, label in enumerate(labels):
        known = ~np.isnan(y[:, j])
        yj = y[known, j]
        out[label] = {"before": expected_calibration_error(yj, p_before[known, j], n_bins),
                      "after": expected_calibration_error(yj, p_after[known, j], n_bins),
                      "n_pos": int(yj.sum()), "n_neg": int(len(yj) - yj.sum())}
    return out


def _curve(table: list[dict]) -> tuple[list[float], list[float], list[int]]:
    rows = [r for r in table if r["count"]]
    return [r["mean_pred"] for r in rows], [r["frac_pos"] for r in rows], [r["count"] for r in rows]


def plot_reliability(numbers: dict[str, dict], path: str | Path, source: str = "oof") -> Path:
    """One panel per label: observed frequency vs mean predicted probability per bin, before and after.

    ``numbers`` as from :func:`reliability_numbers` (or ``calibrate_oof``'s second output). Writes ``path``
    (.png) and the same stem .json; returns the PNG path.
    """
    labels = list(numbers)
    ncols = min(4, max(1, len(labels)))
    nrows = math.ceil(max(1, len(labels)) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    for ax, label in zip(axes, labels, strict=False):
        res = numbers[label]
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        for key, color in (("before", "tab:red"), ("after", "tab:blue")):
            x, f, n = _curve(res[key]["table"])
            ece = res[key]["ece"]
            name = f"{key} (ECE {ece:.3f})" if ece is not None else f"{key} (n/a)"
            ax.plot(x, f, marker="o", ms=3, color=color, lw=1.2, label=name)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{label} ({res['n_pos']} pos)", xlabel="predicted probability",
               ylabel="observed frequency")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reliability per label: {source} ({N_BINS} bins; red: raw, blue: calibrated)", fontsize=10)
    data = {"source": source, "n_bins": N_BINS, "labels": numbers}
    return _save(fig, path, data)
