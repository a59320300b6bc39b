"""Tokenizers: turn text into integer ids and back.

One protocol (:class:`Tokenizer`) and three implementations, from the simplest to the
one used in practice:

* :class:`CharTokenizer` -- one id per character of a fixed alphabet.
* :class:`BPETokenizer` -- byte-level byte-pair encoding written from scratch (the
  GPT-2 recipe: start from the 256 byte values, repeatedly merge the most frequent
  adjacent pair).
* :class:`SentencePieceTokenizer` -- a thin wrapper around the ``sentencepiece``
  library (unigram or BPE), the tool most small models use.

All three share ``encode``/``decode``/``vocab_size``/``id_to_piece``/``save`` and the
special-token attributes ``bos_id``/``eos_id``/``pad_id``/``unk_id`` (``None`` where a
tokenizer has no such token). :func:`load` restores any of them from the file written by
``save``; :func:`compare_tokenizers` measures them side by side for the chapter.

The package is the ground floor of tinytrans: it imports nothing from ``tinytrans`` but
:mod:`tinytrans.files`.

The package has one file per tokenizer, in the chapter's order:
``tinytrans.tokenizers.base`` (the protocol, the file format, the limits),
``tinytrans.tokenizers.char``, ``tinytrans.tokenizers.bpe`` and
``tinytrans.tokenizers.sentencepiece``; this module loads, trains and compares them
(section 2.6, "One sentence, five tokenizers").
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from tinytrans.tokenizers.base import (
    FORMAT_VERSION,
    MAX_TOKENIZER_FILE_BYTES,
    Tokenizer,
)
from tinytrans.tokenizers.base import (  # importable from here as before the split
    MAX_PIECE_BYTES as MAX_PIECE_BYTES,
)
from tinytrans.tokenizers.base import (
    MAX_VOCAB_BYTES as MAX_VOCAB_BYTES,
)
from tinytrans.tokenizers.base import (
    SPECIAL_ROLES as SPECIAL_ROLES,
)
from tinytrans.tokenizers.bpe import (
    GPT2_PATTERN,
    BPETokenizer,
    Merge,
    pretokenizer_names,
    register_pretokenizer,
)
from tinytrans.tokenizers.bpe import (
    LINES_PATTERN as LINES_PATTERN,
)
from tinytrans.tokenizers.bpe import (
    PRETOKENIZERS as PRETOKENIZERS,
)
from tinytrans.tokenizers.char import CharTokenizer
from tinytrans.tokenizers.sentencepiece import SentencePieceTokenizer

__all__ = [
    "GPT2_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "Merge",
    "SentencePieceTokenizer",
    "Tokenizer",
    "compare_tokenizers",
    "load",
    "pretokenizer_names",
    "register_pretokenizer",
    "train_tokenizer",
]


# ----------------------------------------------------------------------------- load/compare


def load(path: str | os.PathLike[str]) -> CharTokenizer | BPETokenizer | SentencePieceTokenizer:
    """Restore a tokenizer written by any ``save`` (a raw ``.model`` file works too).
    (Section 2.3.)"""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file; pass a tokenizer .json (or .model) file")
    size = path.stat().st_size
    if size > MAX_TOKENIZER_FILE_BYTES:
        raise ValueError(
            f"{path} has {size:,} bytes; a tokenizer file is at most "
            f"{MAX_TOKENIZER_FILE_BYTES:,} -- this is not a tinytrans tokenizer"
        )
    data = path.read_bytes()
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        if path.suffix == ".model":
            return _sentencepiece_from_bytes(data, path)
        raise ValueError(f"{path} is not a tinytrans tokenizer file (not JSON)") from None
    return from_dict(d, str(path))


def from_dict(
    d: Any, source: str = "tokenizer"
) -> CharTokenizer | BPETokenizer | SentencePieceTokenizer:
    """A tokenizer from its ``to_dict()`` form, every field checked first (ValueError).
    (Section 2.3.)"""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in ("char", "bpe", "sentencepiece"):
        raise ValueError(
            f"{source} has tokenizer type {kind!r}; expected 'char', 'bpe' or 'sentencepiece'"
        )
    fmt = d.get("format", FORMAT_VERSION)
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise ValueError(f"{source} has tokenizer format {fmt!r}; upgrade tinytrans to read it")

    def field(name: str, types: tuple[type, ...], default: Any = ...) -> Any:
        if name not in d:
            if default is ...:
                raise ValueError(f"{source}: the {kind} tokenizer has no {name!r}")
            return default
        value = d[name]
        if not isinstance(value, types):
            raise ValueError(f"{source}: {name!r} has type {type(value).__name__}")
        return value

    try:
        if kind == "char":
            return CharTokenizer(
                field("chars", (list, str)),
                specials=field("specials", (list,), []),
                unknown=field("unknown", (str,), "error"),
            )
        if kind == "bpe":
            counts = field("merge_counts", (list, type(None)), None)
            if counts is not None and not all(
                isinstance(c, int) and not isinstance(c, bool) for c in counts
            ):
                raise ValueError(f"{source}: 'merge_counts' must hold integers")
            return BPETokenizer(
                field("merges", (list,)),
                specials=field("specials", (list,), []),
                pretokenize=field("pretokenize", (str, type(None)), "gpt2"),
                merge_counts=counts,
            )
        encoded = field("model_proto_base64", (str,))
        try:
            proto = base64.b64decode(encoded, validate=True)
        except (ValueError, TypeError):
            raise ValueError(f"{source}: 'model_proto_base64' is not base64") from None
        return _sentencepiece_from_bytes(proto, source)
    except TypeError as error:
        raise ValueError(f"{source} is not a valid {kind} tokenizer: {error}") from None


def _sentencepiece_from_bytes(data: bytes, source: Any) -> SentencePieceTokenizer:
    try:
        return SentencePieceTokenizer(data)
    except (RuntimeError, OSError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:120] if str(error).strip() else "unreadable"
        raise ValueError(f"{source} is not a valid SentencePiece model ({first})") from None


TOKENIZER_KINDS = ("char", "bpe", "sp-bpe", "sp-unigram")


def train_tokenizer(
    kind: str, text: str, vocab_size: int | None = None, **kwargs: Any
) -> CharTokenizer | BPETokenizer | SentencePieceTokenizer:
    """Train a tokenizer by name: ``"char"``, ``"bpe"``, ``"sp-bpe"`` or ``"sp-unigram"``.
    (Section 2.6.)

    ``vocab_size`` is ignored for ``"char"`` (the alphabet decides it).
    """
    if kind == "char":
        return CharTokenizer.train(text, **kwargs)
    if vocab_size is None:
        raise ValueError(f"tokenizer kind {kind!r} needs a vocab_size")
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size, **kwargs)
    if kind in ("sp-bpe", "sp-unigram"):
        model_type: Literal["unigram", "bpe"] = "unigram" if kind == "sp-unigram" else "bpe"
        return SentencePieceTokenizer.train(text, vocab_size, model_type=model_type, **kwargs)
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {TOKENIZER_KINDS}")


def _measure(
    tok: CharTokenizer | BPETokenizer | SentencePieceTokenizer, sample: str, window_chars: int
) -> dict[str, Any]:
    """Compression statistics of ``tok`` on ``sample``."""
    ids = tok.encode(sample)
    n_tokens = max(len(ids), 1)
    windows = [sample[i : i + window_chars] for i in range(0, len(sample), window_chars)]
    full = [w for w in windows if len(w) == window_chars] or windows
    per_window = [len(tok.encode(w)) for w in full]
    return {
        "n_chars": len(sample),
        "n_tokens": len(ids),
        "tokens_per_char": len(ids) / max(len(sample), 1),
        "chars_per_token": len(sample) / n_tokens,
        "vocab_used": len(set(ids)) / tok.vocab_size,
        "tokens_per_window": sum(per_window) / max(len(per_window), 1),
        "round_trip": tok.decode(ids) == sample,
    }


def compare_tokenizers(
    text: str,
    vocab_sizes: Iterable[int],
    sample: str | None = None,
    kinds: Sequence[str] = TOKENIZER_KINDS,
    window_chars: int = 1000,
    val_fraction: float = 0.1,
) -> list[dict[str, Any]]:
    """Train each tokenizer kind at each vocabulary size and measure it on held-out text.
    (Section 2.6.)

    ``sample`` is the text to measure on; if ``None``, the last ``val_fraction`` of
    ``text`` is held out and the tokenizers are trained on the rest. ``"char"`` gives one
    row (its vocabulary is the alphabet; unseen characters count as ``<unk>``). Each row:
    ``kind``, ``vocab_size`` (requested), ``actual_vocab_size``, ``n_chars``,
    ``n_tokens``, ``tokens_per_char``, ``chars_per_token``, ``vocab_used`` (fraction of
    the vocabulary that appears), ``tokens_per_window`` (mean tokens needed for
    ``window_chars`` characters), ``round_trip`` and ``train_seconds``.
    """
    if sample is None:
        cut = int(len(text) * (1 - val_fraction))
        text, sample = text[:cut], text[cut:]
    if not text or not sample:
        raise ValueError("compare_tokenizers needs non-empty training text and sample")
    rows = []
    for kind in kinds:
        sizes: list[int | None] = [None] if kind == "char" else list(vocab_sizes)
        for size in sizes:
            start = time.perf_counter()
            extra = {"unknown": "unk"} if kind == "char" else {}
            tok = train_tokenizer(kind, text, size, **extra)
            seconds = time.perf_counter() - start
            row: dict[str, Any] = {
                "kind": kind,
                "vocab_size": tok.vocab_size if size is None else size,
                "actual_vocab_size": tok.vocab_size,
            }
            row.update(_measure(tok, sample, window_chars))
            row["train_seconds"] = seconds
            rows.append(row)
    return rows
