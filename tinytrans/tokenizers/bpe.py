"""Byte-level byte-pair encoding written from scratch (section 2.4, "Byte-level BPE, from
scratch"): the GPT-2 recipe -- start from the 256 byte values, repeatedly merge the most
frequent adjacent pair -- with the registry of named pre-tokenizers and the merge records.
"""

from __future__ import annotations

import codecs
import heapq
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import regex

from tinytrans.tokenizers.base import (
    FORMAT_VERSION,
    MAX_PIECE_BYTES,
    MAX_VOCAB_BYTES,
    _as_int_list,
    _bad_id,
    _special_roles,
    _write_json,
)

__all__ = [
    "GPT2_PATTERN",
    "LINES_PATTERN",
    "PRETOKENIZERS",
    "BPETokenizer",
    "Merge",
    "pretokenizer_names",
    "register_pretokenizer",
]

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
    """Names ``pretokenize=`` accepts (besides ``None``, one chunk per line) (section 2.4)."""
    return [*PRETOKENIZERS, *_REGISTERED]


def register_pretokenizer(name: str, pattern: str) -> None:
    """Make ``pattern`` (a ``regex`` pattern, from *your code*) usable as ``pretokenize=name``.
    (Section 2.4.)

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
    """One BPE training step, as passed to ``BPETokenizer.train(callback=...)`` (section 2.4)."""

    rank: int
    left: int
    right: int
    new_id: int
    # A field named like tuple.count, a public name since the chapter shows it.
    count: int  # type: ignore[assignment]


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
        """The most frequent pair and its count, or ``None`` when no pair is left (section 2.4)."""
        heap, counts = self.heap, self.counts
        while heap:
            negc, a, b = heap[0]
            if counts.get((a, b), 0) == -negc > 0:
                return (a, b), -negc
            heapq.heappop(heap)
        return None

    def merge(self, pair: tuple[int, int], new: int) -> None:
        """Apply ``pair -> new`` to every word containing it and update the statistics.
        (Section 2.4.)"""
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
    """Byte-level BPE (Sennrich et al. 2016, GPT-2 flavour), written from scratch (section 2.4).

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
        """Learn ``vocab_size - 256 - len(specials)`` merges from ``text`` (section 2.4).

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
        (or ``"all"``); otherwise they are encoded as ordinary text (section 2.4)."""
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
        """The raw bytes of ``ids`` (special tokens as their UTF-8 text) (section 2.4)."""
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
        or raises with ``errors="strict"``; lone surrogates always round-trip (section 2.4)."""
        data = self.decode_bytes(ids)
        return data.decode("utf-8", _ERRORS if errors == "replace" else "surrogatepass")

    # -- inspection ----------------------------------------------------------------
    def token_bytes(self, i: int) -> bytes:
        """The bytes token ``i`` stands for (section 2.4)."""
        return self.decode_bytes([i])

    def id_to_piece(self, i: int) -> str:
        """Readable text of token ``i``; bytes that are not whole characters show as
        ``\\xNN`` escapes (section 2.4)."""
        if i in self._id_to_special:
            return self._id_to_special[i]
        return self.token_bytes(i).decode("utf-8", "backslashreplace")

    def merge_pieces(self, n: int | None = None) -> list[tuple[str, str, str]]:
        """The first ``n`` merges (all if ``None``) as ``(left, right, merged)`` text.
        (Section 2.4.)"""
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
        """Write merges, specials and the pre-tokenizer as JSON (atomically) (section 2.4)."""
        return _write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"pretokenize={self.pretokenize!r}, specials={self.specials})"
        )
