"""How a run's predictions hold up when its inputs are corrupted as another hospital might store them.

For every corruption x severity of ``chestdx.evaluate.corruptions`` the same images are scored again and compared
with their clean scores, paired: macro AUROC and its change (95% patient-bootstrap CI, the clean and corrupted
scores resampled together), the calibrated findings called per image, the share of images whose called findings
change ("flip rate") and the mean change of the calibrated probabilities.

Which images: ``split="oof"`` (default) scores every out-of-fold row with the member that did not train on it
(K = 1: the validation rows and the one member), so a recipe can be compared on validation data only; ``"val"``
or ``"test"`` score those split rows with the whole ensemble. The calibration used to call findings was fitted on
the out-of-fold rows: on ``oof`` read the *changes*, not the absolute calibration. Corruptions act on the model
input (the cached (S, S) uint8 pixels), after the quality gate, which is not part of this measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from chestdx.data.pipeline import cache_table, progress_bar
from chestdx.evaluate.bootstrap import group_codes, patient_counts, percentile_ci
from chestdx.evaluate.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from chestdx.evaluate.metrics import multilabel_core
from chestdx.inference.calibration import Calibration

__all__ = ["robustness_run", "robustness_markdown", "change_text"]


def _scored_rows(rt: Any, split: str) -> tuple[pd.DataFrame, list[tuple[list[int], np.ndarray]]]:
    """The rows to score and, per group of members, the row positions they score."""
    members = rt.manifest["members"]
    if split == "oof" and not rt.run.oof.is_file() and len(members) == 1:
        split = "val"  # K = 1 before `evaluate`: its out-of-fold rows are the validation rows
    if split == "oof":
        if not rt.run.oof.is_file():
            raise FileNotFoundError(f"{rt.run.oof}: no out-of-fold predictions (an interrupted K-fold run?); "
                                    f"finish training with `chestdx train --resume {rt.run.path}`")
        oof = pd.read_csv(rt.run.oof, usecols=["image_id", "fold"])
        rows = rt.table.drop(columns=["fold"], errors="ignore").merge(oof, on="image_id", how="inner")
        groups = []
        for fold, part in rows.groupby("fold"):
            who = [k for k, m in enumerate(members) if int(m.get("fold", k)) == int(fold)]
            if not who:
                raise ValueError(f"{rt.run.oof}: fold {fold} has no ensemble member in model.json")
            groups.append((who, part.index.to_numpy()))
        return rows, groups
    rows = rt.rows(split).reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{rt.run.split}: no rows in split {split!r}")
    return rows, [(list(range(len(members))), np.arange(len(rows)))]


def _backends(rt: Any, groups: list[tuple[list[int], np.ndarray]]) -> dict[tuple[int, ...], Any]:
    """A torch backend per group of members (each member's weights loaded once)."""
    from chestdx.inference.backend_torch import TorchBackend, build_member

    nets: dict[int, Any] = {}
    for who, _ in groups:
        for k in who:
            if k not in nets:
                nets[k] = build_member(rt.manifest, rt.run.load_member_state(rt.manifest["members"][k]))
    return {tuple(who): TorchBackend([nets[k] for k in who]) for who, _ in groups}


def _logits(backends: dict[tuple[int, ...], Any], groups: list[tuple[list[int], np.ndarray]],
            pixels: np.ndarray, meta: np.ndarray | None, n_labels: int) -> np.ndarray:
    z = np.zeros((len(pixels), n_labels), np.float64)
    for who, idx in groups:
        z[idx] = backends[tuple(who)].forward(pixels[idx], None if meta is None else meta[idx])[0]
    return z


def _called(cal: Calibration, p: np.ndarray) -> np.ndarray:
    thr = np.array([t if (t := cal.threshold(lb)) is not None else np.inf for lb in cal.labels])
    return p >= thr


def robustness_run(run_dir: str | Path, data: str | Path | None = None, split: str = "oof",
                   corruptions: Sequence[str] | None = None, severities: Sequence[int] = SEVERITIES,
                   n_boot: int = 500, seed: int = 0, min_pos: int = 5, show_progress: bool = True,
                   write: bool = True) -> dict[str, Any]:
    """Score ``split`` rows clean and under each corruption; returns (and writes ``RunDir.robustness``) the
    paired comparison. Never writes the weights."""
    from chestdx.inference.run_table import open_run_table
    from chestdx.models import encode_metadata

    names = list(corruptions) if corruptions else list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ValueError(f"severities must be among {SEVERITIES}, got {list(severities)}")
    if split not in ("oof", "val", "test"):
        raise ValueError(f"split must be oof, val or test, got {split!r}")
    rt = open_run_table(run_dir, data)
    manifest, labels = rt.manifest, list(rt.manifest["labels"])
    size = int(manifest["input_size"])
    rows, groups = _scored_rows(rt, split)
    cache, kept, _ = cache_table(rows, size, rt.cache_root, show_progress=show_progress)
    if len(kept) < len(rows):  # unreadable files dropped: re-derive the groups on the kept rows
        rows, groups = kept, [(who, np.flatnonzero(kept["image_id"].isin(rows.loc[idx, "image_id"])))
                              for who, idx in groups]
    pixels = np.asarray(cache.pixels[cache.slots(rows["path"].tolist())])
    meta = encode_metadata(rows, manifest["metadata"]) if manifest.get("metadata") else None
    backends = _backends(rt, groups)
    cal = Calibration.from_sidecar(rt.run.read_calibration(), labels)

    y = rows[labels].to_numpy(np.float64)
    codes = group_codes(rows["patient_id"].to_numpy(), len(rows))
    counts = patient_counts(codes, n_boot, seed)
    z0 = _logits(backends, groups, pixels, meta, len(labels))
    clean, clean_reps = multilabel_core(y, expit(z0), codes, counts, labels, min_pos, 5, 0.95)
    p0 = cal.apply(z0)
    called0 = _called(cal, p0)
    known = ~np.isnan(y)
    out: dict[str, Any] = {
        "format": "chestdx-robustness/1", "run": str(rt.run.path), "split": split, "n_images": int(len(rows)),
        "n_patients": int(rows["patient_id"].nunique()), "n_boot": int(n_boot), "seed": int(seed),
        "members_per_image": sorted({len(who) for who, _ in groups}),
        "calibrated": cal.calibrated, "policy": cal.policy if cal.calibrated else None,
        "corruptions": {n: {"what": CORRUPTIONS[n][0], "levels": list(CORRUPTIONS[n][1])} for n in names},
        "clean": {"macro_auroc": clean["macro"]["auroc"], "macro_auroc_ci": clean["macro"].get("auroc_ci"),
                  "labels_in_macro": clean["macro"].get("labels"),
                  "called_per_image": float((called0 & known).sum(1).mean()),
                  "true_per_image": float(np.where(known, y, 0).sum(1).mean())},
        "settings": [],
    }
    settings = [(name, int(sev)) for name in names for sev in severities]
    with progress_bar("corruptions", len(settings), show_progress) as bar:
        task = bar.add_task("corruptions", total=len(settings))
        for name, sev in settings:
            zc = _logits(backends, groups, corrupt(pixels, name, sev, seed), meta, len(labels))
            res, reps = multilabel_core(y, expit(zc), codes, counts, labels, min_pos, 5, 0.95)
            pc = cal.apply(zc)
            called = _called(cal, pc)
            diff = reps["macro"]["auroc"] - clean_reps["macro"]["auroc"] if clean_reps["macro"] else np.array([np.nan])
            a0, a1 = clean["macro"]["auroc"], res["macro"]["auroc"]
            out["settings"].append({
                "corruption": name, "severity": sev, "level": CORRUPTIONS[name][1][sev - 1],
                "macro_auroc": a1, "delta_auroc": None if a0 is None or a1 is None else a1 - a0,
                "delta_auroc_ci": percentile_ci(diff[np.isfinite(diff)]) if np.isfinite(diff).any() else None,
                "called_per_image": float((called & known).sum(1).mean()),
                "flip_rate": float((called != called0).any(axis=1).mean()),
                "mean_abs_dprob": float(np.abs(pc - p0).mean()),
            })
            bar.advance(task)
    if write:
        rt.run.robustness.write_text(json.dumps(out, indent=2, allow_nan=False))
    return out


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def change_text(setting: dict[str, Any]) -> str:
    """A setting's macro AUROC change with its CI, e.g. ``-0.101 [-0.145, -0.061]`` (``n/a`` when undefined)."""
    ci = setting.get("delta_auroc_ci")
    ci_s = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci and setting["delta_auroc"] is not None else ""
    return _fmt(setting["delta_auroc"], "+.3f") + ci_s


def robustness_markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table (one row per corruption x severity)."""
    c = result["clean"]
    lines = [f"Run `{result['run']}`, split `{result['split']}`: {result['n_images']} images, "
             f"{result['n_patients']} patients; clean macro AUROC {_fmt(c['macro_auroc'])}, "
             f"{c['called_per_image']:.2f} findings called per image ({c['true_per_image']:.2f} true).", "",
             "| corruption | severity | level | macro AUROC | change [95% CI] | findings / image | "
             "images whose findings change | mean abs change of p |", "|---|---|---|---|---|---|---|---|"]
    for s in result["settings"]:
        lines.append(f"| {s['corruption']} | {s['severity']} | {s['level']:g} | {_fmt(s['macro_auroc'])} | "
                     f"{change_text(s)} | {s['called_per_image']:.2f} | "
                     f"{100 * s['flip_rate']:.1f}% | {s['mean_abs_dprob']:.3f} |")
    return "\n".join(lines) + "\n"
