"""Inference commands: predict (batch), serve (web app), export (ONNX)."""

from __future__ import annotations

from pathlib import Path

import typer

from chestdx.cli._common import console, exit_for_counts, fail, progress, user_errors
from chestdx.serve.guard import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_MAX_HEATMAPS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_UPLOAD,
    DEFAULT_MAX_WORKERS,
)

PANEL = "Predict and serve"
THREADS_HELP = "CPU threads for inference (default: library default; use 1 on a machine whose cores are busy)."


TRUST_HELP = ("Also load a run dir written by chestdx < 0.2 (a pickled model.pt): unpickling runs code from the "
              "file, so only for run dirs you trust. Better: convert it once with `chestdx migrate`.")
POLICY_HELP = ("Operating point used to call findings: balanced (Youden), sensitivity:0.90, specificity:0.90 ... "
               "(must be in the run's calibration; default: the one chosen at `chestdx evaluate`).")


def _predictor(model: Path, threads: int | None = None, trust: bool = False, policy: str | None = None,
               gate: bool = True):
    """A run dir (torch backend) or an .onnx export (onnxruntime, no torch, no heatmaps) -> Predictor."""
    from chestdx.inference import load

    return load(model, threads=threads, trust=trust, policy=policy, gate="default" if gate else None)


@user_errors
def predict(run_dir: Path = typer.Argument(..., help="Run directory (or an exported .onnx file)."),
            paths: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
            out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output .csv or .json."),
            heatmaps: Path | None = typer.Option(None, "--heatmaps", help="Write Grad-CAM overlays to this folder."),
            batch_size: int = typer.Option(16, "--batch-size", help="Images per forward pass."),
            show_progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
            threads: int | None = typer.Option(None, help=THREADS_HELP),
            policy: str | None = typer.Option(None, help=POLICY_HELP),
            devices: int = typer.Option(1, help="Processes (CPU) or GPUs per node scoring shards of the inputs "
                                                "(Lightning DDP; rank 0 writes one file in input order)."),
            num_nodes: int = typer.Option(1, "--num-nodes", help="Nodes (SLURM/torchrun); --out on a shared disk."),
            trust_run: bool = typer.Option(False, "--trust-run", help=TRUST_HELP),
            quality_gate: bool = typer.Option(True, "--quality-gate/--no-quality-gate",
                                              help="Check each image first: refuse non-CXRs, turn back rotated or "
                                                   "inverted ones (and say so)."),
            ) -> None:
    """Predict PNG/JPEG/DICOM files and folders; unreadable or refused files become rows with `error` filled.

    Each image first passes the quality gate (columns `quality`, `quality_prob`, `corrected`): non-chest-X-rays
    are refused, rotated/inverted ones corrected. Probabilities are calibrated on out-of-fold data; a finding is
    called (`called_<Label>`) only with the meaning of its threshold (`statements`). `ood_flag` = unlike the
    training images (information, not a refusal). Decision support, not a diagnosis.
    Exit 3 when some files failed (their rows say why), 4 when none succeeded.

    [bold]Examples[/bold]

      chestdx predict runs/nih-default ../shared/data/nih-sample/images --out preds.csv
      chestdx predict runs/nih-default scan.dcm --out scan.json --heatmaps maps/
      chestdx predict model.onnx images/ --out preds.csv
    """
    from chestdx.serve.batch import collect_inputs, predict_paths, write_result

    if out.suffix.lower() not in (".csv", ".json"):
        fail(f"--out must end in .csv or .json, got {out}")
    if devices < 1 or num_nodes < 1:
        fail("--devices and --num-nodes must be >= 1")
    files = collect_inputs(paths)
    if not files:
        fail("no image files found in the given paths")
    if devices * num_nodes > 1:
        if heatmaps is not None:
            fail("--heatmaps is not available with --devices > 1 (run it on one process)")
        from chestdx.serve.distributed import predict_distributed

        predict_distributed(run_dir, files, out, devices=devices, num_nodes=num_nodes, batch_size=batch_size,
                            threads=threads, progress=show_progress, policy=policy, trust=trust_run,
                            quality_gate=quality_gate)
        rows = _read_rows(out)
        n_err = sum(bool(r.get("error")) for r in rows)
        console.print(f"{len(rows) - n_err} images predicted, {n_err} failed on {devices * num_nodes} processes "
                      f"-> {out}")
        exit_for_counts(len(rows) - n_err, n_err)
        return
    predictor = _predictor(run_dir, threads, trust_run, policy, quality_gate)
    if heatmaps is not None and not predictor.can_explain:
        fail("--heatmaps needs a run dir (Grad-CAM uses gradients; the ONNX model has none)")
    with progress("predicting", len(files), show_progress) as advance:
        result = predict_paths(predictor, files, batch_size=batch_size, heatmaps_dir=heatmaps, progress=advance)
    write_result(result, out, model=predictor.describe())
    flagged = sum(bool(r["ood_flag"]) for r in result.rows)
    corrected = sum(bool(r["corrected"]) for r in result.rows)
    called = sum(len([f for f in r["findings"].split(";") if f]) for r in result.rows if not r["error"])
    console.print(f"{result.n_ok} images predicted ({corrected} corrected by the quality gate), {result.n_errors} "
                  f"unreadable or refused; {called / max(result.n_ok, 1):.2f} findings called per image; "
                  f"{flagged} unlike the training images -> {out}")
    console.print(f"throughput: {result.throughput:.1f} images/s ({result.seconds:.1f} s, batch size {batch_size})")
    for row in [r for r in result.rows if r["error"]][:10]:
        console.print(f"[yellow]not predicted:[/yellow] {row['error']}")
    if result.n_ok == 0:
        console.print(f"[red]error:[/red] none of the {result.n_errors} inputs could be predicted")
    exit_for_counts(result.n_ok, result.n_errors)


@user_errors
def serve(run_dir: Path = typer.Argument(..., help="Run directory (or an exported .onnx file: no heatmaps)."),
          host: str = typer.Option("127.0.0.1", help="Interface to bind (keep 127.0.0.1 unless behind a proxy)."),
          port: int = typer.Option(8000, help="TCP port."),
          max_upload_mb: float = typer.Option(DEFAULT_MAX_UPLOAD / 2**20, help="Largest accepted upload in MiB "
                                              "(413 beyond)."),
          threads: int | None = typer.Option(None, help=THREADS_HELP),
          policy: str | None = typer.Option(None, help=POLICY_HELP),
          allowed_host: list[str] = typer.Option([], "--allowed-host", help="Host header to serve (repeatable; "
                                                 "default localhost, 127.0.0.1, [::1]; '*' = any)."),
          allowed_origin: list[str] = typer.Option([], "--allowed-origin", help="Other web origin allowed to POST "
                                                   "(repeatable; enables CORS for exactly these). Default: none."),
          max_workers: int = typer.Option(DEFAULT_MAX_WORKERS, help="Uploads processed at once."),
          max_queue: int = typer.Option(DEFAULT_MAX_QUEUE, help="Uploads waiting beyond that; more get 503 + "
                                        "Retry-After."),
          max_heatmaps: int = typer.Option(DEFAULT_MAX_HEATMAPS, help="Grad-CAM maps per request at most (422 "
                                           "beyond)."),
          trust_run: bool = typer.Option(False, "--trust-run", help=TRUST_HELP),
          ) -> None:
    """Web page + JSON API (POST /api/predict, GET /api/health, GET /api/model; docs at /docs).

    Uploads are processed in memory only: never written to disk or logged. Each upload passes the quality gate
    first (non-chest-X-rays refused with HTTP 422, rotated/inverted ones corrected and labelled). Requests with a
    Host not in the allow-list get 400, cross-origin POSTs 403. Decision support, not a diagnosis.

    [bold]Example[/bold]

      chestdx serve runs/nih-default --host 127.0.0.1 --port 8000
    """
    import uvicorn

    from chestdx.serve.app import create_app

    hosts = list(allowed_host) or None
    if hosts is None and host not in ("127.0.0.1", "localhost", "::1"):
        hosts = [*DEFAULT_ALLOWED_HOSTS, host]  # requests addressed to the bound interface
        console.print(f"[yellow]note:[/yellow] serving on {host}: Host headers other than {', '.join(hosts)} get 400 "
                      "(add names with --allowed-host); put TLS and authentication in a reverse proxy")
    app = create_app(_predictor(run_dir, threads, trust_run, policy), max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                     max_heatmaps=max_heatmaps, allowed_hosts=hosts, allowed_origins=allowed_origin,
                     max_workers=max_workers, max_queue=max_queue)
    console.print(f"chestdx serving {run_dir} on http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


@user_errors
def export(run_dir: Path = typer.Argument(..., help="Run directory."),
           onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write (a .json sidecar is written next to it)."),
           opset: int = typer.Option(17, help="ONNX opset."),
           ) -> None:
    """Export the run's ensemble (normalization + members' mean logit + OOD distance) to ONNX (torch-free use).

    Input `image` (B,1,S,S) float32 in [0,1]; outputs `logits` (B,L) and `ood_d2` (when ood.npz exists).
    The sidecar JSON (same name, .json) holds the manifest, the calibration sidecar and the OOD threshold;
    `chestdx predict/serve model.onnx` apply the same quality gate and calibration. Parity is checked.

    [bold]Example[/bold]

      chestdx export runs/nih-default --onnx model.onnx
      chestdx predict model.onnx images/ --out preds.csv
    """
    from chestdx.serve.onnx_export import export_onnx, sidecar_path

    side = export_onnx(run_dir, onnx, opset=opset)
    check = side.get("check", {})
    m = side["manifest"]
    console.print(f"wrote {onnx} and {sidecar_path(onnx)} ({m['arch']} x{len(m['members'])}, {m['input_size']} px, "
                  f"outputs {side['outputs']}); torch vs onnxruntime max |dp| = {check.get('max_abs_prob_diff'):.2e}")
    if side.get("calibration") is None:
        console.print("[yellow]warning:[/yellow] the run is not calibrated: the export calls no finding "
                      "(run `chestdx evaluate` first, then export again)")


def _read_rows(out: Path) -> list[dict]:
    import json

    import pandas as pd

    if out.suffix.lower() == ".json":
        return json.loads(out.read_text())["predictions"]
    return pd.read_csv(out, keep_default_na=False).to_dict("records")


def register(app: typer.Typer) -> None:
    """Add predict, serve and export to ``app``."""
    for command in (predict, serve, export):
        app.command(rich_help_panel=PANEL)(command)
