"""Speculative decoding with greedy verification (section 4.8).

A cheap draft model proposes a few tokens, the target checks them all in one pass; the
output is the target's greedy output, token for token, with fewer target passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from tinytrans.generate.prompts import _check_max_new_tokens, _prompt_ids
from tinytrans.model import KVCache, TinyTransformer, eval_mode

__all__ = ["SpeculativeResult", "speculative_generate"]


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


def speculative_generate(
    target: TinyTransformer,
    draft: TinyTransformer,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    k: int = 4,
    *,
    stop_tokens: Iterable[int] | None = None,
) -> SpeculativeResult:
    """Greedy speculative decoding (Leviathan et al. 2023) with an identical result (section 4.8).

    The cheap ``draft`` proposes ``k`` tokens greedily; one ``target`` pass scores all of
    them; the longest prefix the target agrees with is kept, plus the target's own next
    token. Both KV caches are cropped back past the first disagreement. The output equals
    the target's greedy output token for token; only the number of target passes changes.
    Prompt + output must fit in both models' context (the window does not slide).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens per step) must be an integer >= 1, got {k!r}.")
    _check_max_new_tokens(max_new_tokens)
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(
            f"draft vocab_size {draft.config.vocab_size} != target vocab_size "
            f"{target.config.vocab_size}; both models must share one tokenizer."
        )
    prompt = _prompt_ids(target, ids)
    total = len(prompt) + max_new_tokens
    limit = min(target.config.context_length, draft.config.context_length)
    if total > limit:
        raise ValueError(
            f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
            f"context length {limit}; speculative decoding does not slide the window."
        )
    stops = frozenset(int(s) for s in stop_tokens or ())
    with eval_mode(target), eval_mode(draft), torch.inference_mode():
        return _speculative_loop(target, draft, prompt, max_new_tokens, k, stops)


def _feed(model: TinyTransformer, cache: KVCache, ids: list[int]) -> torch.Tensor:
    """Run ``ids`` through ``model`` with ``cache``; logits (T, V)."""
    logits, _ = model(torch.tensor([ids], device=model.device), cache=cache)
    return logits[0]


def _speculative_loop(
    target: TinyTransformer,
    draft: TinyTransformer,
    prompt: list[int],
    max_new_tokens: int,
    k: int,
    stops: frozenset[int],
) -> SpeculativeResult:
    seq = list(prompt)
    result = SpeculativeResult([])
    t_cache = target.new_cache(1, len(prompt) + max_new_tokens)
    d_cache = draft.new_cache(1, len(prompt) + max_new_tokens)
    while len(result.ids) < max_new_tokens:
        k_now = min(k, max_new_tokens - len(result.ids) - 1)
        # 1. Draft k_now tokens greedily (the draft cache may lag; feed what it lacks).
        proposals: list[int] = []
        feed = seq[d_cache.length :]
        for _ in range(k_now):
            proposals.append(int(_feed(draft, d_cache, feed)[-1].argmax()))
            feed = proposals[-1:]
        result.draft_calls += k_now
        # 2. One target pass over the uncached tail plus all proposals.
        base = len(seq)
        logits = _feed(target, t_cache, seq[t_cache.length :] + proposals)
        choice = logits[-(k_now + 1) :].argmax(-1).tolist()  # target's pick after each prefix
        result.target_calls += 1
        accepted = 0
        while accepted < k_now and proposals[accepted] == choice[accepted]:
            accepted += 1
        result.drafted += k_now
        result.accepted += accepted
        # 3. Roll both caches back to the agreed prefix; the target's pick comes next.
        t_cache.crop(base + accepted)
        d_cache.crop(base + min(accepted, max(k_now - 1, 0)))
        for token in [*proposals[:accepted], choice[accepted]]:
            if token in stops:
                return result
            seq.append(token)
            result.ids.append(token)
    return result
