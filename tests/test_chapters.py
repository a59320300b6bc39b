"""Every chapter opens the same way (badges from the one repository URL, the canonical setup
cell). That the setup cell really installs tinytrans into a runtime that lacks it, on Colab's
pins and offline, is tests/test_colab.py (`make colab`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import chapters as chapter_tools  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def test_there_are_seven_chapters_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert len(CHAPTERS) == 7, [c.name for c in CHAPTERS]
    for chapter in CHAPTERS:
        assert f"chapters/{chapter.stem}" in toc, f"{chapter.name} is missing from _toc.yml"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_badges_point_at_the_configured_repository(chapter):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"].rstrip("/")
    nb = nbformat.read(chapter, as_version=4)
    badges = nb.cells[1].source
    links = re.findall(r"\]\((https://[^)]+)\)", badges)
    colab = [u for u in links if u.startswith("https://colab.research.google.com/github/")]
    kaggle = [u for u in links if u.startswith("https://kaggle.com/kernels/welcome?src=")]
    path = f"blob/main/chapters/{chapter.name}"
    assert colab == [f"https://colab.research.google.com/github/{repo[19:]}/{path}"]
    assert kaggle == [f"https://kaggle.com/kernels/welcome?src={repo}/{path}"]
    assert badges == chapter_tools.badges_source(chapter)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_setup_cell_is_canonical_and_skipped_by_nbval(chapter):
    nb = nbformat.read(chapter, as_version=4)
    setup = nb.cells[2]
    assert setup.cell_type == "code"
    assert setup.source == chapter_tools.setup_source(), "run `python scripts/chapters.py sync`"
    assert setup.source.startswith("# Setup:")
    assert setup.metadata.get("tags") == list(chapter_tools.SETUP_TAGS)
    assert "nbval-skip" in setup.metadata["tags"], "CI already has tinytrans: nbval skips it"
    from tinytrans import __version__

    assert f'RELEASE = "{__version__}"' in setup.source, "the setup cell installs this release"
    assert 'f"tinytrans=={RELEASE}"' in setup.source


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_the_course_shape(chapter):
    nb = nbformat.read(chapter, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "What you will learn" in text
    assert "Summary" in text
    exercises = re.findall(r"```\{exercise\}", text)
    solutions = re.findall(r"```\{solution-start\}", text)
    assert 3 <= len(exercises) <= 6, f"{chapter.name}: {len(exercises)} exercises"
    assert len(solutions) == len(exercises), "every exercise needs a hidden, executed solution"
    assert "{cite}" in text or "{cite:" in text, "chapters cite book/references.bib"
    assert "import tinytrans" in "\n".join(c.source for c in nb.cells[3:] if c.cell_type == "code")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_committed_notebook_is_small(chapter):
    assert chapter.stat().st_size < 400_000, "strip outputs: python scripts/chapters.py execute"
