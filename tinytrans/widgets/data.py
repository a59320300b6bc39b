"""Layer 1 of the explorers: the numbers, computed with torch/numpy only (no IPython).

Everything a view shows comes from here, so the live widgets, the static explorables and the
tests all read the same figures:

* attention: :func:`capture_attention` (weights and pre-softmax scores of every layer and head
  for one prompt), :func:`head_statistics` (entropy, previous-token and first-token scores) and
  :func:`induction_scores` (on a repeated random sequence);
* sampling: :func:`sampling_step` (the per-stage distributions of one decoding step, from
  :func:`tinytrans.generate.step_distributions`), :func:`sample_counts` (a seeded "sample N"
  histogram whose random numbers the static JavaScript reproduces exactly) and
  :func:`beam_tree` (the tree of :func:`tinytrans.generate.beam_search`);
* sizing: :func:`sizing_figures` (parameters, memory and FLOPs from :mod:`tinytrans.sizing`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: Prompts used when the caller gives none (kept to characters any English corpus has).
DEFAULT_PROMPTS = (
    "To be, or not to be, that is the question.",
    "the cat sat on the mat. the cat sat on the",
    "ROMEO: But soft, what light through yonder window breaks?",
)

#: Visible stand-ins for whitespace in token labels.
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}


def display_piece(piece: str) -> str:
    """A token's text with spaces, newlines and tabs made visible (labels must not vanish)."""
    if piece == "":
        return "\u2205"
    for raw, shown in _VISIBLE.items():
        piece = piece.replace(raw, shown)
    return piece.replace("\u0120", "\u2423")  # byte-level BPE's "Ġ" marks a leading space


def token_labels(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Display labels of ``ids`` via ``tokenizer.id_to_piece``."""
    return [display_piece(tokenizer.id_to_piece(int(i))) for i in ids]


def encodable_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[str]:
    """The prompts the tokenizer can encode (a character tokenizer rejects unseen characters)."""
    kept = []
    for prompt in prompts:
        try:
            if tokenizer.encode(prompt):
                kept.append(prompt)
        except (ValueError, KeyError):
            continue
    return kept


def normalise_prompts(
    tokenizer: Any, prompts: str | Sequence[str] | None, defaults: Sequence[str] = DEFAULT_PROMPTS
) -> list[str]:
    """``None`` -> the encodable default prompts; a string -> ``[string]``; a list as given."""
    if prompts is None:
        chosen = encodable_prompts(tokenizer, defaults)
        if not chosen:
            raise ValueError(
                "none of the default prompts can be encoded by this tokenizer; pass prompts=..."
            )
        return chosen
    if isinstance(prompts, str):
        return [prompts]
    chosen = list(prompts)
    if not chosen or not all(isinstance(p, str) and p for p in chosen):
        raise ValueError("prompts must be a non-empty string or a non-empty list of them.")
    return chosen


# ----------------------------------------------------------------------------- attention


@dataclass
class AttentionRecord:
    """Attention of one model on one prompt.

    ``weights`` and ``scores`` are float32 arrays (layers, heads, T, T); ``scores`` are the
    scaled dot products q.k/sqrt(d) before the causal mask and the softmax. ``stats`` maps
    "entropy", "previous", "first" and "induction" to (layers, heads) arrays.
    """

    label: str
    text: str
    ids: list[int]
    tokens: list[str]
    weights: np.ndarray
    scores: np.ndarray
    stats: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.weights.shape[1])

    def matrix(self, layer: int, head: int | str, kind: str = "weights") -> np.ndarray:
        """One (T, T) map; ``head="mean"`` averages the heads of ``layer``."""
        source = self.weights if kind == "weights" else self.scores
        if head == "mean":
            return source[layer].mean(axis=0)
        return source[layer, int(head)]


def encode_prompt(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """Token ids of ``text`` cropped to the first ``max_tokens`` (attention maps are T x T)."""
    ids = list(tokenizer.encode(text))[:max_tokens]
    if not ids:
        raise ValueError(f"prompt {text!r} encodes to no tokens.")
    return ids


def _run_attention(model: torch.nn.Module, ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(layers, batch, heads, T, T) weights and scores from ``model.attention_maps`` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        capture = model.attention_maps(ids.to(model.device))
    finally:
        model.train(was_training)
    weights = torch.stack([w.float().cpu() for w in capture.weights]).numpy()
    scores = torch.stack([s.float().cpu() for s in capture.scores]).numpy()
    return weights, scores


def capture_attention(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    label: str = "model",
    max_tokens: int = 32,
    induction: np.ndarray | None = None,
) -> AttentionRecord:
    """Weights, scores and per-head statistics of ``model`` on ``text`` (first ``max_tokens``)."""
    limit = min(max_tokens, model.config.context_length)
    ids = encode_prompt(tokenizer, text, limit)
    weights, scores = _run_attention(model, torch.tensor([ids]))
    weights, scores = weights[:, 0], scores[:, 0]
    stats = head_statistics(weights)
    stats["induction"] = induction_scores(model) if induction is None else induction
    return AttentionRecord(label, text, ids, token_labels(tokenizer, ids), weights, scores, stats)


def head_statistics(weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head summaries of (layers, heads, T, T) weights, averaged over queries t >= 1.

    entropy: nats of each attention row (exp(entropy) ~ how many keys a query spreads over);
    previous: weight on the token just before; first: weight on position 0 (an "attention
    sink"). Query 0 is skipped: it can only attend to itself. NaN when T == 1.
    """
    L, H, T, _ = weights.shape
    if T < 2:
        nan = np.full((L, H), np.nan, dtype=np.float32)
        return {"entropy": nan, "previous": nan.copy(), "first": nan.copy()}
    rows = weights[:, :, 1:, :].astype(np.float64)  # (L,H,T-1,T)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(rows > 0, rows * np.log(np.where(rows > 0, rows, 1.0)), 0.0)
    entropy = -plogp.sum(-1).mean(-1)
    t = np.arange(1, T)
    previous = weights[:, :, t, t - 1].mean(-1)
    first = weights[:, :, 1:, 0].mean(-1)
    return {
        "entropy": entropy.astype(np.float32),
        "previous": previous.astype(np.float32),
        "first": first.astype(np.float32),
    }


def repeated_sequence(vocab_size: int, length: int, batch: int, seed: int) -> torch.Tensor:
    """(batch, 2 * length) ids: a random sequence followed by an exact copy of itself."""
    generator = torch.Generator().manual_seed(seed)
    half = torch.randint(0, vocab_size, (batch, length), generator=generator)
    return torch.cat([half, half], dim=1)


def induction_scores(
    model: torch.nn.Module, *, length: int | None = None, batch: int = 4, seed: int = 0
) -> np.ndarray:
    """(layers, heads) mean weight from each second-half token to the token *after* its first
    occurrence -- the "look back, then copy" pattern of induction heads (Olsson et al. 2022).

    On a random sequence repeated twice only an induction mechanism can predict the second
    half, so a high score is hard to get by accident.
    """
    config = model.config
    n = length or min(32, config.context_length // 2)
    if n < 2 or 2 * n > config.context_length:
        raise ValueError(f"induction probe length {n} must be >= 2 and fit twice in the context.")
    weights, _ = _run_attention(model, repeated_sequence(config.vocab_size, n, batch, seed))
    t = np.arange(n, 2 * n)
    return weights[:, :, :, t, t - n + 1].mean(axis=(2, 3)).astype(np.float32)


def attention_records(
    models: Sequence[tuple[str, torch.nn.Module]],
    tokenizer: Any,
    prompts: Sequence[str],
    max_tokens: int = 32,
) -> list[list[AttentionRecord]]:
    """``records[m][p]``: model ``m`` on prompt ``p`` (induction computed once per model)."""
    out = []
    for label, model in models:
        induction = induction_scores(model)
        out.append(
            [
                capture_attention(
                    model, tokenizer, p, label=label, max_tokens=max_tokens, induction=induction
                )
                for p in prompts
            ]
        )
    return out


# ----------------------------------------------------------------------------- sampling helpers


def entropy_nats(probs: np.ndarray) -> float:
    """Shannon entropy in nats of a probability vector (zeros contribute nothing)."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mulberry32(seed: int):
    """A tiny 32-bit PRNG (public-domain "Mulberry32" recipe) that JavaScript reproduces
    bit for bit, so a seeded "sample N" histogram is identical in Python and in the book."""
    state = seed & 0xFFFFFFFF

    def imul(a: int, b: int) -> int:
        return (a * b) & 0xFFFFFFFF

    def next_float() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = state
        t = imul(t ^ (t >> 15), t | 1)
        t ^= (t + imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF
        t &= 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0

    return next_float


def sample_counts(probs: Sequence[float], n: int, seed: int = 0) -> np.ndarray:
    """Counts of ``n`` seeded draws from ``probs`` by inverse CDF (the JS port does the same)."""
    p = np.asarray(probs, dtype=np.float64)
    if n < 0 or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("sample_counts needs n >= 0 and a non-negative, non-zero distribution.")
    cdf = np.cumsum(p / p.sum())
    last = int(np.flatnonzero(p > 0)[-1])
    rand = mulberry32(seed)
    counts = np.zeros(len(p), dtype=np.int64)
    for _ in range(n):
        u = rand()
        index = min(int(np.searchsorted(cdf, u, side="right")), last)
        while p[index] == 0:  # never land on a zero-probability token at a float boundary
            index += 1
        counts[index] += 1
    return counts


def log_sum_exp(values: np.ndarray) -> float:
    """log(sum(exp(values))) without overflow; -inf for an all -inf input."""
    v = np.asarray(values, dtype=np.float64)
    top = np.max(v)
    if not math.isfinite(top):
        return float(top)
    return float(top + np.log(np.exp(v - top).sum()))
