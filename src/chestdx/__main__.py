"""``python -m chestdx`` = the ``chestdx`` command."""

from chestdx.cli import app

app(prog_name="chestdx")
