"""Serving many requests: continuous batching and the latency and memory budget (sections 4.7 and 4.10).

:class:`ContinuousBatcher` decodes requests of different lengths together in a fixed number
of batch rows; :func:`latency_profile`, :func:`peak_rss_mb` and :func:`check_budget` measure
a model against seed 004's on-device budgets; :func:`request_timings` and
:func:`ttft_summary` split each request's latency into time to first token (the prefill)
and the time between later tokens.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tinytrans.generate.decode import generate_tokens
from tinytrans.generate.prompts import _check_max_new_tokens, _prompt_ids, encode_prompt
from tinytrans.generate.sampling import GREEDY, SamplingConfig, make_generator, sample_next
from tinytrans.model import TinyTransformer, eval_mode
from tinytrans.tokenizers import Tokenizer

__all__ = [
    "LATENCY_BUDGET_MS",
    "RSS_BUDGET_MB",
    "ContinuousBatcher",
    "RequestTiming",
    "check_budget",
    "latency_profile",
    "peak_rss_mb",
    "request_timings",
    "ttft_summary",
]

#: Seed 004's on-device budgets for the course model (section 4.10): p95 latency and peak RSS.
LATENCY_BUDGET_MS = 250.0
RSS_BUDGET_MB = 400.0


@dataclass
class _Slot:
    request_id: int
    pending: int  # last sampled token, not yet in the cache
    position: int  # its position id
    history: list[int]  # prompt + output (for the repetition penalty)
    output: list[int]
    max_new_tokens: int


class ContinuousBatcher:
    """Serve many requests with a fixed number of batch rows ("slots"), refilled as they free (section 4.7).

    All slots share one batched :class:`KVCache` and one write column per step; each row
    has its own attention-mask row and position counter, so rows at different lengths
    decode together. A new request is prefilled alone and its keys/values copied into a
    free row, right-aligned to the current column. When the columns run out, every row's
    live entries are packed to the right (:meth:`_compact`). Greedy outputs equal generating
    each request alone. Every step runs the model in eval mode and restores its mode after.
    """

    def __init__(
        self,
        model: TinyTransformer,
        num_slots: int = 4,
        *,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        stop_tokens: Iterable[int] | None = None,
    ) -> None:
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be an integer >= 1, got {num_slots!r}.")
        self.model = model
        self.config = sampling or GREEDY
        self.rng = make_generator(seed, generator, model.device)
        self.stops = frozenset(int(s) for s in stop_tokens or ())
        self.num_slots = num_slots
        self.max_len = model.config.context_length
        with torch.inference_mode():
            self.cache = model.new_cache(num_slots, self.max_len)
            self.mask = torch.zeros(num_slots, self.max_len, dtype=torch.long, device=model.device)
        self.slots: list[_Slot | None] = [None] * num_slots
        self.queue: deque[tuple[int, list[int], int]] = deque()
        self.results: dict[int, list[int]] = {}
        self.decode_steps = 0
        self.compactions = 0
        self._next_id = 0

    # -- requests -------------------------------------------------------------------------
    def submit(self, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int) -> int:
        """Queue a request; returns its id (the key of :attr:`results`; section 4.7)."""
        _check_max_new_tokens(max_new_tokens)
        ids = _prompt_ids(self.model, prompt_ids)
        if len(ids) + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({len(ids)}) + max_new_tokens ({max_new_tokens}) exceeds the context "
                f"length {self.max_len}; the batcher does not slide the window."
            )
        request_id, self._next_id = self._next_id, self._next_id + 1
        if max_new_tokens == 0:
            self.results[request_id] = []
        else:
            self.queue.append((request_id, ids, max_new_tokens))
        return request_id

    @property
    def busy(self) -> bool:
        """True while a request is queued or decoding (section 4.7)."""
        return bool(self.queue) or any(s is not None for s in self.slots)

    def run(self) -> dict[int, list[int]]:
        """Step until every submitted request has finished; returns ``results`` (section 4.7)."""
        while self.busy:
            self.step()
        return self.results

    # -- one scheduler step ---------------------------------------------------------------
    def step(self) -> list[tuple[int, int]]:
        """Admit queued requests into free slots, then decode one token for every busy slot
        (section 4.7).

        Returns the (request_id, token) pairs produced in this step.
        """
        with eval_mode(self.model), torch.inference_mode():
            return self._step()

    def _step(self) -> list[tuple[int, int]]:
        events = self._admit()
        active = [(r, slot) for r, slot in enumerate(self.slots) if slot is not None]
        if not active:
            return events
        if self.cache.length + 1 > self.max_len:
            self._compact()
        column = self.cache.length
        idx = torch.zeros(self.num_slots, 1, dtype=torch.long, device=self.model.device)
        positions = torch.zeros_like(idx)
        for r, slot in active:
            idx[r, 0], positions[r, 0] = slot.pending, slot.position
            self.mask[r, column] = 1
        logits, _ = self.model(
            idx, cache=self.cache, attention_mask=self.mask[:, : column + 1], position_ids=positions
        )
        self.decode_steps += 1
        rows = [r for r, _ in active]
        chosen = self._sample(logits[rows, -1], [slot.history for _, slot in active])
        for (r, slot), token in zip(active, chosen, strict=True):
            slot.position += 1
            events += self._accept(r, slot, token)
        return events

    def _sample(self, logits: torch.Tensor, histories: list[list[int]]) -> list[int]:
        penalise = self.config.uses_history
        return sample_next(logits, self.config, self.rng, histories if penalise else None).tolist()

    def _accept(self, row: int, slot: _Slot, token: int) -> list[tuple[int, int]]:
        """Record ``token`` for ``slot``; free the row when the request is finished."""
        if token not in self.stops:
            slot.output.append(token)
            slot.history.append(token)
            slot.pending = token
        if token in self.stops or len(slot.output) >= slot.max_new_tokens:
            self.results[slot.request_id] = slot.output
            self.slots[row] = None
            self.mask[row] = 0
        return [] if token in self.stops else [(slot.request_id, token)]

    def _admit(self) -> list[tuple[int, int]]:
        events: list[tuple[int, int]] = []
        while self.queue and None in self.slots:
            request_id, ids, max_new = self.queue.popleft()
            row = self.slots.index(None)
            first = self._prefill_into(row, ids)
            slot = _Slot(request_id, first, len(ids), list(ids), [], max_new)
            self.slots[row] = slot
            events += self._accept(row, slot, first)
        return events

    def _prefill_into(self, row: int, ids: list[int]) -> int:
        """Prefill ``ids`` alone, copy its keys/values into ``row``; return the first token."""
        solo = self.model.new_cache(1, len(ids))
        logits, _ = self.model(torch.tensor([ids], device=self.model.device), cache=solo)
        if self.cache.length < len(ids):  # make room: the extra columns stay masked in other rows
            self.cache.length = len(ids)
        end = self.cache.length
        for layer in range(len(self.cache.keys)):
            self.cache.keys[layer][row, :, end - len(ids) : end] = solo.keys[layer][0]
            self.cache.values[layer][row, :, end - len(ids) : end] = solo.values[layer][0]
        self.mask[row] = 0
        self.mask[row, end - len(ids) : end] = 1
        return self._sample(logits[:, -1], [ids])[0]

    def _compact(self) -> None:
        """Pack each row's live columns to the right of a shorter window, freeing columns."""
        width = int(self.mask.sum(1).max())
        for row in range(self.num_slots):
            live = self.mask[row].nonzero().squeeze(1)  # (n,)
            target = slice(width - live.numel(), width)
            for store in (self.cache.keys, self.cache.values):
                for layer in range(len(store)):
                    store[layer][row, :, target] = store[layer][row, :, live]  # gather copies
            self.mask[row] = 0
            self.mask[row, target] = 1
        self.cache.length = width
        self.compactions += 1


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 100 values is the 95th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_profile(
    model: TinyTransformer,
    prompts: Sequence[str | Sequence[int]],
    max_new_tokens: int = 20,
    *,
    tokenizer: Tokenizer | None = None,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    warmup: int = 2,
    use_cache: bool = True,
) -> dict[str, float]:
    """Per-request wall-clock latency of generating ``max_new_tokens`` for each prompt (section 4.10).

    Returns milliseconds (``p50_ms``, ``p95_ms``, ``p99_ms``, ``mean_ms``, ``max_ms``),
    ``n`` and the overall ``tokens_per_s``. The first ``warmup`` prompts run untimed.
    """
    if not prompts:
        raise ValueError("latency_profile needs at least one prompt.")
    config = sampling or GREEDY
    ids = [encode_prompt(model, tokenizer, p) for p in prompts]
    rng = torch.Generator(device=model.device).manual_seed(seed)

    def one(prompt: list[int]) -> int:
        tokens = generate_tokens(
            model, prompt, max_new_tokens, sampling=config, generator=rng, use_cache=use_cache
        )
        return sum(1 for _ in tokens)

    for prompt in ids[:warmup]:
        one(prompt)
    times, produced = [], 0
    for prompt in ids:
        start = time.perf_counter()
        produced += one(prompt)
        times.append(time.perf_counter() - start)
    ms = [t * 1000 for t in times]
    return {
        "n": len(ms),
        "max_new_tokens": max_new_tokens,
        "p50_ms": _percentile(ms, 50),
        "p95_ms": _percentile(ms, 95),
        "p99_ms": _percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "max_ms": max(ms),
        "tokens_per_s": produced / sum(times),
    }


@dataclass(frozen=True)
class RequestTiming:
    """One request's clock (section 4.10): prompt length, time to first token, the gaps after."""

    prompt_tokens: int
    ttft_ms: float  # prefill of the prompt plus the first token
    inter_token_ms: tuple[float, ...]  # between consecutive later tokens

    @property
    def total_ms(self) -> float:
        """The request's whole latency (section 4.10)."""
        return self.ttft_ms + sum(self.inter_token_ms)


def request_timings(
    model: TinyTransformer,
    prompts: Sequence[str | Sequence[int]],
    max_new_tokens: int = 20,
    *,
    tokenizer: Tokenizer | None = None,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    warmup: int = 2,
) -> list[RequestTiming]:
    """Time each prompt's first token and every later one, one request at a time (section 4.10).

    The first token waits for the whole prompt to go through the model (the prefill); each
    later token is one cached step. The first ``warmup`` prompts run untimed.
    """
    if not prompts:
        raise ValueError("request_timings needs at least one prompt.")
    if max_new_tokens < 1:
        raise ValueError(
            f"max_new_tokens must be >= 1 to time a first token, got {max_new_tokens}."
        )
    config = sampling or GREEDY
    ids = [encode_prompt(model, tokenizer, p) for p in prompts]
    rng = torch.Generator(device=model.device).manual_seed(seed)

    def one(prompt: list[int]) -> RequestTiming:
        stamps = [time.perf_counter()]
        for _ in generate_tokens(model, prompt, max_new_tokens, sampling=config, generator=rng):
            stamps.append(time.perf_counter())
        gaps = [1000 * (b - a) for a, b in itertools.pairwise(stamps)]
        return RequestTiming(len(prompt), gaps[0] if gaps else 0.0, tuple(gaps[1:]))

    for prompt in ids[:warmup]:
        one(prompt)
    return [one(prompt) for prompt in ids]


def ttft_summary(timings: Sequence[RequestTiming]) -> dict[str, float]:
    """Median and nearest-rank p95 of time to first token and of inter-token latency (section 4.10)."""
    if not timings:
        raise ValueError("ttft_summary needs at least one timing.")
    ttft = [t.ttft_ms for t in timings]
    gaps = [g for t in timings for g in t.inter_token_ms] or [0.0]
    return {
        "n": len(timings),
        "ttft_p50_ms": _percentile(ttft, 50),
        "ttft_p95_ms": _percentile(ttft, 95),
        "itl_p50_ms": _percentile(gaps, 50),
        "itl_p95_ms": _percentile(gaps, 95),
    }


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB (None where it cannot be read; section 4.10).

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of the
    process's own address space. ``getrusage``'s ``ru_maxrss`` (the fallback elsewhere) is
    inherited through fork and exec, so a small process started from a large one (a
    notebook kernel running a budget check in a subprocess) would report its parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def check_budget(
    profile: dict[str, float],
    rss_mb: float | None = None,
    *,
    p95_budget_ms: float = LATENCY_BUDGET_MS,
    rss_budget_mb: float = RSS_BUDGET_MB,
) -> dict[str, Any]:
    """Compare a :func:`latency_profile` (and a peak RSS) with seed 004's budgets (section 4.10)."""
    report: dict[str, Any] = {
        "p95_ms": profile["p95_ms"],
        "p95_budget_ms": p95_budget_ms,
        "p95_ok": profile["p95_ms"] <= p95_budget_ms,
        "rss_mb": rss_mb,
        "rss_budget_mb": rss_budget_mb,
        "rss_ok": None if rss_mb is None else rss_mb <= rss_budget_mb,
    }
    report["ok"] = bool(report["p95_ok"] and report["rss_ok"] is not False)
    return report
