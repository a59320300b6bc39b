"""Tests for tinytrans.tokenizers: round trips, BPE merges, special ids, save/load, errors."""

from __future__ import annotations

import base64
import json
import os
import random
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytrans import tokenizers as T
from tinytrans.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    compare_tokenizers,
    load,
)
from tinytrans.tokenizers import bpe as bpe_module

SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "su", "te", "vo", "an", "el"]
SYLLABLES += ["or", "is", "th", "qu", "st", "ing", "er", "ed", "ow", "ay"]


def make_text(n_lines: int, seed: int = 0) -> str:
    """Deterministic pseudo-text: ~1000 made-up words with Zipf-like frequencies, so
    subword tokenizers have something to learn and a few hundred pieces are reachable."""
    vocab_rng, rng = random.Random(1234), random.Random(seed)
    words = sorted(
        {"".join(vocab_rng.choices(SYLLABLES, k=vocab_rng.randint(1, 3))) for _ in range(600)}
        | {"the", "king", "queen", "lord"}
    )
    weights = [1 / (k + 1) for k in range(len(words))]
    lines = []
    for _ in range(n_lines):
        line = " ".join(rng.choices(words, weights, k=rng.randint(3, 9)))
        lines.append(line.capitalize() + rng.choice([",", ".", ";", "!", "?"]))
    return "\n".join(lines) + "\n"


TEXT = make_text(1000)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 600, specials=["<|endoftext|>"])


@pytest.fixture(scope="module")
def sp_unigram() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(TEXT, 300, model_type="unigram")


@pytest.fixture(scope="module")
def sp_lossless() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(
        TEXT,
        400,
        model_type="bpe",
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        byte_fallback=True,
    )


# ----------------------------------------------------------------------------- protocol/save


def test_all_tokenizers_satisfy_protocol(bpe, sp_unigram):
    for tok in (CharTokenizer.train(TEXT), bpe, sp_unigram):
        assert isinstance(tok, Tokenizer)
        assert tok.vocab_size > 0
        assert isinstance(tok.id_to_piece(0), str)


@pytest.mark.parametrize("kind", ["char", "bpe", "sp"])
def test_save_load_round_trip(kind, tmp_path, bpe, sp_unigram):
    tok = {"char": CharTokenizer.train(TEXT, specials=["<bos>"]), "bpe": bpe, "sp": sp_unigram}[
        kind
    ]
    path = tok.save(tmp_path / "tok.json")
    assert os.listdir(tmp_path) == ["tok.json"]  # atomic write leaves no temp file
    assert json.loads(path.read_text())["type"] in ("char", "bpe", "sentencepiece")
    back = load(path)
    assert type(back) is type(tok)
    sample = TEXT[:500]
    assert back.encode(sample) == tok.encode(sample)
    assert back.vocab_size == tok.vocab_size
    assert (back.bos_id, back.eos_id, back.pad_id, back.unk_id) == (
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
        tok.unk_id,
    )


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "x.json"
    bad.write_text('{"type": "wordpiece"}')
    with pytest.raises(ValueError, match="wordpiece"):
        load(bad)
    bad.write_bytes(b"\x00\xff not json")
    with pytest.raises(ValueError, match="not a tinytrans tokenizer"):
        load(bad)


# ----------------------------------------------------------------------------- char


def test_char_vocab_sorted_and_specials_after():
    tok = CharTokenizer.train("hello world", specials=["<bos>", "<eos>", "<pad>"])
    assert tok.chars == sorted(set("hello world"))
    assert [tok.id_to_piece(i) for i in range(len(tok.chars))] == tok.chars
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (8, 9, 10)
    assert tok.unk_id is None
    assert tok.vocab_size == 11


@settings(deadline=None)
@given(st.data())
def test_char_round_trip_on_alphabet(data):
    alphabet = sorted(set(TEXT))
    text = data.draw(st.text(alphabet=alphabet))
    tok = CharTokenizer.train(TEXT)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


def test_char_unknown_error_names_character_and_position():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 3"):
        tok.encode("abcz")


def test_char_unknown_unk_maps_to_unk():
    tok = CharTokenizer.train("abc", unknown="unk")
    assert tok.unk_id == 3 and tok.id_to_piece(3) == "<unk>"
    assert tok.encode("azb") == [0, 3, 1]
    assert tok.decode(tok.encode("azb")) == "a<unk>b"


def test_char_errors():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.train("")
    with pytest.raises(ValueError, match="unknown must be"):
        CharTokenizer.train("ab", unknown="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        CharTokenizer.train("ab").decode([5])


def test_char_surrogates_survive_save(tmp_path):
    text = "a\ud800b"
    tok = CharTokenizer.train(text)
    back = load(tok.save(tmp_path / "c.json"))
    assert back.decode(back.encode(text)) == text


# ----------------------------------------------------------------------------- BPE


def naive_bpe(text: str, n_merges: int, pretokenize: str | None = "gpt2") -> list[tuple[int, int]]:
    """Reference BPE: recount every pair from scratch at every step (slow but obvious)."""
    pattern = bpe_module._compile_pattern(pretokenize)
    words = [list(w.encode("utf-8", "surrogatepass")) for w in pattern.findall(text)]
    merges: list[tuple[int, int]] = []
    for rank in range(n_merges):
        counts: Counter[tuple[int, int]] = Counter()
        for w in words:
            counts.update(pairwise(w))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        words = [bpe_module._merge_symbols(w, *best, 256 + rank) for w in words]
        merges.append(best)
    return merges


def test_bpe_toy_merges_by_hand():
    # "aaabdaaabac": aa=4 first; then ab and (aa)a tie at 2 -> smaller ids (a, b) wins.
    tok = BPETokenizer.train("aaabdaaabac", 256 + 4, pretokenize=None)
    a, b, c = ord("a"), ord("b"), ord("c")
    assert tok.merges == [(a, a), (a, b), (256, 257), (a, c)]
    assert tok.merge_counts == [4, 2, 2, 1]
    assert tok.merge_pieces() == [
        ("a", "a", "aa"),
        ("a", "b", "ab"),
        ("aa", "ab", "aaab"),
        ("a", "c", "ac"),
    ]
    assert tok.merge_pieces(1) == [("a", "a", "aa")]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, 259]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pretokenize", ["gpt2", None])
def test_bpe_incremental_counts_match_naive_recount(seed, pretokenize):
    rng = random.Random(seed)
    alphabet = rng.choice(["ab ", "abc \n", "xyz, é.\n", "aaab "])
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(50, 400)))
    reference = naive_bpe(text, 60, pretokenize)
    tok = BPETokenizer.train(text, 256 + len(reference), pretokenize=pretokenize)
    assert tok.merges == reference


def test_bpe_matches_naive_on_real_text():
    text = TEXT[:3000]
    reference = naive_bpe(text, 80)
    assert BPETokenizer.train(text, 256 + 80).merges == reference


def test_bpe_training_is_deterministic_and_reports_merges():
    events = []
    tok1 = BPETokenizer.train(TEXT, 300, callback=events.append)
    tok2 = BPETokenizer.train(TEXT, 300)
    assert tok1.merges == tok2.merges
    assert [e.rank for e in events] == list(range(44))
    assert [e.count for e in events] == tok1.merge_counts
    assert all(e.new_id == 256 + e.rank for e in events)
    assert events[0].count >= events[-1].count


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text())
def test_bpe_round_trips_every_string(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)


BPE_LINES = BPETokenizer.train(TEXT[:5000], 400, pretokenize=None)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from([*sorted(set(TEXT)), "é", "\ud800", "🙂"])) | st.text())
def test_bpe_lines_mode_round_trip(text):
    assert BPE_LINES.decode(BPE_LINES.encode(text)) == text


def test_bpe_lines_mode_merges_across_spaces():
    pieces = [merged for _, _, merged in BPE_LINES.merge_pieces()]
    assert any(" " in p.strip(" ") for p in pieces)  # a token spanning two words
    assert not any("\n" in p[:-1] for p in pieces)  # but never across a line break


T.register_pretokenizer("test-digits", r"\d+")
T.register_pretokenizer("test-empty-or-x", r"\b|x*")
T.register_pretokenizer("test-groups", r"(a)|(\s)")
T.register_pretokenizer("test-word", r"\w+")
T.register_pretokenizer("test-grouped", r"(\w)\w*|\b")


@settings(deadline=None)
@given(st.text())
def test_pretokenizer_chunks_tile_the_text(text):
    for name in ("gpt2", "lines", "words", "test-digits", "test-empty-or-x", "test-groups"):
        assert "".join(bpe_module._split(bpe_module._compile_pattern(name), text)) == text


def test_bpe_custom_pattern_round_trip_and_save(tmp_path):
    tok = BPETokenizer.train(TEXT[:5000], 300, pretokenize="test-word")
    text = "Kaloqu, the king! 12\n  ¿qué?"
    assert tok.decode(tok.encode(text)) == text  # gaps the pattern skips are still encoded
    grouped = BPETokenizer.train(TEXT[:5000], 300, pretokenize="test-grouped")
    assert grouped.decode(grouped.encode(text)) == text
    path = tok.save(tmp_path / "bpe.json")
    assert json.loads(path.read_text())["pretokenize"] == "test-word"  # the name, no pattern
    back = load(path)
    assert back.pretokenize == "test-word" and back.encode(text) == tok.encode(text)


def test_bpe_verbose_prints_merges(capsys):
    BPETokenizer.train("aaabdaaabac", 258, pretokenize=None, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "(97, 97) -> 256 (count 4)" in lines[0]


def test_bpe_compresses_and_learns_words(bpe):
    assert len(bpe.encode(TEXT)) < len(TEXT.encode()) / 2
    pieces = {bpe.id_to_piece(i) for i in range(256, 256 + len(bpe.merges))}
    common = [w for w, _ in Counter(TEXT.lower().split()).most_common(5)]
    assert all(f" {w}" in pieces for w in common)


def test_bpe_special_tokens(bpe):
    eot = "<|endoftext|>"
    assert bpe.eos_id == bpe.vocab_size - 1 == bpe.special_ids[eot]
    assert bpe.bos_id is None and bpe.pad_id is None and bpe.unk_id is None
    ids = bpe.encode(f"the king{eot}queen", allowed_special={eot})
    assert ids.count(bpe.eos_id) == 1
    assert bpe.decode(ids) == f"the king{eot}queen"
    plain = bpe.encode(f"the king{eot}queen")
    assert bpe.eos_id not in plain and bpe.decode(plain) == f"the king{eot}queen"
    assert bpe.encode(eot, allowed_special="all") == [bpe.eos_id]
    with pytest.raises(ValueError, match="lacks"):
        bpe.encode("x", allowed_special={"<pad>"})


def test_bpe_specials_are_not_merged_in_training():
    text = "ab<|endoftext|>ab<|endoftext|>" * 20
    tok = BPETokenizer.train(text, 256 + 1 + 1, specials=["<|endoftext|>"], pretokenize=None)
    assert tok.merge_pieces() == [("a", "b", "ab")]


def test_bpe_decode_invalid_utf8(bpe):
    e_acute = "é".encode()
    assert bpe.decode([e_acute[0]]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        bpe.decode([e_acute[0]], errors="strict")
    assert bpe.id_to_piece(e_acute[0]) == "\\xc3"
    with pytest.raises(ValueError, match="out of range"):
        bpe.decode([bpe.vocab_size])


def test_bpe_vocab_size_errors():
    with pytest.raises(ValueError, match="smaller than the 256 byte tokens"):
        BPETokenizer.train("abc", 100)
    with pytest.raises(ValueError, match=r"ran out of pairs.*vocab_size <= 258"):
        BPETokenizer.train("abc", 1000)
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train("", 300)


def test_bpe_accepts_tensor_ids(bpe):
    import torch

    ids = bpe.encode("the queen")
    assert bpe.decode(torch.tensor(ids)) == "the queen"


# ----------------------------------------------------------------------------- SentencePiece


def test_sentencepiece_default_special_ids(sp_unigram):
    assert (sp_unigram.bos_id, sp_unigram.eos_id, sp_unigram.pad_id, sp_unigram.unk_id) == (
        0,
        1,
        2,
        3,
    )
    ids = sp_unigram.encode("the king", add_bos=True, add_eos=True)
    assert ids[0] == 0 and ids[-1] == 1
    assert sp_unigram.decode(ids) == "the king"


def test_sentencepiece_optional_specials():
    tok = SentencePieceTokenizer.train(TEXT, 150, bos_id=None, pad_id=None, eos_id=1, unk_id=0)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (None, 1, None, 0)
    with pytest.raises(ValueError, match="no BOS token"):
        tok.encode("x", add_bos=True)


def test_sentencepiece_default_normalization_is_lossy(sp_unigram):
    # NFKC folds full-width letters to ASCII; extra spaces are collapsed and trimmed.
    assert sp_unigram.decode(sp_unigram.encode("ｋｉｎｇ")) == "king"
    assert sp_unigram.decode(sp_unigram.encode("  the   king ")) == "the king"
    # Characters never seen in training become <unk> (shown as " ⁇ ").
    assert sp_unigram.unk_id in sp_unigram.encode("the $ king")


def test_sentencepiece_keeps_newlines(sp_unigram):
    text = "the king\nthe queen\n\nmy lord"
    ids = sp_unigram.encode(text)
    assert ids.count(sp_unigram.newline_id) == 3
    assert sp_unigram.decode(ids) == text
    # each line starts like a training sentence (with the "▁" word-start piece)
    queen = sp_unigram.encode("the queen")
    start = ids.index(sp_unigram.newline_id) + 1
    assert ids[start : start + len(queen)] == queen


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\u2581")))
def test_sentencepiece_identity_round_trip(sp_lossless, text):
    assert sp_lossless.decode(sp_lossless.encode(text)) == text


def test_sentencepiece_bpe_and_unigram_compress():
    for model_type in ("bpe", "unigram"):
        tok = SentencePieceTokenizer.train(TEXT, 300, model_type=model_type)
        assert len(tok.encode(TEXT)) < len(TEXT) / 3
        assert tok.encode_as_pieces("the king")[0].startswith("▁")


def test_sentencepiece_model_file_round_trip(tmp_path, sp_unigram):
    path = sp_unigram.save_model(tmp_path / "m.model")
    for back in (SentencePieceTokenizer.from_file(path), load(path)):
        assert back.encode(TEXT[:300]) == sp_unigram.encode(TEXT[:300])
        assert back.newline_id == sp_unigram.newline_id
    with pytest.raises(FileNotFoundError):
        SentencePieceTokenizer.from_file(tmp_path / "nope.model")


def test_sentencepiece_training_is_quiet_and_leaves_no_files(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    SentencePieceTokenizer.train(TEXT, 150)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(Path(tmp_path).iterdir()) == []


def test_sentencepiece_errors_are_translated():
    with pytest.raises(ValueError, match=r"vocab_size=5000 is too large.*at most \d+"):
        SentencePieceTokenizer.train("ab ba ab\nba ab", 5000)
    with pytest.raises(ValueError, match="empty"):
        SentencePieceTokenizer.train("\n\n", 100)


# ----------------------------------------------------------------------------- factory/compare


def test_train_tokenizer_factory():
    assert isinstance(T.train_tokenizer("char", "abc"), CharTokenizer)
    assert isinstance(T.train_tokenizer("bpe", TEXT, 260), BPETokenizer)
    with pytest.raises(ValueError, match="needs a vocab_size"):
        T.train_tokenizer("bpe", TEXT)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        T.train_tokenizer("wordpiece", TEXT, 100)


def test_compare_tokenizers_rows():
    rows = compare_tokenizers(TEXT, [280, 340], window_chars=200)
    kinds = [(r["kind"], r["vocab_size"]) for r in rows]
    assert kinds[0][0] == "char" and len(rows) == 1 + 3 * 2
    assert {k for k, _ in kinds} == {"char", "bpe", "sp-bpe", "sp-unigram"}
    for r in rows:
        assert r["tokens_per_char"] == pytest.approx(1 / r["chars_per_token"])
        assert 0 < r["vocab_used"] <= 1
        assert r["n_tokens"] > 0 and r["tokens_per_window"] > 0
    char = rows[0]
    assert char["tokens_per_char"] == 1.0 and char["round_trip"]
    bpe_rows = [r for r in rows if r["kind"] == "bpe"]
    assert all(r["round_trip"] for r in bpe_rows)
    assert bpe_rows[1]["tokens_per_char"] < bpe_rows[0]["tokens_per_char"] < 1


def test_compare_tokenizers_with_sample():
    rows = compare_tokenizers(TEXT, [300], sample=make_text(20, seed=1), kinds=["bpe"])
    assert len(rows) == 1 and rows[0]["n_chars"] == len(make_text(20, seed=1))


# ----------------------------------------------------------------------------- file format

#: What ``save`` wrote before tokenizers.py became a package: the split must not change a byte.
FORMAT_TEXT = "To be, or not to be: that is the question.\nWhether 'tis nobler \u00e9\n" * 3
CHAR_FILE = b'{"type": "char", "format": 1, "chars": ["\\n", " ", "\'", ",", ".", ":", "T", "W", "a", "b", "e", "h", "i", "l", "n", "o", "q", "r", "s", "t", "u", "\\u00e9"], "specials": ["<eos>"], "unknown": "error"}'
BPE_FILE = b'{"type": "bpe", "format": 1, "pretokenize": "gpt2", "merges": [[32, 116], [104, 101], [32, 98], [32, 110], [105, 115], [258, 101], [259, 111], [32, 39], [32, 111], [32, 113], [32, 195], [32, 260], [84, 111], [87, 257]], "merge_counts": [9, 9, 6, 6, 6, 6, 6, 3, 3, 3, 3, 3, 3, 3], "specials": []}'


def test_saved_files_are_byte_identical_to_the_pre_split_format(tmp_path):
    char = CharTokenizer.train(FORMAT_TEXT, specials=["<eos>"])
    assert char.save(tmp_path / "c.json").read_bytes() == CHAR_FILE
    bpe_tok = BPETokenizer.train(FORMAT_TEXT, 270)
    assert bpe_tok.save(tmp_path / "b.json").read_bytes() == BPE_FILE
    sp = T.train_tokenizer("sp-bpe", FORMAT_TEXT * 20, 60)
    assert isinstance(sp, SentencePieceTokenizer)
    payload = {
        "type": "sentencepiece",
        "format": 1,
        "model_proto_base64": base64.b64encode(sp.model_proto).decode("ascii"),
    }
    expected = json.dumps(payload, ensure_ascii=True).encode("ascii")
    assert sp.save(tmp_path / "s.json").read_bytes() == expected
    assert sp.save_model(tmp_path / "s.model").read_bytes() == sp.model_proto
    leftovers = [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert leftovers == []


def test_saving_goes_through_the_one_atomic_writer(tmp_path, monkeypatch):
    import tinytrans.files as files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(files.AtomicWriteError, match="cannot write"):
        CharTokenizer.train("abc").save(tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()
