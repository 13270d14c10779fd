"""Exploratory summary of a split table: prevalence, co-occurrence, demographics, images per patient.

Every figure is a PNG next to a CSV/JSON holding the numbers it shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from chestdx.data.index import label_columns as _all_label_columns  # noqa: E402


def label_columns(df: pd.DataFrame) -> list[str]:
    """Labels the dataset actually grades (columns that are all NaN, e.g. NIH labels absent from Kermany, go)."""
    return [c for c in _all_label_columns(df) if df[c].notna().any()]


def counts_with_unknown(values: pd.Series) -> pd.Series:
    """Value counts with missing values counted as "unknown", whatever the column's dtype (an all-missing column
    is float64, where ``fillna("unknown")`` warns and future pandas raises)."""
    as_text = values.astype(object).where(values.notna(), "unknown")
    return as_text.map(lambda v: v if isinstance(v, str) else str(v)).value_counts()


def prevalence(df: pd.DataFrame) -> pd.DataFrame:
    """Positives, graded images and prevalence per label and split (rows: label; columns: split/metric)."""
    labels = label_columns(df)
    groups = df.groupby("split") if "split" in df.columns else [("all", df)]
    rows = []
    for split, part in groups:
        y = part[labels]
        for label in labels:
            pos, graded = float(np.nansum(y[label])), int(y[label].notna().sum())
            rows.append({"split": split, "label": label, "positives": int(pos), "graded": graded,
                         "prevalence": pos / graded if graded else float("nan")})
    return pd.DataFrame(rows)


def cooccurrence(df: pd.DataFrame) -> pd.DataFrame:
    """Images positive for both labels (label x label); the diagonal is each label's positive count."""
    y = np.nan_to_num(df[label_columns(df)].to_numpy(np.float64))
    return pd.DataFrame(y.T @ y, index=label_columns(df), columns=label_columns(df)).astype(int)


def run_eda(df: pd.DataFrame, out_dir: str | Path, title: str = "") -> dict:
    """Write the EDA figures and tables to ``out_dir``; returns the summary dict (also eda.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = f" — {title}" if title else ""
    prev = prevalence(df)
    prev.to_csv(out / "prevalence.csv", index=False)
    table = prev.pivot(index="label", columns="split", values="prevalence").reindex(label_columns(df))
    order = ["train", "val", "test"]
    table = table[[c for c in order if c in table.columns] + [c for c in table.columns if c not in order]]
    fig, ax = plt.subplots(figsize=(10, 5))
    table.plot.bar(ax=ax)
    ax.set_ylabel("fraction of graded images positive")
    ax.set_title("Label prevalence per split (class imbalance)" + suffix)
    fig.tight_layout()
    fig.savefig(out / "prevalence.png", dpi=110)
    plt.close(fig)

    co = cooccurrence(df)
    co.to_csv(out / "cooccurrence.csv")
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(np.log1p(co.to_numpy()), cmap="viridis")
    ax.set_xticks(range(len(co)), co.columns, rotation=90)
    ax.set_yticks(range(len(co)), co.index)
    for i in range(len(co)):
        for j in range(len(co)):
            ax.text(j, i, str(co.iat[i, j]), ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax, label="log(1 + images)")
    ax.set_title("Label co-occurrence (images)" + suffix)
    fig.tight_layout()
    fig.savefig(out / "cooccurrence.png", dpi=110)
    plt.close(fig)

    per_patient = df.groupby("patient_id").size()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    ages = df["age"].dropna()
    if len(ages):
        axes[0].hist(ages, bins=20)
    axes[0].set_title(f"Age (n={len(ages)}, {df['age'].isna().sum()} unknown)")
    for ax, col in zip(axes[1:3], ("sex", "view"), strict=True):
        counts = counts_with_unknown(df[col])
        ax.bar(counts.index.astype(str), counts.to_numpy())
        ax.set_title(col.capitalize())
    axes[3].hist(per_patient, bins=min(30, max(1, per_patient.max())))
    axes[3].set_title(f"Images per patient ({len(per_patient)} patients)")
    fig.suptitle("Demographics and acquisition" + suffix)
    fig.tight_layout()
    fig.savefig(out / "demographics.png", dpi=110)
    plt.close(fig)

    summary = {
        "title": title,
        "n_images": len(df),
        "n_patients": int(per_patient.size),
        "images_per_patient": {"mean": float(per_patient.mean()), "max": int(per_patient.max())},
        "split_images": df["split"].value_counts().to_dict() if "split" in df.columns else {"all": len(df)},
        "age": {"mean": float(ages.mean()) if len(ages) else None, "unknown": int(df["age"].isna().sum())},
        "sex": counts_with_unknown(df["sex"]).to_dict(),
        "view": counts_with_unknown(df["view"]).to_dict(),
        "positives": {lb: int(np.nansum(df[lb])) for lb in label_columns(df)},
        "files": ["prevalence.png", "prevalence.csv", "cooccurrence.png", "cooccurrence.csv", "demographics.png"],
    }
    (out / "eda.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
