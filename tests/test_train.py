"""Training: presets, run dir contents, determinism, metadata fusion, DDP (2 CPU processes), resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from chestdx.rundir import RunDir
from chestdx.train.config import load_config
from chestdx.train.fit import fit

FAST = ["image_size=64", "progress=false", "threads=1"]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _cfg(cache_root, *extra, folds: int = 1):
    cfg = load_config("demo", FAST + [f"cache_root={cache_root}", *extra])
    cfg["folds"] = folds  # until the config key lands: `--set folds=K`
    return cfg


def read_member(run, k: int = 0) -> tuple[dict, dict]:
    """(manifest, state dict of member k) of a run dir."""
    rd = RunDir(run)
    manifest = rd.manifest()
    return manifest, rd.load_member_state(manifest["members"][k])


def load_member(run, k: int = 0) -> torch.nn.Module:
    """Member k as an InferenceNet (normalization inside), rebuilt from the manifest."""
    from chestdx.models import build_model
    from chestdx.models.inference_net import InferenceNet

    man, state = read_member(run, k)
    model = build_model(man["arch"], len(man["labels"]), pretrained=None, freeze=man["freeze"],
                        metadata=tuple(man["metadata"]), input_size=man["input_size"])
    model.load_state_dict(state)
    return InferenceNet(model).eval()


def _cli(*args, env=None):
    return [sys.executable, "-m", "chestdx", *args]


def test_config_overrides_and_unknown_keys():
    cfg = load_config("seed", ["optimizer.lr=3e-4", "model.freeze=none"])
    assert cfg["optimizer"]["lr"] == 3e-4 and cfg["model"]["freeze"] == "none"
    assert cfg["model"]["arch"] == "densenet121" and cfg["batch_size"] == 8 and cfg["image_size"] == 128
    assert load_config("densenet121")["loss"] == "weighted_bce"  # inherited from default
    with pytest.raises(KeyError):
        load_config("default", ["no_such_key=1"])
    with pytest.raises(FileNotFoundError, match="presets"):
        load_config("nope")


def test_run_dir_and_checkpoint_are_self_describing(cache_root, tmp_path):
    run = fit(_cfg(cache_root, "epochs=2"), tmp_path / "run")
    for name in ("config.yaml", "split.csv", "model.json", "members/member-0.pt", "oof.csv", "train_summary.json",
                 "bad_files.csv", "folds/0/checkpoints/last.ckpt", "folds/0/checkpoints/best.ckpt",
                 "folds/0/logs/metrics.csv"):
        assert (run / name).exists(), name
    assert not (run / "model.pt").exists()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == 0 and saved["labels_resolved"] and saved["folds"] == 1
    man, state = read_member(run)
    assert man["format"] == "chestdx-run/2" and len(man["members"]) == 1
    assert man["arch"] == "simple_cnn" and man["input_size"] == 64 and man["labels"] == saved["labels_resolved"]
    assert man["config_name"] == "demo" and man["members"][0]["best_epoch"] in (1, 2)
    summary = json.loads((run / "train_summary.json").read_text())
    assert np.isfinite(summary["best_val_macro_auroc"]) and summary["folds"] == 1
    # the best epoch's weights were restored into the member
    best = torch.load(run / "folds/0/checkpoints/best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for key, value in state.items():
        assert torch.equal(value, best[f"model.{key}"])
    split = pd.read_csv(run / "split.csv", dtype={"patient_id": str})
    assert split.groupby("patient_id")["split"].nunique().max() == 1 and "fold" not in split
    # K = 1: oof.csv holds the validation predictions, so calibration always has a source
    oof = pd.read_csv(run / "oof.csv", dtype={"image_id": str})
    assert set(oof["split"]) == {"val"} and sorted(oof["image_id"]) == sorted(split.loc[split["split"] == "val",
                                                                                       "image_id"])
    metrics = pd.read_csv(run / "folds/0/logs/metrics.csv")
    assert metrics["val_macro_auroc"].notna().sum() == 2 and metrics["train_loss"].dropna().map(np.isfinite).all()


def test_kfold_members_and_out_of_fold_predictions(cache_root, tmp_path):
    from chestdx.train.data_setup import prepare_data
    from chestdx.train.folds import audit_folds, fold_table

    run = fit(_cfg(cache_root, "epochs=1", folds=3), tmp_path / "k3")
    man = RunDir(run).manifest()
    assert [m["fold"] for m in man["members"]] == [0, 1, 2] and man["ensemble"] == "mean_logit"
    split = pd.read_csv(run / "split.csv", dtype={"image_id": str, "patient_id": str})
    assert audit_folds(split) == [] and set(split.loc[split["split"] == "test", "fold"]) == {-1}
    oof = pd.read_csv(run / "oof.csv", dtype={"image_id": str})
    trainval = split[split["split"] != "test"]
    assert sorted(oof["image_id"]) == sorted(trainval["image_id"])  # every non-test image exactly once
    assert (oof.set_index("image_id")["fold"] == trainval.set_index("image_id")["fold"].loc[oof["image_id"]]).all()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["folds"] == 3 and len(summary["train_seconds_per_fold"]) == 3
    # each OOF prediction comes from the member that validated on that fold (and never trained on it)
    cfg = _cfg(cache_root, folds=3)
    data = prepare_data(cfg, run / "split.csv", show_progress=False, labels=man["labels"])
    for k in range(3):
        view = fold_table(data.table, k)
        ds = type(data)(view, data.labels, data.cache, data.report).dataset("val", cfg)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        with torch.no_grad():
            p = torch.sigmoid(load_member(run, k)(x).double()).numpy()
        mine = oof[oof["fold"] == k]
        np.testing.assert_allclose(mine[[f"prob_{lb}" for lb in man["labels"]]].to_numpy(), p, atol=1e-5)


def test_resume_skips_finished_folds(cache_root, tmp_path):
    run = fit(_cfg(cache_root, "epochs=1", folds=2), tmp_path / "k2")
    member0 = (run / "members/member-0.pt").stat().st_mtime_ns
    for path in ("model.json", "oof.csv", "folds/1/summary.json", "members/member-1.pt"):  # as if killed in fold 2
        (run / path).unlink()
    fit({}, run, resume=True)
    assert (run / "members/member-0.pt").stat().st_mtime_ns == member0  # fold 1 was not retrained
    assert len(RunDir(run).manifest()["members"]) == 2 and (run / "members/member-1.pt").is_file()


def test_bad_fold_counts_are_clear_errors(cache_root, tmp_path):
    for k in (0, -2):
        with pytest.raises(ValueError, match="folds must be"):
            fit(_cfg(cache_root, folds=k), tmp_path / f"bad{k}")
    with pytest.raises(ValueError, match="patients"):
        fit(_cfg(cache_root, folds=100_000), tmp_path / "many")


def test_same_seed_same_metrics(cache_root, tmp_path):
    a = fit(_cfg(cache_root, "epochs=1"), tmp_path / "a")
    b = fit(_cfg(cache_root, "epochs=1"), tmp_path / "b")
    sa, sb = (json.loads((r / "train_summary.json").read_text()) for r in (a, b))
    assert sa["best_val_macro_auroc"] == sb["best_val_macro_auroc"]
    wa, wb = read_member(a)[1], read_member(b)[1]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_seed_preset_end_to_end_offline(cache_root, tmp_path):
    cfg = load_config("seed", ["data=phantom", f"cache_root={cache_root}", "model.pretrained=null", "epochs=1",
                               "image_size=64", "progress=false", "limit_train_batches=6", "threads=2"])
    run = fit(cfg, tmp_path / "seed")
    man, _ = read_member(run)
    assert man["arch"] == "densenet121" and man["freeze"] == "seed"
    loss = pd.read_csv(run / "folds/0/logs/metrics.csv")["val_loss"].dropna()
    assert len(loss) == 1 and np.isfinite(loss).all()


def test_metadata_fusion_trains(cache_root, tmp_path):
    run = fit(_cfg(cache_root, "epochs=1", "model.metadata=[age, sex, view]"), tmp_path / "meta")
    man, state = read_member(run)
    assert man["metadata"] == ["age", "sex", "view"]
    assert state["head.weight"].shape[1] == 128 + 6  # pooled features + 2 per field


def _train_cmd(run, cache_root, *extra):
    return [sys.executable, "-m", "chestdx", "train", "--config", "demo", "--out", str(run),
            *[a for s in FAST + [f"cache_root={cache_root}", *extra] for a in ("--set", s)]]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(cache_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    one = tmp_path / "one"
    two = tmp_path / "two"
    common = ["epochs=3", "early_stopping.patience=10", "batch_size=16"]
    r1 = subprocess.run(_train_cmd(one, cache_root, *common), env=env, capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    # 2 processes x batch 8 = the same global batch of 16
    r2 = subprocess.run(_train_cmd(two, cache_root, *common, "batch_size=8") + ["--devices", "2", "--strategy", "ddp"],
                        env=env, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    s1, s2 = (json.loads((r / "train_summary.json").read_text()) for r in (one, two))
    assert s2["devices"] in (2, "2") and s2["strategy"] == "ddp"
    assert s1["best_val_macro_auroc"] > 0.6 and s2["best_val_macro_auroc"] > 0.6  # both learn
    assert abs(s1["best_val_macro_auroc"] - s2["best_val_macro_auroc"]) < 0.08  # equal within noise


@pytest.mark.slow
def test_resume_after_kill_9(cache_root, tmp_path):
    run = tmp_path / "crash"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = ["epochs=4", "early_stopping.patience=10"]
    proc = subprocess.Popen(_train_cmd(run, cache_root, *sets), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = run / "folds" / "0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not last.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert last.exists(), "no checkpoint before the kill"
    time.sleep(1.0)  # into the next epoch
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "chestdx", "train", "--resume", str(run)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 4
    epochs = pd.read_csv(run / "folds" / "0" / "logs" / "metrics.csv")["epoch"].dropna().astype(int)
    assert set(epochs) == {0, 1, 2, 3}
    man, state = read_member(run)
    assert man["labels"] and all(torch.isfinite(v.float()).all() for v in state.values())


class _Linear(torch.nn.Module):
    """Smallest model ChestModule accepts: flattens the image into one linear layer (no batch statistics)."""

    mean, std = (0.5,), (0.25,)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x, meta=None):
        return self.fc(x.flatten(1))


def _fit_linear(batch_size: int, accumulate: int) -> torch.nn.Module:
    import lightning as L

    from chestdx.train.module import ChestModule

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 1, 4, 4, generator=g), (torch.rand(8, 3, generator=g) > 0.5).float()
    data = torch.utils.data.TensorDataset(x, y, torch.zeros(8, 0))
    module = ChestModule(_Linear(), torch.nn.BCEWithLogitsLoss(), {"name": "sgd", "lr": 0.1}, {"name": "none"},
                         ["a", "b", "c"])
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=batch_size))
    return module.model


def test_gradients_freed_after_each_step_and_accumulation_unchanged():
    accumulated, single = _fit_linear(batch_size=4, accumulate=2), _fit_linear(batch_size=8, accumulate=1)
    assert all(p.grad is None for p in accumulated.parameters())  # not kept alive into the next forward
    assert not torch.equal(single.fc.weight, _Linear().fc.weight)  # it trained
    torch.testing.assert_close(accumulated.fc.weight, single.fc.weight)  # 2 x 4 accumulated == 1 x 8
    torch.testing.assert_close(accumulated.fc.bias, single.fc.bias)


def test_monitor_macro_auroc_can_skip_labels_with_few_validation_positives():
    from chestdx.train.module import macro_auroc

    y = np.zeros((20, 3))
    y[:10, 0] = 1  # 10 positives, perfectly ranked below
    y[:1, 1] = 1  # 1 positive, ranked last: AUROC 0
    y[:, 2] = np.nan  # unknown everywhere: not estimable
    p = np.zeros((20, 3))
    p[:10, 0], p[1:, 1] = 0.9, 0.9
    everything, per_label = macro_auroc(y, p)
    assert per_label == {0: 1.0, 1: 0.0} and everything == 0.5
    assert macro_auroc(y, p, min_positives=5) == (1.0, per_label)  # per-label values still reported
    assert macro_auroc(y, p, min_positives=50)[0] == 0.5  # no label has 50: falls back to every estimable one
    assert np.isnan(macro_auroc(np.zeros((4, 1)), np.zeros((4, 1)))[0])


def test_monitor_floor_reaches_the_module(cache_root, tmp_path):
    from chestdx.train.data_setup import prepare_data
    from chestdx.train.fit import build_module

    cfg = _cfg(cache_root, "early_stopping.min_val_positives=5")
    assert build_module(cfg, prepare_data(cfg, show_progress=False)).monitor_min_positives == 5


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_each_fold(cache_root, tmp_path):
    """K = 2 under DDP (2 gloo processes): one member per fold, OOF for every non-test image, rank 0 writes."""
    script = tmp_path / "ddp_kfold.py"
    sets = [*FAST, f"cache_root={cache_root}", "epochs=2", "batch_size=8", "devices=2", "strategy=ddp",
            "accelerator=cpu"]
    script.write_text("import sys\nfrom chestdx.train.config import load_config\nfrom chestdx.train.fit import fit\n"
                      f"cfg = load_config('demo', {sets!r})\ncfg['folds'] = 2\nfit(cfg, sys.argv[1])\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    run = tmp_path / "ddp"
    r = subprocess.run([sys.executable, str(script), str(run)], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    man = RunDir(run).manifest()
    assert [m["fold"] for m in man["members"]] == [0, 1]
    split = pd.read_csv(run / "split.csv")
    assert len(pd.read_csv(run / "oof.csv")) == int((split["split"] != "test").sum())
    assert not list(run.glob("members/*.tmp"))
