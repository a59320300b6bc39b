"""What the browser tests share: the built book served on 127.0.0.1, Debian's Chromium driven
by Playwright, and a page visit that records console errors and aborts every request that
leaves the local server.

``TINYTRANS_BOOK_HTML`` points the tests at another build (e.g. a mini book made while
developing); ``TINYTRANS_CHROMIUM`` at another Chromium binary.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("TINYTRANS_BOOK_HTML", ROOT / "_build" / "html"))
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
]  # fmt: skip
# The Colab and Kaggle badges are the only images a page may take from elsewhere: the same
# markdown cell must work on GitHub, Colab and Kaggle, where a local path does not resolve.
BADGE_URLS = (
    "https://colab.research.google.com/assets/colab-badge.svg",
    "https://kaggle.com/static/images/open-in-kaggle.svg",
)
# The pydata theme warns about an empty stored colour mode; Jupyter Book 1 declares
# THEBE_JS_URL twice. Both are the theme's, on load only.
CHROME_CONSOLE = (
    "Identifier 'THEBE_JS_URL' has already been declared",
    "Got invalid theme mode",
)


def missing(reason: str) -> None:
    """Fail under CI (a missing build or browser is a broken pipeline), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_build() -> None:
    if not (BUILD / "index.html").is_file():
        missing(f"no built book at {BUILD}: run `make book` first (make test does).")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """``folder`` served on 127.0.0.1 (a free port) for the duration of the block."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_build() -> Iterator[str]:
    """``_build/html`` served on an ephemeral localhost port."""
    require_build()
    with serve_folder(BUILD) as url:
        yield url


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright (never a browser download of a test tool's own)."""
    executable = (
        os.environ.get("TINYTRANS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    )
    if not Path(executable).is_file():
        missing("Chromium is missing: install Debian's `chromium` package (make chromium).")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Visit:
    """One page with its console errors and every non-local request (recorded and aborted;
    the badges are answered with an empty SVG so the page looks as it would online)."""

    def __init__(self, browser, url: str, ready: str | None = None) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.errors: list[str] = []
        self.external: list[tuple[str, str]] = []
        self.phase = "load"
        self.page.route("**/*", self._route)
        self.page.on("console", self._console)
        self.page.on("pageerror", self._page_error)
        self.page.goto(url, wait_until="load")
        if ready:
            self.page.wait_for_function(ready, timeout=15000)
        self.phase = "interact"

    def _route(self, route) -> None:
        url = route.request.url
        host = urlparse(url).hostname
        if host in ("127.0.0.1", None) or url.startswith(("data:", "blob:")):
            route.continue_()
        elif url in BADGE_URLS:
            svg = '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20"/>'
            route.fulfill(status=200, content_type="image/svg+xml", body=svg)
        else:
            self.external.append((self.phase, url))
            route.abort()

    def _console(self, message) -> None:
        if message.type != "error":
            return
        if self.phase == "load" and any(text in message.text for text in CHROME_CONSOLE):
            return
        self.errors.append(message.text)

    def _page_error(self, exc) -> None:
        text = str(exc)
        if self.phase == "load" and any(known in text for known in CHROME_CONSOLE):
            return
        self.errors.append(f"pageerror: {text}")

    def check_clean(self) -> None:
        assert self.external == [], (
            f"requests to hosts other than the local server: {self.external}"
        )
        assert self.errors == [], self.errors
