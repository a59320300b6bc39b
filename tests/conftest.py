"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch
from _book import chromium, serve_build


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on shared cores run faster on one thread; restore the setting after.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def site():
    """The built book on 127.0.0.1 (``tests/_book.py``)."""
    with serve_build() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium (``tests/_book.py``)."""
    with chromium() as browser:
        yield browser
