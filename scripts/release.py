"""One version everywhere, and the release notes.

    python scripts/release.py check            # every place agrees with tinytrans.__version__
    python scripts/release.py notes            # the CHANGELOG section of this version
    python scripts/release.py bump 0.3.0       # set a new version everywhere (then sync chapters)

``tinytrans/__init__.py`` holds the version. The book footer (``_config.yml``), ``CITATION.cff``,
the newest CHANGELOG section and every chapter's setup cell (``tinytrans==<version>``) must say
the same: ``check`` lists every disagreement, ``tests/test_release.py`` runs it, and so does the
release workflow (``.github/workflows/release.yml``) before it builds, publishes and tags.

Version policy: the version goes up with every change a notebook depends on (a new function a
chapter calls, a changed result or signature), so a chapter's setup cell always names a release
that has what it needs.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "tinytrans" / "__init__.py"
CONFIG = ROOT / "_config.yml"
CITATION = ROOT / "CITATION.cff"
CHANGELOG = ROOT / "CHANGELOG.md"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)
SEMVER = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?")
HEADING = re.compile(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?\s*$", re.M)
FOOTER = re.compile(r"tinytrans v(\S+) ·")


def version() -> str:
    return VERSION_LINE.search(INIT.read_text()).group(1)


def changelog_releases() -> list[tuple[str, str]]:
    """``[(name, date), ...]`` of the CHANGELOG headings, newest first ("Unreleased" included)."""
    return HEADING.findall(CHANGELOG.read_text())


def newest_release() -> tuple[str, str]:
    return next((n, d) for n, d in changelog_releases() if n != "Unreleased")


def notes(name: str | None = None) -> str:
    """The body of the CHANGELOG section ``name`` (default: this version)."""
    name = name or version()
    text = CHANGELOG.read_text()
    match = re.search(
        rf"^## \[{re.escape(name)}\][^\n]*\n(.*?)(?=^## \[|^\[[^\]]+\]: )", text, re.M | re.S
    )
    if not match:
        raise SystemExit(f"CHANGELOG.md has no section '## [{name}]'")
    return match.group(1).strip() + "\n"


def problems() -> list[str]:
    """Every place that disagrees with ``tinytrans.__version__``, each with its fix."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import yaml

    import chapters as chapter_tools

    want = version()
    found = []
    if not SEMVER.fullmatch(want):
        found.append(f"tinytrans/__init__.py: {want!r} is not X.Y.Z")
    footer = yaml.safe_load(CONFIG.read_text())["html"]["extra_footer"]
    if FOOTER.findall(footer) != [want]:
        found.append(
            f"_config.yml: the footer says {FOOTER.findall(footer)}, not 'tinytrans v{want} ·'"
        )
    citation = yaml.safe_load(CITATION.read_text())
    name, date = newest_release()
    if name != want:
        found.append(
            f"CHANGELOG.md: the newest section is [{name}], add '## [{want}] - YYYY-MM-DD'"
        )
    else:
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            found.append(f"CHANGELOG.md: the [{want}] heading needs a date (' - YYYY-MM-DD')")
    if str(citation.get("version")) != want:
        found.append(f"CITATION.cff: version is {citation.get('version')}, not {want}")
    if str(citation.get("date-released")) != date:
        found.append(f"CITATION.cff: date-released is {citation.get('date-released')}, not {date}")
    repo = yaml.safe_load(CONFIG.read_text())["repository"]["url"].rstrip("/")
    if f"[{want}]: {repo}/" not in CHANGELOG.read_text():
        found.append(f"CHANGELOG.md: the link reference '[{want}]: {repo}/...' is missing")
    setup = chapter_tools.setup_source()
    for chapter in sorted((ROOT / "chapters").glob("*.ipynb")):
        import nbformat

        cells = nbformat.read(chapter, as_version=4).cells
        if len(cells) < 3 or cells[2].source != setup:
            found.append(
                f"{chapter.relative_to(ROOT)}: the setup cell is not the one for {want}; "
                "run `python scripts/chapters.py sync`"
            )
    return found


def bump(new: str) -> None:
    """Write ``new`` into __init__.py, the footer, CITATION.cff and a new CHANGELOG section."""
    if not SEMVER.fullmatch(new):
        raise SystemExit(f"{new!r} is not a version X.Y.Z")
    old = version()
    today = dt.date.today().isoformat()
    INIT.write_text(VERSION_LINE.sub(f'__version__ = "{new}"', INIT.read_text()))
    CONFIG.write_text(CONFIG.read_text().replace(f"tinytrans v{old} ·", f"tinytrans v{new} ·"))
    citation = CITATION.read_text()
    citation = re.sub(r"^version: .*$", f"version: {new}", citation, flags=re.M)
    citation = re.sub(r"^date-released: .*$", f'date-released: "{today}"', citation, flags=re.M)
    CITATION.write_text(citation)
    text = CHANGELOG.read_text()
    repo_match = re.search(r"^\[[^\]]+\]: (https://github.com/[^/]+/[^/]+)/", text, re.M)
    repo = repo_match.group(1)
    if "## [Unreleased]" in text:
        text = text.replace("## [Unreleased]", f"## [{new}] - {today}", 1)
    else:
        first = HEADING.search(text)
        text = text[: first.start()] + f"## [{new}] - {today}\n\n" + text[first.start() :]
    text = re.sub(
        r"^\[Unreleased\]: .*$", f"[Unreleased]: {repo}/compare/v{new}...HEAD", text, flags=re.M
    )
    link = f"[{new}]: {repo}/compare/v{old}...v{new}"
    text = re.sub(r"^(\[Unreleased\]: .*)$", rf"\1\n{link}", text, count=1, flags=re.M)
    CHANGELOG.write_text(text)
    print(f"{old} -> {new}. Now: python scripts/chapters.py sync, fill the CHANGELOG section.")


def main(argv: list[str]) -> int:
    if argv == ["check"]:
        found = problems()
        for problem in found:
            print(problem)
        if not found:
            print(
                f"tinytrans {version()}: __init__, footer, CITATION, CHANGELOG, setup cells agree"
            )
        return 1 if found else 0
    if argv == ["notes"]:
        print(notes(), end="")
        return 0
    if argv == ["version"]:
        print(version())
        return 0
    if len(argv) == 2 and argv[0] == "bump":
        bump(argv[1])
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
