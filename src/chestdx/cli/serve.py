"""Inference commands: predict (batch), serve (web app), export (ONNX)."""

from __future__ import annotations

from pathlib import Path

import typer

from chestdx.cli._common import console, exit_for_counts, fail, progress, user_errors

PANEL = "Predict and serve"
THREADS_HELP = "CPU threads for inference (default: library default; use 1 on a machine whose cores are busy)."


def _predictor(model: Path, threads: int | None = None):
    """A run dir -> torch Predictor; a .onnx file -> OnnxPredictor (no torch needed, no heatmaps)."""
    if model.suffix == ".onnx":
        from chestdx.serve.onnx_predictor import OnnxPredictor

        return OnnxPredictor(model, threads=threads)
    import torch

    from chestdx.inference import Predictor

    if threads:
        torch.set_num_threads(threads)
    return Predictor.from_run(model)


@user_errors
def predict(run_dir: Path = typer.Argument(..., help="Run directory (or an exported .onnx file)."),
            paths: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
            out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output .csv or .json."),
            heatmaps: Path | None = typer.Option(None, "--heatmaps", help="Write Grad-CAM overlays to this folder."),
            batch_size: int = typer.Option(16, "--batch-size", help="Images per forward pass."),
            show_progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
            threads: int | None = typer.Option(None, help=THREADS_HELP),
            ) -> None:
    """Predict PNG/JPEG/DICOM files and folders; unreadable files become rows with the reason in `error`.

    Probabilities are temperature-calibrated; `findings` = labels at or above their validation thresholds.
    `ood_flag` marks images that are probably not frontal chest X-rays. Decision support, not a diagnosis.
    Exit 3 when some files could not be read (their rows say why), 4 when none could.

    [bold]Examples[/bold]

      chestdx predict runs/nih-default ../shared/data/nih-sample/images --out preds.csv
      chestdx predict runs/nih-default scan.dcm --out scan.json --heatmaps maps/
      chestdx predict model.onnx images/ --out preds.csv
    """
    from chestdx.serve.batch import collect_inputs, predict_paths, write_result

    if out.suffix.lower() not in (".csv", ".json"):
        fail(f"--out must end in .csv or .json, got {out}")
    predictor = _predictor(run_dir, threads)
    if heatmaps is not None and not hasattr(predictor, "heatmaps"):
        fail("--heatmaps needs a run dir (Grad-CAM uses gradients; the ONNX model has none)")
    files = collect_inputs(paths)
    if not files:
        fail("no image files found in the given paths")
    with progress("predicting", len(files), show_progress) as advance:
        result = predict_paths(predictor, files, batch_size=batch_size, heatmaps_dir=heatmaps, progress=advance)
    write_result(result, out, model=predictor.describe())
    flagged = sum(bool(r["ood_flag"]) for r in result.rows)
    console.print(f"{result.n_ok} images predicted, {result.n_errors} unreadable, {flagged} flagged as possibly "
                  f"not a frontal chest X-ray -> {out}")
    console.print(f"throughput: {result.throughput:.1f} images/s ({result.seconds:.1f} s, batch size {batch_size})")
    for row in [r for r in result.rows if r["error"]][:10]:
        console.print(f"[yellow]unreadable:[/yellow] {row['error']}")
    if result.n_ok == 0:
        console.print(f"[red]error:[/red] none of the {result.n_errors} inputs could be predicted")
    exit_for_counts(result.n_ok, result.n_errors)


@user_errors
def serve(run_dir: Path = typer.Argument(..., help="Run directory (or an exported .onnx file: no heatmaps)."),
          host: str = typer.Option("127.0.0.1", help="Interface to bind (keep 127.0.0.1 unless behind a proxy)."),
          port: int = typer.Option(8000, help="TCP port."),
          max_upload_mb: float = typer.Option(32.0, help="Largest accepted upload in MiB (413 beyond)."),
          threads: int | None = typer.Option(None, help=THREADS_HELP),
          ) -> None:
    """Web page + JSON API (POST /api/predict, GET /api/health, GET /api/model; docs at /docs).

    Uploads are processed in memory only: never written to disk or logged. Decision support, not a diagnosis.

    [bold]Example[/bold]

      chestdx serve runs/nih-default --host 127.0.0.1 --port 8000
    """
    import uvicorn

    from chestdx.serve.app import create_app

    app = create_app(_predictor(run_dir, threads), max_upload_bytes=int(max_upload_mb * 1024 * 1024))
    console.print(f"chestdx serving {run_dir} on http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


@user_errors
def export(run_dir: Path = typer.Argument(..., help="Run directory."),
           onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write (a .json sidecar is written next to it)."),
           opset: int = typer.Option(17, help="ONNX opset."),
           ) -> None:
    """Export the model (normalization + network + OOD distance) to ONNX for torch-free inference.

    Input `image` (B,1,S,S) float32 in [0,1]; outputs `logits` (B,L) and `ood_d2` (when the gate is fitted).
    The sidecar JSON (same name, .json) holds labels, input size, temperature, thresholds, OOD threshold.
    Parity with torch is checked after export.

    [bold]Example[/bold]

      chestdx export runs/nih-default --onnx model.onnx
      chestdx predict model.onnx images/ --out preds.csv
    """
    from chestdx.serve.onnx_export import export_onnx, sidecar_path

    side = export_onnx(run_dir, onnx, opset=opset)
    check = side.get("check", {})
    console.print(f"wrote {onnx} and {sidecar_path(onnx)} ({side['arch']}, {side['input_size']} px, "
                  f"outputs {side['outputs']}); torch vs onnxruntime max |dp| = {check.get('max_abs_prob_diff'):.2e}")


def register(app: typer.Typer) -> None:
    """Add predict, serve and export to ``app``."""
    for command in (predict, serve, export):
        app.command(rich_help_panel=PANEL)(command)
