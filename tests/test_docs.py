"""The documentation: its figures come from the recorded run, its links lead somewhere, and
the mkdocs site builds offline with --strict (docs/testing.md)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def load_gen_figures():
    spec = importlib.util.spec_from_file_location("gen_figures", ROOT / "docs" / "gen_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_figures"] = module
    spec.loader.exec_module(module)
    return module


gen_figures = load_gen_figures()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a link in code is not a link)."""
    return FENCE.sub("", path.read_text())


def anchors(path: Path) -> set[str]:
    return {slugify(re.sub(r"`", "", title), "-") for title in HEADING.findall(prose(path))}


# ------------------------------------------------------------------ figures

@pytest.fixture(scope="module")
def recorded():
    return gen_figures.current_run()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_is_what_the_recorded_run_gives(page, recorded):
    """Regenerate with `uv run python docs/gen_figures.py` after recording a new run."""
    text = page.read_text()
    assert gen_figures.render(text, recorded, str(page)) == text, (
        f"{page.relative_to(ROOT)}: its figures differ from docs/runs/{recorded.path.name}; "
        "run `uv run python docs/gen_figures.py`")


def test_the_readme_has_the_demos_table_naming_its_cpu_and_date(recorded):
    blocks = {m["name"]: m["body"] for m in gen_figures.BLOCK.finditer(
        (ROOT / "README.md").read_text())}
    assert set(blocks) == {"demo", "zoo-summary"}
    body = blocks["demo"]
    assert recorded.metrics["machine"]["cpu_model"] in body
    assert recorded.run["date"] in body
    table = [line for line in body.splitlines() if line.startswith("| ")]
    models = {line.split(" | ")[0].strip("|* ") for line in table[1:]}
    assert {"DigitsTrainer", "Freezer", "GraphOptimizer", "Quantizer"} <= models


def test_the_zoo_figures_name_each_runs_cpu_and_show_each_model_once():
    records = gen_figures.zoo_records()
    names = [entry["name"] for record in records for entry in record["models"]]
    assert len(names) == len(set(names))  # a model measured again shows only its newest
    summary = gen_figures.zoo_summary(None)
    for record in records:
        assert record["machine"]["cpu_model"] in summary and record["date"] in summary
    assert {"mobilenet_v2", "resnet50"} <= set(names)


def test_the_demo_page_has_every_row_and_the_search(recorded):
    text = (ROOT / "docs" / "demo.md").read_text()
    blocks = {m["name"]: m["body"] for m in gen_figures.BLOCK.finditer(text)}
    assert set(blocks) == {"demo-full", "search"}
    rows = [line for line in blocks["demo-full"].splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(recorded.metrics["models"])


def test_an_unknown_figures_block_is_refused(recorded):
    with pytest.raises(SystemExit, match="unknown figures block 'nope'"):
        gen_figures.render("<!-- figures:nope start -->\n<!-- figures:nope end -->", recorded,
                           "page.md")


def test_the_check_mode_finds_a_stale_block(tmp_path, monkeypatch, recorded):
    page = tmp_path / "page.md"
    page.write_text("<!-- figures:search start -->\nold figures\n<!-- figures:search end -->\n")
    monkeypatch.setattr(gen_figures, "documents", lambda: [page])
    monkeypatch.setattr(gen_figures, "ROOT", tmp_path)
    assert gen_figures.main(["--check"]) == 1
    assert "old figures" in page.read_text()  # --check changes nothing
    assert gen_figures.main([]) == 0 and gen_figures.main(["--check"]) == 0
    assert recorded.run["date"] in page.read_text()


# ------------------------------------------------------------------ links and the site

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_site_builds_offline_with_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                             "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "demo" / "index.html").is_file()
