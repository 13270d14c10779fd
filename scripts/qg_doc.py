"""Markdown tables for docs/quality_gate.md from a training run's ``eval.json`` (scripts/train_quality_gate.py).

  python scripts/qg_doc.py runs/quality_gate/eval.json > /tmp/tables.md

Per block: CXR outcomes (upright / rotated / inverted, with 95 % Wilson intervals) and non-CXR outcomes per kind;
when the run evaluated a previous gate asset on the same test split (--compare-onnx), a side-by-side table.
"""

from __future__ import annotations

import json
import sys

import qg_eval as E


def _pct(r: dict) -> str:
    return f"{100 * r['rate']:.1f}% [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"


def cxr_table(outcomes: dict) -> str:
    rows = ["| images | n | upright: refused or corrected | upright: uncertain | rotated/inverted: detected (not ok) "
            "| corrected to the original | corrected wrongly | refused |", "|---|---|---|---|---|---|---|---|"]
    for g, r in outcomes.items():
        if g.startswith("not_cxr"):
            continue
        n = r["ok"]["n"]
        if r["true"] == "frontal":
            rows.append(f"| {g} | {n} | {_pct(r['false_action'])} | {_pct(r['uncertain'])} | | | | |")
        else:
            rows.append(f"| {g} | {n} | | | {_pct(r['detected'])} | {_pct(r['corrected_right'])} | "
                        f"{_pct(r['corrected_wrong'])} | {_pct(r['refused'])} |")
    return "\n".join(rows)


def negatives_table(outcomes: dict) -> str:
    rows = ["| non-CXR kind | n | refused | uncertain (predicted with a warning) | corrected (with a warning) "
            "| passed as ok |", "|---|---|---|---|---|---|"]
    for g, r in outcomes.items():
        if g.startswith("not_cxr/"):
            corrected = E.rate(r["corrected_right"]["k"] + r["corrected_wrong"]["k"], r["ok"]["n"])
            rows.append(f"| {g[8:]} | {r['ok']['n']} | {_pct(r['refused'])} | {_pct(r['uncertain'])} | "
                        f"{_pct(corrected)} | {_pct(r['ok'])} |")
    return "\n".join(rows)


def _headline(outcomes: dict) -> dict[str, str]:
    out = {}
    for view in ("clean", "augmented"):
        r = outcomes.get(f"ALL sources/{view}/frontal")
        if r:
            out[f"upright CXRs ({view}): refused or corrected"] = _pct(r["false_action"])
        rot = [(g, r) for g, r in outcomes.items() if g.startswith(f"ALL sources/{view}/") and r["true"] != "frontal"]
        if rot:
            g, r = min(rot, key=lambda x: x[1]["corrected_right"]["rate"])
            out[f"rotated/inverted ({view}): corrected to the original, worst class"] = \
                f"{_pct(r['corrected_right'])} ({g.split('/')[-1]})"
    for g, r in outcomes.items():
        if g.startswith("not_cxr/"):
            out[f"non-CXR refused: {g[8:]}"] = f"{_pct(r['refused'])} (ok {100 * r['ok']['rate']:.1f}%)"
    return out


def comparison(results: dict) -> str:
    new = next((b for n, b in results.items() if n.startswith("shipped model: test")), None)
    old_name = next((n for n in results if n.startswith("previous gate")), None)
    if new is None or old_name is None:
        return ""
    a, b = _headline(results[old_name]["outcomes"]), _headline(new["outcomes"])
    rows = [f"| same test images | {old_name.split(' (')[0].replace('previous gate ', '')} "
            f"{results[old_name]['thresholds']} | this run {new['thresholds']} |", "|---|---|---|"]
    rows += [f"| {k} | {a.get(k, '-')} | {b.get(k, '-')} |" for k in b]
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    ev = json.loads(open(argv[0]).read())
    for name, res in ev["results"].items():
        if "validation" in name:
            continue
        print(f"### {name}\n\nthresholds {res['thresholds']}\n\n{cxr_table(res['outcomes'])}\n\n"
              f"{negatives_table(res['outcomes'])}\n")
    comp = comparison(ev["results"])
    if comp:
        print(f"### Previous vs this gate on the same test split\n\n{comp}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
