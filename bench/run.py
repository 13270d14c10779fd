"""Run every benchmark (each in its own process) and write docs/benchmarks.md.

  .venv/bin/python bench/run.py            # all
  .venv/bin/python bench/run.py data train # only some groups

Each benchmark prints one JSON object (or a list of them); this runner renders them as tables next to
the exact command, the machine description and the date. Numbers are measured in this run, never copied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import REPO, machine

PY = sys.executable
BENCHES: list[tuple[str, str, list[str], str]] = [
    # (group, title, argv, what the target is)
    ("data", "Cache read vs PNG decode (nih-fullres, 60 x 1024 px)", ["bench/bench_data.py", "decode"],
     "target: cache >= 20x faster than decoding"),
    ("data", "Index + split + audit of the full 112,120-row NIH CSV (file listing faked)",
     ["bench/bench_data.py", "scale"], "target: <= 3 s"),
    ("data", "Peak memory iterating the full nih-sample cache (224 px, augmented)", ["bench/bench_data.py", "rss-nih"],
     "RssAnon must not grow with dataset size; RssFile is the memmap's page cache"),
    ("data", "Peak memory iterating the full kermany cache (224 px, augmented)", ["bench/bench_data.py", "rss-kermany"],
     "compare with nih-sample: 7x more images, same heap"),
    ("train", "Training loop vs model-only throughput, densenet121 @224",
     ["bench/bench_train.py", "ratio", "densenet121"],
     "target ratio >= 0.95 (the loader is not the bottleneck)"),
    ("train", "Training loop vs model-only throughput, efficientnet_lite0 @224",
     ["bench/bench_train.py", "ratio", "efficientnet_lite0"], "target ratio >= 0.95"),
    ("train", "Freeing gradients after each optimizer step vs Lightning's zero_grad, densenet121 @224",
     ["bench/bench_train.py", "zerograd", "densenet121"],
     "Lightning zeroes gradients after the next forward; ChestModule.optimizer_step frees them at once"),
    ("train", "Peak memory of one training epoch, nih-sample", ["bench/bench_train.py", "rss", "nih-sample"],
     "simple_cnn so that the loader dominates"),
    ("train", "Peak memory of one training epoch, kermany", ["bench/bench_train.py", "rss", "kermany"],
     "must not grow with dataset size beyond the cache memmap"),
    ("inference", "Inference latency and throughput, torch vs onnxruntime, DenseNet121@224, 1 thread",
     ["bench/bench_inference.py", "latency", "--arch", "densenet121", "--threads", "1"],
     "target <= 0.5 s per 1024 px image for DenseNet121@224 (probabilities + Grad-CAM)"),
    ("inference", "Inference latency and throughput, torch vs onnxruntime, DenseNet121@224, 2 threads",
     ["bench/bench_inference.py", "latency", "--arch", "densenet121", "--threads", "2"],
     "target <= 0.5 s per 1024 px image on 2 cores"),
    ("inference", "Inference latency and throughput, torch vs onnxruntime, EfficientNet-Lite0@224, 1 thread",
     ["bench/bench_inference.py", "latency", "--arch", "efficientnet_lite0", "--threads", "1"],
     "the default preset's model"),
    ("inference", "Out-of-distribution gate: real CXRs vs generated non-CXR images (AUROC)",
     ["bench/bench_inference.py", "ood", "--run", "runs/study/default"],
     "needs the study's default run (python scripts/study.py); non-CXR = positive class"),
    ("inference", "Ensemble of 5 (K-fold run), EfficientNet-Lite0@224, 2 threads: latency with Grad-CAM, ONNX parity",
     ["bench/bench_inference.py", "latency", "--arch", "efficientnet_lite0", "--threads", "2", "--members", "5"],
     "targets: one 1024 px image + heatmap <= 0.5 s; ONNX ensemble parity <= 1e-4"),
    ("inference", "Allocator tuning (chestdx.allocator) on vs off: EfficientNet-Lite0@224 inference + training",
     ["bench/bench_allocator.py"], "kernel (page-fault) time removed; peak RSS cost"),
    ("inference", "Quality gate latency", ["bench/bench_quality.py"], "target <= 30 ms per image on 2 threads"),
    ("explain", "Saliency cost per image on CPU (224 px)", ["bench/bench_explain.py", "time"],
     "Grad-CAM vs Grad-CAM++ vs SmoothGrad"),
    ("serve", "Hardening: server memory over 1,000 sequential uploads with heatmaps",
     ["bench/bench_serve_memory.py"], "target: RSS growth after warm-up <= 50 MB"),
    ("serve", "Hardening: decompression-bomb-sized uploads and 50 concurrent CXR uploads",
     ["bench/bench_serve_load.py"],
     "targets: peak RSS <= 1.5 GB at the default limits, every request answered 200/413/422/503, healthy after"),
]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b": scalar}."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _table(result) -> str:
    """A list of flat rows -> one table; a dict -> key/value table, plus one row table per dict-of-dicts."""
    if isinstance(result, list):
        rows = [_flat(r) for r in result]
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "machine"))
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
        return "\n".join(lines)
    blocks, scalars = [], {}
    for k, v in result.items():
        if k == "machine":
            continue
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            blocks.append(f"**{k}**\n\n" + _table([{"": name, **row} for name, row in v.items()]))
        elif isinstance(v, dict):
            scalars.update(_flat(v, f"{k}."))
        else:
            scalars[k] = v
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
    return "\n\n".join(["\n".join(lines), *blocks])


def main(groups: list[str]) -> None:
    out = [f"# Benchmarks\n\nGenerated by `python bench/run.py {' '.join(groups)}`".rstrip() + " on "
           f"{time.strftime('%Y-%m-%d')}.\n\nMachine: {machine()}\n\nEvery number below was measured in that "
           "run; each section names the command that reproduces it alone.\n"]
    path = REPO / "docs" / "benchmarks.md"
    for group, title, argv, target in BENCHES:
        if groups and group not in groups:
            continue
        missing = [a for a in argv if a.startswith(("bench/", "runs/")) and not (REPO / a).exists()]
        if missing:
            out.append(f"## {title}\n\n(not run: {', '.join(missing)} missing — {target})\n")
            continue
        t = time.perf_counter()
        proc = subprocess.run([PY, *argv], cwd=REPO, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        command = "python " + " ".join(argv)
        if proc.returncode != 0 or (result := _parse(proc.stdout)) is None:
            out.append(f"## {title}\n\n`{command}` FAILED (exit {proc.returncode}):\n\n"
                       f"```\n{(proc.stderr or proc.stdout)[-2000:]}\n```\n")
            print(f"{title}: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
        else:
            out.append(f"## {title}\n\n`{command}` ({elapsed:.0f} s) — {target}\n\n{_table(result)}\n")
            print(f"{title}: done in {elapsed:.0f} s", flush=True)
        path.write_text("\n".join(out))  # after every benchmark: a later crash keeps the earlier results
    print(f"-> {path}")


def _parse(stdout: str):
    """The benchmark's JSON: the whole stdout (pretty-printed) or its last line (after log lines)."""
    for text in (stdout, stdout.strip().splitlines()[-1] if stdout.strip() else ""):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            continue
    return None


if __name__ == "__main__":
    main(sys.argv[1:])
