"""Numbers the chapters' prose quotes from a run agree with that run's executed outputs.

A chapter's markdown often restates a figure its code printed ("a loss of 1.46", "5.8 orders of
magnitude"). When the code or the run changes and the sentence does not, the book contradicts
itself. This test reads every markdown cell of every committed (executed) chapter, takes each
decimal number of its prose (``1.46``, ``0.25``, ``3.8×``, ``1.3 %``), and requires that the
committed outputs or code of the same chapter hold a number that rounds to it at the precision
the prose states (``1.46`` stands for anything in [1.455, 1.465]; a number may also appear as a
percentage of a printed fraction, or in thousands, millions or billions of a printed count).

Numbers that do not come from the chapter's own run (a paper's figure, a seed's claim, an
analytic constant the prose derives) are listed in ``NOT_FROM_THE_RUN`` with the reason, per
chapter; an entry that no longer occurs in the prose fails the test too, so the list stays true.
A chapter's errata table is generated from the book's seed checks (``scripts/chapters.py
errata``, checked by ``tests/test_errata.py``): its numbers count as computed, like outputs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "book"))
from seed_checks import CHAPTER_TABLES  # noqa: E402

#: Ids of the markdown cells that hold a chapter's generated errata table.
GENERATED = {table.cell_id for table in CHAPTER_TABLES.values()}

NUMBER = re.compile(r"(?<![\w.^/])(\d{1,3}(?:,\d{3})+|\d+)\.(\d+)(?![\w.]*\d)")
ANY_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
SCALES = (1, 100, 1e-3, 1e-6, 1e-9, 1e-12)

#: Per chapter: prose numbers that are not outputs of the chapter's run, and why.
NOT_FROM_THE_RUN: dict[str, dict[str, str]] = {
    "01_architecture": {
        "2.5": "a seed's figure for the TinyTransformer (the errata)",
        "2.45": "a seed's figure for the TinyTransformer (the errata)",
        "0.95": "a seed's own TinyLlama components, 65.5M + 22 x 40M",
        "0.32": "RoPE's theta_2 = 10000^(-4/32), derived in the prose",
        "0.83": "3/sqrt(13), RMSNorm's expected mean, derived in the prose",
        "0.31": "4/13, RMSNorm's expected variance, derived in the prose",
    },
    "02_tokenization": {
        "12.8": "seed 000's figure for GPT-3's embeddings",
        "0.9": "the training share of a random split, a setting",
        "5.3": "0.1^2 / (1 - 0.9^2), derived in the prose",
    },
    "04_inference": {
        "1.14": "the benchmark report's int8 / fp32 latency ratio (benchmarks/report.md)",
    },
    "05_sizing": {
        "2.45": "a seed's figure for the TinyTransformer (the errata)",
    },
    "06_design_decisions": {
        "341.3": "8/3 x 128, derived in the prose",
        "2.2": "d_ff / d_model of the shape variants, from the printed widths",
    },
    "07_more_decisions": {
        "4.3": "Student's t critical value for 2 degrees of freedom at 5 %, a constant",
        "3.3": "chapter 3's unigram loss of the characters (nats per character), quoted",
        "2.5": "chapter 3's bigram loss of the characters (nats per character), quoted",
    },
}


def _numbers_in(text: str) -> list[float]:
    found = []
    for match in ANY_NUMBER.findall(text):
        try:
            found.append(float(match.replace(",", "")))
        except ValueError:
            continue
    return found


def _run_numbers(nb) -> list[float]:
    values = []
    for cell in nb.cells:
        if cell.get("id") in GENERATED:
            values += _numbers_in(cell.source)
        if cell.cell_type != "code":
            continue
        values += _numbers_in(cell.source)
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            values += _numbers_in(text if isinstance(text, str) else "".join(text))
    return values


def _agrees(quoted: str, decimals: int, values: list[float]) -> bool:
    target = float(quoted.replace(",", ""))
    half = 0.5 * 10**-decimals * (1 + 1e-9)
    return any(abs(v * s - target) <= half for v in values for s in SCALES)


def _prose(nb) -> str:
    # Markdown cells only; inline code and math hold formulas and settings, not quoted results.
    text = "\n".join(
        c.source for c in nb.cells if c.cell_type == "markdown" and c.get("id") not in GENERATED
    )
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    return re.sub(r"\$[^$]*\$", " ", text)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_prose_numbers_come_from_the_run(chapter):
    nb = nbformat.read(chapter, as_version=4)
    values = _run_numbers(nb)
    allowed = NOT_FROM_THE_RUN.get(chapter.stem, {})
    prose = _prose(nb)
    wrong = []
    for whole, fraction in NUMBER.findall(prose):
        quoted = f"{whole}.{fraction}"
        if quoted in allowed:
            continue
        if not _agrees(quoted, len(fraction), values):
            wrong.append(quoted)
    assert not wrong, f"{chapter.name}: prose numbers no output or code gives: {sorted(set(wrong))}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_exceptions_still_occur(chapter):
    prose = _prose(nbformat.read(chapter, as_version=4))
    quoted = {f"{whole}.{fraction}" for whole, fraction in NUMBER.findall(prose)}
    stale = set(NOT_FROM_THE_RUN.get(chapter.stem, {})) - quoted
    assert not stale, f"{chapter.name}: NOT_FROM_THE_RUN lists numbers the prose no longer has"
