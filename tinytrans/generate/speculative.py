"""Speculative decoding (section 4.8): greedy verification, speculative sampling and prompt lookup.

A cheap draft proposes a few tokens, the target checks them all in one pass. With greedy
verification (:func:`speculative_generate`) the output is the target's greedy output, token
for token, with fewer target passes. With the rejection rule of Leviathan et al. and Chen
et al. (:func:`speculative_accept`, :func:`speculative_sample`) the output is *distributed*
exactly as sampling from the target. The draft is a small model or
:class:`PromptLookupDraft`, which copies what followed an earlier occurrence of the last
n-gram and costs no model pass at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from tinytrans.generate.prompts import _check_max_new_tokens, _prompt_ids
from tinytrans.generate.sampling import apply_temperature, make_generator
from tinytrans.model import KVCache, TinyTransformer, eval_mode

__all__ = [
    "PromptLookupDraft",
    "SpeculativeResult",
    "prompt_lookup_propose",
    "residual_distribution",
    "speculative_accept",
    "speculative_generate",
    "speculative_output_distribution",
    "speculative_sample",
]


@dataclass
class SpeculativeResult:
    """New ids plus the bookkeeping that explains the speed-up (section 4.8)."""

    ids: list[int]
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens the target agreed with
    target_calls: int = 0  # target forward passes (each verifies up to k drafts)
    draft_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Share of the drafted tokens the target accepted (section 4.8)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_target_call(self) -> float:
        """New tokens per target forward pass: the speed-up's upper bound (section 4.8)."""
        return len(self.ids) / self.target_calls if self.target_calls else 0.0


# --------------------------------------------------------------------------------------------
# Prompt lookup: a draft without a model
# --------------------------------------------------------------------------------------------


def prompt_lookup_propose(
    seq: Sequence[int], k: int, max_ngram: int = 3, min_ngram: int = 1
) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the last n-gram (section 4.8).

    Tries n = ``max_ngram`` down to ``min_ngram``: the first n whose last n tokens occurred
    before wins, and the tokens after that occurrence are the proposal. Empty when no
    suffix repeats. Text that repeats itself (greedy loops, quoted prompts, code) makes
    these guesses good, at no model cost.
    """
    if not 1 <= min_ngram <= max_ngram:
        raise ValueError(
            f"need 1 <= min_ngram <= max_ngram, got min_ngram={min_ngram}, max_ngram={max_ngram}."
        )
    tokens = list(seq)
    for n in range(min(max_ngram, len(tokens) - 1), min_ngram - 1, -1):
        suffix = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):  # latest earlier occurrence first
            if tokens[start : start + n] == suffix:
                return tokens[start + n : start + n + k]
    return []


@dataclass(frozen=True)
class PromptLookupDraft:
    """A draft for :func:`speculative_generate` that costs no forward pass (section 4.8).

    It proposes with :func:`prompt_lookup_propose` on the prompt plus the output so far.
    """

    max_ngram: int = 3
    min_ngram: int = 1

    def __post_init__(self) -> None:
        prompt_lookup_propose([], 1, self.max_ngram, self.min_ngram)  # validates the sizes

    def propose(self, seq: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` proposed next tokens after ``seq`` (section 4.8)."""
        return prompt_lookup_propose(seq, k, self.max_ngram, self.min_ngram)


Draft = TinyTransformer | PromptLookupDraft


# --------------------------------------------------------------------------------------------
# Greedy verification
# --------------------------------------------------------------------------------------------


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens per step) must be an integer >= 1, got {k!r}.")


def _checked_prompt(
    target: TinyTransformer, draft: Draft, ids: Sequence[int] | torch.Tensor, max_new_tokens: int
) -> list[int]:
    """The prompt's ids, after checking that draft and target fit together and the text fits."""
    _check_max_new_tokens(max_new_tokens)
    limit = target.config.context_length
    if isinstance(draft, TinyTransformer):
        if draft.config.vocab_size != target.config.vocab_size:
            raise ValueError(
                f"draft vocab_size {draft.config.vocab_size} != target vocab_size "
                f"{target.config.vocab_size}; both models must share one tokenizer."
            )
        limit = min(limit, draft.config.context_length)
    elif not isinstance(draft, PromptLookupDraft):
        raise TypeError(
            f"draft must be a TinyTransformer or a PromptLookupDraft, got {type(draft).__name__}."
        )
    prompt = _prompt_ids(target, ids)
    total = len(prompt) + max_new_tokens
    if total > limit:
        raise ValueError(
            f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
            f"context length {limit}; speculative decoding does not slide the window."
        )
    return prompt


def speculative_generate(
    target: TinyTransformer,
    draft: TinyTransformer | PromptLookupDraft,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    k: int = 4,
    *,
    stop_tokens: Iterable[int] | None = None,
) -> SpeculativeResult:
    """Greedy speculative decoding (Leviathan et al. 2023) with an identical result (section 4.8).

    The ``draft`` (a cheap model, greedy, or a :class:`PromptLookupDraft`) proposes up to
    ``k`` tokens; one ``target`` pass scores all of them; the longest prefix the target
    agrees with is kept, plus the target's own next token. The KV caches are cropped back
    past the first disagreement. The output equals the target's greedy output token for
    token; only the number of target passes changes. Prompt + output must fit in the
    models' context (the window does not slide).
    """
    _check_k(k)
    prompt = _checked_prompt(target, draft, ids, max_new_tokens)
    stops = frozenset(int(s) for s in stop_tokens or ())
    if isinstance(draft, PromptLookupDraft):
        with eval_mode(target), torch.inference_mode():
            return _speculative_loop(target, draft, prompt, max_new_tokens, k, stops)
    with eval_mode(target), eval_mode(draft), torch.inference_mode():
        return _speculative_loop(target, draft, prompt, max_new_tokens, k, stops)


def _feed(model: TinyTransformer, cache: KVCache, ids: list[int]) -> torch.Tensor:
    """Run ``ids`` through ``model`` with ``cache``; logits (T, V)."""
    logits, _ = model(torch.tensor([ids], device=model.device), cache=cache)
    return logits[0]


def _model_proposals(draft: TinyTransformer, cache: KVCache, seq: list[int], k: int) -> list[int]:
    """``k`` greedy draft tokens after ``seq`` (the draft cache may lag; feed what it lacks)."""
    proposals: list[int] = []
    feed = seq[cache.length :]
    for _ in range(k):
        proposals.append(int(_feed(draft, cache, feed)[-1].argmax()))
        feed = proposals[-1:]
    return proposals


def _speculative_loop(
    target: TinyTransformer,
    draft: Draft,
    prompt: list[int],
    max_new_tokens: int,
    k: int,
    stops: frozenset[int],
) -> SpeculativeResult:
    seq = list(prompt)
    result = SpeculativeResult([])
    t_cache = target.new_cache(1, len(prompt) + max_new_tokens)
    d_cache = (
        draft.new_cache(1, len(prompt) + max_new_tokens)
        if isinstance(draft, TinyTransformer)
        else None
    )
    while len(result.ids) < max_new_tokens:
        k_now = min(k, max_new_tokens - len(result.ids) - 1)
        # 1. Draft up to k_now tokens.
        if isinstance(draft, TinyTransformer):
            assert d_cache is not None
            proposals = _model_proposals(draft, d_cache, seq, k_now)
            result.draft_calls += k_now
        else:
            proposals = draft.propose(seq, k_now) if k_now else []
        # 2. One target pass over the uncached tail plus all proposals.
        base, n = len(seq), len(proposals)
        logits = _feed(target, t_cache, seq[t_cache.length :] + proposals)
        choice = logits[-(n + 1) :].argmax(-1).tolist()  # target's pick after each prefix
        result.target_calls += 1
        accepted = 0
        while accepted < n and proposals[accepted] == choice[accepted]:
            accepted += 1
        result.drafted += n
        result.accepted += accepted
        # 3. Roll the caches back to the agreed prefix; the target's pick comes next.
        t_cache.crop(base + accepted)
        if d_cache is not None:
            d_cache.crop(base + min(accepted, max(n - 1, 0)))
        for token in [*proposals[:accepted], choice[accepted]]:
            if token in stops:
                return result
            seq.append(token)
            result.ids.append(token)
    return result


# --------------------------------------------------------------------------------------------
# Speculative sampling: the rejection rule
# --------------------------------------------------------------------------------------------


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``norm(max(0, p - q))``: where a rejected draft token is resampled from (section 4.8).

    It holds the mass the target gives a token beyond what the draft already gives it.
    Where ``p == q`` there is nothing left (and nothing is ever rejected); ``p`` is returned.
    """
    extra = (p - q).clamp_min(0)
    total = extra.sum(-1, keepdim=True)
    return torch.where(total > 0, extra / total.clamp_min(torch.finfo(p.dtype).tiny), p)


def speculative_output_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The exact distribution of :func:`speculative_accept`'s token, draft ``q``, target ``p``
    (section 4.8).

    A token ``x`` comes out accepted with probability ``q(x) min(1, p(x)/q(x)) = min(p, q)(x)``,
    or from the residual after a rejection, which happens with probability ``1 - sum min(p, q)``.
    The sum is ``p`` for every ``q``: that is why speculative sampling is exact.
    """
    accepted = torch.minimum(p, q)
    rejected = 1 - accepted.sum(-1, keepdim=True)
    return accepted + rejected * residual_distribution(p, q)


def speculative_accept(
    p: torch.Tensor,
    q: torch.Tensor,
    token: int,
    generator: torch.Generator | None = None,
) -> tuple[bool, int]:
    """One step of the rejection rule (Leviathan et al. 2023, Chen et al. 2023; section 4.8).

    ``token`` was drawn from the draft's distribution ``q``; ``p`` is the target's (both
    (V,) probabilities). Keep it with probability ``min(1, p(token) / q(token))``, else draw a
    replacement from :func:`residual_distribution`. Returns (accepted, token out).
    """
    if not 0 <= token < p.shape[-1]:
        raise ValueError(f"token {token} is outside the vocabulary of {p.shape[-1]} tokens.")
    q_token = float(q[token])
    if q_token <= 0:
        raise ValueError(
            f"the draft gives token {token} probability 0, so it cannot have drawn it."
        )
    u = float(torch.rand((), generator=generator, device=p.device))
    if u < float(p[token]) / q_token:
        return True, token
    return False, int(torch.multinomial(residual_distribution(p, q), 1, generator=generator))


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return apply_temperature(logits.float(), temperature).softmax(-1)


def speculative_sample(
    target: TinyTransformer,
    draft: TinyTransformer,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    k: int = 4,
    *,
    temperature: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Iterable[int] | None = None,
) -> SpeculativeResult:
    """Speculative sampling: the target's sampling distribution, fewer target passes (section 4.8).

    The ``draft`` model samples up to ``k`` tokens at ``temperature``; one target pass gives
    the target's distribution after each prefix; :func:`speculative_accept` keeps or
    replaces them in order, stopping at the first replacement. When all are kept, one more
    token is drawn from the target. Every output token is distributed exactly as when
    sampling the target alone at ``temperature`` (not the same draws: the random numbers are
    used differently).
    """
    _check_k(k)
    if not temperature > 0:
        raise ValueError(
            f"speculative_sample needs temperature > 0, got {temperature!r}; "
            "for greedy decoding use speculative_generate."
        )
    prompt = _checked_prompt(target, draft, ids, max_new_tokens)
    rng = make_generator(seed, generator, target.device)
    stops = frozenset(int(s) for s in stop_tokens or ())
    with eval_mode(target), eval_mode(draft), torch.inference_mode():
        return _sampling_loop(target, draft, prompt, max_new_tokens, k, temperature, rng, stops)


def _verify_samples(
    target_probs: torch.Tensor,
    draft_probs: list[torch.Tensor],
    proposals: list[int],
    rng: torch.Generator | None,
) -> tuple[list[int], int]:
    """The tokens one round yields and how many draft tokens were kept (the rejection rule)."""
    new: list[int] = []
    for p, q, token in zip(target_probs, draft_probs, proposals, strict=False):
        kept, out = speculative_accept(p, q, token, rng)
        new.append(out)
        if not kept:
            return new, len(new) - 1
    # Every draft token kept: the target's last distribution gives one more token.
    new.append(int(torch.multinomial(target_probs[len(proposals)], 1, generator=rng)))
    return new, len(proposals)


def _sampling_loop(
    target: TinyTransformer,
    draft: TinyTransformer,
    prompt: list[int],
    max_new_tokens: int,
    k: int,
    temperature: float,
    rng: torch.Generator | None,
    stops: frozenset[int],
) -> SpeculativeResult:
    seq = list(prompt)
    result = SpeculativeResult([])
    t_cache = target.new_cache(1, len(prompt) + max_new_tokens)
    d_cache = draft.new_cache(1, len(prompt) + max_new_tokens)
    while len(result.ids) < max_new_tokens:
        k_now = min(k, max_new_tokens - len(result.ids) - 1)
        proposals, draft_probs = [], []
        feed = seq[d_cache.length :]
        for _ in range(k_now):
            q = _probs(_feed(draft, d_cache, feed)[-1], temperature)
            proposals.append(int(torch.multinomial(q, 1, generator=rng)))
            draft_probs.append(q)
            feed = proposals[-1:]
        result.draft_calls += k_now
        base = len(seq)
        target_probs = _probs(
            _feed(target, t_cache, seq[t_cache.length :] + proposals)[-(k_now + 1) :], temperature
        )
        result.target_calls += 1
        new, accepted = _verify_samples(target_probs, draft_probs, proposals, rng)
        result.drafted += k_now
        result.accepted += accepted
        t_cache.crop(base + accepted)
        d_cache.crop(base + min(accepted, max(k_now - 1, 0)))
        for token in new:
            if token in stops:
                return result
            seq.append(token)
            result.ids.append(token)
    return result
