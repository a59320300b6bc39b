"""The character tokenizer: one id per character of a fixed alphabet (section 2.3,
"A character tokenizer")."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from tinytrans.tokenizers.base import (
    FORMAT_VERSION,
    _as_int_list,
    _bad_id,
    _special_roles,
    _write_json,
)

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """One id per character: the sorted alphabet of a corpus, then any special tokens (section 2.3).

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
        """Build the vocabulary from the distinct characters of ``text`` (section 2.3)."""
        if not text:
            raise ValueError("cannot build a CharTokenizer from empty text")
        return cls(set(text), specials=specials, unknown=unknown)

    from_text = train

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, text: str) -> list[int]:
        """Map each character to its id (or to ``<unk>``, or raise -- see ``unknown``).
        (Section 2.3.)"""
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
        """Join the pieces of ``ids`` (special tokens decode to their own string) (section 2.3)."""
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
        """Write the tokenizer as JSON (atomically); restore with :func:`load` (section 2.3)."""
        return _write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"
