"""Tests for tinytrans.generate: filters, every decoding path, beam search, speed tricks, CLI,
and the one model perplexity (tinytrans.evaluate) that chapters 3 and 4 share."""

from __future__ import annotations

import argparse
import io
import itertools
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans import generate as G
from tinytrans.evaluate import perplexity, perplexity_from_loss
from tinytrans.generate import SamplingConfig
from tinytrans.generate.decode import _IncrementalDecoder
from tinytrans.generate.prompts import _stop_ids
from tinytrans.generate.serving import _percentile
from tinytrans.model import ModelConfig, TinyTransformer

# --------------------------------------------------------------------------------------------
# Fixtures: tiny models and tokenizers
# --------------------------------------------------------------------------------------------


class CharTok:
    """A minimal character tokenizer (the part of tinytrans.tokenizers.Tokenizer generation uses)."""

    def __init__(self, chars: str, bos: bool = False, eos: bool = False) -> None:
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        n = len(self.chars)
        self.bos_id = n if bos else None
        self.eos_id = n + int(bos) if eos else None

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (self.bos_id is not None) + (self.eos_id is not None)

    def encode(self, text: str) -> list[int]:
        for i, c in enumerate(text):
            if c not in self.stoi:
                raise ValueError(f"character {c!r} at position {i} is not in the alphabet")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else "" for i in ids)


class ByteTok:
    """Byte-level tokenizer: multibyte characters span several ids."""

    bos_id = None
    eos_id = None
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


ALPHABET = "abcdefghij klmnop.\n"


def make_model(
    positional: str = "rope", vocab: int = 24, ctx: int = 32, layers: int = 2, seed: int = 0
) -> TinyTransformer:
    """A small seeded model whose logits are peaked, so greedy never sits on a near-tie."""
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab, context_length=ctx, d_model=32, n_layers=layers, n_heads=4,
        n_kv_heads=2, d_ff=64, positional=positional, norm="rmsnorm", activation="swiglu",
        tie_embeddings=False,
    )  # fmt: skip
    model = TinyTransformer(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def greedy(model, ids, n, **kw):
    return G.generate(model, None, ids, n, temperature=0, **kw)


@pytest.fixture(scope="module")
def rope_model():
    return make_model("rope")


@pytest.fixture(scope="module")
def learned_model():
    return make_model("learned")


LOGITS = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))


def kept(x: torch.Tensor) -> list[int]:
    return torch.isfinite(x).nonzero().flatten().tolist()


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------


def test_temperature_scales_and_zero_is_argmax():
    logits = torch.tensor([1.0, 3.0, 2.0, 3.0])
    assert torch.allclose(G.apply_temperature(logits, 2.0), logits / 2)
    assert kept(G.apply_temperature(logits, 0)) == [1]  # first maximum, like argmax
    cold = G.apply_temperature(torch.tensor([1.0, 2.0, 1.9]), 1e-3).softmax(-1)
    assert cold[1] > 0.999
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        G.apply_temperature(logits, -1.0)


def test_top_k_keeps_exactly_k_and_renormalises():
    logits = torch.randn(3, 50)
    out = G.top_k_filter(logits, 5)
    assert (torch.isfinite(out).sum(-1) == 5).all()
    assert torch.allclose(out.softmax(-1).sum(-1), torch.ones(3))
    assert torch.equal(out.softmax(-1).argmax(-1), logits.argmax(-1))
    assert torch.equal(G.top_k_filter(logits, 500), logits)
    assert kept(G.top_k_filter(torch.zeros(4), 2)) == [0, 1]  # ties broken like argmax
    assert kept(G.top_p_filter(torch.zeros(4), 0.1)) == [0]
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        G.top_k_filter(logits, 0)


def test_top_p_nucleus():
    assert kept(G.top_p_filter(LOGITS, 0.8)) == [0, 1]  # 0.5 + 0.3 reaches 0.8
    assert kept(G.top_p_filter(LOGITS, 0.81)) == [0, 1, 2]
    assert kept(G.top_p_filter(LOGITS, 1e-6)) == [0]  # always >= 1 token
    assert kept(G.top_p_filter(LOGITS, 1.0)) == [0, 1, 2, 3]
    probs = G.top_p_filter(LOGITS, 0.8).softmax(-1)
    assert torch.allclose(probs[:2], torch.tensor([0.625, 0.375]))
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        G.top_p_filter(LOGITS, 0.0)


def test_min_p_threshold_is_relative_to_the_top_token():
    assert kept(G.min_p_filter(LOGITS, 0.2)) == [0, 1, 2]  # threshold 0.2 * 0.5 = 0.1
    assert kept(G.min_p_filter(LOGITS, 0.7)) == [0]  # 0.35 > 0.3
    flat = torch.zeros(10)  # uniform: every token equals the max, all survive
    assert kept(G.min_p_filter(flat, 0.9)) == list(range(10))
    with pytest.raises(ValueError, match=r"min_p must be in \[0, 1\)"):
        G.min_p_filter(LOGITS, 1.0)


def test_repetition_penalty_is_ctrl_style():
    logits = torch.tensor([2.0, -2.0, 1.0, -1.0])
    out = G.apply_repetition_penalty(logits, [0, 1], 2.0)
    assert torch.allclose(out, torch.tensor([1.0, -4.0, 1.0, -1.0]))
    rows = G.apply_repetition_penalty(torch.stack([logits, logits]), [[0], [3]], 2.0)
    assert torch.allclose(rows[0], torch.tensor([1.0, -2.0, 1.0, -1.0]))
    assert torch.allclose(rows[1], torch.tensor([2.0, -2.0, 1.0, -2.0]))
    assert torch.equal(G.apply_repetition_penalty(logits, [0], 1.0), logits)
    with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
        G.apply_repetition_penalty(logits, [0], 0.0)


def test_filters_handle_minus_inf_logits():
    logits = torch.tensor([float("-inf"), 1.0, float("-inf"), 0.5, 0.2])
    for out in (
        G.top_k_filter(logits, 4),
        G.top_p_filter(logits, 0.9),
        G.min_p_filter(logits, 0.1),
        G.apply_temperature(logits, 0.7),
        G.apply_repetition_penalty(logits, [0, 1], 1.3),
    ):
        probs = out.softmax(-1)
        assert not torch.isnan(probs).any()
        assert probs[0] == 0 and probs[2] == 0
        assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-6)
    config = SamplingConfig(temperature=1.0, top_p=0.95)
    g = torch.Generator().manual_seed(0)
    draws = {int(G.sample_next(logits[None], config, g)) for _ in range(300)}
    assert draws <= {1, 3, 4}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-20, 20), min_size=2, max_size=40),
    st.floats(1e-4, 1.0),
    st.integers(1, 50),
    st.floats(0.0, 0.99),
)
def test_filters_keep_the_best_token_and_sum_to_one(values, p, k, min_p):
    logits = torch.tensor(values)
    best = int(logits.argmax())
    for out in (
        G.top_p_filter(logits, p),
        G.top_k_filter(logits, k),
        G.min_p_filter(logits, min_p),
    ):
        assert torch.isfinite(out[best])
        assert math.isclose(float(out.softmax(-1).sum()), 1.0, rel_tol=1e-5)
    # top-p keeps a prefix of the tokens sorted by probability
    nucleus = torch.isfinite(G.top_p_filter(logits, p))
    ranked = nucleus[logits.argsort(descending=True, stable=True)]
    assert not (ranked[1:] & ~ranked[:-1]).any() or len(set(values)) < len(values)


def test_excluded_tokens_are_never_sampled_and_frequencies_match():
    torch.manual_seed(1)
    logits = torch.randn(30) * 2
    config = SamplingConfig(temperature=0.9, top_k=12, top_p=0.9, min_p=0.05)
    final = G.filter_stages(logits, config).final
    g = torch.Generator().manual_seed(123)
    draws = G.sample_next(logits.expand(4000, -1), config, g)
    counts = torch.bincount(draws, minlength=30).float()
    assert (counts[~final.kept] == 0).all()
    assert torch.allclose(counts / 4000, final.probs, atol=0.03)


def test_top_k_one_and_zero_temperature_are_greedy():
    logits = torch.randn(8, 40)
    g = torch.Generator().manual_seed(0)
    for config in (SamplingConfig(top_k=1), SamplingConfig(temperature=0), SamplingConfig(1e-4)):
        assert torch.equal(G.sample_next(logits, config, g), logits.argmax(-1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"temperature": float("nan")}, "temperature must be a number >= 0"),
        ({"top_k": 0}, "top_k must be None or an integer >= 1"),
        ({"top_k": 2.5}, "top_k must be None or an integer >= 1"),
        ({"top_p": 0.0}, r"top_p must be None or in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be None or in \(0, 1\]"),
        ({"min_p": 1.0}, r"min_p must be None or in \[0, 1\)"),
        ({"min_p": -0.1}, r"min_p must be None or in \[0, 1\)"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
    ],
)
def test_sampling_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_filter_stages_and_step_distributions(rope_model):
    config = SamplingConfig(
        temperature=0.7, top_k=10, top_p=0.9, min_p=0.05, repetition_penalty=1.2
    )
    result = G.step_distributions(rope_model, [1, 2, 3], config)
    assert result.names == ["model", "repetition penalty", "temperature", "top-k", "top-p", "min-p"]
    previous = None
    for stage in result.stages.values():
        assert math.isclose(float(stage.probs.sum()), 1.0, rel_tol=1e-5)
        assert (stage.probs[~stage.kept] == 0).all()
        if previous is not None:  # filters only ever remove tokens
            assert not (stage.kept & ~previous).any()
        previous = stage.kept
    assert result["top-k"].num_kept == 10
    assert result.stages["model"].num_kept == rope_model.config.vocab_size
    tok = CharTok("abcdefghijklmnopqrstuvwx")
    from_text = G.step_distributions(rope_model, "bcd", config, tokenizer=tok)
    assert torch.equal(from_text.final.probs, result.final.probs) and from_text.context == [1, 2, 3]
    greedy_stages = G.filter_stages(torch.randn(9), SamplingConfig(temperature=0))
    assert greedy_stages.names == ["model", "temperature"] and greedy_stages.final.num_kept == 1


# --------------------------------------------------------------------------------------------
# Generation: one greedy answer through every path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", ["rope", "learned", "sinusoidal"])
def test_cache_batch_speculative_continuous_agree(positional):
    model = make_model(positional)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [3, 3, 3, 3, 3]]
    alone = [greedy(model, p, 18) for p in prompts]
    assert alone == [greedy(model, p, 18, use_cache=False) for p in prompts]
    assert G.generate_batch(model, prompts, 18) == alone
    draft = make_model(positional, layers=1, seed=5)
    for p, expected in zip(prompts, alone, strict=True):
        assert G.speculative_generate(model, draft, p, 18, k=3).ids == expected
    batcher = G.ContinuousBatcher(model, num_slots=2)
    lengths = [18, 5, 12, 18]
    ids = [batcher.submit(p, n) for p, n in zip(prompts, lengths, strict=True)]
    results = batcher.run()
    for i, expected, n in zip(ids, alone, lengths, strict=True):
        assert results[i] == expected[:n]


def test_continuous_batching_with_many_requests_and_compaction(rope_model):
    batcher = G.ContinuousBatcher(rope_model, num_slots=3)
    torch.manual_seed(3)
    requests = [
        (torch.randint(0, 24, (int(torch.randint(1, 12, ())),)).tolist(), int(n))
        for n in torch.randint(0, 20, (10,))
    ]
    ids = [batcher.submit(p, n) for p, n in requests]
    results = batcher.run()
    assert batcher.compactions > 0  # the shared column pointer wrapped around the context
    for i, (p, n) in zip(ids, requests, strict=True):
        assert results[i] == greedy(rope_model, p, n)
    with pytest.raises(ValueError, match="exceeds the context length 32"):
        batcher.submit([1] * 30, 5)
    with pytest.raises(ValueError, match="num_slots must be an integer >= 1"):
        G.ContinuousBatcher(rope_model, num_slots=0)


def test_speculative_with_truncated_draft_accepts_and_matches(rope_model):
    truncated = make_model("rope", layers=1)  # same seed: the target's first layer
    truncated.load_state_dict(
        {k: v for k, v in rope_model.state_dict().items() if not k.startswith("blocks.1.")}
    )
    expected = greedy(rope_model, [1, 2], 25)
    result = G.speculative_generate(rope_model, truncated, [1, 2], 25, k=4)
    assert result.ids == expected
    assert 0 < result.acceptance_rate <= 1 and result.target_calls < 25
    assert G.speculative_generate(rope_model, rope_model, [1, 2], 25, k=4).acceptance_rate == 1.0
    with pytest.raises(ValueError, match="does not slide the window"):
        G.speculative_generate(rope_model, truncated, [1] * 20, 20)
    with pytest.raises(ValueError, match="both models must share one tokenizer"):
        G.speculative_generate(rope_model, make_model(vocab=30), [1], 5)
    with pytest.raises(ValueError, match="k \\(draft tokens per step\\) must be an integer >= 1"):
        G.speculative_generate(rope_model, truncated, [1], 5, k=0)


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_context_cropping_beyond_context_length(positional):
    model = make_model(positional, ctx=16)
    prompt = list(range(20))  # longer than the context
    with_cache = greedy(model, prompt, 30)
    assert len(with_cache) == 30
    assert with_cache == greedy(model, prompt, 30, use_cache=False)
    chunked = greedy(model, prompt, 30, crop_keep=8)
    assert len(chunked) == 30 and chunked[0] == with_cache[0]
    with pytest.raises(ValueError, match=r"crop_keep must be None or an integer in \[1, 16\]"):
        G.stream_generate(model, None, prompt, 3, crop_keep=17)  # checked before iterating


def test_seeded_sampling_is_reproducible(rope_model):
    kw = dict(temperature=1.2, top_k=20, seed=7)
    first = G.generate(rope_model, None, [1, 2], 30, **kw)
    assert first == G.generate(rope_model, None, [1, 2], 30, **kw)
    assert first == G.generate(rope_model, None, [1, 2], 30, **kw, use_cache=False)
    g = torch.Generator().manual_seed(7)
    assert first == G.generate(rope_model, None, [1, 2], 30, temperature=1.2, top_k=20, generator=g)
    others = {
        tuple(G.generate(rope_model, None, [1, 2], 30, temperature=1.2, seed=s)) for s in range(5)
    }
    assert len(others) > 1
    batch = G.generate_batch(rope_model, [[1], [2, 3]], 10, sampling=SamplingConfig(1.0), seed=3)
    assert batch == G.generate_batch(
        rope_model, [[1], [2, 3]], 10, sampling=SamplingConfig(1.0), seed=3
    )
    with pytest.raises(ValueError, match="either seed or generator"):
        G.generate(rope_model, None, [1], 3, seed=1, generator=g)


def test_repetition_penalty_changes_greedy_output():
    model = make_model("rope", seed=2)
    plain = greedy(model, [1, 2, 3], 30)
    penalised = greedy(model, [1, 2, 3], 30, repetition_penalty=5.0)
    assert plain != penalised
    assert len(set(penalised)) >= len(set(plain))


def test_text_generation_streaming_and_stops():
    tok = CharTok(ALPHABET)
    model = make_model("rope", vocab=tok.vocab_size)
    text = G.generate(model, tok, "abc", 40, temperature=0.9, seed=1, stop_at_eos=False)
    pieces = list(
        G.stream_generate(model, tok, "abc", 40, temperature=0.9, seed=1, stop_at_eos=False)
    )
    assert "".join(pieces) == text and len(pieces) == 40  # a char tokenizer: one piece per token
    stream = G.generate(
        model, tok, "abc", 40, temperature=0.9, seed=1, stop_at_eos=False, stream=True
    )
    assert "".join(stream) == text
    ids = G.generate(model, None, tok.encode("abc"), 40, temperature=0)
    stop = ids[5]
    stopped = G.generate(model, None, tok.encode("abc"), 40, temperature=0, stop_tokens=[stop])
    assert stopped == ids[: ids.index(stop)]
    assert G.generate(model, tok, "abc", 0) == "" and greedy(model, [1], 0) == []
    with_eos = CharTok(ALPHABET, eos=True)
    assert _stop_ids(with_eos, [3], stop_at_eos=True) == {3, with_eos.eos_id}
    assert _stop_ids(with_eos, None, stop_at_eos=False) == set()


def test_streaming_does_not_split_multibyte_characters():
    tok = ByteTok()
    sentence = "héllo wörld ✓ ok 🙂."
    decoder = _IncrementalDecoder(tok)
    pieces = [decoder.push(i) for i in tok.encode(sentence)] + [decoder.flush()]
    assert "".join(pieces) == sentence
    assert not any("\ufffd" in p for p in pieces)
    model = make_model("rope", vocab=256, ctx=64)
    text = G.generate(model, tok, "é", 40, temperature=1.0, seed=0)
    assert "".join(G.stream_generate(model, tok, "é", 40, temperature=1.0, seed=0)) == text


def test_empty_prompt_uses_bos_or_raises():
    with_bos = CharTok(ALPHABET, bos=True)
    model = make_model("rope", vocab=with_bos.vocab_size)
    assert len(G.generate(model, None, [with_bos.bos_id], 5, temperature=0)) == 5
    assert G.generate(model, with_bos, "", 5, temperature=0) == with_bos.decode(
        greedy(model, [with_bos.bos_id], 5)
    )
    with pytest.raises(ValueError, match="the prompt is empty and the tokenizer has no BOS"):
        G.generate(model, CharTok(ALPHABET), "", 5)
    with pytest.raises(ValueError, match="the prompt is empty and the tokenizer has no BOS"):
        G.generate(model, None, [], 5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, t: G.generate(m, t, "abcZ", 5), "cannot encode the prompt: character 'Z'"),
        (lambda m, t: G.generate(m, None, "abc", 5), "a text prompt needs a tokenizer"),
        (lambda m, t: G.generate(m, None, [1, 99], 5), "prompt token id 99 is outside"),
        (lambda m, t: G.generate(m, None, [1], -1), "max_new_tokens must be an integer >= 0"),
        (lambda m, t: G.generate(m, None, torch.ones(2, 3, dtype=torch.long), 5), "1-D or"),
        (lambda m, t: G.generate(m, t, "a", 5, top_p=2.0), r"top_p must be None or in \(0, 1\]"),
        (
            lambda m, t: G.generate(m, t, "a", 5, sampling=SamplingConfig(), top_k=3),
            "either sampling",
        ),
        (lambda m, t: G.beam_search(m, [1], 0, 5), "num_beams must be an integer >= 1"),
        (lambda m, t: G.beam_search(m, [1], 2, 40), "max_new_tokens must be < context_length"),
        (lambda m, t: G.generate_batch(m, [[1], []], 5), "the prompt is empty"),
        (lambda m, t: G.latency_profile(m, []), "at least one prompt"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(call, message):
    tok = CharTok(ALPHABET)
    model = make_model("rope", vocab=tok.vocab_size)
    with pytest.raises(ValueError, match=message):
        call(model, tok)


def test_sampling_is_given_one_way():
    """generate takes stream_generate's keywords (defined once there) and sampling is a
    SamplingConfig or its fields as shortcuts, resolved in one place."""
    import inspect

    own = set(inspect.signature(G.generate).parameters)
    assert own == {"model", "tokenizer", "prompt", "max_new_tokens", "stream", "options"}
    stream_keywords = set(inspect.signature(G.stream_generate).parameters)
    assert {"sampling", "seed", "stop_tokens", "shortcuts"} <= stream_keywords
    assert not {"temperature", "top_k", "top_p", "min_p"} & stream_keywords
    assert G.resolve_sampling(temperature=0, top_k=3) == SamplingConfig(temperature=0, top_k=3)
    assert G.resolve_sampling(G.GREEDY) is G.GREEDY and G.resolve_sampling() == SamplingConfig()
    with pytest.raises(TypeError, match=r"unknown sampling option 'temprature'.*temperature"):
        G.resolve_sampling(temprature=0)
    with pytest.raises(TypeError, match="sampling must be a SamplingConfig"):
        G.resolve_sampling({"temperature": 0})
    model = make_model("rope")
    assert G.generate(model, None, [1, 2], 8, sampling=G.GREEDY) == greedy(model, [1, 2], 8)
    with pytest.raises(TypeError, match="unknown sampling option 'topk'"):
        G.generate(model, None, [1, 2], 8, topk=3)


def test_a_sampling_step_compiles_to_one_graph():
    """No per-token host sync (such as checking that something is left to sample): the
    whole filtered draw traces with fullgraph=True, which refuses any graph break."""
    torch._dynamo.reset()
    config = SamplingConfig(temperature=0.5, top_k=5, top_p=0.9, min_p=0.05)
    step = torch.compile(lambda x: G.sample_next(x, config), fullgraph=True, backend="eager")
    logits = torch.randn(3, 30)
    token = step(logits)
    assert token.shape == (3,)
    assert G.filter_logits(logits, config).gather(1, token[:, None]).isfinite().all()


def test_a_tiny_temperature_shifts_only_the_rows_that_overflow():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.1, 0.3, 0.2]])
    cold = G.apply_temperature(logits, 1e-38)
    assert torch.equal(cold.softmax(-1)[0], torch.tensor([0.0, 1.0, 0.0]))
    assert not cold.isnan().any()
    assert torch.equal(cold[1], logits[1] / 1e-38)  # this row did not overflow: unchanged


def test_batch_padding_id_must_be_in_the_vocabulary(rope_model):
    with pytest.raises(ValueError, match=r"pad_id must be in \[0, 24\)"):
        G.generate_batch(rope_model, [[1], [2, 3]], 3, pad_id=24)


def test_generation_restores_training_mode(rope_model):
    rope_model.train()
    try:
        greedy(rope_model, [1], 3)
        assert rope_model.training
    finally:
        rope_model.eval()


# --------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------


def _sequence_log_prob(model, prompt, seqs):
    """Summed log-probability of each continuation in ``seqs`` (all the same length)."""
    idx = torch.tensor([prompt + list(s) for s in seqs])
    with torch.no_grad():
        logp = model(idx)[0].float().log_softmax(-1)
    P = len(prompt)
    steps = [logp[:, P - 1 + t].gather(1, idx[:, P + t, None]) for t in range(len(seqs[0]))]
    return torch.cat(steps, 1).sum(1).tolist()


def _brute_force(model, prompt, vocab, length, alpha, eos):
    """Every possible continuation (ending at eos or at ``length``), ranked by score."""
    ranked = []
    for n in range(1, length + 1):
        seqs = [
            s for s in itertools.product(range(vocab), repeat=n)
            if eos not in s[:-1] and (n == length or s[-1] == eos)
        ]  # fmt: skip
        if seqs:
            for s, lp in zip(seqs, _sequence_log_prob(model, prompt, seqs), strict=True):
                ranked.append((lp / n**alpha, list(s)))
    return sorted(ranked, key=lambda r: r[0], reverse=True)


@pytest.mark.parametrize(("alpha", "eos"), [(0.0, None), (1.0, 2), (0.5, 0)])
def test_exhaustive_beam_search_equals_brute_force(alpha, eos):
    model = make_model("rope", vocab=5, ctx=16, seed=4)
    with torch.no_grad():
        model.lm_head.weight.div_(10)  # softer distributions: many competitive sequences
    prompt, length = [1, 3], 3
    beams = G.beam_search(model, prompt, 5**length, length, length_penalty=alpha, eos_id=eos)
    expected = _brute_force(model, prompt, 5, length, alpha, eos)
    for beam, (score, ids) in zip(beams[:15], expected[:15], strict=True):
        assert beam.ids == ids
        assert math.isclose(beam.score, score, rel_tol=1e-4, abs_tol=1e-5)
        assert beam.finished == (eos is not None and ids[-1] == eos)


def test_narrow_beam_matches_a_reference_implementation():
    model = make_model("learned", vocab=7, ctx=16, seed=6)
    with torch.no_grad():
        model.lm_head.weight.div_(10)
    prompt, beams_wanted, length = [2, 5, 1], 3, 4
    live = [([], 0.0)]
    for _ in range(length):  # textbook beam search, recomputing everything, no cache
        candidates = []
        for ids, lp in live:
            with torch.no_grad():
                logp = model(torch.tensor([prompt + ids]))[0][0, -1].log_softmax(-1)
            candidates += [([*ids, t], lp + float(logp[t])) for t in range(7)]
        live = sorted(candidates, key=lambda c: c[1], reverse=True)[:beams_wanted]
    beams, tree = G.beam_search(
        model, prompt, beams_wanted, length, length_penalty=0.0, return_tree=True
    )
    assert [b.ids for b in beams] == [ids for ids, _ in live]
    assert all(
        math.isclose(b.log_prob, lp, abs_tol=1e-4) for b, (_, lp) in zip(beams, live, strict=True)
    )
    assert len(tree.steps) == length and tree.expanded == [7, 21, 21, 21]
    for step in tree.steps:
        statuses = [c.status for c in step]
        assert statuses.count("kept") == beams_wanted and "pruned" in statuses
        log_probs = [c.log_prob for c in step]
        assert log_probs == sorted(log_probs, reverse=True)
    assert greedy(model, prompt, length) == G.beam_search(model, prompt, 1, length)[0].ids


# --------------------------------------------------------------------------------------------
# Quantization, latency, perplexity
# --------------------------------------------------------------------------------------------


def test_int8_model_runs_and_stays_close():
    model = make_model("rope", vocab=40, seed=8)
    with torch.no_grad():
        model.lm_head.weight.div_(20)
    quantized = G.quantize_int8(model)
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules())  # original untouched
    idx = torch.randint(0, 40, (2, 20))
    with torch.no_grad():
        ref, q = model(idx)[0], quantized(idx)[0]
    assert (q - ref).abs().max() < 0.1 * ref.abs().max()
    assert len(G.generate(quantized, None, [1, 2], 10, temperature=0)) == 10
    assert G.state_dict_bytes(quantized) < G.state_dict_bytes(model)
    chunked = model.config.context_length
    ppl = perplexity(model, idx[0].tolist(), stride=chunked)
    ppl_q = perplexity(quantized, idx[0].tolist(), stride=chunked)
    assert abs(ppl - ppl_q) / ppl < 0.05


def test_latency_profile_and_budget(rope_model):
    profile = G.latency_profile(rope_model, [[1, 2], [3], [4, 5, 6]], 4, warmup=1)
    assert profile["n"] == 3 and 0 < profile["p50_ms"] <= profile["p95_ms"] <= profile["max_ms"]
    assert profile["tokens_per_s"] > 0
    # The verdict logic, independent of how loaded the test machine is (a shared CPU can
    # make even this tiny model miss 250 ms).
    verdict = G.check_budget({**profile, "p95_ms": 100.0}, rss_mb=100.0)
    assert verdict["ok"] and verdict["p95_budget_ms"] == 250.0
    assert not G.check_budget({**profile, "p95_ms": 100.0}, rss_mb=1e6)["ok"]
    assert not G.check_budget({**profile, "p95_ms": 300.0}, rss_mb=100.0)["ok"]
    assert G.check_budget(profile, p95_budget_ms=profile["p95_ms"])["p95_ok"]
    assert _percentile(list(range(1, 101)), 95) == 95
    rss = G.peak_rss_mb()
    assert rss is None or rss > 10


def _chunked_perplexity(model, ids):
    """The chunked perplexity generate used to compute on its own: disjoint windows of
    context_length + 1 tokens, the oracle for stride == context_length."""
    window = model.config.context_length + 1
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window - 1):
            chunk = torch.tensor([ids[start : start + window]])
            if chunk.shape[1] < 2:
                break
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
            total += float(loss) * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    return math.exp(total / count)


def _brute_force_perplexity(model, ids, stride):
    """Token by token: token j is scored once, from the first window (begin = k * stride,
    k = max(0, ceil((j - context) / stride))) that reaches it, reading ids[begin:j]."""
    context, nll = model.config.context_length, 0.0
    with torch.no_grad():
        for j in range(1, len(ids)):
            begin = max(0, -(-(j - context) // stride)) * stride
            logits, _ = model(torch.tensor([ids[begin:j]]))
            nll -= float(logits[0, -1].log_softmax(-1)[ids[j]])
    return math.exp(nll / (len(ids) - 1))


@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_one_perplexity_for_chapters_3_and_4(positional):
    """tinytrans.evaluate.perplexity is the only model perplexity: with stride ==
    context_length it is the chunked value generate's copy gave (chapter 4's int8 check
    used that), and every stride the chapters use (chapter 3: 256, 192, 128, 64 of 256;
    chapter 4: 128) matches a token-by-token oracle; the same fractions of a 32 context here."""
    model = make_model(positional, vocab=24, ctx=32)
    with torch.no_grad():
        model.lm_head.weight.div_(20)
    torch.manual_seed(11)
    ids = torch.randint(0, 24, (101,)).tolist()
    assert perplexity(model, ids, stride=32) == pytest.approx(
        _chunked_perplexity(model, ids), rel=1e-5
    )
    for stride in (32, 24, 16, 8):
        assert perplexity(model, ids, stride=stride) == pytest.approx(
            _brute_force_perplexity(model, ids, stride), rel=1e-4
        )
    assert perplexity(model, ids, stride=8) < perplexity(model, ids, stride=32)
    assert perplexity_from_loss(math.log(24)) == pytest.approx(24)


def test_perplexity_needs_an_explicit_stride_and_checks_ids_once(rope_model):
    with pytest.raises(TypeError, match="stride"):
        perplexity(rope_model, [1, 2, 3])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 24\); got range \[1, 24\]"):
        perplexity(rope_model, [1, 2, 24], stride=32)
    rope_model.train()
    try:
        assert perplexity(rope_model, [1, 2, 3, 4] * 20, stride=16) > 1.0
        assert rope_model.training  # eval mode inside, the previous mode restored
    finally:
        rope_model.eval()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork/exec inheritance: Linux")
def test_peak_rss_of_a_child_is_its_own_not_its_parents():
    """ru_maxrss survives fork + exec; a budget check run from a big kernel must not see it."""
    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: 600 MiB resident
    parent = G.peak_rss_mb()
    child = subprocess.run(
        [sys.executable, "-c", "from tinytrans.generate import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    assert parent is not None and parent > 600
    assert float(child.stdout) < parent - 300


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cli_args(*argv: str) -> argparse.Namespace:
    from tinytrans.cli import generate as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_streams_text_from_an_injected_model():
    from tinytrans.cli import generate as cli

    tok = CharTok(ALPHABET)
    model = make_model("rope", vocab=tok.vocab_size)
    args = _cli_args("--prompt", "abc", "--max-new-tokens", "12", "--seed", "3", "--top-k", "5")
    out = io.StringIO()
    text = cli.generate_to_stream(model, tok, args, out)
    assert out.getvalue() == "abc" + text + "\n" and len(text) == 12
    expected = G.generate(model, tok, "abc", 12, temperature=0.8, top_k=5, seed=3)
    assert text == expected
    quiet = io.StringIO()
    args = _cli_args("--prompt", "ab", "--no-echo", "--temperature", "0", "--max-new-tokens", "40")
    cli.generate_to_stream(model, tok, args, quiet)
    assert quiet.getvalue() == G.generate(model, tok, "ab", 40, temperature=0) + "\n"
    with pytest.raises(ValueError, match="cannot encode the prompt"):
        cli.generate_to_stream(model, tok, _cli_args("--prompt", "XYZ"), io.StringIO())


def test_cli_run_with_a_saved_checkpoint(tmp_path, capsys):
    train = pytest.importorskip("tinytrans.train")
    if not hasattr(train, "save_model"):
        pytest.skip("tinytrans.train.save_model not available")
    from tinytrans.cli import generate as cli
    from tinytrans.tokenizers import CharTokenizer

    tok = CharTokenizer.train(ALPHABET)
    model = make_model("rope", vocab=tok.vocab_size)
    path = train.save_model(tmp_path / "model.pt", model, tok)
    args = _cli_args(str(path), "--prompt", "abc", "--max-new-tokens", "9", "--temperature", "0")
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert out == "abc" + G.generate(model, tok, "abc", 9, temperature=0) + "\n"
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        cli.run(_cli_args(str(tmp_path / "missing.pt")))
    from tinytrans.cli import main

    assert main(["generate", str(path), "--prompt", "aZ", "--max-new-tokens", "3"]) == 2
    assert "cannot encode the prompt: character 'Z'" in capsys.readouterr().err


@pytest.mark.parametrize("ids", [[1, 2.7, 3], ["1", "2"], torch.tensor([1.0, 2.0])])
def test_prompt_ids_are_never_truncated(ids):
    model = make_model("rope", vocab=24)
    with pytest.raises(ValueError, match="prompt ids must be integers"):
        G.generate(model, None, ids, 3, temperature=0)


def test_a_tiny_temperature_is_greedy_not_nan():
    logits = torch.tensor([1.0, 3.0, 2.0])
    cold = G.apply_temperature(logits, 1e-40)
    assert torch.equal(cold.softmax(-1), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(G.apply_temperature(logits, 0.5), logits / 0.5)  # unchanged otherwise


# ------------------------------------------------------------ history filters (section 4.3)


def test_frequency_and_presence_penalties_subtract_counts_and_presence():
    apply_frequency_presence_penalty = G.apply_frequency_presence_penalty

    logits = torch.zeros(2, 5)
    out = apply_frequency_presence_penalty(logits, [[1, 1, 3], [4]], 0.5, 2.0)
    assert out[0].tolist() == [0.0, -3.0, 0.0, -2.5, 0.0]
    assert out[1].tolist() == [0.0, 0.0, 0.0, 0.0, -2.5]
    assert apply_frequency_presence_penalty(logits, [[1], [2]], 0, 0) is logits


def test_no_repeat_ngram_bans_exactly_the_completions():
    no_repeat_ngram_filter = G.no_repeat_ngram_filter

    logits = torch.zeros(1, 6)
    # history 1 2 3 1 2: the trigrams starting "1 2" were completed by 3 -> 3 is banned
    out = no_repeat_ngram_filter(logits, [1, 2, 3, 1, 2], 3)
    assert torch.isinf(out[0, 3]) and torch.isfinite(out[0, [0, 1, 2, 4, 5]]).all()
    # bigrams: after "2", 3 followed it once -> banned; unigram n=1 bans every seen token
    assert torch.isinf(no_repeat_ngram_filter(logits, [2, 3, 2], 2)[0, 3])
    assert torch.isinf(no_repeat_ngram_filter(logits, [0, 4], 1)[0, [0, 4]]).all()
    # when every token is banned the row is left alone (something must stay sampleable)
    tiny = torch.zeros(1, 2)
    assert torch.equal(no_repeat_ngram_filter(tiny, [0, 1], 1), tiny)


def test_greedy_with_no_repeat_ngram_never_repeats_a_trigram(rope_model):
    plain = greedy(rope_model, [1, 2, 3], 28)
    ids = greedy(rope_model, [1, 2, 3], 28, no_repeat_ngram_size=3)
    plain_trigrams = [tuple(plain[i : i + 3]) for i in range(len(plain) - 2)]
    assert len(plain_trigrams) > len(set(plain_trigrams)), "the plain greedy run should loop"
    trigrams = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
    assert len(trigrams) == len(set(trigrams))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("frequency_penalty", float("nan"), "frequency_penalty must be finite"),
        ("presence_penalty", "1", "presence_penalty must be a number"),
        ("no_repeat_ngram_size", -1, "no_repeat_ngram_size must be an integer >= 0"),
        ("no_repeat_ngram_size", 2.0, "no_repeat_ngram_size must be an integer >= 0"),
    ],
)
def test_history_filter_settings_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{field: value})


def test_uses_history_names_the_filters_that_read_past_tokens():
    assert not SamplingConfig().uses_history
    assert SamplingConfig(repetition_penalty=1.3).uses_history
    assert SamplingConfig(presence_penalty=0.5).uses_history
    assert SamplingConfig(no_repeat_ngram_size=2).uses_history
