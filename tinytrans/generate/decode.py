"""The autoregressive loop: one token at a time, with or without the KV cache (sections 4.1, 4.6, 4.7).

:func:`generate` (text in, text out), :func:`stream_generate` (pieces as they are produced),
:func:`generate_tokens` (the id-level engine) and :func:`generate_batch` (several prompts,
left padded).

Decisions (documented once, used everywhere):

* :func:`generate` returns only the *continuation* (not the prompt): a ``str`` when a
  tokenizer is given, else a ``list[int]`` of new ids. A stop token ends generation and is
  not included in the output.
* Sampling is a :class:`~tinytrans.generate.sampling.SamplingConfig` (``sampling=``) or its
  fields as keyword shortcuts (``temperature=0``), never both; see
  :func:`~tinytrans.generate.sampling.resolve_sampling`. :func:`generate` takes exactly the
  keywords of :func:`stream_generate` (plus ``stream``).
* Past ``context_length`` the window slides: the model sees the last ``context_length``
  tokens. With the cache, the cropped window is re-prefilled (positions restart at 0, which
  is what learned position tables require); by default after every token, so the output is
  identical to the no-cache path. ``crop_keep`` keeps fewer tokens so re-prefills are rare.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from tinytrans.generate.prompts import (
    _check_max_new_tokens,
    _prompt_ids,
    _stop_ids,
    encode_prompt,
)
from tinytrans.generate.sampling import (
    GREEDY,
    SamplingConfig,
    make_generator,
    resolve_sampling,
    sample_next,
)
from tinytrans.model import KVCache, TinyTransformer, eval_mode
from tinytrans.tokenizers import Tokenizer

__all__ = ["generate", "generate_batch", "generate_tokens", "stream_generate"]


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
    """Yield up to ``max_new_tokens`` new token ids after ``ids`` (the id-level engine, section 4.1).

    Stops early (without yielding it) at a token in ``stop_ids``. ``sampling`` defaults to
    greedy. ``crop_keep``: see the module docstring (section 4.6). ``vocab_limit`` forbids
    ids at or above it: a model whose vocabulary is padded beyond its tokenizer's must never
    emit an id the tokenizer cannot decode.
    """
    _check_max_new_tokens(max_new_tokens)
    config = sampling or GREEDY
    seq = _prompt_ids(model, ids)
    stops = frozenset(int(s) for s in stop_ids)
    if vocab_limit is not None and not vocab_limit >= 1:
        raise ValueError(f"vocab_limit must be None or >= 1, got {vocab_limit!r}.")
    with eval_mode(model):
        window = _Window(model, use_cache, crop_keep)
        penalise = config.uses_history
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

    def __init__(self, tokenizer: Tokenizer) -> None:
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
    tokenizer: Tokenizer | None,
    prompt: str | Sequence[int] | torch.Tensor,
    max_new_tokens: int = 100,
    *,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Iterable[int] | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    crop_keep: int | None = None,
    **shortcuts: Any,
) -> Iterator[str] | Iterator[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens, yielding them as produced (section 4.1).

    ``prompt``: text (needs ``tokenizer``), or token ids (list or tensor). With a tokenizer
    it yields text pieces whose concatenation is :func:`generate`'s string (a char tokenizer
    yields one piece per token; byte-level BPE waits for whole characters); without one, the
    new token ids. ``sampling`` (default: plain sampling at T = 1) or its fields as
    ``shortcuts`` (``temperature=0`` is greedy). ``seed`` (or a seeded ``generator``) makes
    sampling reproducible. Generation stops at any of ``stop_tokens`` or, when
    ``stop_at_eos``, the tokenizer's ``eos_id``; the stop token is not returned.
    ``use_cache=False`` recomputes the whole window every step; ``crop_keep`` (section 4.6).
    Arguments are validated before the first ``next()``.
    """
    config = resolve_sampling(sampling, **shortcuts)
    _check_max_new_tokens(max_new_tokens)
    _check_crop_keep(model, crop_keep)
    ids = encode_prompt(model, tokenizer, prompt)
    rng = make_generator(seed, generator, model.device)
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


def _text_pieces(tokens: Iterator[int], tokenizer: Tokenizer) -> Iterator[str]:
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
    tokenizer: Tokenizer | None,
    prompt: str | Sequence[int] | torch.Tensor,
    max_new_tokens: int = 100,
    *,
    stream: bool = False,
    **options: Any,
) -> str | list[int] | Iterator[str] | Iterator[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens and return the continuation (section 4.1).

    ``options`` are :func:`stream_generate`'s keywords (``sampling=``, or shortcuts such as
    ``temperature=0``, ``seed``, ``stop_tokens``, ``use_cache``, ...). Returns a ``str`` with a
    tokenizer, a ``list[int]`` of new ids without one, or the :func:`stream_generate`
    iterator when ``stream=True``.
    """
    pieces = stream_generate(model, tokenizer, prompt, max_new_tokens, **options)
    if stream:
        return pieces
    if tokenizer is None:
        return [int(token) for token in pieces]
    return "".join(str(piece) for piece in pieces)


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
    """Generate for several prompts at once; returns each prompt's new ids (section 4.7).

    Prompts of different lengths are left padded; the attention mask hides the padding and
    ``position_ids`` count only real tokens, so greedy outputs equal generating each prompt
    alone. ``sampling`` defaults to greedy. The window does not slide: prompts are cropped
    to their last ``context_length - max_new_tokens`` tokens.
    """
    _check_max_new_tokens(max_new_tokens)
    if not prompts_ids:
        return []
    context = model.config.context_length
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens must be < context_length ({context}) for batches.")
    if not 0 <= pad_id < model.config.vocab_size:
        raise ValueError(f"pad_id must be in [0, {model.config.vocab_size}), got {pad_id!r}.")
    prompts = [_prompt_ids(model, p)[-(context - max_new_tokens) :] for p in prompts_ids]
    config = resolve_sampling(sampling) if sampling is not None else GREEDY
    rng = make_generator(seed, generator, model.device)
    stops = frozenset(int(s) for s in stop_tokens or ())
    with eval_mode(model), torch.inference_mode():
        return _batch_loop(model, prompts, max_new_tokens, config, rng, stops, pad_id)


def _batch_loop(
    model: TinyTransformer,
    prompts: list[list[int]],
    max_new_tokens: int,
    config: SamplingConfig,
    rng: torch.Generator | None,
    stops: frozenset[int],
    pad_id: int,
) -> list[list[int]]:
    B, width = len(prompts), max(len(p) for p in prompts)
    idx, mask = _left_pad(prompts, pad_id, width + max_new_tokens, model.device)
    cache = model.new_cache(B, width + max_new_tokens)
    positions = (mask[:, :width].cumsum(1) - 1).clamp(min=0)  # (B, P)
    logits, _ = model(idx, cache=cache, attention_mask=mask[:, :width], position_ids=positions)
    next_pos = mask[:, :width].sum(1, keepdim=True)  # (B, 1)
    outputs: list[list[int]] = [[] for _ in range(B)]
    history = [list(p) for p in prompts]
    done = [max_new_tokens == 0] * B
    penalise = config.uses_history
    for step in range(max_new_tokens):
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
