"""Data commands: index, split, audit, cache, eda."""

from __future__ import annotations

from pathlib import Path

import typer

from chestdx.cli._common import Exit, console, exit_for_counts, fail, user_errors
from chestdx.train.config_schema import SplitSection

PANEL = "Data"
SPLIT_DEFAULTS = SplitSection()  # the same defaults as the config's split: section


@user_errors
def index(data_dir: Path = typer.Argument(..., help="Dataset folder (or labels CSV)."),
          out: Path = typer.Option(Path("index.csv"), "--out", "-o", help="Index CSV to write."),
          kind: str = typer.Option("auto", help="Dataset kind: auto|nih|folders|csv."),
          uncertain: str = typer.Option("ignore", help="CSV datasets: CheXpert -1 labels -> ignore|positive|negative."),
          ) -> None:
    """Index a dataset into one table (image_id, path, patient_id, labels, age, sex, view, source).

    [bold]Examples[/bold]

      chestdx index ../shared/data/nih-sample --out nih.csv
      chestdx index ../shared/data/kermany --out kermany.csv
      chestdx index chexpert/train.csv --kind csv --uncertain positive
    """
    from chestdx.data.index import IndexReport
    from chestdx.data.readers import build_index

    report = IndexReport()
    options = {"uncertain": uncertain} if kind == "csv" else {}
    df = build_index(data_dir, kind=kind, report=report, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    console.print(f"{report.summary()}; {df['patient_id'].nunique()} patients -> {out}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


@user_errors
def split(index_csv: Path = typer.Argument(..., help="Index CSV from `chestdx index`."),
          out: Path = typer.Option(Path("split.csv"), "--out", "-o"),
          seed: int = typer.Option(SPLIT_DEFAULTS.seed, help="Random seed of the grouped split."),
          val: float = typer.Option(SPLIT_DEFAULTS.val, help="Validation fraction."),
          test: float = typer.Option(SPLIT_DEFAULTS.test, help="Test fraction (ignored with --official)."),
          official: bool = typer.Option(False, "--official", help="Test = the dataset's official test list."),
          boxes_to_test: Path | None = typer.Option(None, help="BBox CSV: put the patients of boxed images in test."),
          ) -> None:
    """Patient-grouped, multilabel-stratified train/val/test split (no patient in two splits).

    [bold]Examples[/bold]

      chestdx split nih.csv --out split.csv --seed 0
      chestdx split nih.csv --official --out split_official.csv
      chestdx split nih.csv --boxes-to-test ../shared/data/nih-sample/BBox_List_2017.csv
    """
    from chestdx.data.index import read_table
    from chestdx.data.nih import read_nih_boxes
    from chestdx.data.splits import audit_split, make_split

    df = read_table(index_csv)
    forced = read_nih_boxes(boxes_to_test)["image_id"].tolist() if boxes_to_test else None
    result = make_split(df, val=val, test=test, seed=seed, official=official, force_test=forced)
    audit = audit_split(result)
    if not audit.ok:
        fail("internal error, split leaks: " + "; ".join(audit.messages()[:5]))
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    counts = result.groupby("split").agg(images=("image_id", "size"), patients=("patient_id", "nunique"))
    console.print(counts.to_string())
    console.print(f"-> {out}")


@user_errors
def audit(split_csv: Path = typer.Argument(..., help="Split CSV to check.")) -> None:
    """Exit 0 when no patient is in two splits and no image is listed twice; 1 otherwise (leaks listed).

    [bold]Example[/bold]

      chestdx audit split.csv || echo "leak!"
    """
    from chestdx.data.index import read_table
    from chestdx.data.splits import audit_split

    result = audit_split(read_table(split_csv))
    if result.ok:
        console.print(f"[green]ok[/green]: {split_csv} is patient-disjoint with no duplicate images")
        return
    for message in result.messages():
        console.print(f"[red]leak:[/red] {message}")
    raise typer.Exit(int(Exit.ERROR))


@user_errors
def cache(split_csv: Path = typer.Argument(..., help="Index or split CSV."),
          size: int = typer.Option(256, help="Side in pixels of the cached images."),
          root: Path | None = typer.Option(None, help="Cache folder (default $CHESTDX_CACHE or ~/.cache/chestdx)."),
          strict: bool = typer.Option(False, help="Fail on the first unreadable image instead of skipping it."),
          bad_files: Path | None = typer.Option(None, help="Write the skipped files and reasons to this CSV."),
          workers: int | None = typer.Option(None, help="Decoding processes (default: all usable CPUs; 1 = in "
                                                        "this process). NIH .tar.gz archives stream once each."),
          ) -> None:
    """Decode every image once into the memory-mapped cache (resumable; reused while files are unchanged).

    Exit 3 when some images were unreadable (skipped), 4 when none could be read.

    [bold]Example[/bold]

      chestdx cache split.csv --size 256
    """
    from chestdx.data.index import read_table
    from chestdx.data.pipeline import cache_table, write_bad_files

    store, _, report = cache_table(read_table(split_csv), size, root, strict=strict, workers=workers)
    console.print(f"cache {store.dir}: {report.decoded} decoded, {report.reused} reused, "
                  f"{len(report.failures)} unreadable")
    for _path, reason in report.failures:
        console.print(f"[yellow]skipped:[/yellow] {reason}")
    if bad_files:
        write_bad_files(report, bad_files)
    exit_for_counts(report.decoded + report.reused, len(report.failures))


@user_errors
def eda(split_csv: Path = typer.Argument(..., help="Index or split CSV."),
        out: Path = typer.Option(Path("eda"), "--out", "-o", help="Output folder."),
        title: str = typer.Option("", help="Title added to the figures."),
        ) -> None:
    """Class imbalance, co-occurrence, demographics and images-per-patient plots (PNG + CSV/JSON).

    [bold]Example[/bold]

      chestdx eda split.csv --out eda/ --title "NIH sample"
    """
    from chestdx.data.eda import run_eda
    from chestdx.data.index import read_table

    summary = run_eda(read_table(split_csv), out, title=title)
    console.print(f"{summary['n_images']} images, {summary['n_patients']} patients -> {out}/")


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""
    for command in (index, split, audit, cache, eda):
        app.command(rich_help_panel=PANEL)(command)
