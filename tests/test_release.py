"""One version everywhere: ``tinytrans.__version__`` is the single source, and the book footer,
the chapters' setup cell (``git+<repo>@v<version>``), the newest CHANGELOG entry and
CITATION.cff all agree with it. See "Releasing" in CONTRIBUTING.md."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

import tinytrans

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import chapters as chapter_tools  # noqa: E402

VERSION = tinytrans.__version__
SEMVER = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?")
HEADING = re.compile(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?\s*$", re.M)
KEEP_A_CHANGELOG = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def changelog_releases() -> list[tuple[str, str | None]]:
    return HEADING.findall((ROOT / "CHANGELOG.md").read_text())


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_version_is_semver_and_read_from_one_place():
    assert SEMVER.fullmatch(VERSION), VERSION
    assert chapter_tools.package_version() == VERSION
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "tinytrans.__version__" }' in pyproject
    project = re.search(r"^\[project\]\n(.*?)(?=^\[)", pyproject, re.M | re.S).group(1)
    assert not re.search(r"^version\s*=", project, re.M), "no second version in [project]"


def test_footer_shows_the_version_and_both_licences():
    footer = config()["html"]["extra_footer"]
    assert re.findall(r"\bv(\d[\w.]*\d)", footer) == [VERSION]
    assert "MIT" in footer
    assert "CC BY 4.0" in footer and "creativecommons.org/licenses/by/4.0/" in footer


def test_setup_cell_installs_the_tagged_release_not_a_branch():
    source = chapter_tools.setup_source()
    repo = config()["repository"]["url"].rstrip("/")
    assert f'"git+{repo}@v{VERSION}"' in source
    assert "@main" not in source


def test_changelog_newest_entry_is_this_version():
    releases = changelog_releases()
    assert releases[0] == ("Unreleased", ""), "keep an [Unreleased] section on top"
    newest, date = releases[1]
    assert newest == VERSION, f"CHANGELOG.md's newest release is {newest}, the package is {VERSION}"
    dt.date.fromisoformat(date)
    versions = [name for name, _ in releases[1:]]
    assert len(set(versions)) == len(versions)
    keys = [tuple(map(int, re.findall(r"\d+", v)[:3])) for v in versions]
    assert keys == sorted(keys, reverse=True), "newest release first"


def test_changelog_follows_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "https://keepachangelog.com/en/1.1.0/" in text
    categories = set(re.findall(r"^### (.+?)\s*$", text, re.M))
    assert categories <= KEEP_A_CHANGELOG, categories - KEEP_A_CHANGELOG
    repo = config()["repository"]["url"].rstrip("/")
    assert f"[Unreleased]: {repo}/compare/v{VERSION}...HEAD" in text
    for name, _ in changelog_releases()[1:]:
        assert f"[{name}]: {repo}/" in text, f"link reference for [{name}] is missing"


def test_citation_matches_the_version_the_changelog_and_the_repository():
    cff = citation()
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == VERSION
    assert str(cff["date-released"]) == changelog_releases()[1][1]
    assert cff["repository-code"] == config()["repository"]["url"].rstrip("/")
    assert set(cff["license"]) == {"MIT", "CC-BY-4.0"}


def test_citation_is_valid_cff_offline():
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.citation-file-format",
            str(ROOT / "CITATION.cff"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
