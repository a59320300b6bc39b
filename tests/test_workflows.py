"""The GitHub Actions workflows in ``.github/workflows``: valid against GitHub's workflow schema
(checked offline with check-jsonschema's vendored copy), and running the README's commands, so
CI tests what a reader runs. Also ``scripts/colab_check.py``, which the Colab workflow runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
COLAB_IMAGE = "us-docker.pkg.dev/colab-images/public/cpu-runtime:latest"

# Any attempt to reach the network fails at once: the schema check must work offline.
OFFLINE = {
    **os.environ,
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        env=OFFLINE,
        timeout=300,
    )


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOW_DIR / name).read_text())


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    return {on: None} if isinstance(on, str) else dict(on)


def commands(job: dict) -> list[str]:
    """Every shell line a job runs (continuations joined, comments dropped)."""
    lines = []
    for step in job.get("steps", []):
        text = step.get("run", "").replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(re.sub(r"\s+", " ", line))
    return lines


def uses(job: dict) -> list[str]:
    return [step["uses"] for step in job.get("steps", []) if "uses" in step]


def readme_commands() -> list[str]:
    """The two commands of the README's "The two commands" block."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_five_workflows_exist():
    names = {"tests.yml", "book.yml", "colab.yml", "linkcheck.yml", "release.yml"}
    assert {p.name for p in WORKFLOWS} == names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates_against_the_github_schema_offline(workflow):
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        result = check_jsonschema(schema, workflow)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "validation done" in result.stdout


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    text = (WORKFLOW_DIR / "tests.yml").read_text().replace("runs-on:", "runs_on:", 1)
    broken.write_text(text)
    result = check_jsonschema("vendor.github-workflows", broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "runs-on" in result.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_make_target_and_script_a_workflow_runs_exists(workflow):
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for line in commands(job):
            for target in re.findall(r"\bmake ([a-z][\w-]*)", line):
                assert target in targets, f"{workflow.name}: `make {target}` is not in the Makefile"
            for script in re.findall(r"\b(scripts/[\w./-]+)", line):
                assert (ROOT / script).is_file(), f"{workflow.name}: {script} does not exist"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_token_is_read_only_by_default(workflow):
    assert load(workflow.name)["permissions"] == {"contents": "read"}


def test_readme_has_the_two_commands():
    assert readme_commands() == ["make book", "make test"]


def test_tests_workflow_runs_make_test_in_the_pinned_environment():
    workflow = load("tests.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert workflow["env"]["PIP_EXTRA_INDEX_URL"] == CPU_INDEX
    job = workflow["jobs"]["make-test"]
    assert "make test" in readme_commands()
    assert "make test" in commands(job), "CI must run exactly the README's test command"
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")
    # the lock's Python, on Debian (make chromium installs Debian's chromium as root)
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    python = re.search(r"^# The exact environment .*?, Python (\d+\.\d+):", lock, re.M)
    assert job["container"]["image"] == f"python:{python.group(1)}-bookworm"
    cached = [
        s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")
    ]
    assert "~/.cache/pip" in cached


def _lower_bound(requirements: list[str], name: str) -> str:
    for requirement in requirements:
        match = re.fullmatch(rf"{re.escape(name)}>=([\w.]+)", requirement.replace(" ", ""))
        if match:
            return match.group(1)
    raise AssertionError(f"no lower bound for {name} in {requirements}")


def _pyproject_lists() -> dict[str, list[str]]:
    """The dependency lists of pyproject.toml (no tomllib: the lowest job runs Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    lists = {}
    for name, body in re.findall(r"^([\w-]+)\s*=\s*\[(.*?)\]", text, re.M | re.S):
        lists[name] = re.findall(r'"([^"]+)"', body)
    lists["requires-python"] = re.findall(r'^requires-python\s*=\s*"([^"]+)"', text, re.M)
    return lists


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _lowest_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_lowest_job_runs_make_lowest_on_the_lowest_python():
    job = load("tests.yml")["jobs"]["lowest"]
    lists = _pyproject_lists()
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert lists["requires-python"] == [f">={setup['with']['python-version']}"]
    assert commands(job) == ["make lowest LOWEST_PYTHON=python"]
    assert load("tests.yml")["env"]["PIP_EXTRA_INDEX_URL"] == CPU_INDEX  # torch's CPU build
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lowest:\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "-c requirements/lowest.txt" in recipe and '-e ".[test]"' in recipe
    assert 'pytest tests -m "not browser and not slow"' in recipe
    assert "LOWEST_PYTHON ?= python3.11" in makefile
    assert lists["requires-python"] == [">=3.11"]


def test_lowest_pins_are_the_lower_bounds_of_pyproject():
    """Each runtime dependency is tested at its floor (the same minor release; for torch the
    exact release), and transformers at a release the hf and test extras allow."""
    lists = _pyproject_lists()
    pins = _lowest_pins()
    for requirement in lists["dependencies"]:
        name = re.match(r"[\w-]+", requirement).group(0).lower()
        floor = _lower_bound(lists["dependencies"], name)
        assert name in pins, f"requirements/lowest.txt has no pin for {name}"
        pinned = _version_tuple(pins[name])
        assert pinned[: len(_version_tuple(floor))] == _version_tuple(floor), (
            name,
            floor,
            pins[name],
        )
    assert pins["torch"] == _lower_bound(lists["dependencies"], "torch") + ".0"
    for extra in ("hf", "test"):
        floor = _lower_bound(lists[extra], "transformers")
        assert _version_tuple(pins["transformers"]) >= _version_tuple(floor), (extra, floor)


def test_book_workflow_builds_with_make_book_and_deploys_to_pages():
    workflow = load("book.yml")
    assert workflow["env"]["PIP_EXTRA_INDEX_URL"] == CPU_INDEX
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert "make book" in readme_commands()
    assert "make book" in commands(build)
    assert "bash scripts/build_pdf.sh --install-deps" in commands(build)
    upload = next(s for s in build["steps"] if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build"
    assert "github.event_name == 'push'" in deploy["if"] and "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert any(u.startswith("actions/deploy-pages@") for u in uses(deploy))
    assert "main" in triggers(workflow)["push"]["branches"]


def test_colab_workflow_runs_the_released_package_in_the_colab_cpu_image_weekly():
    workflow = load("colab.yml")
    assert triggers(workflow)["schedule"][0]["cron"].endswith("* * 1")  # weekly
    assert "workflow_dispatch" in triggers(workflow)
    assert workflow["env"]["COLAB_IMAGE"] == COLAB_IMAGE
    job = workflow["jobs"]["chapters"]
    lines = commands(job)
    text = "\n".join(lines)
    # what readers install: no TINYTRANS_SOURCE, and no package source in the container
    assert "TINYTRANS_SOURCE" not in text
    assert "cp -r chapters reader/chapters" in lines
    assert '--volume "$GITHUB_WORKSPACE/reader:/content/reader"' in text
    assert "$GITHUB_WORKSPACE:" not in text, "the checkout (./tinytrans) must not be mounted"
    assert "assert u.find_spec('tinytrans') is None" in text
    assert "docker exec colab python3 colab_check.py chapters --report colab-report.md" in lines
    assert "release=$(python3 scripts/release.py version)" in lines
    assert any("version('tinytrans')" in line and "$RELEASE" in line for line in lines)
    assert "--nbval-lax" in text
    assert job["permissions"]["issues"] == "write"
    issue = next(s for s in job["steps"] if "github-script" in s.get("uses", ""))
    assert issue["if"] == "failure()"
    assert "issues.create(" in issue["with"]["script"]
    assert "'execution-failure', 'colab'" in issue["with"]["script"]


def test_linkcheck_workflow_checks_the_built_book_weekly_and_on_demand():
    workflow = load("linkcheck.yml")
    assert {"schedule", "workflow_dispatch"} == set(triggers(workflow))
    lines = commands(workflow["jobs"]["linkcheck"])
    assert "make book" in lines
    assert any("jupyter-book build . --builder linkcheck" in line for line in lines)


# scripts/colab_check.py ---------------------------------------------------------------------


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def test_colab_check_runs_every_cell_and_reports_the_failing_one(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")  # in the pinned environment (the book); not in .[test]
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import colab_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    good = _notebook(tmp_path / "01_good.ipynb", "# NBVAL_SKIP\nx = 1", "print(x + 1)")
    bad = _notebook(tmp_path / "02_bad.ipynb", "y = 2", "raise ValueError('broken chapter')")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = tmp_path / "report.md"

    status = colab_check.main([str(good), str(bad), "--report", str(report), "--timeout", "120"])

    assert status == 1
    text = report.read_text()
    assert "| `01_good.ipynb` | passed |" in text
    assert "| `02_bad.ipynb` | **failed** (cell 2) |" in text
    assert "ValueError: broken chapter" in text
    assert "1 of 2 chapters passed." in text
    assert text in summary.read_text()
    assert colab_check.main([str(good), "--timeout", "120"]) == 0


def test_workflow_files_are_plain_yaml_without_tabs():
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        assert "\t" not in text, workflow.name
        json.dumps(yaml.safe_load(text), default=str)  # loads, and is data only
