"""Every chapter opens the same way (badges from the one repository URL, the canonical setup
cell), and the setup cell really installs tinytrans into a runtime that lacks it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import chapters as chapter_tools  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
FRESH_VENV_CHAPTER = "05_sizing.ipynb"  # the fastest chapter: the test is about installation


def test_there_are_six_chapters_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert len(CHAPTERS) == 6, [c.name for c in CHAPTERS]
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
    assert setup.source == chapter_tools.setup_source()
    assert setup.source.startswith("# NBVAL_SKIP")
    from tinytrans import __version__

    assert f"@v{__version__}" in setup.source, "the setup cell must install the tagged release"


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


@pytest.mark.slow
def test_setup_cell_installs_tinytrans_into_a_fresh_environment(tmp_path):
    """Colab/Kaggle path: a runtime without tinytrans runs a whole chapter after the setup cell
    installs it from ``TINYTRANS_SOURCE`` (here: this checkout, so nothing leaves the machine).

    The fresh environment sees this environment's third-party packages through a ``.pth``
    line (no torch download) but not tinytrans, whose editable hook is not processed there.
    """
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('tinytrans'))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.stdout.strip() == "None", "tinytrans must not be importable before the setup cell"

    chapter = ROOT / "chapters" / FRESH_VENV_CHAPTER
    work = tmp_path / "chapters"
    work.mkdir()
    (work / chapter.name).write_bytes(chapter.read_bytes())
    env = {
        **os.environ,
        "TINYTRANS_SOURCE": str(ROOT),
        "CUDA_VISIBLE_DEVICES": "",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)
    runner = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=600, kernel_name='python3',\n"
        "               resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
        "setup = nb.cells[2]\n"
        "print(''.join(o.get('text', '') for o in setup.outputs))\n"
    )
    result = subprocess.run(
        [str(python), "-c", runner, str(work / chapter.name), str(work)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "tinytrans" in result.stdout and "device" in result.stdout
    installed = subprocess.run(
        [str(python), "-m", "pip", "show", "tinytrans"], capture_output=True, text=True
    )
    assert f"Location: {site}" in installed.stdout, installed.stdout
