"""glibc allocator tuning (chestdx.allocator) on vs off: CPU inference and training steps, one process each.

Run: nice -n 10 .venv/bin/python bench/bench_allocator.py [--arch efficientnet_lite0] [--batch 16] [--steps 6]
     [--threads 1] [--repeat 3]
Prints JSON. Each (setting, repeat) runs in a fresh process (the allocator is process-wide), the two settings
alternating so that a change in the machine's load hits both. Per phase: wall and CPU seconds (user, kernel),
minor page faults per step, and the process's peak RSS. UNTRAINED weights (timing only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import machine

CHILD = """
import json, resource, sys, time, torch
from chestdx.allocator import tune_malloc
tuned = tune_malloc()
arch, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from chestdx.models import build_model
m = build_model(arch, num_labels=14, pretrained=None)
x = torch.rand(batch, 3, 224, 224)
opt = torch.optim.AdamW(m.parameters())
def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt
out = {"tuned": tuned}
for phase in ("inference", "train"):
    for i in range(steps + 1):  # step 0 warms up
        if i == 1:
            t0 = usage()
        if phase == "inference":
            with torch.inference_mode():
                m.eval()(x)
        else:
            m.train(); loss = m(x).sum(); opt.zero_grad(); loss.backward(); opt.step()
    t1 = usage()
    out[phase] = {"wall_s": t1[0] - t0[0], "user_s": t1[1] - t0[1], "sys_s": t1[2] - t0[2],
                  "minflt_per_step": (t1[3] - t0[3]) / steps}
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(setting: str, arch: str, batch: int, steps: int, threads: int) -> dict:
    env = {**os.environ, "CHESTDX_MALLOC_TUNING": setting, "OMP_NUM_THREADS": str(threads)}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHILD, arch, str(batch), str(steps), str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(arch: str, batch: int, steps: int, threads: int, repeat: int) -> dict:
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(repeat):
        for setting, key in (("0", "off"), ("1", "on")):
            runs[key].append(_child(setting, arch, batch, steps, threads))
    assert all(not r["tuned"] for r in runs["off"]) and all(r["tuned"] for r in runs["on"])
    res: dict = {"bench": "allocator tuning on vs off", "arch": arch, "batch": batch, "steps": steps,
                 "threads": threads, "repeat": repeat, "machine": machine(),
                 "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    for phase in ("inference", "train"):
        for key in ("off", "on"):
            rows = [r[phase] for r in runs[key]]
            res[f"{phase}_{key}"] = {m: float(np.median([r[m] for r in rows])) for m in rows[0]}
            res[f"{phase}_{key}"]["img_per_s"] = batch * steps / res[f"{phase}_{key}"]["wall_s"]
            res[f"{phase}_{key}"]["kernel_share_of_cpu"] = (res[f"{phase}_{key}"]["sys_s"]
                                                           / (res[f"{phase}_{key}"]["sys_s"]
                                                              + res[f"{phase}_{key}"]["user_s"]))
        res[f"{phase}_speedup_wall"] = res[f"{phase}_off"]["wall_s"] / res[f"{phase}_on"]["wall_s"]
    for key in ("off", "on"):
        res[f"peak_rss_mib_{key}"] = float(np.median([r["peak_rss_mib"] for r in runs[key]]))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(json.dumps(main(a.arch, a.batch, a.steps, a.threads, a.repeat), indent=1))
