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
          folds: int | None = typer.Option(None, "--folds", help="K-fold cross-validated ensemble over train+val "
                                           "(patient-grouped; test untouched); 1 = one train/val split."),
          resume: Path | None = typer.Option(None, "--resume", help="Continue an interrupted run dir."),
          overrides: list[str] = typer.Option([], "--set", help="Override config keys: --set optimizer.lr=3e-4"),
          ) -> None:
    """Train a model (or a K-fold ensemble) and write a run dir (config, split, model.json + members, oof.csv).

    Config keys are checked: an unknown key or a wrong type stops here, naming the nearest valid key.

    [bold]Examples[/bold]

      chestdx train --config default --data ../shared/data/nih-sample --out runs/nih-default
      chestdx train --config seed --split runs/nih-default/split.csv --out runs/nih-seed
      chestdx train --config default --data ../shared/data/nih-sample --folds 5 --out runs/nih-k5
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
    if folds is not None and folds < 1:
        raise ValueError(f"--folds {folds}: must be >= 1 (1 = one train/val split, K > 1 = K-fold ensemble)")
    for key, value in (("data", data), ("epochs", epochs), ("devices", devices), ("strategy", strategy),
                       ("num_nodes", num_nodes), ("folds", folds)):
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
             split: str = typer.Option("test", help="Split to report on (calibration never sees it)."),
             n_boot: int = typer.Option(1000, help="Patient bootstrap replicates for CIs."),
             policy: str | None = typer.Option(None, help="Operating point: balanced (Youden), sensitivity:0.90, "
                                                          "specificity:0.90, f1 (default: the config's)."),
             prevalence: list[str] = typer.Option([], "--prevalence", help="Label=p: also state PPV/NPV at this "
                                                  "prevalence (repeatable)."),
             ) -> None:
    """Calibrate on out-of-fold (or validation) predictions, then AUROC/AUPRC with patient-bootstrap CIs on test.

    Writes calibration.json (per-label Platt/isotonic, operating points with their out-of-fold meaning),
    ood.npz, predictions.csv, metrics.json and plots/. The weights (model.json, members/) are never rewritten.

    [bold]Example[/bold]

      chestdx evaluate runs/nih-default
      chestdx evaluate runs/nih-default --policy sensitivity:0.9 --prevalence Pneumothorax=0.02
    """
    from chestdx.cli.runs import parse_prevalence
    from chestdx.evaluate.run import evaluate_run

    result = evaluate_run(run_dir, data=data, split=split, n_boot=n_boot, policy=policy,
                          prevalence=parse_prevalence(prevalence))
    table = Table(title=f"{run_dir} — {split} ({result['n_test_images']} images, {result['n_test_patients']} patients)")
    for col in ("label", "AUROC [95% CI]", "n pos", "threshold", "sens", "spec"):
        table.add_column(col)
    for label, res in result["labels"].items():
        op = res.get("operating_point") or {}
        thr = f"{res['threshold']:.3f}" if res.get("threshold") is not None else "score only"
        sens = "-" if op.get("sensitivity") is None else f"{op['sensitivity']:.2f}"
        spec = "-" if op.get("specificity") is None else f"{op['specificity']:.2f}"
        if res["estimable"]:
            table.add_row(label, f"{res['auroc']:.3f} [{res['auroc_ci'][0]:.3f}, {res['auroc_ci'][1]:.3f}]",
                          str(res["n_pos"]), thr, sens, spec)
        else:
            table.add_row(label, f"not estimable ({res['reason']})", str(res["n_pos"]), thr, sens, spec)
    macro = result["macro"]
    if macro.get("auroc") is not None:
        table.add_row("[bold]macro[/bold]", f"{macro['auroc']:.3f} [{macro['auroc_ci'][0]:.3f}, "
                      f"{macro['auroc_ci'][1]:.3f}]", "", "", "", "")
    stdout.print(table)
    cal, fpi = result["calibration"], result["findings_per_image"]
    console.print(f"ECE on {split}: {cal['before']['ece']:.3f} raw -> {cal['after']['ece']:.3f} calibrated (median "
                  f"per label {cal['after']['median_per_label']:.3f}); findings called per image "
                  f"{fpi['called_per_image']:.2f} vs {fpi['true_per_image']:.2f} present. "
                  f"-> {run_dir}/calibration.json, metrics.json, predictions.csv, plots/")


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


@user_errors
def robustness(run_dir: Path = typer.Argument(..., help="Run directory (trained)."),
               data: Path | None = typer.Option(None, "--data", "-d", help="Dataset folder if it moved."),
               split: str = typer.Option("oof", help="oof (each image scored by the member that did not train "
                                                     "on it: validation data only), val or test."),
               corruption: list[str] = typer.Option([], "--corruption", "-c", help="Only these corruptions "
                                                    "(repeatable; default: all)."),
               severity: list[int] = typer.Option([1, 2, 3], "--severity", "-s", help="Severities 1-3 (repeatable)."),
               n_boot: int = typer.Option(500, help="Paired patient bootstrap replicates."),
               ) -> None:
    """How predictions hold up under gamma, contrast, noise, blur, sharpening, JPEG, low resolution, equalisation.

    Scores the same images clean and corrupted, paired: macro AUROC change with a patient-bootstrap CI, findings
    called per image, share of images whose findings change. Writes RUN/robustness.json.

    [bold]Example[/bold]

      chestdx robustness runs/nih-default
      chestdx robustness runs/nih-default -c noise -c jpeg --split test
    """
    from chestdx.evaluate.robustness import robustness_markdown, robustness_run

    result = robustness_run(run_dir, data=data, split=split, corruptions=corruption or None,
                            severities=severity, n_boot=n_boot)
    stdout.print(robustness_markdown(result), markup=False)
    console.print(f"-> {run_dir}/robustness.json")


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
    for command in (train, demo, evaluate, compare, robustness, presets):
        app.command(rich_help_panel=PANEL)(command)
