"""Training curves from Lightning's ``logs/metrics.csv``: loss (train, val) and val macro AUROC per epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLUMNS = ("train_loss", "val_loss", "val_macro_auroc")


def epoch_table(metrics_csv: str | Path) -> pd.DataFrame:
    """One row per epoch, numbered from 1 (the CSVLogger counts from 0 and writes train and val values on
    separate rows)."""
    raw = pd.read_csv(metrics_csv)
    if "epoch" not in raw.columns:
        raise ValueError(f"{metrics_csv}: no epoch column")
    cols = [c for c in COLUMNS if c in raw.columns]
    table = raw.groupby("epoch", as_index=False)[cols].agg(lambda s: s.dropna().iloc[-1] if s.notna().any()
                                                           else float("nan"))
    table["epoch"] = table["epoch"].astype(int) + 1
    return table


def training_curves(run_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path] | None:
    """Write ``training_curves.png`` + ``.csv`` (default into ``RUN_DIR/plots``); None when there is no log."""
    run = Path(run_dir)
    log_csv = run / "logs" / "metrics.csv"
    if not log_csv.is_file():
        return None
    table = epoch_table(log_csv)
    out = Path(out_dir) if out_dir is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "training_curves.csv", out / "training_curves.png"
    table.to_csv(csv_path, index=False)
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    for col, style in (("train_loss", "o-"), ("val_loss", "s-")):
        if col in table:
            ax1.plot(table["epoch"], table[col], style, label=col.replace("_", " "))
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_title("Loss")
    ax1.legend()
    if "val_macro_auroc" in table:
        ax2.plot(table["epoch"], table["val_macro_auroc"], "o-", color="tab:green")
        best = table["val_macro_auroc"].idxmax() if table["val_macro_auroc"].notna().any() else None
        if best is not None:
            ax2.axvline(table.at[best, "epoch"], color="gray", ls="--", lw=1, label="best (checkpoint kept)")
            ax2.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("macro AUROC")
    ax2.set_title("Validation macro AUROC")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(png_path, dpi=100)
    return png_path, csv_path
