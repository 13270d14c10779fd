"""Evaluation tables for the quality gate (used by scripts/train_quality_gate.py): rates with Wilson CIs,
confusion matrices, threshold choice, markdown rendering."""

from __future__ import annotations

import numpy as np

from chestdx.explain.localization import wilson_ci
from chestdx.inference.quality import ACTIONS, CLASSES, decide


def rate(k: int, n: int) -> dict:
    lo, hi = wilson_ci(k, n)
    return {"k": int(k), "n": int(n), "rate": k / n if n else float("nan"), "ci": [lo, hi]}


def fmt_rate(r: dict) -> str:
    if not r["n"]:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}] ({r['k']}/{r['n']})"


def choose_thresholds(probs: np.ndarray, true: np.ndarray, target: float = 0.005, floor: float = 0.5) -> dict:
    """Smallest thresholds (two-stage rule of ``decide``) on validation data such that each kind of false action
    stays <= target: upright CXRs refused, upright CXRs corrected, and non-upright images passed as "ok"."""
    grid = np.round(np.arange(floor, 0.9995, 0.0025), 4)
    p_nc, orient = probs[:, 5], probs[:, :5].argmax(1)
    p_or = probs[np.arange(len(probs)), orient]
    cond = p_or / np.maximum(1 - p_nc, 1e-12)
    up = true == 0
    t_refuse = _smallest_rate(p_nc[up], np.ones(int(up.sum()), bool), grid, target)
    t_correct = _smallest_rate(cond[up], orient[up] != 0, grid, target)
    t_ok = _smallest_rate(p_or[~up], orient[~up] == 0, grid, target)
    return {"ok": t_ok, "correct": t_correct, "refuse": t_refuse}


def refuse_threshold(probs: np.ndarray, true: np.ndarray, target: float, floor: float = 0.5) -> float:
    """Smallest refusal threshold with <= target of the upright CXRs (true == 0) refused."""
    grid = np.round(np.arange(floor, 0.9995, 0.0025), 4)
    up = true == 0
    return _smallest_rate(probs[up, 5], np.ones(int(up.sum()), bool), grid, target)


def _smallest_rate(top: np.ndarray, bad: np.ndarray, grid: np.ndarray, target: float) -> float:
    for t in grid:
        if np.mean(bad & (top >= t)) <= target:
            return float(t)
    return float(grid[-1])


def outcome_table(probs: np.ndarray, true: np.ndarray, groups: np.ndarray, thresholds: dict) -> dict:
    """Per group (e.g. 'kermany/clean/rot90'): action rates, wrong corrections, detection and correction rates."""
    verdict, actions = decide(probs, thresholds)
    actions = np.array(actions)
    out = {}
    masks = {g: groups == g for g in sorted(set(groups))}
    for g in sorted(set(groups)):  # pooled rows: every source for one view/class; held-out / all negatives
        parts = g.split("/")
        if len(parts) == 3 and len({x.split("/")[0] for x in masks if x.endswith(g[g.index("/"):])}) > 1:
            key = "ALL sources/" + "/".join(parts[1:])
            masks[key] = masks.get(key, np.zeros(len(groups), bool)) | (groups == g)
        if parts[0] == "not_cxr":
            key = "not_cxr/ALL held-out kinds" if "held out" in g else "not_cxr/ALL training kinds (unseen images)"
            masks[key] = masks.get(key, np.zeros(len(groups), bool)) | (groups == g)
    for g, m in masks.items():
        t = int(true[m][0])
        n = int(m.sum())
        act, ver = actions[m], verdict[m]
        row = {"true": CLASSES[t], **{a: rate(int((act == a).sum()), n) for a in ACTIONS}}
        corr = act == "corrected"
        row["corrected_right"] = rate(int((corr & (ver == t)).sum()), n)
        row["corrected_wrong"] = rate(int((corr & (ver != t)).sum()), n)
        if t == 0:
            row["false_action"] = rate(int(((act == "refused") | corr).sum()), n)
        elif t == 5:
            row["passed_ok"] = rate(int((act == "ok").sum()), n)
        else:
            row["detected"] = rate(int((act != "ok").sum()), n)
        out[g] = row
    return out


def confusion(probs: np.ndarray, true: np.ndarray, thresholds: dict) -> dict:
    """{'verdict': 6x6 counts (rows true, cols arg-max class), 'action': 6x4 counts (rows true)}."""
    verdict, actions = decide(probs, thresholds)
    cv = np.zeros((6, 6), int)
    ca = np.zeros((6, 4), int)
    for t, v, a in zip(true, verdict, actions, strict=True):
        cv[t, v] += 1
        ca[t, ACTIONS.index(a)] += 1
    return {"verdict": cv.tolist(), "action": ca.tolist()}


def md_confusion(c: dict) -> str:
    rows = ["| true \\ verdict | " + " | ".join(CLASSES) + " | | " + " | ".join(ACTIONS) + " |",
            "|---|" + "---|" * 6 + "---|" + "---|" * 4]
    for i, name in enumerate(CLASSES):
        if sum(c["verdict"][i]):
            rows.append(f"| {name} | " + " | ".join(map(str, c["verdict"][i])) + " | | "
                        + " | ".join(map(str, c["action"][i])) + " |")
    return "\n".join(rows)


def md_outcomes(table: dict) -> str:
    cols = ["ok", "corrected_right", "corrected_wrong", "refused", "uncertain"]
    rows = ["| group | n | key rate | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for g, r in table.items():
        key = ("false action " + fmt_rate(r["false_action"]) if "false_action" in r else
               "passed ok " + fmt_rate(r["passed_ok"]) if "passed_ok" in r else "detected " + fmt_rate(r["detected"]))
        cells = [f"{100 * r[c]['rate']:.1f}%" for c in cols]
        rows.append(f"| {g} | {r['ok']['n']} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(results: dict) -> dict:
    """The headline rates of each block (pooled rows only) for the JSON card."""
    out = {}
    for name, block in results.items():
        if "validation" in name:
            continue
        rows = {}
        for g, r in block["outcomes"].items():
            if g.startswith(("ALL", "not_cxr/ALL")) or "leave-one" in name:
                key = next(k for k in ("false_action", "passed_ok", "detected") if k in r)
                rows[g] = {key: round(r[key]["rate"], 4), "corrected_right": round(r["corrected_right"]["rate"], 4),
                           "refused": round(r["refused"]["rate"], 4), "n": r["ok"]["n"]}
        out[name] = rows
    return out
