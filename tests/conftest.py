"""Shared fixtures: where the real data lives, and the skip-or-fail policy when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
