"""Serve the book's MathJax from the build itself, so a page makes no request to a CDN.

Jupyter Book 1 loads MathJax 3 from jsDelivr on every page: offline (a train, a Kaggle
kernel with Internet off, this project's CI) the equations stay raw TeX. This extension copies
the MathJax 3 files that the ``django-static-mathjax`` wheel ships (pinned in the book's
environment; no Django needed, it is plain data) into ``_static/mathjax`` and points Sphinx's
``mathjax_path`` there. The reader's test of the built book (``tests/test_book_pages.py``)
fails on any request to a host other than the local server.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

MATHJAX_ENTRY = "tex-chtml.js"
# What tex-chtml.js loads at run time: its CommonHTML fonts and the TeX extensions (\require).
MATHJAX_PARTS = ("output/chtml/fonts", "input/tex/extensions", "a11y", "ui")
TARGET = "mathjax"


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax 3 distribution."""
    try:
        root = Path(str(resources.files("mathjax"))) / "static" / "mathjax" / "es5"
    except ModuleNotFoundError as error:
        raise ExtensionError(
            "MathJax is missing: install the book's environment (make install), which pins "
            "django-static-mathjax, so the book serves MathJax itself."
        ) from error
    if not (root / MATHJAX_ENTRY).is_file():
        raise ExtensionError(f"{root / MATHJAX_ENTRY} is missing: reinstall django-static-mathjax.")
    return root


def _use_local_mathjax(app: Sphinx, config) -> None:
    if app.builder.format == "html":
        mathjax_source()  # fail early, before any page is written
        config.mathjax_path = f"{TARGET}/{MATHJAX_ENTRY}"


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / TARGET
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / MATHJAX_ENTRY, target / MATHJAX_ENTRY)
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("builder-inited", lambda app: _use_local_mathjax(app, app.config))
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
