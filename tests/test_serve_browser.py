"""Browser end-to-end: headless Debian Chromium driven by Playwright against the real server on 127.0.0.1.

Uploads a real NIH X-ray (findings table + heatmap toggle), a colour photo (OOD warning) and a text file
(clear error), and saves a screenshot (to docs/img/serve_screenshot.png with CHESTDX_UPDATE_DOCS=1).
Never downloads a browser.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chestdx.serve.app import create_app
from chestdx.serve.server import BackgroundServer

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHESTDX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _require_browser() -> None:
    missing = []
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("python package 'playwright' not installed (pip install -e '.[dev]')")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CHESTDX_REQUIRE_DATA") == "1":
            pytest.fail("CHESTDX_REQUIRE_DATA=1 but " + reason)
        pytest.skip(reason)


@pytest.mark.data
def test_browser_upload_flow(tiny_run: Path, nih_sample: Path, tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    xray = sorted((nih_sample / "images").glob("*.png"))[1]
    photo = tmp_path / "holiday.jpg"
    rng = np.random.default_rng(0)
    sky = np.zeros((300, 400, 3), np.uint8)
    sky[..., 0], sky[..., 1], sky[..., 2] = 90, 150, 230
    sky[180:] = (60, 140, 60)
    Image.fromarray(np.clip(sky + rng.integers(-20, 20, sky.shape), 0, 255).astype(np.uint8)).save(photo)
    notes = tmp_path / "notes.txt"
    notes.write_text("Patient notes: not an image.\n")
    # into the repo's docs only on request (CHESTDX_UPDATE_DOCS=1): a test run must not dirty tracked files
    docs = os.environ.get("CHESTDX_UPDATE_DOCS") == "1"
    shot = REPO / "docs" / "img" / "serve_screenshot.png" if docs else tmp_path / "serve_screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)

    # max_heatmaps=1: the first label's map comes with the result, the others are fetched when toggled
    with BackgroundServer(create_app(tiny_run, max_heatmaps=1)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url + "/")
            expect(page.locator("#disclaimer")).to_contain_text("Decision support only — not a diagnosis")
            expect(page.locator("#model-info")).to_contain_text("simple_cnn")

            page.set_input_files("#file-input", str(xray))
            expect(page.locator("#result")).to_be_visible(timeout=60_000)
            rows = page.locator("#findings-table tbody tr:not(.statement)")
            expect(rows.first).to_be_visible()
            assert rows.count() == len(page.evaluate("fetch('/api/model').then(r => r.json()).then(m => m.labels)"))
            assert page.locator("#preview").evaluate("img => img.naturalWidth") > 0
            toggle = page.locator(".hm-toggle").first
            toggle.click()
            expect(toggle).to_have_attribute("aria-pressed", "true")
            expect(page.locator("#heatmap-overlay")).to_be_visible()
            assert page.locator("#heatmap-overlay").evaluate("img => img.complete && img.naturalWidth > 0")
            expect(page.locator("#viewer-caption")).to_contain_text("Heatmap")
            last = page.locator(".hm-toggle").last  # not computed yet: fetched on demand
            last.click()
            expect(last).to_have_attribute("aria-pressed", "true", timeout=60_000)
            expect(toggle).to_have_attribute("aria-pressed", "false")
            label = last.get_attribute("data-label")
            expect(page.locator("#viewer-caption")).to_contain_text(label)
            toggle.click()
            expect(toggle).to_have_attribute("aria-pressed", "true")
            expect(page.locator("#disclaimer")).to_be_visible()
            page.screenshot(path=str(shot), full_page=True)

            expect(page.locator("#quality")).to_contain_text("Input check")  # the gate's verdict, shown first

            page.set_input_files("#file-input", str(photo))
            expect(page.locator("#error")).to_be_visible(timeout=60_000)
            expect(page.locator("#error")).to_contain_text("refused by the quality gate")
            expect(page.locator("#result")).to_be_hidden()
            page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)

            page.set_input_files("#file-input", str(notes))
            expect(page.locator("#error")).to_be_visible(timeout=30_000)
            expect(page.locator("#error")).to_contain_text("not a PNG, JPEG or DICOM")
            expect(page.locator("#result")).to_be_hidden()
            page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    buf = io.BytesIO(shot.read_bytes())
    assert Image.open(buf).size[0] == 1280
