"""A reader's check of the built book: what each executed notebook produced is what its page
shows, in the HTML (real Chromium) and in the PDF.

For every notebook page of the book (chapters and appendices), the executed copy that the
build rendered (its entry in the build's jupyter-cache) says how many figures and static
explorables the code drew. The page served on 127.0.0.1 must show exactly those: every
image loaded, every explorable mounted, no empty output area, no traceback or error text, no test marker
(``NBVAL``), no raw ``<Figure size ...>`` or widget repr, no live-widget state (it needs a
kernel and CDN scripts), and no request to any host but the local server (the Colab and Kaggle
badges aside). The PDF (``_build/pdf/tinytrans.pdf``, built by ``make book``) must hold at
least every figure and explorable view (``pdfimages -list``). Screenshots of every page go to
``test-artifacts/pages``.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from _book import ARTIFACTS, BUILD, ROOT, Visit, missing, require_build

pytestmark = pytest.mark.browser

CACHE = BUILD.parent / ".jupyter_cache"
PDF = BUILD.parent / "pdf" / "tinytrans.pdf"
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
EXPLORABLE = re.compile(r'data-testid="tt-(\w+)-explorer"')
HIDDEN_OUTPUT_TAGS = {"remove-output", "remove-cell"}
# Text no reader should meet on a page.
FORBIDDEN_TEXT = (
    "NBVAL",
    "nbval-",
    "Traceback (most recent call last)",
    "<Figure size",
    "VBox(children=",
    "HBox(children=",
    "interactive(children=",
    "Output(outputs=",
)


def notebook_pages() -> list[str]:
    """Docnames of every notebook in the table of contents, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part["chapters"]]
    return [name for name in files if (ROOT / f"{name}.ipynb").is_file()]


@dataclass
class Drawn:
    """What one executed notebook's outputs contain."""

    figures: int = 0  # image outputs (matplotlib figures, PNGs)
    explorables: int = 0  # static explorables (HTML plus a PNG of the default view)
    widgets: int = 0  # live ipywidgets (views or saved state): need a kernel and CDN scripts

    @property
    def pdf_images(self) -> int:
        return self.figures + self.explorables


def executed(docname: str) -> dict:
    """The outputs the page was rendered from: the build's jupyter-cache entry for the
    notebook as it is now (``_build/jupyter_execute`` holds them only for notebooks executed in
    that very build, not for those taken from the cache)."""
    from jupyter_cache import get_cache

    source = nbformat.read(ROOT / f"{docname}.ipynb", as_version=4)
    try:
        _, merged = get_cache(CACHE).merge_match_into_notebook(source)
    except KeyError:
        pytest.fail(
            f"{docname} has no cached execution (it changed since the book was built, or it "
            "failed to execute: see _build/html/reports/): run make book"
        )
    return merged


@functools.cache
def drawn(docname: str) -> Drawn:
    notebook = executed(docname)
    # Widget state saved with the notebook makes the page load the widget manager from a CDN.
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")
    result = Drawn(widgets=len((state or {}).get("state", {})))
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        if HIDDEN_OUTPUT_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            html = "".join(data.get("text/html", ""))
            if WIDGET_MIME in data:
                result.widgets += 1
            elif EXPLORABLE.search(html):
                result.explorables += 1
            elif any(mime in data for mime in IMAGE_MIMES):
                result.figures += 1
    return result


PAGES = notebook_pages()

# Counted in the browser: images in output areas outside explorables, mounted explorables,
# output areas that show nothing, and images that did not load.
_MEASURE = """() => {
  const outputs = [...document.querySelectorAll('div.cell_output')];
  const inExplorable = (el) => el.closest('.tt-explorer') !== null;
  const images = outputs.flatMap((o) => [...o.querySelectorAll('img')]).filter((i) => !inExplorable(i));
  const explorables = [...document.querySelectorAll('.tt-explorer')];
  const empty = outputs.filter((o) => {
    const visible = o.innerText.trim().length > 0;
    const media = o.querySelector('img, svg, canvas, iframe, video, table');
    return !visible && !media;
  });
  return {
    figures: images.length,
    broken: images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.src.slice(0, 80)),
    explorables: explorables.length,
    mounted: explorables.filter((e) => e.getAttribute('data-mounted') === '1').length,
    empty: empty.map((o) => o.parentElement.innerText.slice(0, 80)),
    text: document.body.innerText,
  };
}"""


@pytest.mark.parametrize("docname", PAGES)
def test_page_shows_what_the_notebook_drew(browser, site, docname):
    expected = drawn(docname)
    assert expected.widgets == 0, (
        f"{docname}: {expected.widgets} live-widget outputs; the static book needs static "
        "explorables or images (TINYTRANS_STATIC_WIDGETS=1)"
    )
    visit = Visit(browser, f"{site}/{docname}.html")
    page = visit.page
    page.wait_for_load_state("networkidle")
    if expected.explorables:
        page.wait_for_function(
            f"document.querySelectorAll('.tt-explorer[data-mounted]').length >= {expected.explorables}",
            timeout=15000,
        )
    seen = page.evaluate(_MEASURE)
    shot = ARTIFACTS / "pages" / f"{docname.replace('/', '-')}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    visit.check_clean()
    page.close()

    assert (seen["figures"], seen["explorables"]) == (expected.figures, expected.explorables), (
        f"{docname}: the notebook drew {expected.figures} figures and {expected.explorables} "
        f"explorables, the page shows {seen['figures']} and {seen['explorables']}"
    )
    assert seen["broken"] == [], f"{docname}: images that did not load: {seen['broken']}"
    assert seen["mounted"] == seen["explorables"], f"{docname}: an explorable did not mount"
    assert seen["empty"] == [], f"{docname}: empty output areas after {seen['empty']}"
    shown = [bad for bad in FORBIDDEN_TEXT if bad in seen["text"]]
    assert shown == [], f"{docname}: the page shows {shown}"


def test_every_chapter_draws_its_figures():
    """A chapter whose figures vanished (e.g. ``MPLBACKEND=Agg`` in a kernel, which silences
    ``plt.show()``) draws none: each chapter's prose refers to figures, so each must have some."""
    require_build()
    for docname in PAGES:
        if docname.startswith("chapters/"):
            assert drawn(docname).pdf_images > 0, f"{docname} drew no figure"


def _pdf_image_count() -> int:
    if shutil.which("pdfimages") is None:
        missing("pdfimages is missing: install Debian's poppler-utils (make test does).")
    listing = subprocess.run(
        ["pdfimages", "-list", str(PDF)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    # Rows after the two header lines; column 3 is the type: image, smask (an alpha channel
    # of the image before it), mask or stencil.
    return sum(1 for row in listing[2:] if row.split()[2] == "image")


def test_pdf_holds_every_figure():
    require_build()
    if not PDF.is_file():
        missing(f"{PDF} is missing: `make book` builds the PDF after the HTML.")
    expected = sum(drawn(docname).pdf_images for docname in PAGES)
    found = _pdf_image_count()
    assert found >= expected, f"the book drew {expected} figures, the PDF holds {found} images"


def test_pdf_and_notebooks_are_linked_from_the_book():
    require_build()
    intro = (BUILD / "index.html").read_text() + (BUILD / "book" / "intro.html").read_text()
    assert "tinytrans.pdf" in intro, "the front page links the PDF"
    assert (BUILD / "tinytrans.pdf").is_file() or not PDF.is_file(), "the PDF ships with the HTML"
    for docname in PAGES:
        if docname.startswith("chapters/"):
            html = (BUILD / f"{docname}.html").read_text()
            assert f"{Path(docname).name}.ipynb" in html, f"{docname}: no notebook download link"
