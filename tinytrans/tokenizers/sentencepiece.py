"""SentencePiece (unigram or BPE) behind the tinytrans interface (section 2.5,
"SentencePiece: unigram and BPE"). The ``sentencepiece`` library is imported only when a
model is built or trained."""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from tinytrans.files import atomic_write_bytes
from tinytrans.tokenizers.base import FORMAT_VERSION, _as_int_list, _bad_id, _write_json

__all__ = ["SentencePieceTokenizer"]


class SentencePieceTokenizer:
    """A ``sentencepiece`` model (unigram or BPE) behind the tinytrans interface (section 2.5).

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
        """Train in memory (no files touched) on the lines of ``text`` (section 2.5).

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
        """Load a ``.model`` file written by SentencePiece (or :meth:`save_model`) (section 2.5)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model file not found: {path}")
        return cls(path.read_bytes())

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model (what a ``.model`` file contains) (section 2.5)."""
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
        """Text -> ids, optionally wrapped in BOS/EOS (section 2.5)."""
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
        """Ids -> text (BOS/EOS/PAD are dropped, as SentencePiece does) (section 2.5)."""
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
        """The pieces (with ``▁`` for spaces) ``encode`` would produce (section 2.5)."""
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
        """Write a JSON file embedding the model proto (base64); restore with :func:`load`.
        (Section 2.5.)"""
        return _write_json(
            path,
            {
                "type": "sentencepiece",
                "format": FORMAT_VERSION,
                "model_proto_base64": base64.b64encode(self._proto).decode("ascii"),
            },
        )

    def save_model(self, path: str | os.PathLike[str]) -> Path:
        """Write the plain ``.model`` file other SentencePiece tools read (section 2.5)."""
        return atomic_write_bytes(path, self._proto)

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
