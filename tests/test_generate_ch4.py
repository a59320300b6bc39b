"""Tests for chapter 4's additions: speculative sampling, prompt-lookup drafts, weight
quantization schemes and time-to-first-token timings (tinytrans.generate)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans import generate as G
from tinytrans.model import ModelConfig, TinyTransformer


def make_model(layers: int = 2, vocab: int = 24, ctx: int = 48, seed: int = 0) -> TinyTransformer:
    """A small seeded model with a spread next-token distribution (sampling has choices)."""
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab, context_length=ctx, d_model=32, n_layers=layers, n_heads=4,
        n_kv_heads=2, d_ff=64, positional="rope", norm="rmsnorm", activation="swiglu",
        tie_embeddings=False,
    )  # fmt: skip
    model = TinyTransformer(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(4)
    return model


def greedy(model: TinyTransformer, ids: list[int], n: int) -> list[int]:
    return G.generate(model, None, ids, n, temperature=0)


def tv_bound(p: torch.Tensor, n: int, failure: float = 1e-6) -> float:
    """A total-variation distance an n-sample empirical distribution of p exceeds with
    probability below ``failure``: E[TV] <= sum sqrt(p(1-p)/n) / 2, plus McDiarmid's term
    (one sample moves TV by at most 1/n)."""
    mean = 0.5 * float(torch.sqrt(p * (1 - p) / n).sum())
    return mean + math.sqrt(math.log(1 / failure) / (2 * n))


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


# --------------------------------------------------------------------------------------------
# The rejection rule
# --------------------------------------------------------------------------------------------

distributions = st.integers(2, 12).flatmap(
    lambda v: st.tuples(
        st.lists(st.floats(0.0, 10.0), min_size=v, max_size=v).filter(lambda w: sum(w) > 1e-3),
        st.lists(st.floats(0.01, 10.0), min_size=v, max_size=v),
    )
)


def normalised(weights: list[float]) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float64)
    return w / w.sum()


@settings(max_examples=200, deadline=None)
@given(distributions)
def test_one_step_rule_outputs_exactly_the_target_distribution(pq):
    p, q = normalised(pq[0]), normalised(pq[1])
    out = G.speculative_output_distribution(p, q)
    assert torch.allclose(out, p, atol=1e-12)
    residual = G.residual_distribution(p, q)
    assert residual.min() >= 0 and math.isclose(float(residual.sum()), 1.0, abs_tol=1e-12)
    assert torch.all(residual[p <= q] == 0) or torch.equal(residual, p)


@settings(max_examples=30, deadline=None)
@given(distributions, st.integers(0, 2**31 - 1))
def test_speculative_accept_keeps_tokens_the_target_likes_more(pq, seed):
    p, q = normalised(pq[0]), normalised(pq[1])
    rng = torch.Generator().manual_seed(seed)
    for token in range(len(p)):
        kept, out = G.speculative_accept(p, q, token, rng)
        if p[token] >= q[token]:  # ratio >= 1: always kept
            assert kept and out == token
        if not kept:  # a replacement comes from where p exceeds q
            assert p[out] > q[out]


def test_speculative_accept_draws_match_p_empirically():
    p = normalised([5.0, 1.0, 0.0, 3.0, 1.0])
    q = normalised([1.0, 4.0, 2.0, 1.0, 2.0])
    rng, n = torch.Generator().manual_seed(0), 20_000
    counts = torch.zeros(5, dtype=torch.float64)
    for _ in range(n):
        token = int(torch.multinomial(q, 1, generator=rng))
        counts[G.speculative_accept(p, q, token, rng)[1]] += 1
    assert tv(counts / n, p) < tv_bound(p, n)
    assert counts[2] == 0  # p gives token 2 nothing, so it never comes out


def test_speculative_accept_rejects_bad_input():
    p = q = normalised([1.0, 1.0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        G.speculative_accept(p, q, 2)
    with pytest.raises(ValueError, match="probability 0"):
        G.speculative_accept(p, normalised([1.0, 0.0]), 1)
    assert torch.equal(G.residual_distribution(p, q), p)  # nothing left over: p itself


# --------------------------------------------------------------------------------------------
# Speculative sampling with models
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """One intra-op thread: many tiny forward passes are several times faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_speculative_sample_first_two_tokens_follow_the_target(one_thread):
    target, draft = make_model(2), make_model(1, seed=1)
    prompt, n = [3, 1, 4], 800
    with torch.inference_mode():
        p1 = target(torch.tensor([prompt]))[0][0, -1].softmax(-1).double()
        nexts = torch.tensor([[*prompt, x] for x in range(24)])
        p2 = (p1[:, None] * target(nexts)[0][:, -1].softmax(-1).double()).sum(0)
        q1 = draft(torch.tensor([prompt]))[0][0, -1].softmax(-1).double()
    rng = torch.Generator().manual_seed(0)
    first, second = torch.zeros(24, dtype=torch.float64), torch.zeros(24, dtype=torch.float64)
    for _ in range(n):
        ids = G.speculative_sample(target, draft, prompt, 3, k=2, generator=rng).ids
        first[ids[0]] += 1
        second[ids[1]] += 1
    assert tv(first / n, p1) < tv_bound(p1, n)
    assert tv(second / n, p2) < tv_bound(p2, n)
    assert tv(q1, p1) > tv_bound(p1, n)  # the draft alone is measurably different


def test_speculative_sample_bookkeeping_and_errors(one_thread):
    target = make_model(2)
    result = G.speculative_sample(target, target, [1, 2], 20, k=4, seed=0)
    assert len(result.ids) == 20
    assert result.acceptance_rate == pytest.approx(1.0)  # p == q: nothing is ever rejected
    assert result.target_calls == 4  # 4 rounds of 4 drafts + 1 bonus token
    again = G.speculative_sample(target, make_model(1, seed=1), [1, 2], 20, seed=3)
    assert again.ids == G.speculative_sample(target, make_model(1, seed=1), [1, 2], 20, seed=3).ids
    assert 0 <= again.accepted <= again.drafted
    with pytest.raises(ValueError, match="temperature > 0"):
        G.speculative_sample(target, target, [1], 5, temperature=0)
    with pytest.raises(ValueError, match="does not slide the window"):
        G.speculative_sample(target, target, [1] * 40, 20)


# --------------------------------------------------------------------------------------------
# Prompt lookup
# --------------------------------------------------------------------------------------------


def test_prompt_lookup_proposes_what_followed_the_last_ngram():
    seq = [1, 2, 3, 4, 5, 9, 2, 3]
    assert G.prompt_lookup_propose(seq, 3) == [4, 5, 9]  # "2 3" occurred before: 4 5 9 followed
    assert G.prompt_lookup_propose(seq, 1) == [4]
    assert G.prompt_lookup_propose([1, 2, 3], 4) == []  # nothing repeats
    assert G.prompt_lookup_propose([7, 1, 7, 2, 7], 2) == [2, 7]  # the latest occurrence wins
    assert G.prompt_lookup_propose([5, 6, 5, 6], 5, max_ngram=2) == [5, 6]  # 2-gram "5 6"
    with pytest.raises(ValueError, match="min_ngram <= max_ngram"):
        G.PromptLookupDraft(max_ngram=1, min_ngram=2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=30), st.integers(1, 6))
def test_prompt_lookup_proposal_continues_an_earlier_match(seq, k):
    proposal = G.prompt_lookup_propose(seq, k)
    assert len(proposal) <= k
    if proposal:  # some earlier position holds the same suffix followed by the proposal
        n = next(
            n
            for n in range(min(3, len(seq) - 1), 0, -1)
            if any(seq[s : s + n] == seq[-n:] for s in range(len(seq) - n))
        )
        starts = [s for s in range(len(seq) - n) if seq[s : s + n] == seq[-n:]]
        assert proposal == seq[starts[-1] + n : starts[-1] + n + k]


def test_greedy_speculation_with_prompt_lookup_equals_plain_greedy(one_thread):
    model = make_model(2)
    for prompt in ([1, 2, 3, 1, 2, 3, 1, 2], [5], [7, 7, 7, 7]):
        result = G.speculative_generate(model, G.PromptLookupDraft(), prompt, 30, k=4)
        assert result.ids == greedy(model, prompt, 30)
        assert result.draft_calls == 0 and result.target_calls <= 30
    stop = greedy(model, [1, 2], 10)[4]
    stopped = G.speculative_generate(model, G.PromptLookupDraft(), [1, 2], 10, stop_tokens=[stop])
    assert stop not in stopped.ids and len(stopped.ids) < 10
    with pytest.raises(TypeError, match="TinyTransformer or a PromptLookupDraft"):
        G.speculative_generate(model, object(), [1], 5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Weight quantization
# --------------------------------------------------------------------------------------------

weights = st.tuples(st.integers(1, 6), st.sampled_from([8, 16, 32, 64]), st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from([(4, 32), (4, 8), (8, None), (3, 16)]), st.floats(1e-3, 1e3))
def test_fake_quantize_error_is_at_most_half_a_scale_per_group(shape, scheme, spread):
    rows, cols, seed = shape
    bits, group = scheme
    if group is not None and cols % group:
        group = cols
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * spread
    codes, scales = G.quantize_groups(w, bits, group)
    size = cols if group is None else group
    assert scales.shape == (rows, cols // size)
    top = 2 ** (bits - 1) - 1
    assert codes.abs().max() <= top
    error = (w - G.fake_quantize(w, bits, group)).abs().reshape(rows, -1, size)
    assert torch.all(error <= scales[..., None] / 2 * (1 + 1e-5))


def test_fake_quantize_edge_cases():
    zeros = torch.zeros(2, 32)
    assert torch.equal(G.fake_quantize(zeros, 4, 32), zeros)  # an all-zero group stays zero
    w = torch.tensor([[1.0, -0.6, 0.25, 0.0]])
    codes, scales = G.quantize_groups(w, 4, 4)
    assert codes.tolist() == [[7, -4, 2, 0]] and scales[0].tolist() == pytest.approx([1 / 7])
    with pytest.raises(ValueError, match="divides 4"):
        G.fake_quantize(w, 4, 3)
    with pytest.raises(ValueError, match="2-D weight"):
        G.fake_quantize(torch.zeros(4), 8)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        G.fake_quantize(w, 16)


def test_quantize_weights_schemes_and_bytes():
    model = make_model(2, vocab=32)
    n = sum(p.numel() for p in model.parameters())
    matrices = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))
    )
    assert G.weight_storage_bytes(model, "fp32") == 4 * n
    assert G.weight_storage_bytes(model, "bf16") == 2 * n
    assert G.weight_storage_bytes(model, "int4-group") == matrices // 2 + matrices // 32 * 4 + 4 * (
        n - matrices
    )
    idx = torch.randint(0, 32, (1, 16), generator=torch.Generator().manual_seed(0))
    reference = model(idx)[0].detach()
    errors = {}
    for scheme in ("fp32", "bf16", "int8-channel", "int4-group"):
        copy = G.quantize_weights(model, scheme)
        assert copy is not model and copy.lm_head.weight.dtype == torch.float32
        errors[scheme] = float((copy(idx)[0].detach() - reference).abs().max())
    assert errors["fp32"] == 0 < errors["bf16"] and errors["int8-channel"] < errors["int4-group"]
    assert torch.equal(model(idx)[0], reference)  # the original is untouched
    with pytest.raises(ValueError, match="unknown weight scheme"):
        G.quantize_weights(model, "int2")


# --------------------------------------------------------------------------------------------
# Time to first token
# --------------------------------------------------------------------------------------------


def test_request_timings_split_first_token_and_later_ones():
    model = make_model(2)
    prompts = [[1] * n for n in (2, 8, 16)]
    timings = G.request_timings(model, prompts, 5, warmup=1)
    assert [t.prompt_tokens for t in timings] == [2, 8, 16]
    assert all(len(t.inter_token_ms) == 4 and t.ttft_ms > 0 for t in timings)
    assert all(t.total_ms == pytest.approx(t.ttft_ms + sum(t.inter_token_ms)) for t in timings)
    summary = G.ttft_summary(timings)
    assert summary["n"] == 3 and summary["ttft_p50_ms"] <= summary["ttft_p95_ms"]
    assert summary["itl_p50_ms"] <= summary["itl_p95_ms"]
    with pytest.raises(ValueError, match="at least one prompt"):
        G.request_timings(model, [], 5)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        G.request_timings(model, prompts, 0)
