"""The unigram model made visible: piece scores, n-best segmentations, subword sampling."""

from __future__ import annotations

import math

import pytest

from tinytrans.data import load_corpus
from tinytrans.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def unigram():
    text = load_corpus("shakespeare").text[:60_000]
    return train_tokenizer("sp-unigram", text, 400, num_threads=1)


def test_piece_scores_are_log_probabilities(unigram):
    scores = unigram.piece_scores()
    assert scores and all(s <= 0.0 for s in scores.values())
    assert "<unk>" not in scores and "<s>" not in scores


def test_nbest_is_ordered_by_total_score_and_every_segmentation_spells_the_word(unigram):
    scores = unigram.piece_scores()
    best = unigram.nbest_pieces("unkindness", 4)
    totals = [sum(scores[p] for p in seg) for seg in best]
    assert totals == sorted(totals, reverse=True)
    assert all("".join(seg) == "▁unkindness" for seg in best)
    assert best[0] == unigram.encode_as_pieces("unkindness")
    assert math.isfinite(totals[0])


def test_sampling_is_repeatable_with_a_seed_and_varied(unigram):
    first = unigram.sample_pieces("unkindness", 30, alpha=0.5, seed=1)
    assert first == unigram.sample_pieces("unkindness", 30, alpha=0.5, seed=1)
    assert all("".join(seg) == "▁unkindness" for seg in first)
    assert len({tuple(seg) for seg in first}) > 1


@pytest.mark.parametrize("call", ["nbest_pieces", "sample_pieces"])
def test_bad_counts_are_explained(unigram, call):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        getattr(unigram, call)("kin", 0)
