"""Files written whole or not at all: the one atomic writer every module uses.

A tokenizer file, a cached corpus, a checkpoint and a metrics file are all written the same
way: into a temporary file in the destination's folder, then renamed over the destination
(``os.replace`` is atomic on POSIX and Windows). A reader never sees half a file, a crash or
a Ctrl-C leaves the previous file intact, and the new file gets the permissions the umask
gives any new file (``mkstemp`` alone would make it 0600). Section 3.7, "Checkpoints and exact
resume", explains why.

Temporary files are named ``<name>.<pid>.<random>.tmp``: the pid lets
:func:`remove_stale_temporaries` tell what a killed process left behind from a live write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "AtomicWriteError",
    "apply_umask",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temporaries",
]

#: ``<name>.<pid>.<random>.tmp``, the temporary files of :func:`atomic_write`.
_TMP_NAME = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
#: The names the checkpoint writer used before the pid was added (``last.pt<random>.tmp``).
_LEGACY_TMP_NAME = re.compile(r"^(?:last\.pt|best\.pt|metrics\.json)[A-Za-z0-9_]{8}\.tmp$")
_LEGACY_TMP_AGE_S = 3600.0


class AtomicWriteError(OSError):
    """A file could not be written (full disk, read-only folder, ...). The previous file of
    that name, if any, is intact.

    Section 3.7."""


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the permissions a normally created file gets (``0o666`` less the umask).
    (Section 3.7.)"""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.splitlines()[0] if text else type(error).__name__


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[Any]], object],
    mode: str = "wb",
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    error_type: type[AtomicWriteError] = AtomicWriteError,
    hint: str = "free disk space or choose a folder you can write to",
) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary file, then rename it over.

    Any failure (an ``OSError``, or the ``RuntimeError`` ``torch.save`` raises on a full disk)
    removes the temporary file and is raised as ``error_type`` naming the file and ``hint``;
    other exceptions (a ``KeyboardInterrupt``) also remove it and propagate unchanged.

    Section 3.7.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp"
        )
    except OSError as error:
        raise error_type(f"cannot write {path}: {_reason(error)}; {hint}") from error
    binary = "b" in mode
    try:
        handle: IO[Any] = (
            os.fdopen(fd, mode)
            if binary
            else os.fdopen(fd, mode, encoding=encoding, errors=errors, newline="")
        )
        with handle:
            write(handle)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)) and not isinstance(error, AtomicWriteError):
            raise error_type(
                f"could not write {path} ({_reason(error)}); the previous {path.name} is "
                f"intact -- {hint}"
            ) from error
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, **kwargs: Any) -> Path:
    """:func:`atomic_write` of ``data`` (section 3.7)."""
    return atomic_write(path, lambda handle: handle.write(data), "wb", **kwargs)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, errors: str = "surrogatepass", **kwargs: Any
) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8 (lone surrogates kept by default) (section 3.7)."""
    return atomic_write(path, lambda handle: handle.write(text), "w", errors=errors, **kwargs)


def atomic_write_json(
    path: str | os.PathLike[str], payload: Any, *, indent: int | None = 2, **kwargs: Any
) -> Path:
    """:func:`atomic_write` of ``payload`` as JSON (ASCII, so lone surrogates survive as
    ``\\udxxx`` escapes), ending in a newline when indented.

    Section 3.7."""
    text = json.dumps(payload, indent=indent, ensure_ascii=True)
    return atomic_write_text(path, text + ("\n" if indent is not None else ""), **kwargs)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; return them.

    A file is stale when the process named in it no longer runs (or, for the older naming
    without a pid, when it is over an hour old). Live writers' files are left alone.

    Section 3.7.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        match = _TMP_NAME.match(entry.name)
        stale = match is not None and not _pid_alive(int(match["pid"]))
        if match is None and _LEGACY_TMP_NAME.match(entry.name):
            with contextlib.suppress(OSError):
                stale = now - entry.stat().st_mtime > _LEGACY_TMP_AGE_S
        if stale and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed
