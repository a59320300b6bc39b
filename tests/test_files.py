"""The one atomic writer (tinytrans.files): whole files or none, umask permissions, clear errors."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tinytrans.files import (
    AtomicWriteError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)


def test_writes_bytes_text_and_json(tmp_path):
    assert atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    text_path = atomic_write_text(tmp_path / "sub" / "b.txt", "x\ud800y\r\n")
    with open(text_path, encoding="utf-8", errors="surrogatepass", newline="") as f:
        assert f.read() == "x\ud800y\r\n"
    path = atomic_write_json(tmp_path / "c.json", {"s": "\ud800", "n": 1})
    assert json.loads(path.read_text()) == {"s": "\ud800", "n": 1}
    assert path.read_text().endswith("}\n")


def test_new_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_failure_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "f.txt", "old")

    def boom(handle):
        handle.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(AtomicWriteError, match=r"f\.txt.*No space left.*previous f\.txt is intact"):
        atomic_write(path, boom, "w")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_interrupt_propagates_unchanged(tmp_path):
    def interrupted(handle):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "f", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_error_type_and_hint(tmp_path):
    class MyError(AtomicWriteError):
        pass

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MyError, match="use --out"):
        atomic_write_bytes(blocker / "x", b"", error_type=MyError, hint="use --out")


def test_remove_stale_temporaries_keeps_live_writers(tmp_path):
    dead = tmp_path / "last.pt.999999999.abc.tmp"
    live = tmp_path / f"last.pt.{os.getpid()}.abc.tmp"
    other = tmp_path / "notes.txt"
    for p in (dead, live, other):
        p.write_text("")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and other.exists()
