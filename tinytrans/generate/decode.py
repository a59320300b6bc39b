"""Running a trained model: sampling, beam search and the tricks that make decoding fast.

Chapter 4 of the course. Everything here drives :class:`tinytrans.model.TinyTransformer`
one token at a time; nothing changes the model itself.

* **Sampling** -- pure logit filters (:func:`apply_temperature`, :func:`top_k_filter`,
  :func:`top_p_filter`, :func:`min_p_filter`, :func:`apply_repetition_penalty`) composed in
  one fixed order by :func:`filter_logits`; :func:`filter_stages` / :func:`step_distributions`
  expose every intermediate distribution for the sampling widget and the plots.
* **Generation** -- :func:`generate` (text in, text out), :func:`stream_generate` (pieces as
  they are produced), :func:`generate_tokens` (the id-level engine), :func:`generate_batch`
  (several prompts, left padded), :func:`beam_search`.
* **Speed** -- the KV cache (``use_cache=True``), :func:`speculative_generate`,
  :class:`ContinuousBatcher`, :func:`quantize_int8`, :func:`latency_profile`.

Decisions (documented once, used everywhere):

* ``temperature == 0`` means greedy decoding (argmax, no random numbers drawn);
  ``temperature < 0`` is a ``ValueError``. Filters after a zero temperature are no-ops.
* Filter order: repetition penalty -> temperature -> top-k -> top-p -> min-p. Each filter
  sets removed logits to ``-inf`` and always keeps at least the most likely token.
* An empty prompt starts from the tokenizer's BOS token when it has one; otherwise it is a
  ``ValueError`` (a model cannot predict from nothing).
* :func:`generate` returns only the *continuation* (not the prompt): a ``str`` when a
  tokenizer is given, else a ``list[int]`` of new ids. A stop token ends generation and is
  not included in the output.
* Past ``context_length`` the window slides: the model sees the last ``context_length``
  tokens. With the cache, the cropped window is re-prefilled (positions restart at 0, which
  is what learned position tables require); by default after every token, so the output is
  identical to the no-cache path. ``crop_keep`` keeps fewer tokens so re-prefills are rare.
"""

from __future__ import annotations

import copy
import io
import math
import numbers
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from tinytrans.model import KVCache, TinyTransformer

__all__ = [
    "Beam",
    "BeamCandidate",
    "BeamSearchTree",
    "ContinuousBatcher",
    "DistributionStage",
    "SamplingConfig",
    "SpeculativeResult",
    "StepDistributions",
    "apply_repetition_penalty",
    "apply_temperature",
    "beam_search",
    "check_budget",
    "encode_prompt",
    "filter_logits",
    "filter_stages",
    "generate",
    "generate_batch",
    "generate_tokens",
    "latency_profile",
    "min_p_filter",
    "peak_rss_mb",
    "perplexity",
    "quantize_int8",
    "sample_next",
    "speculative_generate",
    "state_dict_bytes",
    "step_distributions",
    "stream_generate",
    "top_k_filter",
    "top_p_filter",
]

#: Seed 004's on-device budgets for the course model.
LATENCY_BUDGET_MS = 250.0
RSS_BUDGET_MB = 400.0


class TokenizerLike(Protocol):
    """What generation needs from a tokenizer (see :mod:`tinytrans.tokenizers`)."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


# --------------------------------------------------------------------------------------------
# Sampling configuration and the logit filters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    """How to turn one step's logits into a token.

    ``temperature == 0`` is greedy (argmax); ``top_k``/``top_p``/``min_p`` are off when
    ``None``; ``repetition_penalty == 1`` is off. Validated on construction.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t) or t < 0:
            raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {t!r}.")
        if self.top_k is not None and (
            isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1
        ):
            raise ValueError(f"top_k must be None or an integer >= 1, got {self.top_k!r}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be None or in (0, 1], got {self.top_p!r}.")
        if self.min_p is not None and not 0.0 <= self.min_p < 1.0:
            raise ValueError(f"min_p must be None or in [0, 1), got {self.min_p!r}.")
        if not self.repetition_penalty > 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}."
            )

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (``temperature == 0``)."""
        return self.temperature == 0


GREEDY = SamplingConfig(temperature=0.0)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by ``temperature``; ``0`` keeps only the argmax (the T -> 0 limit)."""
    if not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0 and finite, got {temperature}.")
    if temperature == 0:
        keep = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()  # (..., V)
        return logits.masked_fill(~keep, float("-inf"))
    scaled = logits / temperature
    if torch.isinf(scaled).any() and not torch.isinf(logits).any():
        # A tiny temperature overflows: shift by the max first (softmax does not change),
        # so the top logit stays 0 and the rest go to -inf instead of inf - inf = nan.
        top = logits.amax(-1, keepdim=True)
        scaled = (logits - top) / temperature
    return scaled


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of the last dimension (exactly k, ties by index)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k!r}.")
    if k >= logits.shape[-1]:
        return logits
    index = logits.sort(dim=-1, descending=True, stable=True).indices[..., :k]  # (..., k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, index, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: the smallest set of most likely tokens whose mass reaches ``p``.

    A token is dropped when the tokens ranked above it already hold ``>= p`` of the
    probability, so the most likely token always survives.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}.")
    if p == 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)  # (..., V)
    probs = sorted_logits.float().softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the top token's probability."""
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"min_p must be in [0, 1), got {min_p!r}.")
    if min_p == 0:
        return logits
    probs = logits.float().softmax(-1)
    threshold = min_p * probs.max(-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def _seen_mask(
    logits: torch.Tensor, previous_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]
) -> torch.Tensor:
    """Boolean mask shaped like ``logits``: True for tokens already in ``previous_ids``."""
    seen = torch.zeros_like(logits, dtype=torch.bool)
    rows = logits.reshape(-1, logits.shape[-1]).shape[0]
    if isinstance(previous_ids, torch.Tensor):
        prev = previous_ids.reshape(rows, -1) if previous_ids.numel() else None
        per_row = [prev[r].tolist() if prev is not None else [] for r in range(rows)]
    elif rows > 1 or (len(previous_ids) and not isinstance(previous_ids[0], int)):
        per_row = [list(row) for row in previous_ids]  # type: ignore[union-attr]
    else:
        per_row = [list(previous_ids)]  # type: ignore[arg-type]
    if len(per_row) != rows:
        raise ValueError(f"previous_ids has {len(per_row)} rows but logits have {rows}.")
    flat = seen.view(rows, -1)
    for r, ids in enumerate(per_row):
        if ids:
            flat[r, torch.as_tensor(ids, dtype=torch.long, device=logits.device)] = True
    return seen


def apply_repetition_penalty(
    logits: torch.Tensor,
    previous_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
    penalty: float,
) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): make already-seen tokens less likely.

    A seen token's positive logit is divided by ``penalty`` and a negative one multiplied
    by it, so ``penalty > 1`` always lowers its probability. ``previous_ids`` is one id list
    for (V,) or (1, V) logits, or one list per row for (B, V).
    """
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty!r}.")
    if penalty == 1.0:
        return logits
    seen = _seen_mask(logits, previous_ids)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _pipeline(config: SamplingConfig, previous_ids: Any = None) -> list[tuple[str, Any]]:
    """The enabled filters of ``config`` in their fixed order, as (name, logits -> logits)."""
    steps: list[tuple[str, Any]] = []
    if config.repetition_penalty != 1.0 and previous_ids is not None:
        steps.append(
            (
                "repetition penalty",
                lambda x: apply_repetition_penalty(x, previous_ids, config.repetition_penalty),
            )
        )
    steps.append(("temperature", lambda x: apply_temperature(x, config.temperature)))
    if config.greedy:
        return steps  # only the argmax is left; nothing else can change the choice
    if config.top_k is not None:
        steps.append(("top-k", lambda x: top_k_filter(x, config.top_k)))
    if config.top_p is not None:
        steps.append(("top-p", lambda x: top_p_filter(x, config.top_p)))
    if config.min_p is not None:
        steps.append(("min-p", lambda x: min_p_filter(x, config.min_p)))
    return steps


def filter_logits(
    logits: torch.Tensor, config: SamplingConfig, previous_ids: Any = None
) -> torch.Tensor:
    """Apply every enabled filter of ``config`` in order; removed tokens become ``-inf``."""
    x = logits.float()
    for _, step in _pipeline(config, previous_ids):
        x = step(x)
    return x


def sample_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
    previous_ids: Any = None,
) -> torch.Tensor:
    """Next token ids (B,) from (B, V) logits: argmax when greedy, else a seeded draw."""
    if config.greedy:  # same result as filtering, minus a few small tensor ops per token
        if config.repetition_penalty != 1.0 and previous_ids is not None:
            logits = apply_repetition_penalty(logits, previous_ids, config.repetition_penalty)
        return logits.argmax(-1)
    filtered = filter_logits(logits, config, previous_ids)  # (B, V)
    if not torch.isfinite(filtered).any(-1).all():
        raise ValueError("every token has -inf logit; there is nothing to sample from.")
    probs = filtered.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class DistributionStage:
    """One stage of the sampling pipeline: logits, renormalised probabilities, kept mask."""

    name: str
    logits: torch.Tensor  # (V,)
    probs: torch.Tensor  # (V,) sums to 1 over the kept tokens
    kept: torch.Tensor  # (V,) bool

    @property
    def num_kept(self) -> int:
        return int(self.kept.sum())


@dataclass
class StepDistributions:
    """Every distribution of one sampling step, in pipeline order (first = model at T=1)."""

    stages: dict[str, DistributionStage]
    context: list[int] = field(default_factory=list)

    @property
    def final(self) -> DistributionStage:
        return list(self.stages.values())[-1]

    @property
    def names(self) -> list[str]:
        return list(self.stages)

    def __getitem__(self, name: str) -> DistributionStage:
        return self.stages[name]


def _stage(name: str, logits: torch.Tensor) -> DistributionStage:
    kept = torch.isfinite(logits)
    return DistributionStage(name, logits, logits.softmax(-1), kept)


def filter_stages(
    logits: torch.Tensor, config: SamplingConfig | None = None, previous_ids: Any = None
) -> StepDistributions:
    """The distribution after each filter of ``config`` for one (V,) logit vector.

    Stage names: ``"model"`` (T = 1), then any of ``"repetition penalty"``, ``"temperature"``,
    ``"top-k"``, ``"top-p"``, ``"min-p"`` that are enabled. No model needed: the widget can
    feed hand-made logits.
    """
    config = config or SamplingConfig()
    x = logits.detach().float().reshape(-1)  # (V,)
    stages = {"model": _stage("model", x)}
    for name, step in _pipeline(config, previous_ids):
        x = step(x)
        stages[name] = _stage(name, x)
    return StepDistributions(stages)


def step_distributions(
    model: TinyTransformer,
    ids: str | Sequence[int] | torch.Tensor,
    config: SamplingConfig | None = None,
    *,
    tokenizer: TokenizerLike | None = None,
    previous_ids: Sequence[int] | None = None,
) -> StepDistributions:
    """Run ``model`` on ``ids`` and return :func:`filter_stages` of its next-token logits.

    ``ids`` may be text when a ``tokenizer`` is given. The repetition penalty (if enabled)
    uses ``previous_ids``, by default the context itself.
    """
    context = encode_prompt(model, tokenizer, ids)
    window = context[-model.config.context_length :]
    with _eval_mode(model), torch.inference_mode():
        logits, _ = model(torch.tensor([window], device=model.device))
    prev = context if previous_ids is None else list(previous_ids)
    result = filter_stages(logits[0, -1], config, prev)
    result.context = context
    return result


def _resolve_sampling(
    sampling: SamplingConfig | None,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repetition_penalty: float,
) -> SamplingConfig:
    """One SamplingConfig from either ``sampling=`` or the individual keyword arguments."""
    loose = SamplingConfig(temperature, top_k, top_p, min_p, repetition_penalty)
    if sampling is None:
        return loose
    if loose != SamplingConfig():
        raise ValueError("pass either sampling=SamplingConfig(...) or individual parameters.")
    return sampling


def _make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """A seeded generator from ``seed``, the given ``generator``, or None (global RNG)."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both.")
    if seed is None:
        return generator
    return torch.Generator(device=device).manual_seed(int(seed))


# --------------------------------------------------------------------------------------------
# Prompts, tokens and checks
# --------------------------------------------------------------------------------------------


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout) and restore the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise ValueError(f"prompt ids must be 1-D or (1, T), got shape {tuple(ids.shape)}.")
        if ids.dtype.is_floating_point or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"prompt ids must be integers, got a tensor of {ids.dtype}.")
        return [int(i) for i in ids.tolist()]
    if isinstance(ids, str):
        raise ValueError("a text prompt needs a tokenizer; pass token ids or a tokenizer.")
    values = list(ids)
    for i in values:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ValueError(
                f"prompt ids must be integers, got {i!r}; a float or string id is never rounded"
            )
    return [int(i) for i in values]


def _check_max_new_tokens(max_new_tokens: int) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")


def _check_ids(model: TinyTransformer, ids: list[int]) -> list[int]:
    """Non-empty ids inside the model's vocabulary, else a ValueError saying why."""
    if not ids:
        raise ValueError("the prompt is empty; give at least one token.")
    vocab = model.config.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(
            f"prompt token id {bad[0]} is outside the model's vocabulary [0, {vocab}); "
            "was it encoded with a different tokenizer?"
        )
    return ids


def encode_prompt(
    model: TinyTransformer,
    tokenizer: TokenizerLike | None,
    prompt: str | Sequence[int] | torch.Tensor,
) -> list[int]:
    """Prompt -> checked ids. Text needs a tokenizer; empty prompts start from BOS if any."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer; pass token ids or a tokenizer.")
        try:
            ids = list(tokenizer.encode(prompt))
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ValueError(f"cannot encode the prompt: {error}") from error
    else:
        ids = _as_list(prompt)
    if not ids:
        bos = getattr(tokenizer, "bos_id", None)
        if bos is None:
            raise ValueError(
                "the prompt is empty and the tokenizer has no BOS token to start from; "
                "give at least one character or token."
            )
        ids = [int(bos)]
    return _check_ids(model, ids)


def _stop_ids(
    tokenizer: TokenizerLike | None, stop_tokens: Iterable[int] | None, stop_at_eos: bool
) -> frozenset[int]:
    stops = {int(t) for t in stop_tokens or ()}
    eos = getattr(tokenizer, "eos_id", None)
    if stop_at_eos and eos is not None:
        stops.add(int(eos))
    return frozenset(stops)


# --------------------------------------------------------------------------------------------
# The decoding engine: one token at a time, with or without the KV cache
# --------------------------------------------------------------------------------------------


def _check_crop_keep(model: TinyTransformer, keep: int | None) -> int:
    context = model.config.context_length
    if keep is None:
        return context
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= context:
        raise ValueError(f"crop_keep must be None or an integer in [1, {context}], got {keep!r}.")
    return keep


class _Window:
    """Next-token logits for a growing sequence, cropping to the context as needed.

    Without a cache every call recomputes the last ``context_length`` tokens. With a cache
    it feeds only the tokens not yet cached, and re-prefills the last ``keep`` tokens when
    the window would overflow (positions restart at 0, so learned positions stay valid).
    """

    def __init__(self, model: TinyTransformer, use_cache: bool, keep: int | None) -> None:
        self.model = model
        self.context = model.config.context_length
        self.keep = _check_crop_keep(model, keep)
        self.cache: KVCache | None = model.new_cache(1, self.context) if use_cache else None
        self.start = 0  # index in the sequence of the first cached token

    def _forward(self, ids: list[int]) -> torch.Tensor:
        idx = torch.tensor([ids], device=self.model.device)  # (1, T)
        logits, _ = self.model(idx, cache=self.cache)
        return logits[0, -1]  # (V,)

    @torch.inference_mode()
    def next_logits(self, seq: list[int]) -> torch.Tensor:
        if self.cache is None:
            return self._forward(seq[-self.context :])
        n = len(seq)
        cached_end = self.start + self.cache.length
        if self.cache.length == 0 or n - self.start > self.context:
            keep = self.context if self.cache.length == 0 else self.keep
            self.start = max(0, n - keep)
            self.cache.crop(0)
            cached_end = self.start
        return self._forward(seq[cached_end:])


def generate_tokens(
    model: TinyTransformer,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    stop_ids: Iterable[int] = (),
    use_cache: bool = True,
    crop_keep: int | None = None,
    vocab_limit: int | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids after ``ids`` (the id-level engine).

    Stops early (without yielding it) at a token in ``stop_ids``. ``sampling`` defaults to
    greedy. ``crop_keep``: see :class:`_Window` and the module docstring. ``vocab_limit``
    forbids ids at or above it: a model whose vocabulary is padded beyond its tokenizer's
    must never emit an id the tokenizer cannot decode.
    """
    _check_max_new_tokens(max_new_tokens)
    config = sampling or GREEDY
    seq = _check_ids(model, _as_list(ids))
    stops = frozenset(int(s) for s in stop_ids)
    with _eval_mode(model):
        window = _Window(model, use_cache, crop_keep)
        penalise = config.repetition_penalty != 1.0
        for _ in range(max_new_tokens):
            logits = window.next_logits(seq)  # (V,)
            if vocab_limit is not None and vocab_limit < logits.shape[-1]:
                logits = logits.clone()
                logits[vocab_limit:] = float("-inf")
            token = int(sample_next(logits[None], config, generator, seq if penalise else None))
            if token in stops:
                return
            seq.append(token)
            yield token


class _IncrementalDecoder:
    """Decode a growing id list into text pieces without splitting multibyte characters.

    Decodes a short tail of recent ids and emits only the new text; holds text back while
    it ends in U+FFFD (an incomplete UTF-8 sequence from a byte-level tokenizer).
    """

    def __init__(self, tokenizer: TokenizerLike) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the tail we re-decode
        self.read = 0  # ids before this were already emitted

    def push(self, token: int) -> str:
        self.ids.append(token)
        done = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if text.endswith("\ufffd") or not text.startswith(done):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done) :]

    def flush(self) -> str:
        done = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(done) :] if text.startswith(done) else text


def stream_generate(
    model: TinyTransformer,
    tokenizer: TokenizerLike | None,
    prompt: str | Sequence[int] | torch.Tensor,
    max_new_tokens: int = 100,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Iterable[int] | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    crop_keep: int | None = None,
) -> Iterator[str] | Iterator[int]:
    """Like :func:`generate` but yields the continuation as it is produced.

    With a tokenizer: text pieces whose concatenation equals ``generate``'s string (a char
    tokenizer yields one piece per token; byte-level BPE waits for whole characters).
    Without: the new token ids. Arguments are validated before the first ``next()``.
    """
    config = _resolve_sampling(sampling, temperature, top_k, top_p, min_p, repetition_penalty)
    _check_max_new_tokens(max_new_tokens)
    _check_crop_keep(model, crop_keep)
    ids = encode_prompt(model, tokenizer, prompt)
    rng = _make_generator(seed, generator, model.device)
    tokens = generate_tokens(
        model,
        ids,
        max_new_tokens,
        sampling=config,
        generator=rng,
        stop_ids=_stop_ids(tokenizer, stop_tokens, stop_at_eos),
        use_cache=use_cache,
        crop_keep=crop_keep,
        vocab_limit=None if tokenizer is None else int(tokenizer.vocab_size),
    )
    return tokens if tokenizer is None else _text_pieces(tokens, tokenizer)


def _text_pieces(tokens: Iterator[int], tokenizer: TokenizerLike) -> Iterator[str]:
    decoder = _IncrementalDecoder(tokenizer)
    for token in tokens:
        piece = decoder.push(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def generate(
    model: TinyTransformer,
    tokenizer: TokenizerLike | None,
    prompt: str | Sequence[int] | torch.Tensor,
    max_new_tokens: int = 100,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Iterable[int] | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    crop_keep: int | None = None,
    stream: bool = False,
) -> str | list[int] | Iterator[str] | Iterator[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens.

    ``prompt``: text (needs ``tokenizer``), or token ids (list or tensor). Returns the
    continuation only: ``str`` with a tokenizer, ``list[int]`` of new ids without one (or
    the :func:`stream_generate` iterator when ``stream=True``). ``temperature=0`` is greedy.
    ``seed`` (or a seeded ``generator``) makes sampling reproducible. Generation stops at
    any of ``stop_tokens`` or, when ``stop_at_eos``, the tokenizer's ``eos_id``; the stop
    token is not returned. ``use_cache=False`` recomputes the whole window every step.
    """
    pieces = stream_generate(
        model,
        tokenizer,
        prompt,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        sampling=sampling,
        seed=seed,
        generator=generator,
        stop_tokens=stop_tokens,
        stop_at_eos=stop_at_eos,
        use_cache=use_cache,
        crop_keep=crop_keep,
    )
    if stream:
        return pieces
    if tokenizer is None:
        return list(pieces)  # type: ignore[arg-type]
    return "".join(pieces)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Batched generation: left padding, attention mask, per-row positions
# --------------------------------------------------------------------------------------------


def _left_pad(
    prompts: list[list[int]], pad_id: int, total: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids (B, P) and an attention mask (B, total) with 1 on real tokens."""
    width = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(prompts), total, dtype=torch.long, device=device)
    for row, ids in enumerate(prompts):
        idx[row, width - len(ids) :] = torch.tensor(ids, device=device)
        mask[row, width - len(ids) : width] = 1
    return idx, mask


def generate_batch(
    model: TinyTransformer,
    prompts_ids: Sequence[Sequence[int] | torch.Tensor],
    max_new_tokens: int,
    *,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Iterable[int] | None = None,
    pad_id: int = 0,
) -> list[list[int]]:
    """Generate for several prompts at once; returns each prompt's new ids.

    Prompts of different lengths are left padded; the attention mask hides the padding and
    ``position_ids`` count only real tokens, so greedy outputs equal generating each prompt
    alone. The window does not slide: prompts are cropped to their last
    ``context_length - max_new_tokens`` tokens.
    """
    _check_max_new_tokens(max_new_tokens)
    if not prompts_ids:
        return []
    context = model.config.context_length
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens must be < context_length ({context}) for batches.")
    prompts = [_check_ids(model, _as_list(p))[-(context - max_new_tokens) :] for p in prompts_ids]
    config = sampling or GREEDY
    rng = _make_generator(seed, generator, model.device)
    stops = frozenset(int(s) for s in stop_tokens or ())
    with _eval_mode(model), torch.inference_mode():
        return _batch_loop(model, prompts, max_new_tokens, config, rng, stops, pad_id)


def _batch_loop(model, prompts, max_new_tokens, config, rng, stops, pad_id) -> list[list[int]]:
    B, width = len(prompts), max(len(p) for p in prompts)
    idx, mask = _left_pad(prompts, pad_id, width + max_new_tokens, model.device)
    cache = model.new_cache(B, width + max_new_tokens)
    positions = (mask[:, :width].cumsum(1) - 1).clamp(min=0)  # (B, P)
    logits, _ = model(idx, cache=cache, attention_mask=mask[:, :width], position_ids=positions)
    next_pos = mask[:, :width].sum(1, keepdim=True)  # (B, 1)
    outputs: list[list[int]] = [[] for _ in range(B)]
    history = [list(p) for p in prompts]
    done = [max_new_tokens == 0] * B
    for step in range(max_new_tokens):
        penalise = config.repetition_penalty != 1.0
        tokens = sample_next(logits[:, -1], config, rng, history if penalise else None)  # (B,)
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token in stops:
                done[row] = True
                continue
            outputs[row].append(token)
            history[row].append(token)
            done[row] = len(outputs[row]) >= max_new_tokens
        if all(done):
            break
        mask[:, width + step] = 1
        logits, _ = model(
            tokens[:, None],
            cache=cache,
            attention_mask=mask[:, : width + step + 1],
            position_ids=next_pos,
        )
        next_pos = next_pos + 1
    return outputs


# --------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------


@dataclass
class Beam:
    """One hypothesis: its new ids, summed log-probability and length-normalised score."""

    ids: list[int]
    score: float
    log_prob: float
    finished: bool = False


@dataclass
class BeamCandidate:
    """A scored extension at one step of the search (for the beam-search widget)."""

    parent: int  # index of the extended beam among the previous step's kept beams
    token: int
    ids: list[int]
    log_prob: float
    score: float
    status: str  # "kept", "finished" (ended with eos) or "pruned"


@dataclass
class BeamSearchTree:
    """Per step, the best candidates and their fate; ``expanded`` counts all scored ones."""

    prompt: list[int]
    steps: list[list[BeamCandidate]] = field(default_factory=list)
    expanded: list[int] = field(default_factory=list)


def _length_normalised(log_prob: float, length: int, length_penalty: float) -> float:
    """Score = log p / length ** alpha: alpha > 0 favours longer outputs, 0 is plain log p."""
    return log_prob / (max(length, 1) ** length_penalty)


def beam_search(
    model: TinyTransformer,
    ids: Sequence[int] | torch.Tensor,
    num_beams: int = 4,
    max_new_tokens: int = 20,
    *,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    return_tree: bool = False,
) -> list[Beam] | tuple[list[Beam], BeamSearchTree]:
    """The ``num_beams`` best continuations of ``ids``, best first (Beam.ids = new ids).

    Each step extends every live beam by every token, keeps the ``num_beams`` best
    extensions by cumulative log-probability, and retires those ending in ``eos_id``.
    Finished and surviving beams are ranked by ``log_prob / length ** length_penalty``.
    The prompt is cropped so that prompt + output fit in the context.
    """
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}.")
    _check_max_new_tokens(max_new_tokens)
    context = model.config.context_length
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens must be < context_length ({context}) for beam search.")
    prompt = _check_ids(model, _as_list(ids))[-(context - max_new_tokens) :]
    tree = BeamSearchTree(prompt)
    with _eval_mode(model), torch.inference_mode():
        beams = _beam_loop(model, prompt, num_beams, max_new_tokens, length_penalty, eos_id, tree)
    return (beams, tree) if return_tree else beams


def _beam_loop(model, prompt, num_beams, max_new_tokens, alpha, eos_id, tree) -> list[Beam]:
    cache = model.new_cache(1, len(prompt) + max_new_tokens)
    logits, _ = model(torch.tensor([prompt], device=model.device), cache=cache)
    live_ids: list[list[int]] = [[]]
    live_logp = torch.zeros(1, device=model.device)  # (beams,)
    finished: list[Beam] = []
    for step in range(max_new_tokens):
        total = live_logp[:, None] + logits[:, -1].float().log_softmax(-1)  # (beams, V)
        vocab = total.shape[-1]
        top = total.flatten().topk(min(total.numel(), 2 * num_beams))
        parents, tokens, new_ids, new_logp, candidates = [], [], [], [], []
        for value, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            parent, token = divmod(index, vocab)
            ids = [*live_ids[parent], token]
            score = _length_normalised(value, len(ids), alpha)
            status = "pruned"
            if token == eos_id:
                status = "finished"
                finished.append(Beam(ids, score, value, finished=True))
            elif len(new_ids) < num_beams:
                status = "kept"
                parents.append(parent), tokens.append(token)
                new_ids.append(ids), new_logp.append(value)
            candidates.append(BeamCandidate(parent, token, ids, value, score, status))
        tree.steps.append(candidates)
        tree.expanded.append(total.numel())
        live_ids, live_logp = new_ids, torch.tensor(new_logp, device=model.device)
        if not live_ids or step == max_new_tokens - 1:
            break
        cache.reorder(torch.tensor(parents, device=model.device))
        logits, _ = model(torch.tensor(tokens, device=model.device)[:, None], cache=cache)
    survivors = [
        Beam(ids, _length_normalised(lp, len(ids), alpha), lp)
        for ids, lp in zip(live_ids, live_logp.tolist(), strict=True)
    ]
    ranked = sorted(finished + survivors, key=lambda b: b.score, reverse=True)
    return ranked[:num_beams]


# --------------------------------------------------------------------------------------------
# Speculative decoding (greedy verification)
# --------------------------------------------------------------------------------------------


@dataclass
class SpeculativeResult:
    """New ids plus the bookkeeping that explains the speed-up."""

    ids: list[int]
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens the target agreed with
    target_calls: int = 0  # target forward passes (each verifies up to k drafts)
    draft_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_target_call(self) -> float:
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
    """Greedy speculative decoding (Leviathan et al. 2023) with an identical result.

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
    prompt = _check_ids(target, _as_list(ids))
    total = len(prompt) + max_new_tokens
    limit = min(target.config.context_length, draft.config.context_length)
    if total > limit:
        raise ValueError(
            f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
            f"context length {limit}; speculative decoding does not slide the window."
        )
    stops = frozenset(int(s) for s in stop_tokens or ())
    with _eval_mode(target), _eval_mode(draft), torch.inference_mode():
        return _speculative_loop(target, draft, prompt, max_new_tokens, k, stops)


def _feed(model: TinyTransformer, cache: KVCache, ids: list[int]) -> torch.Tensor:
    """Run ``ids`` through ``model`` with ``cache``; logits (T, V)."""
    logits, _ = model(torch.tensor([ids], device=model.device), cache=cache)
    return logits[0]


def _speculative_loop(target, draft, prompt, max_new_tokens, k, stops) -> SpeculativeResult:
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


# --------------------------------------------------------------------------------------------
# Continuous batching
# --------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    request_id: int
    pending: int  # last sampled token, not yet in the cache
    position: int  # its position id
    history: list[int]  # prompt + output (for the repetition penalty)
    output: list[int]
    max_new_tokens: int


class ContinuousBatcher:
    """Serve many requests with a fixed number of batch rows ("slots"), refilled as they free.

    All slots share one batched :class:`KVCache` and one write column per step; each row
    has its own attention-mask row and position counter, so rows at different lengths
    decode together. A new request is prefilled alone and its keys/values copied into a
    free row, right-aligned to the current column. When the columns run out, every row's
    live entries are packed to the right (:meth:`_compact`). Greedy outputs equal generating
    each request alone. The model is put in eval mode.
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
        self.model = model.eval()
        self.config = sampling or GREEDY
        self.rng = _make_generator(seed, generator, model.device)
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
        """Queue a request; returns its id (the key of :attr:`results`)."""
        _check_max_new_tokens(max_new_tokens)
        ids = _check_ids(self.model, _as_list(prompt_ids))
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
        return bool(self.queue) or any(s is not None for s in self.slots)

    def run(self) -> dict[int, list[int]]:
        """Step until every submitted request has finished; returns ``results``."""
        while self.busy:
            self.step()
        return self.results

    # -- one scheduler step ---------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[tuple[int, int]]:
        """Admit queued requests into free slots, then decode one token for every busy slot.

        Returns the (request_id, token) pairs produced in this step.
        """
        events = self._admit()
        rows = [r for r, s in enumerate(self.slots) if s is not None]
        if not rows:
            return events
        if self.cache.length + 1 > self.max_len:
            self._compact()
        column = self.cache.length
        idx = torch.zeros(self.num_slots, 1, dtype=torch.long, device=self.model.device)
        positions = torch.zeros_like(idx)
        for r in rows:
            slot = self.slots[r]
            idx[r, 0], positions[r, 0] = slot.pending, slot.position
            self.mask[r, column] = 1
        logits, _ = self.model(
            idx, cache=self.cache, attention_mask=self.mask[:, : column + 1], position_ids=positions
        )
        self.decode_steps += 1
        chosen = self._sample(logits[rows, -1], [self.slots[r].history for r in rows])
        for r, token in zip(rows, chosen, strict=True):
            slot = self.slots[r]
            slot.position += 1
            events += self._accept(r, slot, token)
        return events

    def _sample(self, logits: torch.Tensor, histories: list[list[int]]) -> list[int]:
        penalise = self.config.repetition_penalty != 1.0
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


# --------------------------------------------------------------------------------------------
# Quantization, perplexity and the latency / memory budget
# --------------------------------------------------------------------------------------------


def quantize_int8(model: TinyTransformer) -> TinyTransformer:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8 (CPU).

    Weights are stored as int8 with one scale per tensor; activations are quantized on the
    fly at each call. Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated upstream
    in favour of ``torchao`` but still shipped with torch); its deprecation warnings are
    silenced. Embeddings stay float32 (a tied ``lm_head`` is quantized separately).
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # pragma: no cover - depends on the torch build
        raise RuntimeError(
            "this torch build has no torch.ao.quantization.quantize_dynamic"
        ) from error
    source = copy.deepcopy(model).cpu().eval()  # the original keeps its device and mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8, inplace=True)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the model's size on disk."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def perplexity(model: TinyTransformer, ids: Sequence[int] | torch.Tensor) -> float:
    """exp(mean next-token loss) over ``ids`` in non-overlapping context-sized windows."""
    tokens = _as_list(ids)
    if len(tokens) < 2:
        raise ValueError("perplexity needs at least two tokens.")
    window = model.config.context_length + 1
    total, count = 0.0, 0
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, len(tokens) - 1, window - 1):
            chunk = torch.tensor([tokens[start : start + window]], device=model.device)
            if chunk.shape[1] < 2:
                break
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
            total += float(loss) * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    return math.exp(total / count)


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
    tokenizer: TokenizerLike | None = None,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    warmup: int = 2,
    use_cache: bool = True,
) -> dict[str, float]:
    """Per-request wall-clock latency of generating ``max_new_tokens`` for each prompt.

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


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB (None where it cannot be read).

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
    """Compare a :func:`latency_profile` (and a peak RSS) with seed 004's budgets."""
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
