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

This module is the ground floor of the package: it imports nothing from ``tinytrans``.
"""

from __future__ import annotations

import base64
import codecs
import heapq
import io
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
import regex

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

FORMAT_VERSION = 1

#: The GPT-2 pre-tokenization pattern: contractions, letters, digits, other symbols and
#: whitespace become separate chunks (a leading space stays attached to the next word), so
#: BPE merges never cross a word boundary.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: Chunks used when pre-tokenization is off: one chunk per line (newline included).
#: Merges may then span spaces and punctuation, but never a line break, which keeps
#: training tractable and the encode cache useful.
LINES_PATTERN = r"[^\n]*\n|[^\n]+"

#: The named pre-tokenizers. A tokenizer file stores only the *name* (or ``None`` for
#: :data:`LINES_PATTERN`); loading never compiles a pattern found in a file, so a hostile file
#: cannot bring a catastrophically backtracking regex (``(a|aa)+$``) or a huge one.
PRETOKENIZERS: dict[str, str] = {
    "gpt2": GPT2_PATTERN,
    "lines": LINES_PATTERN,
    "words": r"\w+|\s+|[^\w\s]+",
}
#: Patterns registered from code (trusted) with :func:`register_pretokenizer`.
_REGISTERED: dict[str, str] = {}
_COMPILED: dict[str, regex.Pattern[str]] = {}
#: Limits checked before a tokenizer file is parsed or its vocabulary built.
MAX_TOKENIZER_FILE_BYTES = 64 << 20
MAX_PIECE_BYTES = 1 << 16
MAX_VOCAB_BYTES = 64 << 20

#: Special-token strings that fill the ``bos_id``/``eos_id``/``pad_id``/``unk_id`` roles.
SPECIAL_ROLES: dict[str, tuple[str, ...]] = {
    "bos": ("<bos>", "<s>", "<|startoftext|>"),
    "eos": ("<eos>", "</s>", "<|endoftext|>"),
    "pad": ("<pad>",),
    "unk": ("<unk>",),
}


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer in tinytrans provides."""

    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def id_to_piece(self, i: int) -> str: ...

    def save(self, path: str | os.PathLike[str]) -> Path: ...


# ----------------------------------------------------------------------------- helpers


def _atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace``.

    A reader never sees a half-written file, and a crash leaves the old file intact. The
    file gets the permissions the umask gives a new file (``mkstemp`` alone makes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    # ensure_ascii keeps lone surrogates representable (as \udxxx escapes).
    return _atomic_write_bytes(path, json.dumps(payload, ensure_ascii=True).encode("ascii"))


def _as_int_list(ids: Iterable[int]) -> list[int]:
    """Accept lists, tuples, numpy arrays and 1-D tensors alike."""
    values = ids.tolist() if hasattr(ids, "tolist") else ids
    return [int(i) for i in values]


def _special_roles(specials: dict[str, int]) -> dict[str, int | None]:
    """Map role names (bos/eos/pad/unk) to ids of the special strings that fill them."""
    roles: dict[str, int | None] = {}
    for role, names in SPECIAL_ROLES.items():
        roles[role] = next((specials[n] for n in names if n in specials), None)
    return roles


def _bad_id(i: int, vocab_size: int) -> ValueError:
    return ValueError(f"token id {i} is out of range for a vocabulary of {vocab_size} ids")


# ----------------------------------------------------------------------------- char


class CharTokenizer:
    """One id per character: the sorted alphabet of a corpus, then any special tokens.

    Characters get ids ``0 .. n_chars-1`` in sorted order, so the ids of a character model
    trained on a corpus do not depend on which special tokens were added. Special tokens
    are never parsed out of text (the string ``"<unk>"`` encodes as five characters); they
    are ids the caller places, e.g. ``[tok.bos_id, *tok.encode(text)]``.

    ``unknown`` decides what happens to a character outside the alphabet: ``"error"``
    raises a :class:`ValueError` naming the character and its position, ``"unk"`` maps it
    to ``<unk>`` (added automatically). Text is never dropped silently.
    """

    def __init__(
        self,
        chars: Iterable[str],
        specials: Sequence[str] = (),
        unknown: Literal["error", "unk"] = "error",
    ) -> None:
        if unknown not in ("error", "unk"):
            raise ValueError(f"unknown must be 'error' or 'unk', not {unknown!r}")
        if isinstance(chars, (bytes, int)) or not isinstance(chars, Iterable):
            raise ValueError(f"chars must be characters (a str or a list of them), got {chars!r}")
        if isinstance(specials, (str, bytes)) or not all(isinstance(x, str) for x in specials):
            raise ValueError(f"specials must be a list of strings, got {specials!r}")
        chars = list(chars)
        if not all(isinstance(c, str) for c in chars):
            raise ValueError("CharTokenizer alphabet entries must be single characters")
        alphabet = sorted(set(chars))
        if any(len(c) != 1 for c in alphabet):
            raise ValueError("CharTokenizer alphabet entries must be single characters")
        specials = list(dict.fromkeys(specials))
        if unknown == "unk" and "<unk>" not in specials:
            specials.append("<unk>")
        self.chars: list[str] = alphabet
        self.specials: list[str] = specials
        self.unknown = unknown
        self._stoi = {c: i for i, c in enumerate(alphabet)}
        self._pieces = alphabet + specials
        special_ids = {s: len(alphabet) + k for k, s in enumerate(specials)}
        roles = _special_roles(special_ids)
        self.bos_id, self.eos_id = roles["bos"], roles["eos"]
        self.pad_id, self.unk_id = roles["pad"], roles["unk"]

    @classmethod
    def train(
        cls,
        text: str,
        specials: Sequence[str] = (),
        unknown: Literal["error", "unk"] = "error",
    ) -> CharTokenizer:
        """Build the vocabulary from the distinct characters of ``text``."""
        if not text:
            raise ValueError("cannot build a CharTokenizer from empty text")
        return cls(set(text), specials=specials, unknown=unknown)

    from_text = train

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, text: str) -> list[int]:
        """Map each character to its id (or to ``<unk>``, or raise -- see ``unknown``)."""
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass
        if self.unk_id is not None and self.unknown == "unk":
            unk = self.unk_id
            return [stoi.get(c, unk) for c in text]
        pos = next(i for i, c in enumerate(text) if c not in stoi)
        ch = text[pos]
        raise ValueError(
            f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in this "
            f"CharTokenizer's alphabet of {len(self.chars)} characters; build the "
            "tokenizer from text that contains it, or use unknown='unk' to map it to <unk>"
        )

    def decode(self, ids: Iterable[int]) -> str:
        """Join the pieces of ``ids`` (special tokens decode to their own string)."""
        pieces, n = self._pieces, len(self._pieces)
        out = []
        for i in _as_int_list(ids):
            if not 0 <= i < n:
                raise _bad_id(i, n)
            out.append(pieces[i])
        return "".join(out)

    def id_to_piece(self, i: int) -> str:
        if not 0 <= i < len(self._pieces):
            raise _bad_id(i, len(self._pieces))
        return self._pieces[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "char",
            "format": FORMAT_VERSION,
            "chars": self.chars,
            "specials": self.specials,
            "unknown": self.unknown,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["chars"], specials=d["specials"], unknown=d["unknown"])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer as JSON (atomically); restore with :func:`load`."""
        return _write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


# ----------------------------------------------------------------------------- BPE


def _merge_pair(merge: Any, rank: int) -> tuple[int, int]:
    """``(a, b)`` as two ints, or ``ValueError`` (a float or string id is never truncated)."""
    if isinstance(merge, (str, bytes)) or not isinstance(merge, Sequence) or len(merge) != 2:
        raise ValueError(f"merge {rank} must be a pair of token ids, got {merge!r}")
    a, b = merge
    for x in (a, b):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise ValueError(f"merge {rank} must be a pair of integer ids, got {merge!r}")
    return int(a), int(b)


def _decode_error_handler(exc: UnicodeError) -> tuple[str, int]:
    """Decode UTF-8-encoded lone surrogates back to themselves; replace other bad bytes.

    ``encode`` writes a lone surrogate (legal in a Python ``str``) as its three-byte
    "surrogatepass" form, so this handler makes ``decode(encode(s)) == s`` for every
    ``str``. Genuinely invalid sequences (ids that split a character, sampled ids) become
    U+FFFD, as with ``errors="replace"``.
    """
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    b, s = exc.object, exc.start
    if s + 3 <= len(b) and b[s] == 0xED and 0xA0 <= b[s + 1] <= 0xBF and 0x80 <= b[s + 2] <= 0xBF:
        cp = ((b[s] & 0x0F) << 12) | ((b[s + 1] & 0x3F) << 6) | (b[s + 2] & 0x3F)
        return chr(cp), s + 3
    return "\ufffd", s + 1


_ERRORS = "tinytrans.surrogates"
codecs.register_error(_ERRORS, _decode_error_handler)


def pretokenizer_names() -> list[str]:
    """Names ``pretokenize=`` accepts (besides ``None``, one chunk per line)."""
    return [*PRETOKENIZERS, *_REGISTERED]


def register_pretokenizer(name: str, pattern: str) -> None:
    """Make ``pattern`` (a ``regex`` pattern, from *your code*) usable as ``pretokenize=name``.

    Files store the name only; a file naming an unregistered pattern does not load until the
    program that reads it registers the same name. Built-in names cannot be redefined.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ValueError(f"a pre-tokenizer name is 1-64 letters, digits, '_', '.' or '-': {name!r}")
    if name in PRETOKENIZERS:
        raise ValueError(f"{name!r} is a built-in pre-tokenizer; choose another name")
    regex.compile(pattern)  # fail now, not at the first encode
    _REGISTERED[name] = pattern
    _COMPILED.pop(name, None)


def _canonical_pretokenizer(pretokenize: str | None) -> str | None:
    """A known name (``None`` = lines). Files of older versions stored the GPT-2 or lines
    *pattern* itself: those are migrated to their names; any other pattern is refused."""
    if pretokenize is None:
        return None
    if not isinstance(pretokenize, str):
        raise ValueError(f"pretokenize must be a name or None, got {pretokenize!r}")
    if pretokenize in PRETOKENIZERS or pretokenize in _REGISTERED:
        return pretokenize
    for name, pattern in (*PRETOKENIZERS.items(), *_REGISTERED.items()):
        if pretokenize == pattern:
            return None if name == "lines" else name
    shown = pretokenize if len(pretokenize) <= 60 else pretokenize[:57] + "..."
    raise ValueError(
        f"unknown pre-tokenizer {shown!r}: choose one of {pretokenizer_names()} or None; "
        "for your own pattern call tinytrans.tokenizers.register_pretokenizer(name, pattern) "
        "in your code and pass the name (files never carry patterns)"
    )


def _compile_pattern(pretokenize: str | None) -> regex.Pattern[str]:
    name = _canonical_pretokenizer(pretokenize) or "lines"
    if name not in _COMPILED:
        _COMPILED[name] = regex.compile(PRETOKENIZERS.get(name) or _REGISTERED[name])
    return _COMPILED[name]


def _split(pattern: regex.Pattern[str], text: str) -> Iterator[str]:
    """Yield chunks that tile ``text`` exactly (gaps a custom pattern skips become chunks)."""
    pos = 0
    for m in pattern.finditer(text):
        start, end = m.span()
        if end == start:  # zero-width matches carry no text
            continue
        if start > pos:
            yield text[pos:start]
        yield text[start:end]
        pos = end
    if pos < len(text):
        yield text[pos:]


def _merge_symbols(syms: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every non-overlapping ``a, b`` (left to right) in ``syms`` by ``new``."""
    out: list[int] = []
    i, n = 0, len(syms)
    while i < n:
        if i + 1 < n and syms[i] == a and syms[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(syms[i])
            i += 1
    return out


class Merge(NamedTuple):
    """One BPE training step, as passed to ``BPETokenizer.train(callback=...)``."""

    rank: int
    left: int
    right: int
    new_id: int
    count: int


class _PairStats:
    """Pair counts over a deduplicated word list, updated incrementally after each merge.

    ``counts[pair]`` is the weighted number of occurrences of ``pair`` in all words;
    ``where[pair]`` is the set of word indices containing it. Merging a pair only touches
    the words in ``where[pair]``; the best pair is found with a lazy max-heap (stale
    entries are skipped when popped). Ties go to the smallest ``(left, right)`` ids.
    """

    def __init__(self, words: list[list[int]], freqs: list[int]) -> None:
        self.words, self.freqs = words, freqs
        self.counts: dict[tuple[int, int], int] = {}
        self.where: dict[tuple[int, int], set[int]] = {}
        for w, syms in enumerate(words):
            f = freqs[w]
            for pair in pairwise(syms):
                self.counts[pair] = self.counts.get(pair, 0) + f
                self.where.setdefault(pair, set()).add(w)
        self.heap = [(-c, a, b) for (a, b), c in self.counts.items()]
        heapq.heapify(self.heap)

    def best(self) -> tuple[tuple[int, int], int] | None:
        """The most frequent pair and its count, or ``None`` when no pair is left."""
        heap, counts = self.heap, self.counts
        while heap:
            negc, a, b = heap[0]
            if counts.get((a, b), 0) == -negc > 0:
                return (a, b), -negc
            heapq.heappop(heap)
        return None

    def merge(self, pair: tuple[int, int], new: int) -> None:
        """Apply ``pair -> new`` to every word containing it and update the statistics."""
        a, b = pair
        delta: Counter[tuple[int, int]] = Counter()
        for w in sorted(self.where.pop(pair, ())):
            old = self.words[w]
            syms = _merge_symbols(old, a, b, new)
            self.words[w] = syms
            f = self.freqs[w]
            old_pairs, new_pairs = Counter(pairwise(old)), Counter(pairwise(syms))
            for p, k in old_pairs.items():
                delta[p] -= k * f
            for p, k in new_pairs.items():
                delta[p] += k * f
            for p in old_pairs.keys() - new_pairs.keys():
                if p != pair:
                    self.where[p].discard(w)
            for p in new_pairs.keys() - old_pairs.keys():
                self.where.setdefault(p, set()).add(w)
        for p, d in delta.items():
            if d == 0:
                continue
            c = self.counts.get(p, 0) + d
            if c > 0:
                self.counts[p] = c
                heapq.heappush(self.heap, (-c, p[0], p[1]))
            else:
                self.counts.pop(p, None)
                self.where.pop(p, None)
        self.counts.pop(pair, None)


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016, GPT-2 flavour), written from scratch.

    Ids ``0..255`` are the raw bytes, id ``256 + r`` is the token produced by merge rank
    ``r``, and special tokens come last. Text is first cut into chunks by a
    pre-tokenization regex (``pretokenize="gpt2"``, ``None`` for one chunk per line, or
    your own pattern); merges never cross a chunk boundary.

    Every ``str`` round-trips: ``decode(encode(s)) == s``. Text is encoded to UTF-8 with
    ``errors="surrogatepass"``, so even lone surrogates (legal in Python strings, e.g. from
    a badly decoded file) survive. ``decode`` turns the byte sequences that are not valid
    UTF-8 -- only possible for ids ``encode`` did not produce, such as a model's samples --
    into U+FFFD.
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]] = (),
        specials: Sequence[str] = (),
        pretokenize: str | None = "gpt2",
        merge_counts: Sequence[int] | None = None,
    ) -> None:
        self.merges: list[tuple[int, int]] = [_merge_pair(m, r) for r, m in enumerate(merges)]
        self.merge_counts: list[int] | None = list(merge_counts) if merge_counts else None
        self.pretokenize = _canonical_pretokenizer(pretokenize)
        self._pattern = _compile_pattern(self.pretokenize)
        self._vocab: list[bytes] = [bytes([i]) for i in range(256)]
        self._ranks: dict[tuple[int, int], int] = {}
        total = 256
        for rank, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + rank and 0 <= b < 256 + rank):
                raise ValueError(f"merge {rank} {(a, b)} refers to a token not yet defined")
            size = len(self._vocab[a]) + len(self._vocab[b])
            total += size
            if size > MAX_PIECE_BYTES or total > MAX_VOCAB_BYTES:
                raise ValueError(
                    f"merge {rank} builds a token of {size:,} bytes (vocabulary {total:,} bytes); "
                    f"tinytrans allows {MAX_PIECE_BYTES:,} per token -- the merges are damaged"
                )
            self._ranks[(a, b)] = rank
            self._vocab.append(self._vocab[a] + self._vocab[b])
        if isinstance(specials, (str, bytes)) or not all(isinstance(x, str) for x in specials):
            raise ValueError(f"specials must be a list of strings, got {specials!r}")
        self.specials: list[str] = list(dict.fromkeys(specials))
        base = len(self._vocab)
        self.special_ids: dict[str, int] = {s: base + k for k, s in enumerate(self.specials)}
        self._id_to_special = {i: s for s, i in self.special_ids.items()}
        self._special_re = (
            regex.compile("|".join(regex.escape(s) for s in sorted(self.specials, key=len)[::-1]))
            if self.specials
            else None
        )
        roles = _special_roles(self.special_ids)
        self.bos_id, self.eos_id, self.pad_id = roles["bos"], roles["eos"], roles["pad"]
        self.unk_id: int | None = None  # every byte sequence is representable
        self._cache: dict[str, list[int]] = {}

    # -- training ------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pretokenize: str | None = "gpt2",
        specials: Sequence[str] = (),
        callback: Callable[[Merge], None] | None = None,
        verbose: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(specials)`` merges from ``text``.

        Chunks are counted once (each distinct chunk is stored with its frequency), pair
        counts and a pair -> words index are kept, and after each merge only the words
        containing the merged pair are updated. ``callback`` (or ``verbose=True``) sees
        every merge as it happens. Special strings in ``text`` are cut out before counting.
        """
        n_merges = vocab_size - 256 - len(dict.fromkeys(specials))
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the 256 byte tokens plus "
                f"{len(specials)} special tokens; use vocab_size >= {256 + len(specials)}"
            )
        if not text:
            raise ValueError("cannot train a BPETokenizer on empty text")
        words, freqs = cls._count_chunks(text, _compile_pattern(pretokenize), specials)
        stats = _PairStats(words, freqs)
        merges: list[tuple[int, int]] = []
        counts: list[int] = []
        while len(merges) < n_merges:
            found = stats.best()
            if found is None:
                raise ValueError(
                    f"the text ran out of pairs to merge after {len(merges)} merges, so "
                    f"vocab_size={vocab_size} cannot be reached; use vocab_size <= "
                    f"{256 + len(merges) + len(specials)} or train on more text"
                )
            pair, count = found
            new_id = 256 + len(merges)
            stats.merge(pair, new_id)
            merges.append(pair)
            counts.append(count)
            if callback is not None or verbose:
                event = Merge(len(merges) - 1, pair[0], pair[1], new_id, count)
                if callback is not None:
                    callback(event)
                if verbose:
                    print(f"merge {event.rank:5d}: {pair} -> {new_id} (count {count})")
        return cls(merges, specials=specials, pretokenize=pretokenize, merge_counts=counts)

    @staticmethod
    def _count_chunks(
        text: str, pattern: regex.Pattern[str], specials: Sequence[str]
    ) -> tuple[list[list[int]], list[int]]:
        """Distinct pre-tokenized chunks as byte lists, with how often each occurs."""
        parts = [text]
        if specials:
            special_re = regex.compile("|".join(regex.escape(s) for s in specials))
            parts = special_re.split(text)
        chunk_counts: Counter[str] = Counter()
        for part in parts:
            chunk_counts.update(_split(pattern, part))
        words = [list(c.encode("utf-8", "surrogatepass")) for c in chunk_counts]
        return words, list(chunk_counts.values())

    # -- encoding ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._vocab) + len(self.specials)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one chunk in rank order (lowest rank first), cached."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        syms = list(chunk.encode("utf-8", "surrogatepass"))
        ranks = self._ranks
        while len(syms) > 1:
            best = min(pairwise(syms), key=lambda p: ranks.get(p, 1 << 60))
            rank = ranks.get(best)
            if rank is None:
                break
            syms = _merge_symbols(syms, best[0], best[1], 256 + rank)
        if len(self._cache) >= 200_000:
            self._cache.clear()
        self._cache[chunk] = syms
        return syms

    def _chunks(self, text: str) -> list[str]:
        """Pre-tokenize; ``findall`` is the fast path when its matches tile the text."""
        if self._pattern.groups == 0:
            chunks = self._pattern.findall(text)
            if sum(map(len, chunks)) == len(text):
                return chunks
        return list(_split(self._pattern, text))

    def _encode_ordinary(self, text: str) -> list[int]:
        out: list[int] = []
        cache, encode_chunk = self._cache, self._encode_chunk
        for chunk in self._chunks(text):
            ids = cache.get(chunk)
            out.extend(encode_chunk(chunk) if ids is None else ids)
        return out

    def encode(self, text: str, allowed_special: Iterable[str] | Literal["all"] = ()) -> list[int]:
        """Text -> ids. Special strings are recognised only if listed in ``allowed_special``
        (or ``"all"``); otherwise they are encoded as ordinary text."""
        allowed = set(self.specials) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.specials)
        if unknown:
            raise ValueError(f"allowed_special names tokens this tokenizer lacks: {unknown}")
        if not allowed or self._special_re is None:
            return self._encode_ordinary(text)
        out: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            if m.group() not in allowed:
                continue
            out.extend(self._encode_ordinary(text[pos : m.start()]))
            out.append(self.special_ids[m.group()])
            pos = m.end()
        out.extend(self._encode_ordinary(text[pos:]))
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids`` (special tokens as their UTF-8 text)."""
        vocab, n = self._vocab, self.vocab_size
        parts = []
        for i in _as_int_list(ids):
            if 0 <= i < len(vocab):
                parts.append(vocab[i])
            elif i in self._id_to_special:
                parts.append(self._id_to_special[i].encode("utf-8", "surrogatepass"))
            else:
                raise _bad_id(i, n)
        return b"".join(parts)

    def decode(self, ids: Iterable[int], errors: Literal["replace", "strict"] = "replace") -> str:
        """Ids -> text. Invalid UTF-8 (from ids ``encode`` did not produce) becomes U+FFFD,
        or raises with ``errors="strict"``; lone surrogates always round-trip."""
        data = self.decode_bytes(ids)
        return data.decode("utf-8", _ERRORS if errors == "replace" else "surrogatepass")

    # -- inspection ----------------------------------------------------------------
    def token_bytes(self, i: int) -> bytes:
        """The bytes token ``i`` stands for."""
        return self.decode_bytes([i])

    def id_to_piece(self, i: int) -> str:
        """Readable text of token ``i``; bytes that are not whole characters show as
        ``\\xNN`` escapes."""
        if i in self._id_to_special:
            return self._id_to_special[i]
        return self.token_bytes(i).decode("utf-8", "backslashreplace")

    def merge_pieces(self, n: int | None = None) -> list[tuple[str, str, str]]:
        """The first ``n`` merges (all if ``None``) as ``(left, right, merged)`` text."""
        rows = []
        for rank, (a, b) in enumerate(self.merges[:n]):
            rows.append((self.id_to_piece(a), self.id_to_piece(b), self.id_to_piece(256 + rank)))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "bpe",
            "format": FORMAT_VERSION,
            "pretokenize": self.pretokenize,
            "merges": [list(m) for m in self.merges],
            "merge_counts": self.merge_counts,
            "specials": self.specials,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        return cls(
            [tuple(m) for m in d["merges"]],
            specials=d["specials"],
            pretokenize=d["pretokenize"],
            merge_counts=d.get("merge_counts"),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write merges, specials and the pre-tokenizer as JSON (atomically)."""
        return _write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"pretokenize={self.pretokenize!r}, specials={self.specials})"
        )


# ----------------------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer:
    """A ``sentencepiece`` model (unigram or BPE) behind the tinytrans interface.

    Training reads the text line by line (each non-empty line is one "sentence").
    SentencePiece is lossy by design in several places, which is worth knowing before
    comparing it with byte-level BPE:

    * the default normalization ``"nmt_nfkc"`` applies Unicode NFKC (``"ﬁ"`` becomes
      ``"fi"``, full-width letters become ASCII) and, with ``remove_extra_whitespaces``,
      collapses runs of spaces and drops leading/trailing spaces;
    * spaces are stored as the visible piece ``"▁"`` (U+2581) and a "dummy" ``▁`` is put
      in front of every line, which ``decode`` strips again;
    * characters outside the trained alphabet (``character_coverage`` < 1, or unseen)
      become ``<unk>`` unless ``byte_fallback=True``; lone surrogates cannot be encoded.

    Newlines are kept: training adds ``"\\n"`` as a user-defined piece
    (``newline_token=True``), ``encode`` encodes line by line and puts that piece between
    the lines, so each line starts like the training sentences did. With
    ``normalization_rule_name="identity"``, ``remove_extra_whitespaces=False`` and
    ``byte_fallback=True`` the round trip is exact for every string without surrogates.
    """

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)

        def role(i: int) -> int | None:
            return None if i < 0 else i

        self.bos_id = role(self._sp.bos_id())
        self.eos_id = role(self._sp.eos_id())
        self.pad_id = role(self._sp.pad_id())
        self.unk_id = role(self._sp.unk_id())
        nl = self._sp.piece_to_id("\n")
        self.newline_id: int | None = nl if self._sp.id_to_piece(nl) == "\n" else None

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        model_type: Literal["unigram", "bpe"] = "unigram",
        character_coverage: float = 1.0,
        byte_fallback: bool = False,
        bos_id: int | None = 0,
        eos_id: int | None = 1,
        pad_id: int | None = 2,
        unk_id: int = 3,
        normalization_rule_name: str = "nmt_nfkc",
        remove_extra_whitespaces: bool = True,
        newline_token: bool = True,
        user_defined_symbols: Sequence[str] = (),
        input_sentence_size: int = 2_000_000,
        seed: int = 0,
        num_threads: int | None = None,
        **trainer_options: Any,
    ) -> SentencePieceTokenizer:
        """Train in memory (no files touched) on the lines of ``text``.

        Special ids default to BOS=0, EOS=1, PAD=2, UNK=3; pass ``None`` to leave out BOS,
        EOS or PAD. Extra keyword arguments go to ``SentencePieceTrainer.train``.
        """
        import sentencepiece as spm

        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            raise ValueError("cannot train a SentencePieceTokenizer on empty text")
        symbols = list(user_defined_symbols)
        if newline_token and "\n" not in symbols:
            symbols.append("\n")
        longest = max(len(line.encode("utf-8", "surrogatepass")) for line in lines)
        options: dict[str, Any] = {
            "vocab_size": vocab_size,
            "model_type": model_type,
            "character_coverage": character_coverage,
            "byte_fallback": byte_fallback,
            "bos_id": -1 if bos_id is None else bos_id,
            "eos_id": -1 if eos_id is None else eos_id,
            "pad_id": -1 if pad_id is None else pad_id,
            "unk_id": unk_id,
            "normalization_rule_name": normalization_rule_name,
            "remove_extra_whitespaces": remove_extra_whitespaces,
            "user_defined_symbols": symbols,
            # Sample at most this many lines (0 = all), reproducibly (see seed below).
            "input_sentence_size": input_sentence_size if len(lines) > input_sentence_size else 0,
            "shuffle_input_sentence": True,
            # Lines longer than max_sentence_length bytes would be skipped silently.
            "max_sentence_length": max(4192, longest + 1),
            "num_threads": num_threads or os.cpu_count() or 1,
            "minloglevel": 2,  # keep notebooks free of the trainer's log spam
            **trainer_options,
        }
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, **options
            )
        except RuntimeError as err:
            raise _explain_sentencepiece_error(err, vocab_size) from err
        return cls(model.getvalue())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SentencePieceTokenizer:
        """Load a ``.model`` file written by SentencePiece (or :meth:`save_model`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model file not found: {path}")
        return cls(path.read_bytes())

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model (what a ``.model`` file contains)."""
        return self._proto

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @staticmethod
    def _required(token_id: int | None, name: str) -> int:
        if token_id is None:
            raise ValueError(
                f"add_{name.lower()}=True but this model has no {name} token; train it with "
                f"{name.lower()}_id set"
            )
        return token_id

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> ids, optionally wrapped in BOS/EOS."""
        ids: list[int] = [self._required(self.bos_id, "BOS")] if add_bos else []
        eos = self._required(self.eos_id, "EOS") if add_eos else None
        if self.newline_id is None:
            ids.extend(self._sp.encode(text))
        else:
            for k, line_ids in enumerate(self._sp.encode(text.split("\n"))):
                if k:
                    ids.append(self.newline_id)
                ids.extend(line_ids)
        if eos is not None:
            ids.append(eos)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (BOS/EOS/PAD are dropped, as SentencePiece does)."""
        ids = _as_int_list(ids)
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise _bad_id(i, n)
        if self.newline_id is None:
            return self._sp.decode(ids)
        lines: list[list[int]] = [[]]
        for i in ids:
            if i == self.newline_id:
                lines.append([])
            else:
                lines[-1].append(i)
        return "\n".join(self._sp.decode(lines))

    def id_to_piece(self, i: int) -> str:
        if not 0 <= i < self.vocab_size:
            raise _bad_id(i, self.vocab_size)
        return self._sp.id_to_piece(i)

    def encode_as_pieces(self, text: str) -> list[str]:
        """The pieces (with ``▁`` for spaces) ``encode`` would produce."""
        return [self.id_to_piece(i) for i in self.encode(text)]

    # -- the unigram model made visible (section 2.5) -------------------------------
    def piece_scores(self) -> dict[str, float]:
        """Each ordinary piece's score: its log-probability in a unigram model (for a BPE
        model, minus its merge rank). Control, unknown, byte and unused pieces are left out."""
        sp = self._sp
        return {
            sp.id_to_piece(i): sp.get_score(i)
            for i in range(sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
        }

    def nbest_pieces(self, text: str, n: int) -> list[list[str]]:
        """The ``n`` most probable segmentations of ``text``, best first (unigram models)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        return [list(pieces) for pieces in self._sp.nbest_encode_as_pieces(text, n)]

    def sample_pieces(
        self, text: str, n: int, alpha: float = 0.1, seed: int | None = None
    ) -> list[list[str]]:
        """``n`` segmentations of ``text`` drawn by subword regularisation (Kudo 2018): each
        with probability proportional to ``P(segmentation) ** alpha`` (unigram models).
        ``seed`` reseeds SentencePiece's own generator first, for a repeatable draw."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if seed is not None:
            import sentencepiece as spm

            spm.set_random_generator_seed(seed)
        return [list(self._sp.sample_encode_as_pieces(text, -1, alpha)) for _ in range(n)]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a JSON file embedding the model proto (base64); restore with :func:`load`."""
        return _write_json(
            path,
            {
                "type": "sentencepiece",
                "format": FORMAT_VERSION,
                "model_proto_base64": base64.b64encode(self._proto).decode("ascii"),
            },
        )

    def save_model(self, path: str | os.PathLike[str]) -> Path:
        """Write the plain ``.model`` file other SentencePiece tools read."""
        return _atomic_write_bytes(path, self._proto)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


def _explain_sentencepiece_error(err: RuntimeError, vocab_size: int) -> ValueError:
    """Turn SentencePiece's C++ error text into a message that says what to change."""
    msg = str(err)
    m = re.search(r"<=\s*(\d+)", msg)
    if "Vocabulary size too high" in msg and m:
        return ValueError(
            f"vocab_size={vocab_size} is too large for this text: SentencePiece can build "
            f"at most {m.group(1)} pieces from it; use a smaller vocab_size or more text"
        )
    if "Vocabulary size is smaller than required_chars" in msg:
        return ValueError(
            f"vocab_size={vocab_size} is smaller than the number of distinct characters "
            "SentencePiece must keep; raise vocab_size or lower character_coverage "
            f"(SentencePiece said: {msg})"
        )
    return ValueError(f"SentencePiece training failed: {msg}")


# ----------------------------------------------------------------------------- load/compare


def load(path: str | os.PathLike[str]) -> CharTokenizer | BPETokenizer | SentencePieceTokenizer:
    """Restore a tokenizer written by any ``save`` (a raw ``.model`` file works too)."""
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
    """A tokenizer from its ``to_dict()`` form, every field checked first (ValueError)."""
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

    ``vocab_size`` is ignored for ``"char"`` (the alphabet decides it).
    """
    if kind == "char":
        return CharTokenizer.train(text, **kwargs)
    if vocab_size is None:
        raise ValueError(f"tokenizer kind {kind!r} needs a vocab_size")
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size, **kwargs)
    if kind in ("sp-bpe", "sp-unigram"):
        model_type = kind.removeprefix("sp-")
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
