"""Shared fixtures: where the real data lives, and the skip-or-fail policy when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """The allocator setting the CLI and ``fit`` use (chestdx.allocator), for the whole test process."""
    from chestdx.allocator import tune_malloc

    tune_malloc()


def data_root() -> Path:
    """Real data folder: $CHESTDX_DATA, default ../shared/data next to the repo root."""
    return Path(os.environ.get("CHESTDX_DATA", REPO.parent / "shared" / "data")).resolve()


def _require(sub: str) -> Path:
    path = data_root() / sub
    if not path.exists():
        reason = f"real data not found at {path} (set CHESTDX_DATA to the folder holding nih-sample/, kermany/)"
        if os.environ.get("CHESTDX_REQUIRE_DATA") == "1":
            pytest.fail("CHESTDX_REQUIRE_DATA=1 but " + reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    return _require("nih-sample")


@pytest.fixture(scope="session")
def nih_fullres() -> Path:
    return _require("nih-fullres")


@pytest.fixture(scope="session")
def kermany() -> Path:
    return _require("kermany")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A small trained + evaluated run dir (simple_cnn on the synthetic phantom set, 64 px, 2 epochs).

    Shared by the tests of evaluate/explain/serve/report; treat it as read-only (copy it to modify).
    """
    from chestdx.evaluate.run import evaluate_run
    from chestdx.train.config import load_config
    from chestdx.train.fit import fit

    root = tmp_path_factory.mktemp("tiny")
    config = load_config("demo", ["image_size=64", "epochs=2", "progress=false", f"cache_root={root / 'cache'}"])
    run = fit(config, root / "run")
    evaluate_run(run, n_boot=100, show_progress=False)
    return run
