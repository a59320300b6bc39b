"""One version everywhere: ``tinytrans.__version__`` is the single source, and the chapters'
setup cells (``tinytrans==<version>`` from PyPI, the ``v<version>`` tag as fallback), the newest
CHANGELOG section, the book footer, CITATION.cff, the Binder environment and the release
workflow that publishes and tags it all agree. See "Releasing" in CONTRIBUTING.md and
``scripts/release.py``."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

import tinytrans

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import release  # noqa: E402

import chapters as chapter_tools  # noqa: E402

VERSION = tinytrans.__version__
SEMVER = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?")
HEADING = re.compile(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?\s*$", re.M)
KEEP_A_CHANGELOG = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def repo() -> str:
    return config()["repository"]["url"].rstrip("/")


def changelog_releases() -> list[tuple[str, str | None]]:
    return [(n, d) for n, d in HEADING.findall((ROOT / "CHANGELOG.md").read_text())]


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def release_workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())


def run_lines(job: dict) -> list[str]:
    return [line.strip() for s in job["steps"] for line in s.get("run", "").splitlines()]


def test_version_is_semver_and_read_from_one_place():
    assert SEMVER.fullmatch(VERSION), VERSION
    assert chapter_tools.package_version() == VERSION == release.version()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "tinytrans.__version__" }' in pyproject
    project = re.search(r"^\[project\]\n(.*?)(?=^\[)", pyproject, re.M | re.S).group(1)
    assert not re.search(r"^version\s*=", project, re.M), "no second version in [project]"


def test_release_check_finds_nothing_to_fix():
    """scripts/release.py check (the release workflow's gate) agrees with this test file."""
    assert release.problems() == []


def test_footer_shows_the_version_and_both_licences():
    footer = config()["html"]["extra_footer"]
    assert re.findall(r"\bv(\d[\w.]*\d)", footer) == [VERSION]
    assert f"tinytrans v{VERSION} ·" in footer
    assert "MIT" in footer
    assert "CC BY 4.0" in footer and "creativecommons.org/licenses/by/4.0/" in footer


def test_setup_cell_installs_exactly_this_release():
    source = chapter_tools.setup_source()
    assert source.startswith("# Setup:")
    assert f'RELEASE = "{VERSION}"' in source
    assert 'plans = [[f"tinytrans=={RELEASE}"], [GIT_TAG]]' in source, "PyPI first, then the tag"
    assert f'GIT_TAG = "git+{repo()}@v{VERSION}"' in source
    assert f'CORPUS = "{chapter_tools.CORPUS_PIN}"' in source
    assert "@main" not in source
    compile(source, "setup cell", "exec")


def test_every_chapter_has_this_releases_setup_cell():
    for chapter in CHAPTERS:
        setup = nbformat.read(chapter, as_version=4).cells[2]
        assert setup.source == chapter_tools.setup_source(), (
            f"{chapter.name}: run `python scripts/chapters.py sync`"
        )


def test_changelog_newest_section_is_this_version():
    releases = changelog_releases()
    named = [(name, date) for name, date in releases if name != "Unreleased"]
    assert [name for name, _ in releases].count("Unreleased") <= 1
    if releases[0][0] != named[0][0]:
        assert releases[0] == ("Unreleased", ""), "only [Unreleased] may come before the newest"
    newest, date = named[0]
    assert newest == VERSION, f"CHANGELOG.md's newest release is {newest}, the package is {VERSION}"
    dt.date.fromisoformat(date)
    versions = [name for name, _ in named]
    assert len(set(versions)) == len(versions)
    keys = [tuple(map(int, re.findall(r"\d+", v)[:3])) for v in versions]
    assert keys == sorted(keys, reverse=True), "newest release first"
    assert release.notes().strip(), "the release notes (the CHANGELOG section) are empty"


def test_changelog_follows_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "https://keepachangelog.com/en/1.1.0/" in text
    categories = set(re.findall(r"^### (.+?)\s*$", text, re.M))
    assert categories <= KEEP_A_CHANGELOG, categories - KEEP_A_CHANGELOG
    assert f"[Unreleased]: {repo()}/compare/v{VERSION}...HEAD" in text
    for name, _ in changelog_releases():
        assert f"[{name}]: {repo()}/" in text, f"link reference for [{name}] is missing"


def test_citation_matches_the_version_the_changelog_and_the_repository():
    cff = citation()
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == VERSION
    assert str(cff["date-released"]) == release.newest_release()[1]
    assert cff["repository-code"] == repo()
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


def test_binder_environment_installs_this_release_and_the_locked_torch():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert f"tinytrans=={VERSION}" in pip
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    torch = re.search(r"^torch==(\S+)$", lock, re.M).group(1)
    assert f"torch=={torch}" in pip
    assert any(d.startswith("jupyterlab") for d in env["dependencies"] if isinstance(d, str))
    assert len(pip) <= 4, "environment.yml is the light reader environment, not CI's lock"


def test_release_workflow_builds_checks_publishes_and_tags_this_version():
    workflow = release_workflow()
    on = workflow.get("on", workflow.get(True))
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["paths"] == ["tinytrans/__init__.py"], "a version bump releases"
    assert "workflow_dispatch" in on
    assert workflow["permissions"] == {"contents": "read"}
    build, publish, tag = (workflow["jobs"][k] for k in ("build", "publish", "tag"))
    lines = run_lines(build)
    assert "version=$(python scripts/release.py version)" in lines
    assert 'if git rev-parse -q --verify "refs/tags/v$version" >/dev/null; then' in lines
    order = [
        "python scripts/release.py check",
        "python -m build",
        "python -m twine check --strict dist/*",
    ]
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)
    assert any("scripts/offline_bundle.py" in line for line in lines)
    assert "python scripts/release.py notes > release-notes.md" in lines
    # trusted publishing: an OIDC token, no password or API token
    assert publish["if"] == "needs.build.outputs.released == 'false'"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    step = next(s for s in publish["steps"] if "pypa/gh-action-pypi-publish" in s.get("uses", ""))
    assert not step.get("with"), "trusted publishing takes no password"
    # the tag the setup cell falls back to, after PyPI has the release
    assert tag["needs"] == ["build", "publish"]
    assert tag["permissions"] == {"contents": "write"}
    tag_lines = run_lines(tag)
    assert 'git tag -a "v$VERSION" -m "tinytrans $VERSION" "$GITHUB_SHA"' in tag_lines
    assert 'git push origin "v$VERSION"' in tag_lines
    assert any(line.startswith('gh release create "v$VERSION"') for line in tag_lines)
    assert tag["env"]["VERSION"] == "${{ needs.build.outputs.version }}"
    # the setup cell names the same tag the workflow pushes
    assert f"@v{VERSION}" in chapter_tools.setup_source()


def test_version_policy_is_written_down():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert (
        "The version goes up with every" in changelog
        and "change a notebook depends on" in changelog
    )
    assert "change a notebook depends on" in release.__doc__


def test_release_bump_writes_every_place(tmp_path, monkeypatch):
    """``scripts/release.py bump`` on copies: afterwards only the chapters need a sync."""
    for name in ("CHANGELOG.md", "CITATION.cff", "_config.yml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "__init__.py").write_text((ROOT / "tinytrans" / "__init__.py").read_text())
    monkeypatch.setattr(release, "CHANGELOG", tmp_path / "CHANGELOG.md")
    monkeypatch.setattr(release, "CITATION", tmp_path / "CITATION.cff")
    monkeypatch.setattr(release, "CONFIG", tmp_path / "_config.yml")
    monkeypatch.setattr(release, "INIT", tmp_path / "__init__.py")
    release.bump("9.8.7")
    assert release.version() == "9.8.7"
    assert release.newest_release() == ("9.8.7", dt.date.today().isoformat())
    text = (tmp_path / "CHANGELOG.md").read_text()
    assert f"[Unreleased]: {repo()}/compare/v9.8.7...HEAD" in text
    assert f"[9.8.7]: {repo()}/compare/v{VERSION}...v9.8.7" in text
    assert "tinytrans v9.8.7 ·" in (tmp_path / "_config.yml").read_text()
    cff = yaml.safe_load((tmp_path / "CITATION.cff").read_text())
    assert cff["version"] == "9.8.7"
    problems = release.problems()  # the chapters compare against the real version: sync
    assert all("scripts/chapters.py sync" in p for p in problems), problems
