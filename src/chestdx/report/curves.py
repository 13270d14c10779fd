"""Training curves from Lightning's ``folds/<k>/logs/metrics.csv``: loss (train, val) and val macro AUROC per epoch,
one line per ensemble member."""

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
    logs = sorted(run.glob("folds/*/logs/metrics.csv"), key=lambda p: int(p.parts[-3])) or \
        [p for p in [run / "logs" / "metrics.csv"] if p.is_file()]  # chestdx-run/2 folds; older runs: logs/
    if not logs:
        return None
    table = pd.concat([epoch_table(p).assign(fold=int(p.parts[-3]) if p.parts[-3].isdigit() else 0) for p in logs],
                      ignore_index=True)
    out = Path(out_dir) if out_dir is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "training_curves.csv", out / "training_curves.png"
    table.to_csv(csv_path, index=False)
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    folds = sorted(table["fold"].unique())
    for fold in folds:
        part = table[table["fold"] == fold]
        tag = f"fold {fold}: " if len(folds) > 1 else ""
        for col, style in (("train_loss", "o-"), ("val_loss", "s-")):
            if col in part:
                ax1.plot(part["epoch"], part[col], style, label=tag + col.replace("_", " "))
        if "val_macro_auroc" in part and part["val_macro_auroc"].notna().any():
            line = ax2.plot(part["epoch"], part["val_macro_auroc"], "o-", label=f"fold {fold}" if tag else None)[0]
            best = part["val_macro_auroc"].idxmax()
            ax2.axvline(part.at[best, "epoch"], color=line.get_color(), ls="--", lw=1)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_title("Loss")
    ax1.legend(fontsize=7)
    if len(folds) > 1:
        ax2.legend(fontsize=7)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("macro AUROC")
    ax2.set_title("Validation macro AUROC (dashed: best epoch, kept)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(png_path, dpi=100)
    return png_path, csv_path
