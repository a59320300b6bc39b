"""Measuring a language model: mean validation loss and strided sliding-window perplexity.

Chapter 3 (sections 3.3, 3.6 and 3.8); chapter 4 uses the same perplexity to price int8 (section 4.9).

Perplexity is ``exp(mean negative log-likelihood per token)``: :func:`perplexity_from_loss`
turns a mean loss in nats into one, and :func:`perplexity` scores a token sequence with a
model. It is the only model perplexity in the package, and its stride is always explicit.
Scoring a long text with a
model that sees at most ``context_length`` tokens needs a rule for how much context each
token gets:

* **chunked** (``stride == context_length``): cut the text into disjoint windows. The first
  token of every window is predicted from almost nothing, so the score is pessimistic.
* **strided sliding window** (``stride < context_length``): slide the window by ``stride``
  tokens and score only the tokens the previous window did not score. Every token is still
  scored exactly once, but (after the first window) with at least
  ``context_length - stride`` tokens of history. Smaller strides give truer, lower numbers
  and cost ``context_length / stride`` times more compute.

:func:`ngram_loss` gives the baselines a trained model must beat: the cross-entropy of an
add-alpha smoothed n-gram model (n = 1: token frequencies, n = 2: the previous token).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinytrans.model import TinyTransformer, eval_mode, validate_ids

__all__ = [
    "bits_per_character",
    "estimate_loss",
    "ngram_loss",
    "perplexity",
    "perplexity_from_loss",
    "sliding_windows",
]


def sliding_windows(n_tokens: int, context_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows that score tokens ``1 .. n_tokens-1`` once each (section 3.8).

    Returns ``(begin, end, n_scored)``: the model reads ``ids[begin:end]`` and predicts
    ``ids[begin+1:end+1]``, of which only the last ``n_scored`` predictions count.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}.")
    if not 1 <= stride <= context_length:
        raise ValueError(f"stride must be in [1, context_length={context_length}], got {stride}.")
    last = n_tokens - 1  # number of predictable tokens
    windows, scored_until, begin = [], 0, 0
    while scored_until < last:
        end = min(begin + context_length, last)
        windows.append((begin, end, end - scored_until))
        scored_until = end
        begin += stride
    return windows


def _as_tensor(token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise ValueError("perplexity needs at least two tokens (one to read, one to predict).")
    return ids


def _batched(
    windows: list[tuple[int, int, int]], batch_size: int
) -> Iterator[list[tuple[int, int, int]]]:
    """Consecutive groups of equally long windows, at most ``batch_size`` each."""
    group: list[tuple[int, int, int]] = []
    for window in windows:
        same_length = not group or (group[0][1] - group[0][0]) == (window[1] - window[0])
        if group and (len(group) == batch_size or not same_length):
            yield group
            group = []
        group.append(window)
    if group:
        yield group


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def perplexity_from_loss(loss: float) -> float:
    """``exp(loss)``: a mean loss in nats as a perplexity, the effective number of equally
    likely next tokens (section 3.8)."""
    return math.exp(loss)


def bits_per_character(loss: float, n_tokens: int, n_characters: int) -> float:
    """A mean loss in nats per token as bits per character of the same text (section 7.3).

    ``loss x n_tokens`` is the text's total negative log-likelihood in nats; divided by
    ``n_characters`` and ``ln 2`` it is the bits each character costs. Unlike the loss per
    token, this number compares models with different tokenizers, provided ``n_tokens`` and
    ``n_characters`` count the same held-out text.
    """
    if n_tokens < 1 or n_characters < 1:
        raise ValueError(
            f"n_tokens and n_characters must be >= 1, got {n_tokens} and {n_characters}; "
            "count the tokens and characters of the text the loss was measured on."
        )
    if not math.isfinite(loss):
        raise ValueError(f"loss must be a finite number of nats per token, got {loss}.")
    return loss * n_tokens / n_characters / math.log(2)


@torch.no_grad()
def perplexity(
    model: TinyTransformer,
    token_ids: Sequence[int] | torch.Tensor,
    *,
    stride: int,
    context_length: int | None = None,
    batch_size: int = 16,
) -> float:
    """Perplexity of ``token_ids`` with the strided sliding window (section 3.8).

    ``stride`` is required: it decides the number. ``stride == context_length`` is the
    chunked value (disjoint windows); a smaller stride gives every token after the first
    window at least ``context_length - stride`` tokens of history. ``context_length``
    defaults to the model's. The ids are checked against the model's vocabulary once.
    """
    ids = _as_tensor(token_ids)
    window = context_length or model.config.context_length
    validate_ids(ids, model.config.vocab_size)
    device = _model_device(model)
    total_nll, total_count = 0.0, 0
    with eval_mode(model):
        for group in _batched(sliding_windows(ids.numel(), window, stride), batch_size):
            x = torch.stack([ids[b:e] for b, e, _ in group]).to(device)
            y = torch.stack([ids[b + 1 : e + 1] for b, e, _ in group]).to(device)
            for row, (b, e, n_scored) in enumerate(group):
                y[row, : (e - b) - n_scored] = -100  # already scored by an earlier window
            logits, _ = model(x)
            nll = F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"
            )
            total_nll += float(nll)
            total_count += sum(n for *_, n in group)
    return perplexity_from_loss(total_nll / total_count)


def _eval_batches(datamodule: Any, split: str, max_batches: int | None) -> Iterable[Any]:
    return datamodule.iter_eval_batches(split, max_batches=max_batches)


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    datamodule: Any,
    max_batches: int | None = None,
    split: str = "val",
    autocast: Any = None,
) -> float:
    """Mean cross-entropy per token over ``datamodule.iter_eval_batches(split, max_batches)`` (section 3.6).

    ``autocast``: an optional context-manager factory (the trainer passes its mixed-precision
    context). Batches are weighted by their token count, so a short last batch counts fairly.
    """
    sum_loss, count = loss_sums(model, _eval_batches(datamodule, split, max_batches), autocast)
    if count == 0:
        raise ValueError(f"the {split!r} split produced no evaluation batches.")
    return sum_loss / count


@torch.no_grad()
def loss_sums(model: nn.Module, batches: Iterable[Any], autocast: Any = None) -> tuple[float, int]:
    """``(summed token loss, token count)`` over ``batches`` of ``(x, y)``; eval mode inside (section 3.6)."""
    device = _model_device(model)
    sum_loss, count = 0.0, 0
    with eval_mode(model):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast() if autocast is not None else nullcontext():
                _, loss = model(x, y)
            n = int((y != -100).sum())
            sum_loss += float(loss) * n
            count += n
    return sum_loss, count


def _sorted_counts(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """How often each of ``queries`` occurs in ``keys``."""
    values, counts = np.unique(keys, return_counts=True)
    pos = np.clip(np.searchsorted(values, queries), 0, len(values) - 1)
    return np.where(values[pos] == queries, counts[pos], 0)


def ngram_loss(
    train_tokens: Sequence[int] | np.ndarray,
    eval_tokens: Sequence[int] | np.ndarray,
    n: int = 2,
    vocab_size: int | None = None,
    alpha: float = 1.0,
) -> float:
    """Cross-entropy (nats per token) on ``eval_tokens`` of an n-gram model fitted on
    ``train_tokens`` (section 3.3): ``p(w | c) = (count(c, w) + alpha) / (count(c) + alpha * V)``.

    ``n = 1`` predicts from token frequencies alone, ``n = 2`` from the previous token. The
    first ``n - 1`` evaluation tokens (which lack a full context) are not scored. ``vocab_size``
    defaults to the largest id seen plus one; ``alpha > 0`` keeps unseen pairs finite.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (add-alpha smoothing), got {alpha!r}.")
    train = np.asarray(train_tokens, dtype=np.int64).ravel()
    held = np.asarray(eval_tokens, dtype=np.int64).ravel()
    if len(train) < n or len(held) < n:
        raise ValueError(f"both token streams need at least n = {n} tokens.")
    vocab = vocab_size or int(max(train.max(), held.max())) + 1
    if min(train.min(), held.min()) < 0 or max(train.max(), held.max()) >= vocab:
        raise ValueError(f"token ids must lie in [0, vocab_size={vocab}).")
    if float(vocab) ** n >= 2.0**62:
        raise ValueError(f"vocab_size ** n = {vocab}^{n} is too large to index n-grams.")

    def contexts(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each full context as one integer (base ``vocab``), and the token that follows it."""
        m = len(tokens) - n + 1
        ctx = np.zeros(m, dtype=np.int64)
        for k in range(n - 1):
            ctx = ctx * vocab + tokens[k : k + m]
        return ctx, tokens[n - 1 :]

    train_ctx, train_next = contexts(train)
    held_ctx, held_next = contexts(held)
    pair = _sorted_counts(train_ctx * vocab + train_next, held_ctx * vocab + held_next)
    context = _sorted_counts(train_ctx, held_ctx)
    probs = (pair + alpha) / (context + alpha * vocab)
    return float(-np.log(probs).mean())
