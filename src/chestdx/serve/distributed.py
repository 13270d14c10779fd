"""Distributed batch prediction on Lightning: ``Trainer.predict`` with DDP, one shard per rank.

``predict_distributed(model, paths, out, devices=N, num_nodes=M)``:

- every rank loads the model once (``chestdx.load(run)``, or the ONNX predictor for an ``.onnx`` export);
- images are read, decoded, checked by the quality gate and resized in DataLoader worker processes (the
  Predictor's ``ImagePreparer``: the same steps as ``chestdx predict``), so decoding overlaps the model;
- the input is cut into blocks of ``batch_size`` images and block ``b`` goes to rank ``b % world_size``: no
  rank sees an image twice, none is padded, and every batch holds the same images whatever the number of
  ranks (so ``devices=2`` gives exactly the rows of ``devices=1``);
- each rank appends its rows to ``<out>.parts/rank-<r>.jsonl``; after a barrier rank 0 writes ``out``
  (``.csv`` or ``.json``, the format of ``chestdx predict``) in input order and removes the parts.
  Multi-node runs need ``out`` on a filesystem every node sees.

Launching: with ``devices * num_nodes > 1`` and no launcher around us, the work runs in a child process
``python -m chestdx.serve.distributed SPEC.json`` whose Lightning DDP launcher starts the other local ranks
(this works from any caller: CLI, tests, notebooks). Under ``srun`` (SLURM) or ``torchrun`` every process
is already a rank and runs in place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DecodedImages", "PredictSpec", "default_split", "load_predictor", "predict_distributed"]


@dataclass
class PredictSpec:
    """Everything a rank needs (JSON-serializable: it travels to the launched processes)."""

    model: str
    paths: list[str]
    out: str
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "cpu"
    batch_size: int = 16
    num_workers: int = 2
    threads: int = 1
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def load_predictor(model: str | Path, threads: int | None = None, device: str = "cpu", **options: Any) -> Any:
    """``chestdx.load``: a run dir (torch) or an ``.onnx`` export (onnxruntime); ``options``: trust, policy."""
    from chestdx.inference import load

    return load(model, device=device, threads=threads, **options)


class DecodedImages:
    """Map-style dataset of whole batches, prepared in DataLoader workers by the Predictor's own
    ``ImagePreparer``: full-resolution decode, image checks and quality gate (refuse / correct) there, so
    ``--devices N`` gives the rows of ``chestdx predict``; only the (S,S) uint8 model inputs travel.

    Item ``k`` = block ``blocks[k]`` -> ``[(index, Prediction so far, uint8 (S,S) input or None), ...]``.
    """

    def __init__(self, paths: Sequence[str], preparer: Any, blocks: Sequence[Sequence[int]]):
        self.paths = list(paths)
        self.preparer = preparer
        self.blocks = [list(b) for b in blocks]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, k: int) -> list[tuple[int, Any, np.ndarray | None]]:
        return [(i, *self.preparer.prepare(self.paths[i])) for i in self.blocks[k]]


def shard_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Blocks of ``batch_size`` consecutive indices; block b belongs to rank ``b % world_size``."""
    blocks = [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
    return blocks[rank::world_size]


def _as_is(batch: list) -> list:
    """Collate that keeps numpy arrays and None (torch's default would convert them)."""
    return batch


def _module(spec: PredictSpec):
    import lightning as L
    import torch

    class PredictModule(L.LightningModule):
        """Scores this rank's shard with the public Predictor API and appends rows to its part file."""

        def __init__(self) -> None:
            super().__init__()
            self.predictor: Any = None
            self.parts = Path(spec.out + ".parts")

        def setup(self, stage: str) -> None:
            torch.set_num_threads(max(1, spec.threads))
            device = "cpu" if spec.accelerator == "cpu" else f"cuda:{self.trainer.local_rank}"
            self.predictor = load_predictor(spec.model, spec.threads, device, **spec.extra.get("load", {}))
            self.parts.mkdir(parents=True, exist_ok=True)
            self.part = self.parts / f"rank-{self.trainer.global_rank}.jsonl"
            self.part.write_text("")

        def predict_dataloader(self):
            blocks = shard_batches(len(spec.paths), spec.batch_size, self.trainer.global_rank,
                                   self.trainer.world_size)
            data = DecodedImages(spec.paths, self.predictor.preparer, blocks)
            return torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, collate_fn=_as_is,
                                               num_workers=spec.num_workers,
                                               prefetch_factor=2 if spec.num_workers else None)

        def predict_step(self, batch: list, batch_idx: int) -> int:
            from chestdx.serve.batch import prediction_row

            preds = self.predictor.predict_prepared([(pred, img) for _, pred, img in batch])
            with open(self.part, "a") as fh:
                for (i, _, _), pred in zip(batch, preds, strict=True):
                    fh.write(json.dumps({"_index": i, **prediction_row(pred, self.predictor.labels)}) + "\n")
            return len(batch)  # rows live in the part file (return_predictions=False keeps memory flat)

        def on_predict_end(self) -> None:
            self.trainer.strategy.barrier("chestdx-predict-merge")
            if self.trainer.global_rank == 0:
                _merge(spec, list(self.predictor.labels))

    return PredictModule()


def _merge(spec: PredictSpec, labels: list[str]) -> None:
    from chestdx.serve.batch import BatchResult, write_result

    parts = Path(spec.out + ".parts")
    rows: dict[int, dict] = {}
    for part in sorted(parts.glob("rank-*.jsonl")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            rows[row.pop("_index")] = row
    if sorted(rows) != list(range(len(spec.paths))):
        missing = sorted(set(range(len(spec.paths))) - set(rows))
        raise RuntimeError(f"{parts}: {len(missing)} images have no prediction (e.g. {spec.paths[missing[0]]})")
    result = BatchResult(rows=[rows[i] for i in range(len(spec.paths))], labels=labels,
                         seconds=time.time() - float(spec.extra.get("started", time.time())))
    write_result(result, spec.out)
    shutil.rmtree(parts, ignore_errors=True)


def run_spec(spec: PredictSpec) -> None:
    """Run the prediction in this process (a rank, or the launcher of the local ranks)."""
    import lightning as L

    world = spec.devices * spec.num_nodes
    trainer = L.Trainer(accelerator=spec.accelerator, devices=spec.devices, num_nodes=spec.num_nodes,
                        strategy="ddp" if world > 1 else "auto", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=spec.progress,
                        use_distributed_sampler=False, default_root_dir=tempfile.gettempdir())
    trainer.predict(_module(spec), return_predictions=False)


def _under_launcher() -> bool:
    """True when every process is already a rank (torchrun, srun with several tasks, Lightning's children)."""
    if "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def default_split(cpus_per_rank: int, accelerator: str = "cpu") -> tuple[int, int]:
    """(decoding workers, model threads) of one rank. On CPU the rank's cores are split evenly between decoding
    and the model: a 1024 px PNG costs about as much CPU to decode (~13 ms) as EfficientNet-Lite0 to score
    (~10 ms), and oversubscribing loses (2 cores: 1 worker + 1 thread 66 img/s vs 2 + 2 56 img/s,
    docs/benchmarks.md). On a GPU the model needs one host thread and every other core decodes."""
    c = max(1, int(cpus_per_rank))
    if accelerator != "cpu":
        return max(1, c - 1), 1
    workers = max(1, c // 2)
    return workers, max(1, c - workers)


def predict_distributed(model: str | Path, paths: Sequence[str | Path], out: str | Path, devices: int = 1,
                        num_nodes: int = 1, batch_size: int = 16, num_workers: int | None = None,
                        threads: int | None = None, accelerator: str = "cpu", progress: bool = False,
                        policy: str | None = None, trust: bool = False, quality_gate: bool = True) -> Path:
    """Predict ``paths`` (files, already expanded) on ``devices`` processes per node x ``num_nodes`` nodes;
    write ``out`` (.csv / .json, the ``chestdx predict`` format) in input order. Returns ``out``.

    ``num_workers``: decoding processes per rank (0 decodes in the rank itself); ``threads``: intra-op threads
    per rank; defaults from :func:`default_split`. CPU ranks use the gloo backend.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    auto_workers, auto_threads = default_split(cpus // max(1, int(devices)), accelerator)
    spec = PredictSpec(model=str(Path(model).resolve()), paths=[str(p) for p in paths],
                       out=str(Path(out).resolve()), devices=int(devices), num_nodes=int(num_nodes),
                       accelerator=accelerator, batch_size=int(batch_size),
                       num_workers=auto_workers if num_workers is None else int(num_workers),
                       threads=int(threads or auto_threads), progress=progress,
                       extra={"started": time.time(), "load": {"policy": policy, "trust": trust,
                                                                   "gate": "default" if quality_gate else None}})
    Path(spec.out).parent.mkdir(parents=True, exist_ok=True)
    if spec.devices * spec.num_nodes == 1 or _under_launcher():
        run_spec(spec)
        return Path(spec.out)
    with tempfile.TemporaryDirectory(prefix="chestdx-predict-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(asdict(spec)))
        proc = subprocess.run([sys.executable, "-m", "chestdx.serve.distributed", str(spec_file)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        if proc.returncode != 0:
            raise RuntimeError(f"distributed prediction failed (exit {proc.returncode}); see the messages above")
    return Path(spec.out)


if __name__ == "__main__":
    run_spec(PredictSpec(**json.loads(Path(sys.argv[1]).read_text())))
