"""What every tokenizer shares: the :class:`Tokenizer` protocol, the file format version,
the limits checked before a file is parsed, the special-token roles and the one way a
tokenizer file is written (section 2.1, "What is a token?").

This is the ground floor of the package: it imports nothing from ``tinytrans`` except the
atomic writer, :mod:`tinytrans.files`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tinytrans.files import atomic_write_json

__all__ = [
    "FORMAT_VERSION",
    "MAX_PIECE_BYTES",
    "MAX_TOKENIZER_FILE_BYTES",
    "MAX_VOCAB_BYTES",
    "SPECIAL_ROLES",
    "Tokenizer",
]

#: Version of the tokenizer file format written by every ``save``.
FORMAT_VERSION = 1

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
    """What every tokenizer in tinytrans provides (section 2.1)."""

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


def _write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write a tokenizer file: compact ASCII JSON (lone surrogates survive as ``\\udxxx``
    escapes), atomically, so a reader never sees half a file."""
    return atomic_write_json(path, payload, indent=None)


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
