"""Run every benchmark, then merge the results: the one command behind ``make benchmarks``.

Runs each ``benchmarks/bench_*.py`` in turn in a fresh process of this interpreter (so one
benchmark's threads, caches and imports cannot slow down the next), keeps going when one fails,
then runs ``report.py``. Usage, from the repository root::

    python benchmarks/run_all.py                 # everything (several minutes)
    python benchmarks/run_all.py --only peers    # one benchmark (repeat --only for more)
    python benchmarks/run_all.py --list          # what would run

Exits non-zero when a benchmark failed; the report is written either way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def discover() -> dict[str, Path]:
    """``{name: script}`` for every ``bench_<name>.py`` next to this file."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def select(scripts: dict[str, Path], only: list[str] | None) -> dict[str, Path]:
    """The scripts named by ``--only`` (``peers``, ``bench_peers`` or ``bench_peers.py``)."""
    if not only:
        return scripts
    names = [n.removesuffix(".py").removeprefix("bench_") for n in only]
    unknown = [n for n in names if n not in scripts]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {sorted(scripts)}")
    return {n: scripts[n] for n in names}


def run(name: str, script: Path) -> tuple[int, float]:
    """Run one script from the repository root; return its exit code and wall time."""
    print(f"== {name}: {script.relative_to(ROOT)}", flush=True)
    start = time.perf_counter()
    code = subprocess.run([sys.executable, str(script)], cwd=ROOT, check=False).returncode
    seconds = time.perf_counter() - start
    print(f"== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s\n")
    return code, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    scripts = select(discover(), args.only)
    if args.list:
        print("\n".join(f"{n}: {p.relative_to(ROOT)}" for n, p in scripts.items()))
        return 0
    outcomes = {name: run(name, script) for name, script in scripts.items()}
    report_code = subprocess.run(
        [sys.executable, str(HERE / "report.py")], cwd=ROOT, check=False
    ).returncode
    failed = [name for name, (code, _) in outcomes.items() if code != 0]
    for name, (code, seconds) in outcomes.items():
        print(f"{name:12s} {'ok' if code == 0 else 'FAILED':7s} {seconds:6.0f} s")
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed or report_code else 0


if __name__ == "__main__":
    sys.exit(main())
