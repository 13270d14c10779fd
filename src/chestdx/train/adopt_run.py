"""``adopt_run``: write a chestdx-run/2 run dir around a pretrained torchxrayvision model, without training.

The run dir then goes through ``chestdx evaluate`` (calibration on the split's validation rows, test metrics),
``explain``, ``localize``, ``report``, ``serve`` and ``export`` like any trained run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from chestdx.data.index import read_table
from chestdx.labels import NIH_LABELS
from chestdx.rundir import RunDir, atomic_write_json
from chestdx.train.config import load_config, save_config

log = logging.getLogger(__name__)


def adopt_run(weights: str, split_csv: str | Path, out_dir: str | Path, labels: list[str] | None = None,
              overrides: list[str] | None = None) -> tuple[RunDir, dict[str, Any]]:
    """Adopt ``weights`` (``xrv:<name>`` or a ``.pt`` file) for ``split_csv``'s labels into ``out_dir``."""
    from chestdx.models.adopt import adopt_model

    run = RunDir(out_dir)
    if run.exists():
        raise FileExistsError(f"{run.manifest_path}: a run dir is already there (choose another --out)")
    table = read_table(split_csv)
    if "split" not in table.columns:
        raise ValueError(f"{split_csv}: no 'split' column (make one with `chestdx split`)")
    wanted = labels or [lb for lb in NIH_LABELS if lb in table.columns]
    model, info = adopt_model(weights, wanted)
    for line in info.messages():
        log.info("%s", line)
    config = load_config("default", [f"model.arch={info.arch}", f"model.pretrained={weights}",
                                     f"image_size={info.input_size}", "name=adopt", *(overrides or [])])
    config = dict(config, labels_resolved=list(info.labels), epochs=0)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config)
    table.to_csv(run.split, index=False)
    member = run.write_member(0, model.state_dict(), fold=None, best_epoch=None)
    run.write_manifest({"arch": info.arch, "labels": list(info.labels), "input_size": info.input_size,
                        "mean": info.mean, "std": info.std, "metadata": [], "pretrained": info.pretrained,
                        "freeze": "none", "config_name": "adopt", "adopted": True}, [member])
    atomic_write_json(run.path / "adopt.json", info.to_dict())
    return run, info.to_dict()
