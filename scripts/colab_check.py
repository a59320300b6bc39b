"""Run every chapter top to bottom the way a reader does on Colab, and report.

    python scripts/colab_check.py                       # every chapters/*.ipynb
    python scripts/colab_check.py chapters/05_sizing.ipynb --report colab-report.md

Used by ``.github/workflows/colab.yml`` inside the public Colab CPU runtime image. Unlike nbval,
which skips the setup cell (tag ``nbval-skip``), this runs *every* cell, so the first chapter's
setup cell really installs the release the chapters name (``tinytrans==<version>`` from PyPI)
into Colab's own Python, against Colab's own torch and numpy. ``TINYTRANS_SOURCE`` points the
setup cell elsewhere (a wheel, a folder of wheels, a git URL), as it would for a reader.

Each chapter runs in a fresh kernel (``--kernel``, default ``python3``, what Colab uses) from
the chapter's folder. The report is Markdown: one row per chapter with its status and run
time, then the tail of each failure's traceback. It is printed, written to ``--report`` and
appended to ``$GITHUB_STEP_SUMMARY`` when that is set. The exit status is 1 when any chapter
failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAIL_LINES = 40


@dataclass
class Result:
    chapter: str
    ok: bool
    seconds: float
    failed_cell: int | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def run_chapter(path: Path, kernel: str, timeout: int) -> Result:
    """Execute every cell of ``path`` in a fresh kernel; never raises for a failing chapter."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        index = _failing_cell(nb)
        return Result(path.name, False, time.perf_counter() - start, index, _strip_ansi(str(err)))
    except Exception:  # a dead kernel, a timeout, a missing kernel: still a failed chapter
        index = _failing_cell(nb)
        return Result(path.name, False, time.perf_counter() - start, index, traceback.format_exc())
    return Result(path.name, True, time.perf_counter() - start)


def _failing_cell(nb) -> int | None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return index
    return None


def report(results: list[Result], header: str = "") -> str:
    lines = [header] if header else []
    lines += [
        "| Chapter | Result | Time (s) |",
        "| --- | --- | ---: |",
    ]
    for r in results:
        status = "passed" if r.ok else f"**failed** (cell {r.failed_cell})"
        lines.append(f"| `{r.chapter}` | {status} | {r.seconds:.0f} |")
    for r in results:
        if r.ok:
            continue
        tail = "\n".join(r.error.strip().splitlines()[-TAIL_LINES:])
        lines += ["", f"### `{r.chapter}`", "", "```text", tail, "```"]
    failed = sum(not r.ok for r in results)
    lines += ["", f"{len(results) - failed} of {len(results)} chapters passed."]
    return "\n".join(lines) + "\n"


def environment_line() -> str:
    importlib.invalidate_caches()  # the first setup cell may have just installed tinytrans
    versions = [f"Python {platform.python_version()}"]
    for name in ("torch", "numpy", "tinytrans"):
        try:
            module = importlib.import_module(name)
            versions.append(f"{name} {module.__version__}")
        except Exception:
            versions.append(f"{name} (not importable in the runner's Python)")
    source = os.environ.get("TINYTRANS_SOURCE", "PyPI, the released version (setup cell default)")
    return f"Runtime: {', '.join(versions)}. tinytrans installed from: {source}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "chapters", nargs="*", type=Path, help="notebooks or folders; default: chapters/"
    )
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--report", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)

    chapters = []
    for given in args.chapters or [ROOT / "chapters"]:  # a folder means its notebooks
        chapters += sorted(given.glob("*.ipynb")) if given.is_dir() else [given]
    if not chapters:
        print("no chapters found", file=sys.stderr)
        return 2
    results = []
    for chapter in chapters:
        print(f"running {chapter.name} ...", flush=True)
        result = run_chapter(chapter.resolve(), args.kernel, args.timeout)
        print(f"  {'passed' if result.ok else 'FAILED'} in {result.seconds:.0f} s", flush=True)
        results.append(result)

    text = report(results, environment_line() + "\n")
    print(text)
    if args.report:
        args.report.write_text(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as handle:
            handle.write("## Chapters in the Colab runtime\n\n" + text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
