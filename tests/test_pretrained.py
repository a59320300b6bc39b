"""The shipped ``shakespeare-char`` model: its card is honest and it writes Shakespeare."""

from __future__ import annotations

import re

import pytest
import torch

import tinytrans.pretrained as pretrained
from tinytrans.data import DataModule, load_corpus
from tinytrans.evaluate import estimate_loss, perplexity
from tinytrans.model import ModelConfig
from tinytrans.train import sample_text

NAME = "shakespeare-char"


@pytest.fixture(scope="module")
def shipped():
    model, tokenizer = pretrained.load_pretrained(NAME)
    return model, tokenizer, pretrained.card(NAME)


@pytest.fixture(scope="module")
def data(shipped):
    _, tokenizer, card = shipped
    settings = card["data"]
    return DataModule(
        tokenizer=tokenizer,
        corpus="shakespeare",
        context_length=settings["context_length"],
        batch_size=card["eval_batch_size"],
        val_fraction=settings["val_fraction"],
        seed=settings["seed"],
    ).setup()


def test_listed_and_small():
    assert NAME in pretrained.available()
    assert pretrained.checkpoint_path(NAME).stat().st_size < 8 * 1024 * 1024


def test_card_records_how_it_was_made(shipped):
    model, tokenizer, card = shipped
    for key in ("seed", "steps", "val_loss", "train_time_s", "command", "train_config"):
        assert card[key] is not None, key
    assert card["corpus"]["sha256"] == load_corpus("shakespeare").info.sha256
    assert card["train_config"]["max_steps"] == card["steps"]  # a step budget, not a clock
    assert ModelConfig.from_dict(card["model_config"]).diff(model.config) == {}
    assert card["preset"] == "course" and card["n_params"] == model.num_parameters()
    assert tokenizer.vocab_size == model.config.vocab_size == card["tokenizer"]["vocab_size"]


def test_model_loads_in_eval_mode_as_fp32(shipped):
    model, _, _ = shipped
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_recorded_validation_loss_matches_a_fresh_evaluation(shipped, data):
    model, _, card = shipped
    fresh = estimate_loss(model, data, card["quick_eval_batches"])
    assert fresh == pytest.approx(card["val_loss_quick"], abs=2e-3)
    assert card["val_loss"] < 1.65  # character-level Shakespeare: readable text


def test_writes_speaker_names_lines_and_words(shipped):
    model, tokenizer, _ = shipped
    text = sample_text(model, tokenizer, "\n", max_new_tokens=400, temperature=0.8, seed=0)
    assert re.search(r"\n[A-Z][A-Za-z .']+:\n", text), text  # "\nSPEAKER:\n"
    assert text.count("\n") >= 4, text
    words = set(re.findall(r"[a-z]+", text.lower()))
    assert len(words & {"the", "and", "to", "of", "i", "you", "my", "a", "that", "is"}) >= 3


def test_more_context_never_hurts_perplexity(shipped, data):
    model, _, _ = shipped
    ids = torch.as_tensor(data.val_tokens[:2048].astype("int64"))
    chunked = perplexity(model, ids, stride=model.config.context_length)
    sliding = perplexity(model, ids, stride=model.config.context_length // 4)
    assert sliding <= chunked
    assert chunked < 6.0


def test_tokenizer_maps_unknown_characters_for_fine_tuning(shipped):
    _, tokenizer, _ = shipped
    ids = tokenizer.encode("def f(x): return x[0]  # {}")
    assert tokenizer.unk_id in ids and len(ids) == len("def f(x): return x[0]  # {}")


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="available"):
        pretrained.load_pretrained("no-such-model")
