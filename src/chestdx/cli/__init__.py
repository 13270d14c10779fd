"""The ``chestdx`` command line: a thin shell over the Python API.

One module per command group, each with ``register(app)``: :mod:`.data` (index, split, audit, cache, eda),
:mod:`.train` (train, demo, evaluate, compare, presets), :mod:`.explain` (explain, localize, report),
:mod:`.runs` (calibrate, migrate, adopt), :mod:`.serve` (predict, serve, export). :mod:`._common` holds the
console, the exit codes, the one error helper
(``fail``, ``user_errors``) and the progress helper.
"""

from __future__ import annotations

import logging

import typer
from rich.logging import RichHandler

from chestdx.allocator import tune_malloc
from chestdx.cli import _common, data, explain, runs, serve, train
from chestdx.cli._common import EXIT_CODES_HELP, console

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="chestdx: leak-free, calibrated, explainable chest X-ray classification. "
                       "Outputs are decision support for clinicians, never a diagnosis.",
                  epilog=EXIT_CODES_HELP)


@app.callback()
def _main(ctx: typer.Context,
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging; tracebacks on errors.")
          ) -> None:
    _common.set_verbose(verbose)
    if ctx.invoked_subcommand != "serve":  # a long-lived threaded server keeps glibc's default (memory ceiling)
        tune_malloc()  # CPU tensors reused, not page-faulted in on every pass (chestdx.allocator)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)])


for _group in (data, train, runs, explain, serve):
    _group.register(app)
