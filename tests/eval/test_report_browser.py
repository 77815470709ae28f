"""report.html in a real browser: headless Chromium (Debian's package), driven by Playwright.

No console errors, every image decoded, and a full-page screenshot that is not blank.
`make test` installs chromium where it can (apt-get as root); elsewhere this test is skipped.
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")

# The flags a closed network needs: without them Chromium keeps trying to reach Google's hosts.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _render(page_path, screenshot_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()
    return problems, images, headings


def _not_blank(png_path) -> None:
    from PIL import Image, ImageStat

    with Image.open(png_path) as image:
        gray = image.convert("L")
        assert image.width >= 1000 and image.height >= 1500, image.size  # the whole page, not a viewport
        assert ImageStat.Stat(gray).stddev[0] > 20  # text, tables and figures, not one flat colour
        assert len(gray.getcolors(256) or []) > 50
        # The top band holds the title: dark text on the light page.
        top = gray.crop((0, 0, image.width, 120))
        assert min(top.getdata()) < 80


def test_training_report_renders_in_chromium(trained_bundle, tmp_path):
    problems, images, headings = _render(trained_bundle / "report.html", tmp_path / "report.png")
    assert problems == []
    assert len(images) >= 4
    broken = [alt for alt, complete, width, height in images if not (complete and width > 0 and height > 0)]
    assert broken == []
    for section in ("Summary", "Metrics", "Confusion matrix", "Per class", "Training curves", "Calibration"):
        assert any(h.startswith(section) for h in headings), section
    _not_blank(tmp_path / "report.png")


def test_comparison_report_renders_in_chromium(trained_bundle, report_digits, tmp_path):
    from click.testing import CliRunner

    from sftune.cli.main import cli

    result = CliRunner().invoke(cli, ["eval", str(trained_bundle), str(trained_bundle), "--data", str(report_digits / "val"),
                                      "--out", str(tmp_path / "cmp"), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    problems, images, headings = _render(tmp_path / "cmp" / "report.html", tmp_path / "cmp.png")
    assert problems == []
    assert all(complete and width > 0 for _, complete, width, _ in images)
    assert "Where they disagree" in headings
    _not_blank(tmp_path / "cmp.png")
