"""Explanation and report commands: explain, localize, report."""

from __future__ import annotations

from pathlib import Path

import typer

from chestdx.cli._common import console, exit_for_counts, stdout, user_errors

PANEL = "Explain and report"


@user_errors
def explain(run_dir: Path = typer.Argument(..., help="Run directory."),
            images: list[Path] = typer.Argument(..., help="Image files (PNG/JPEG/DICOM)."),
            out: Path = typer.Option(Path("explain"), "--out", "-o", help="Output folder."),
            method: str = typer.Option("gradcam", help="gradcam|gradcampp|smoothgrad|vanilla."),
            labels: list[str] = typer.Option([], "--labels", "-l", help="Labels to explain (repeatable)."),
            top_k: int = typer.Option(1, "--top-k", "-k", help="Without --labels: the K most probable labels."),
            batch_size: int = typer.Option(8, help="Images per forward/backward pass."),
            n_samples: int = typer.Option(25, help="SmoothGrad: noisy copies per image."),
            ) -> None:
    """Saliency overlays (caption: label, calibrated probability, method) + gallery.png + index.csv.

    Exit 3 when some images could not be read (skipped), 4 when no overlay was written.

    [bold]Examples[/bold]

      chestdx explain runs/demo img1.png img2.png --out explain/ --top-k 2
      chestdx explain runs/nih-default x.png --labels Effusion --method smoothgrad
    """
    from chestdx.explain.run import explain_images

    kwargs = {"n_samples": n_samples} if method == "smoothgrad" else {}
    index = explain_images(run_dir, images, out, method=method, labels=labels or None, top_k=top_k,
                           batch_size=batch_size, **kwargs)
    errors = index[index["error"].notna()]
    for row in errors.itertuples(index=False):
        console.print(f"[yellow]skipped:[/yellow] {row.error}")
    n_overlays = len(index) - len(errors)
    n_images = index.loc[index["error"].isna(), "image"].nunique()
    if n_overlays:
        console.print(f"{n_overlays} overlays of {n_images} images -> {out}/ (index.csv, gallery.png). "
                      "Decision support, not a diagnosis.")
    else:
        console.print(f"[red]error:[/red] no overlay written: none of the {len(errors)} images could be read "
                      f"(reasons in {out}/index.csv)")
    exit_for_counts(n_images, len(errors))


@user_errors
def localize(run_dir: Path = typer.Argument(..., help="Run directory."),
             boxes: Path = typer.Option(..., "--boxes", "-b", help="Boxes CSV in NIH BBox_List_2017 layout."),
             out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default RUN_DIR/localization)."),
             methods: list[str] = typer.Option(["gradcam", "gradcampp", "smoothgrad"], "--methods", "-m",
                                               help="Saliency methods (repeatable)."),
             split: str = typer.Option("test", help="Split of the run to use; 'all' = every boxed image in split.csv."),
             box_size: int | None = typer.Option(None, "--box-size",
                                                 help="Frame the box coordinates refer to (default: README.txt "
                                                      "box_reference_size next to the file, else 1024 = NIH)."),
             n_samples: int = typer.Option(25, help="SmoothGrad: noisy copies per image."),
             ) -> None:
    """Pointing game and IoBB (>0.1/0.25/0.5) of saliency maps vs boxes, with chance baselines and 95% CIs.

    [bold]Examples[/bold]

      chestdx localize runs/nih-default --boxes ../shared/data/nih-sample/BBox_List_2017.csv
      chestdx localize runs/demo --boxes ~/.cache/chestdx/phantom-v1/boxes.csv --split all
    """
    from chestdx.explain.run import localize_run

    result = localize_run(run_dir, boxes, out, methods=tuple(methods), split=None if split == "all" else split,
                          box_reference_size=box_size, n_samples=n_samples)
    t = result.table
    shown = t[t["metric"].isin(["pointing", "iobb>0.1"])]
    stdout.print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for reason, count in result.meta["skipped_reasons"].items():
        console.print(f"[yellow]skipped[/yellow] {count} boxes: {reason}")
    written = ", ".join(Path(p).name for p in result.files.values() if p is not None)
    console.print(f"{result.meta['n_boxes_used']} boxes on {result.meta['n_images_used']} images -> "
                  f"{result.files['table'].parent}/ ({written})")


@user_errors
def report(run_dir: Path = typer.Argument(..., help="Evaluated run directory."),
           n_gallery: int = typer.Option(3, help="Saliency examples per (label, TP/FP/FN) cell."),
           ) -> None:
    """Self-contained RUN_DIR/report.html (metrics with CIs, plots, saliency gallery, model card) + MODEL_CARD.md.

    [bold]Example[/bold]

      chestdx report runs/nih-default
    """
    from chestdx.report import build_report

    path = build_report(run_dir, n_gallery=n_gallery)
    console.print(f"-> {path} and {Path(run_dir) / 'MODEL_CARD.md'}")


def register(app: typer.Typer) -> None:
    """Add the explanation/report commands to ``app``."""
    for command in (explain, localize, report):
        app.command(rich_help_panel=PANEL)(command)
