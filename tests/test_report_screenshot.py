"""The HTML report as a person sees it: headless Chromium (Debian's `chromium` package)
renders a report of a dozen rows and the screenshot is read pixel by pixel.

Marked `screenshot`; skipped where no Chromium is installed (CI installs none, to stay
lean: run these locally with `apt-get install chromium` and `pytest -m screenshot`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from components.core.benchmark import plots
from components.core.benchmark.report import write_report
from tests.report_rows import dozen_rows

pytestmark = pytest.mark.screenshot

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BACKGROUND = (0xF5, 0xF7, 0xFA)  # the page's --bg


def screenshot(html: Path, out: Path, width: int, height: int) -> Image.Image:
    """The page at `width` x `height` CSS pixels, as Chromium draws it."""
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    # --no-sandbox: the tests may run as root (containers), where Chromium's sandbox
    # refuses to start; the page is our own file and runs no scripts.
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--user-data-dir={out.parent / 'profile'}",
                    f"--window-size={width},{height}", f"--screenshot={out}",
                    html.as_uri()], check=True, capture_output=True, timeout=120)
    return Image.open(out).convert("RGB")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_report(dozen_rows(), tmp_path_factory.mktemp("report") / "report.html")


def _colors(image: Image.Image) -> dict[tuple[int, int, int], int]:
    return {color: count for count, color in image.getcolors(image.width * image.height)}


def _hex(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


@pytest.mark.parametrize("width", [1280, 900])
def test_nothing_runs_past_the_window_edge(report, tmp_path, width):
    """Wide tables scroll inside their card; figures shrink to the page: the strip along
    the right edge of the window is the bare page background."""
    image = screenshot(report, tmp_path / f"report-{width}.png", width, 5600)
    assert image.size == (width, 5600)
    edge = image.crop((width - 12, 0, width, image.height))
    assert set(_colors(edge)) == {BACKGROUND}


def test_the_figures_show_the_chosen_pair_and_every_version_in_its_color(report, tmp_path):
    image = screenshot(report, tmp_path / "report.png", 1280, 3000)
    colors = _colors(image)
    # The band behind the chosen pair: two panels of about 210 x 40 pixels.
    assert colors.get(_hex(plots.HIGHLIGHT), 0) > 5000
    versions = plots.version_colors(dozen_rows())
    for version, color in versions.items():
        assert colors.get(_hex(color), 0) > 100, version
