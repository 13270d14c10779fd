"""Run-dir commands: calibrate (re-fit the sidecar), migrate (legacy run dirs), adopt (pretrained xrv models)."""

from __future__ import annotations

from pathlib import Path

import typer

from chestdx.cli._common import console, user_errors

PANEL = "Run dirs"


def parse_prevalence(items: list[str]) -> dict[str, float] | None:
    """``["Effusion=0.02", ...]`` -> ``{"Effusion": 0.02}``; clear errors for anything else."""
    out: dict[str, float] = {}
    for item in items:
        label, sep, value = item.partition("=")
        try:
            p = float(value)
        except ValueError:
            p = float("nan")
        if not sep or not label.strip() or not 0.0 < p < 1.0:
            raise ValueError(f"--prevalence {item!r}: expected Label=p with 0 < p < 1, e.g. Effusion=0.02")
        out[label.strip()] = p
    return out or None


PREVALENCE_HELP = ("A prevalence where you will use the model (repeatable): Label=p, e.g. Pneumothorax=0.02. "
                   "PPV/NPV are then also stated at it.")
POLICY_HELP = ("Operating point to call findings: auto (the policy whose out-of-fold calls per image match the true "
               "finding count), balanced (Youden), sensitivity:0.90, specificity:0.90, f1.")


@user_errors
def calibrate(run_dir: Path = typer.Argument(..., help="Run directory (with oof.csv: trained or evaluated)."),
              policy: str | None = typer.Option(None, help=POLICY_HELP + " Default: the run config's (auto)."),
              prevalence: list[str] = typer.Option([], "--prevalence", help=PREVALENCE_HELP),
              min_positives: int = typer.Option(10, help="Out-of-fold positives needed to call a label."),
              n_boot: int = typer.Option(1000, help="Patient bootstrap replicates for the rates' CIs."),
              ) -> None:
    """Re-fit the calibration sidecar (calibration.json) on out-of-fold predictions; the weights never change.

    [bold]Example[/bold]

      chestdx calibrate runs/nih-default --policy sensitivity:0.9 --prevalence Pneumothorax=0.02
    """
    from chestdx.evaluate.calibrate import calibrate_run

    side = calibrate_run(run_dir, policy=policy, prevalence=parse_prevalence(prevalence),
                         min_positives=min_positives, n_boot=n_boot)
    called = [lb for lb, d in side["labels"].items() if d.get("callable")]
    console.print(f"{run_dir}/calibration.json: policy {side['policy']}, fitted on {side['source']} predictions of "
                  f"{side['n_images']} images; callable: {', '.join(called) or 'none'}")


@user_errors
def migrate(run_dir: Path = typer.Argument(..., help="Run directory written by chestdx < 0.2 (model.pt)."),
            trust: bool = typer.Option(False, "--trust", help="Confirm you trust the file: unpickling runs code."),
            ) -> None:
    """Convert a legacy run dir (pickled model.pt) to the safe chestdx-run/2 layout, once.

    Writes model.json + members/member-0.pt (+ ood.npz) beside model.pt; afterwards nothing is unpickled. A
    model.pt with only tensors converts without --trust. Then run `chestdx evaluate RUN` to calibrate it.
    """
    from chestdx.rundir import migrate as migrate_run

    run = migrate_run(run_dir, trust=trust)
    console.print(f"{run.manifest_path} written; next: chestdx evaluate {run_dir}")


@user_errors
def adopt(weights: str = typer.Argument(..., help="xrv:<torchxrayvision weights name> or a local .pt file."),
          split: Path = typer.Option(..., "--split", help="split.csv whose labels and val/test rows to use."),
          out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
          overrides: list[str] = typer.Option([], "--set", help="Config keys, e.g. --set cache_root=/data/cache"),
          ) -> None:
    """Use a chest-X-ray-pretrained torchxrayvision model as is: a run dir without training.

    Then `chestdx evaluate OUT` calibrates it on the split's validation rows and measures it on test; explain,
    localize, report, serve and export work as on any run. Weights download from torchxrayvision's URLs when
    online (cached), or come from a local file.

    [bold]Example[/bold]

      chestdx adopt xrv:densenet121-res224-all --split runs/nih-split.csv --out runs/xrv-all
      chestdx evaluate runs/xrv-all
    """
    from chestdx.train.adopt_run import adopt_run

    run, info = adopt_run(weights, split, out, overrides=list(overrides))
    for label, why in info["dropped"].items():
        console.print(f"[yellow]dropped[/yellow] {label}: {why}")
    console.print(f"{run.path}: {info['arch']} with {len(info['labels'])} labels; next: chestdx evaluate {run.path}")


def register(app: typer.Typer) -> None:
    """Add calibrate, migrate and adopt to ``app``."""
    for command in (calibrate, migrate, adopt):
        app.command(rich_help_panel=PANEL)(command)
