"""Every "section N.M" the package's docstrings name exists in chapter N, under that title.

The package mirrors the chapters (d2l's rule: every function names its section). A chapter
that gains, loses or reorders sections must not leave the API reference pointing at the wrong
place, so the references are checked against the notebooks' headings.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinytrans"
#: "section 3.7" or "sections 3.7 and 5.4", optionally followed by the quoted title.
REFERENCE = re.compile(r"[Ss]ections? (\d+)\.(\d+)(?:,\s*\"([^\"]+)\")?")


def chapter_headings() -> dict[int, dict[int, str]]:
    """{chapter: {section number: title}} from each notebook's "## M. Title" headings."""
    found: dict[int, dict[int, str]] = {}
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        chapter = int(path.name[:2])
        sections: dict[int, str] = {}
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for line in "".join(cell["source"]).splitlines():
                match = re.match(r"^## (\d+)\. (.+)$", line)
                if match:
                    sections[int(match[1])] = match[2].strip()
        found[chapter] = sections
    return found


def references() -> list[tuple[str, int, int, str | None]]:
    """(file:line, chapter, section, quoted title) for every reference in the package."""
    refs = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        text = "\n".join(lines)
        for match in REFERENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            title = " ".join(match[3].split()) if match[3] else None
            refs.append((where, int(match[1]), int(match[2]), title))
    return refs


HEADINGS = chapter_headings()
REFERENCES = references()


def test_the_package_names_sections():
    assert len(REFERENCES) >= 20, "public docstrings should name their chapter sections"


@pytest.mark.parametrize(("where", "chapter", "section", "title"), REFERENCES)
def test_reference_points_at_an_existing_section(where, chapter, section, title):
    assert chapter in HEADINGS, f"{where}: there is no chapter {chapter}"
    sections = HEADINGS[chapter]
    assert section in sections, (
        f"{where}: chapter {chapter} has no section {section}; its sections are "
        + "; ".join(f"{n}. {t}" for n, t in sections.items())
    )
    if title is not None:
        assert title == sections[section], (
            f"{where}: section {chapter}.{section} is called {sections[section]!r}, not {title!r}"
        )


def public_definitions() -> list[tuple[str, str, str]]:
    """(file, name, docstring) of every function and class a module lists in ``__all__``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                names = set(ast.literal_eval(node.value))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names:
                found.append(
                    (str(path.relative_to(ROOT)), node.name, ast.get_docstring(node) or "")
                )
    return found


def test_every_public_definition_names_its_place_in_the_book():
    """d2l's rule: a public function or class says where the book teaches it."""
    place = re.compile(r"[Ss]ections? \d+\.\d+|[Cc]hapters? \d|appendix")
    silent = [
        f"{file}: {name}" for file, name, doc in public_definitions() if not place.search(doc)
    ]
    assert not silent, "name the section (e.g. '(section 3.7)') in: " + ", ".join(silent)
