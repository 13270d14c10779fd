"""Training and evaluation commands: train, demo, evaluate, compare, presets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from chestdx.cli._common import console, stdout, user_errors

PANEL = "Train and evaluate"


@user_errors
def train(config: str = typer.Option("default", "--config", "-c",
                                     help="Preset name (`chestdx presets`) or YAML path."),
          data: str | None = typer.Option(None, "--data", "-d", help="Dataset folder/CSV, or 'phantom'."),
          out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default runs/<name>)."),
          split: Path | None = typer.Option(None, "--split", help="Reuse a saved split.csv (patient-grouped)."),
          epochs: int | None = typer.Option(None, help="Maximum epochs (early stopping may end sooner)."),
          devices: str | None = typer.Option(None, help="Devices: 1, 2, 'auto' (GPUs or CPU processes)."),
          strategy: str | None = typer.Option(None, help="Lightning strategy, e.g. ddp."),
          num_nodes: int | None = typer.Option(None, help="Nodes for multi-node DDP (torchrun/SLURM)."),
          resume: Path | None = typer.Option(None, "--resume", help="Continue an interrupted run dir."),
          overrides: list[str] = typer.Option([], "--set", help="Override config keys: --set optimizer.lr=3e-4"),
          ) -> None:
    """Train a model and write a run dir (config, split, checkpoint, logs).

    Config keys are checked: an unknown key or a wrong type stops here, naming the nearest valid key.

    [bold]Examples[/bold]

      chestdx train --config default --data ../shared/data/nih-sample --out runs/nih-default
      chestdx train --config seed --split runs/nih-default/split.csv --out runs/nih-seed
      chestdx train --config densenet121 --data DATA --devices 2 --strategy ddp
      chestdx train --resume runs/nih-default
    """
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise FileNotFoundError(2, "No such file or directory (not a run dir to resume)",
                                    str(resume / "config.yaml"))
        run = fit({}, resume, resume=True)
        console.print(f"resumed and finished -> {run}")
        return
    sets = list(overrides)
    for key, value in (("data", data), ("epochs", epochs), ("devices", devices), ("strategy", strategy),
                       ("num_nodes", num_nodes)):
        if value is not None:
            sets.append(f"{key}={value}")
    cfg = load_config(config, sets)
    run = fit(cfg, out or Path("runs") / cfg["name"], split_csv=split)
    console.print(f"run dir: {run}  (next: chestdx evaluate {run})")


@user_errors
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
         data: str | None = typer.Option(None, "--data", "-d", help="A real dataset folder instead of the phantom."),
         epochs: int | None = typer.Option(None, help="Maximum epochs."),
         overrides: list[str] = typer.Option([], "--set", help="Override config keys: --set image_size=64"),
         ) -> None:
    """Offline end-to-end demo: train, evaluate, explain, localize and report.

    Without --data it uses the built-in SYNTHETIC phantom set (planted findings with known boxes);
    with --data it runs the default preset on your dataset folder.

    [bold]Examples[/bold]

      chestdx demo
      chestdx demo --data ../shared/data/kermany --out runs/demo-kermany
    """
    from chestdx.demo import run_demo

    summary = run_demo(out, data=data, epochs=epochs, overrides=list(overrides))
    stdout.print_json(json.dumps(summary))


@user_errors
def evaluate(run_dir: Path = typer.Argument(..., help="Run directory."),
             data: Path | None = typer.Option(None, "--data", "-d", help="Dataset folder if it moved since training."),
             split: str = typer.Option("test", help="Split to report on (thresholds always come from val)."),
             n_boot: int = typer.Option(1000, help="Patient bootstrap replicates for CIs."),
             threshold: str = typer.Option("youden", help="Operating point rule on validation: youden|sensitivity."),
             target_sensitivity: float = typer.Option(0.9, help="With --threshold sensitivity."),
             ) -> None:
    """Per-label AUROC/AUPRC with patient-bootstrap CIs, thresholds and temperature from validation, plots.

    [bold]Example[/bold]

      chestdx evaluate runs/nih-default
    """
    from chestdx.evaluate.run import evaluate_run

    result = evaluate_run(run_dir, data=data, split=split, n_boot=n_boot, threshold_method=threshold,
                          target_sensitivity=target_sensitivity)
    table = Table(title=f"{run_dir} — {split} ({result['n_test_images']} images, {result['n_test_patients']} patients)")
    for col in ("label", "AUROC [95% CI]", "n pos", "threshold (val)", "sens", "spec"):
        table.add_column(col)
    for label, res in result["labels"].items():
        if res["estimable"]:
            op = res.get("operating_point") or {}
            table.add_row(label, f"{res['auroc']:.3f} [{res['auroc_ci'][0]:.3f}, {res['auroc_ci'][1]:.3f}]",
                          str(res["n_pos"]), f"{res['threshold']:.3f}" if res.get("threshold") is not None else "-",
                          f"{op.get('sensitivity', float('nan')):.2f}", f"{op.get('specificity', float('nan')):.2f}")
        else:
            table.add_row(label, f"not estimable ({res['reason']})", str(res["n_pos"]), "-", "-", "-")
    macro = result["macro"]
    if macro.get("auroc") is not None:
        table.add_row("[bold]macro[/bold]", f"{macro['auroc']:.3f} [{macro['auroc_ci'][0]:.3f}, "
                      f"{macro['auroc_ci'][1]:.3f}]", "", "", "", "")
    stdout.print(table)
    cal = result["calibration"]
    console.print(f"ECE on {split}: {cal['before']['ece']:.3f} raw -> {cal['after']['ece']:.3f} after temperature "
                  f"T={result['temperature']:.2f} (fitted on val). -> {run_dir}/metrics.json, predictions.csv, plots/")


@user_errors
def compare(runs: list[Path] = typer.Argument(..., help="Two or more evaluated run dirs (first = reference)."),
            out: Path = typer.Option(Path("compare"), "--out", "-o", help="Output folder."),
            split: str = typer.Option("test", help="Split compared (must hold the same images in every run)."),
            n_boot: int = typer.Option(1000, help="Paired patient bootstrap replicates."),
            ) -> None:
    """Paired comparison on the SAME test images: AUROC differences with bootstrap CIs and DeLong p-values.

    [bold]Example[/bold]

      chestdx compare runs/nih-densenet121 runs/nih-vit_b16 --out compare/
    """
    from chestdx.evaluate.run import compare_runs

    table = compare_runs(runs, out, split=split, n_boot=n_boot)
    stdout.print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    console.print(f"-> {out}/compare.csv, compare.png")


def presets() -> None:
    """List the presets shipped with chestdx (name and what it is); use one with `train --config NAME`.

    [bold]Example[/bold]

      chestdx presets
      chestdx train --config seed --data ../shared/data/nih-sample
    """
    from chestdx.train.config import list_presets

    table = Table(show_header=True, box=None)
    table.add_column("preset", style="bold")
    table.add_column("description")
    for name, first in list_presets():
        table.add_row(name, first)
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add the training/evaluation commands to ``app``."""
    for command in (train, demo, evaluate, compare, presets):
        app.command(rich_help_panel=PANEL)(command)
