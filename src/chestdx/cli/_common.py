"""What every command shares: the stderr console, exit codes, the one error helper, the progress helper."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

__all__ = ["EXIT_CODES_HELP", "Exit", "console", "exit_for_counts", "fail", "progress", "stdout", "user_errors"]

#: Messages, warnings and progress go to stderr; tables and JSON meant for the user go to stdout.
console = Console(stderr=True)
stdout = Console()


class Exit(IntEnum):
    """Process exit status of every ``chestdx`` command."""

    OK = 0        # everything succeeded
    ERROR = 1     # the command could not run: a missing or invalid file, a bad config, a failed check (audit)
    USAGE = 2     # bad command line (unknown option, missing argument, wrong value type): typer/click
    PARTIAL = 3   # some inputs failed (unreadable images in predict/explain/cache); the rest succeeded
    NONE_OK = 4   # every input failed: nothing was produced


EXIT_CODES_HELP = ("[bold]Exit codes[/bold]: 0 all ok; 1 error (missing/invalid file, bad config, failed check; "
                   "one `error:` line, `--verbose` adds the traceback); 2 usage error; 3 some inputs failed "
                   "(predict/explain/cache: the others succeeded); 4 every input failed.")

#: Mistakes a user can make (missing files, bad values, unreadable inputs, invalid configs, run dirs of another
#: format): reported as one ``error:`` line. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)

_state = {"verbose": False}


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = bool(verbose)


def fail(message: str, code: int = Exit.ERROR) -> NoReturn:
    """Print one ``error: message`` line on stderr and exit with ``code``."""
    console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(int(code))


def describe(err: BaseException) -> str:
    """A one-line message for a user error (file errors name the file)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror.lower()}"
    if type(err) is KeyError and len(err.args) == 1:  # e.g. a CSV without a required column
        return f"missing key or column {err.args[0]!r}"
    return str(err) or err.__class__.__name__


F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Decorator for a command: user errors become one ``error:`` line and exit 1 (traceback with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            if _state["verbose"]:
                raise
            fail(describe(err))

    return wrapper  # type: ignore[return-value]


def exit_for_counts(n_ok: int, n_failed: int) -> None:
    """Exit 4 when nothing succeeded, 3 when some inputs failed; return (exit 0) otherwise."""
    if n_ok == 0 and n_failed > 0:
        raise typer.Exit(int(Exit.NONE_OK))
    if n_failed > 0:
        raise typer.Exit(int(Exit.PARTIAL))


@contextmanager
def progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``advance(n)``."""
    from chestdx.data.pipeline import progress_bar

    with progress_bar(description, total, enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
