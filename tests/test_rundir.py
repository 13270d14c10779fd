"""Run dir chestdx-run/2: immutable sha-checked weights loaded without executing code; legacy runs and migrate."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from chestdx.models import build_model
from chestdx.rundir import LegacyRunError, RunDir, RunDirError, migrate, read_legacy

LABELS = ["Atelectasis", "Effusion"]


def _info(model) -> dict:
    return {"arch": model.arch, "labels": LABELS, "input_size": model.input_size, "mean": list(model.mean),
            "std": list(model.std), "metadata": [], "pretrained": None, "freeze": "none", "config_name": "test"}


def make_run(path: Path, members: int = 1) -> RunDir:
    run = RunDir(path)
    entries = []
    for k in range(members):
        torch.manual_seed(k)
        model = build_model("simple_cnn", len(LABELS), pretrained=None, input_size=32)
        entries.append(run.write_member(k, model.state_dict(), fold=k, best_epoch=1))
    run.write_manifest(_info(model), entries)
    return run


class _Exploit:
    """Unpickling this runs ``os.system``: the payload an attacker would put into a shared run dir."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_members_roundtrip_and_hash_check(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", members=2)
    manifest = run.manifest()
    assert manifest["format"] == "chestdx-run/2" and len(manifest["members"]) == 2
    state = run.load_member_state(manifest["members"][1])
    model = build_model("simple_cnn", len(LABELS), pretrained=None, input_size=32)
    model.load_state_dict(state, strict=True)
    member = tmp_path / "run" / manifest["members"][1]["file"]
    member.write_bytes(member.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(RunDirError, match="sha256 differs"):
        run.load_member_state(manifest["members"][1])


def test_crafted_member_pickle_is_not_executed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    entry = dict(run.manifest()["members"][0])
    path = tmp_path / "run" / entry["file"]
    torch.save({"w": _Exploit(marker)}, path)
    entry["sha256"] = None  # an attacker controls model.json too: the hash alone is not the defence
    with pytest.raises(RunDirError, match="not a plain state dict"):
        run.load_member_state(entry)
    assert not marker.exists()


def test_crafted_legacy_pickle_is_not_executed(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    marker = tmp_path / "pwned"
    with open(run_dir / "model.pt", "wb") as f:
        pickle.dump({"format": "chestdx-checkpoint/1", "x": _Exploit(marker)}, f)
    with pytest.raises(LegacyRunError, match="chestdx migrate"):
        read_legacy(run_dir)
    with pytest.raises(LegacyRunError, match="chestdx migrate"):
        RunDir(run_dir).check()
    assert not marker.exists()


def _legacy_payload() -> dict:
    model = build_model("simple_cnn", len(LABELS), pretrained=None, input_size=32)
    return {"format": "chestdx-checkpoint/1", **_info(model), "state_dict": model.state_dict(),
            "thresholds": {"Atelectasis": 0.3, "Effusion": 0.4}, "temperature": 1.5,
            "config": {"name": "old"},
            "ood": {"mean": np.zeros(4, np.float32), "precision": np.eye(4, dtype=np.float32), "threshold": 2.0,
                    "summary": {"a": 1}, "normalize": "l2"}}


def test_migrate_legacy_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    payload = _legacy_payload()
    torch.save(payload, run_dir / "model.pt")  # numpy arrays inside: a pickle, refused without trust
    with pytest.raises(LegacyRunError):
        read_legacy(run_dir)
    run = migrate(run_dir, trust=True)
    manifest = run.manifest()
    assert manifest["migrated_from"] == "chestdx-checkpoint/1" and manifest["labels"] == LABELS
    state = run.load_member_state(manifest["members"][0])
    assert all(torch.equal(state[k], v) for k, v in payload["state_dict"].items())
    ood = run.read_ood()
    assert ood["threshold"] == 2.0 and ood["summary"] == {"a": 1} and ood["precision"].shape == (4, 4)
    assert json.loads((run_dir / "legacy.json").read_text())["temperature"] == 1.5


def test_plain_legacy_run_loads_safely(tmp_path: Path) -> None:
    """A run never evaluated holds only tensors and plain types: it loads with weights_only, no trust needed."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    payload = {k: v for k, v in _legacy_payload().items() if k != "ood"}
    torch.save(payload, run_dir / "model.pt")
    assert read_legacy(run_dir)["arch"] == "simple_cnn"


def test_sidecar_bound_to_weights(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    run.write_calibration({"source": "val", "labels": {}, "policy": "balanced"})
    assert run.read_calibration()["manifest_sha256"] == run.manifest_sha256()
    side = json.loads(run.calibration_path.read_text())
    side["manifest_sha256"] = "0" * 64
    run.calibration_path.write_text(json.dumps(side))
    with pytest.raises(RunDirError, match="other weights"):
        run.read_calibration()


def test_missing_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such run directory"):
        RunDir(tmp_path / "nope").manifest()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="model.json: missing"):
        RunDir(tmp_path / "empty").manifest()
