"""Book build: how long every page of the book takes to execute, against its budget.

Executes each notebook listed in ``_toc.yml`` (the six chapters and the notebook pages of the
appendices) from a clean kernel on the CPU, as the book build and nbval do, one after the
other, and records the wall time of each. The budgets come from the course's promise: every
chapter runs in at most three minutes on two CPU cores, the whole book in at most ten.
Nothing is written back into the notebooks. Run: ``python benchmarks/bench_book.py``.

``--from-cache [DIR]`` measures nothing itself: it reads the execution times that the last
``make book`` recorded in its jupyter-cache (default ``_build/.jupyter_cache``), the newest
record of each page, so a fresh build's timings can go into the report without running the
chapters a second time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_BUDGET_S = 180.0
BOOK_BUDGET_S = 600.0


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The ``.ipynb`` pages of ``_toc.yml``, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return [root / f"{name}.ipynb" for name in files if (root / f"{name}.ipynb").exists()]


def execute_seconds(path: Path, timeout: int = 900) -> float:
    """Wall seconds to run ``path`` top to bottom in a fresh kernel, on the CPU."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def cached_seconds(cache_dir: Path) -> dict[str, float]:
    """``{page path in the book: seconds}`` from the newest jupyter-cache record of each page
    (the cache lives in ``<book>/_build/.jupyter_cache``, so it can come from another clone)."""
    from jupyter_cache import get_cache

    book = cache_dir.resolve().parent.parent
    records = sorted(get_cache(str(cache_dir)).list_cache_records(), key=lambda r: r.created)
    return {
        Path(r.uri).resolve().relative_to(book).as_posix(): float(r.data["execution_seconds"])
        for r in records
        if Path(r.uri).resolve().is_relative_to(book)
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-cache",
        nargs="?",
        const=str(ROOT / "_build" / ".jupyter_cache"),
        metavar="DIR",
        help="read the last book build's execution times instead of executing",
    )
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the reference build has no GPU
    os.environ.pop("MPLBACKEND", None)  # figures are drawn, as in the book build
    os.environ["TINYTRANS_STATIC_WIDGETS"] = "1"  # as `make book` runs them
    cached = cached_seconds(Path(args.from_cache)) if args.from_cache else None
    pages = []
    for path in toc_notebooks():
        if cached is None:
            seconds = execute_seconds(path)
        elif path.relative_to(ROOT).as_posix() in cached:
            seconds = cached[path.relative_to(ROOT).as_posix()]
        else:
            raise SystemExit(f"{path} has no record in {args.from_cache}: run `make book` first.")
        is_chapter = path.parent.name == "chapters"
        pages.append(
            {
                "page": path.relative_to(ROOT).as_posix(),
                "seconds": round(seconds, 1),
                "budget_s": CHAPTER_BUDGET_S if is_chapter else None,
                "within_budget": seconds <= CHAPTER_BUDGET_S if is_chapter else None,
            }
        )
        print(f"{pages[-1]['page']:<40} {seconds:7.1f} s", flush=True)
    total = sum(p["seconds"] for p in pages)
    slowest = max((p for p in pages if p["budget_s"]), key=lambda p: p["seconds"])
    goals = [
        {
            "name": f"slowest chapter ({slowest['page']}) executes within budget",
            "target": f"<= {CHAPTER_BUDGET_S:.0f} s",
            "value": slowest["seconds"],
            "met": slowest["seconds"] <= CHAPTER_BUDGET_S,
        },
        {
            "name": "all notebook pages of the book execute within budget",
            "target": f"<= {BOOK_BUDGET_S:.0f} s",
            "value": round(total, 1),
            "met": total <= BOOK_BUDGET_S,
        },
    ]
    how = (
        f"read from the jupyter-cache of a book build ({args.from_cache})"
        if cached is not None
        else "executed by this script"
    )
    payload = {
        "description": "Execution time of every notebook page, run one after another from a "
        "clean kernel on the CPU (what the book build and nbval each do once); " + how + ".",
        "goals": goals,
        "pages": pages,
        "total_seconds": round(total, 1),
    }
    write_result("book", payload)
    return payload


if __name__ == "__main__":
    main()
