"""What a reader of a committed notebook sees (GitHub, Colab, Kaggle, the book's sources):
no test machinery in the text, no figure placeholders, and checked outputs that can hold on
any machine. The rules are in CONTRIBUTING.md ("Checked outputs", "Figures")."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import chapters as chapter_tools  # noqa: E402

NOTEBOOKS = sorted([*(ROOT / "chapters").glob("*.ipynb"), *(ROOT / "book").glob("*.ipynb")])
NBVAL_TAGS = {"nbval-check-output", "nbval-ignore-output", "nbval-skip", "raises-exception"}
BOOK_TAGS = {"hide-input", "hide-output", "hide-cell", "remove-input", "remove-output",
             "remove-cell", "full-width", "margin"}  # fmt: skip
# A cell whose output is a time, a speed or a memory reading differs on every machine.
TIMING = re.compile(
    r"perf_counter|time\.time\(|time\.monotonic|latency_profile\(|peak_rss_mb\(|timeit"
)
DRAWS = re.compile(r"plt\.show\(|_explorer\(|\.show\(\)$", re.MULTILINE)


def code_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_test_marker_in_any_cell(path):
    for index, cell in code_cells(path):
        assert "NBVAL" not in cell.source, (
            f"{path.name} cell {index}: a reader would see the marker; use the cell tag "
            "nbval-check-output / nbval-ignore-output / nbval-skip instead"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tags_are_known(path):
    for index, cell in code_cells(path):
        unknown = set(cell.metadata.get("tags", [])) - NBVAL_TAGS - BOOK_TAGS
        assert not unknown, f"{path.name} cell {index}: unknown tags {sorted(unknown)}"
        checked = {"nbval-check-output", "nbval-ignore-output"} <= set(
            cell.metadata.get("tags", [])
        )
        assert not checked, f"{path.name} cell {index}: checked and ignored at once"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_carries_no_figures(path):
    """Figures are drawn by the book build and by the reader's run, never committed."""
    for index, cell in code_cells(path):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            images = [m for m in chapter_tools.IMAGE_MIMES if m in data]
            assert not images, f"{path.name} cell {index}: committed {images}"
            assert "<Figure size" not in str(data.get("text/plain", "")), (
                f"{path.name} cell {index}: a <Figure size ...> placeholder; "
                "run `python scripts/chapters.py execute` to save the chapter"
            )


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_setup_is_the_first_code_cell_and_collapsed(path):
    _, setup = code_cells(path)[0]
    assert chapter_tools._is_setup(setup), f"{path.name}: the first code cell is the setup cell"
    assert set(chapter_tools.SETUP_TAGS) <= set(setup.metadata.get("tags", []))
    assert setup.source.startswith("# Setup:"), "the setup cell opens with what it does"


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_checked_cells_hold_on_any_machine(path):
    """A checked cell states what must hold: no timings, and no figure (its committed copy has
    no output to compare with, CONTRIBUTING.md "Figures")."""
    checked = [
        (i, c) for i, c in code_cells(path) if "nbval-check-output" in c.metadata.get("tags", [])
    ]
    assert checked, f"{path.name} checks no output"
    for index, cell in checked:
        assert not TIMING.search(cell.source), f"{path.name} cell {index}: a timing is checked"
        assert not DRAWS.search(cell.source), f"{path.name} cell {index}: a figure is checked"
        assert cell.get("outputs"), f"{path.name} cell {index}: checked but has no output"


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_figure_code_is_collapsed(path):
    """The page shows the figure; its matplotlib code is one click away (``hide-input``)."""
    for index, cell in code_cells(path):
        if "plt.show()" in cell.source:
            assert "hide-input" in cell.metadata.get("tags", []), (
                f"{path.name} cell {index}: a figure cell shows its axes code; tag it hide-input"
            )


def test_the_book_build_skips_every_ignored_folder():
    """A virtual environment in the checkout (``.colab/``, ``.venv/``) holds Markdown files of
    installed packages; the book must not read them as pages."""
    import yaml

    excluded = set(yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"])
    folders = [
        line.strip()
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip().endswith("/") and not line.startswith("#") and "*" not in line
    ]
    # Caches at any depth hold no Markdown; the checkpoints have their own "**" pattern.
    anywhere = {"__pycache__/", ".ipynb_checkpoints/"}
    missing = [f for f in folders if f"{f}*" not in excluded and f not in anywhere]
    assert missing == [], f"add {missing} to exclude_patterns in _config.yml"
