"""Layer 1 of the explorers: the numbers, computed with torch/numpy only (no IPython), for the
explorers of sections 1.15 (attention), 4.5 (sampling) and 5.8 (sizing).

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

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from tinytrans import sizing
from tinytrans.generate import (
    Beam,
    BeamSearchTree,
    SamplingConfig,
    beam_search,
    filter_stages,
    step_distributions,
)
from tinytrans.model import ModelConfig, TinyTransformer, eval_mode
from tinytrans.precision import get_precision

__all__ = [
    "DEFAULT_PROMPTS",
    "AttentionRecord",
    "GreedyPath",
    "SamplingView",
    "attention_records",
    "beam_tree",
    "capture_attention",
    "display_piece",
    "encodable_prompts",
    "encode_first_tokens",
    "entropy_nats",
    "greedy_path",
    "head_statistics",
    "induction_scores",
    "log_sum_exp",
    "measure_parameters",
    "mulberry32",
    "normalise_prompts",
    "repeated_sequence",
    "sample_counts",
    "sampling_config",
    "sampling_view",
    "sizing_figures",
    "token_labels",
]

#: Prompts used when the caller gives none (kept to characters any English corpus has).
DEFAULT_PROMPTS = (
    "To be, or not to be, that is the question.",
    "the cat sat on the mat. the cat sat on the",
    "ROMEO: But soft, what light through yonder window breaks?",
)

#: Visible stand-ins for whitespace in token labels.
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}


def display_piece(piece: str) -> str:
    """A token's text with spaces, newlines and tabs made visible (labels must not vanish)
    (sections 1.15 and 4.5)."""
    if piece == "":
        return "\u2205"
    for raw, shown in _VISIBLE.items():
        piece = piece.replace(raw, shown)
    return piece.replace("\u0120", "\u2423")  # byte-level BPE's "Ġ" marks a leading space


def token_labels(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Display labels of ``ids`` via ``tokenizer.id_to_piece`` (sections 1.15 and 4.5)."""
    return [display_piece(tokenizer.id_to_piece(int(i))) for i in ids]


def encodable_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[str]:
    """The prompts the tokenizer can encode (a character tokenizer rejects unseen characters)
    (sections 1.15 and 4.5)."""
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
    """``None`` -> the encodable default prompts; a string -> ``[string]``; a list as given
    (sections 1.15 and 4.5)."""
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
    """Attention of one model on one prompt (section 1.15).

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


def encode_first_tokens(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """Token ids of ``text`` cropped to the first ``max_tokens`` (attention maps are T x T;
    section 1.15). Not a generation prompt (that is :func:`tinytrans.generate.encode_prompt`)."""
    ids = list(tokenizer.encode(text))[:max_tokens]
    if not ids:
        raise ValueError(f"prompt {text!r} encodes to no tokens.")
    return ids


def _run_attention(model: TinyTransformer, ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(layers, batch, heads, T, T) weights and scores from ``model.attention_maps`` in eval mode."""
    with eval_mode(model):
        capture = model.attention_maps(ids.to(model.device))
    weights = torch.stack([w.float().cpu() for w in capture.weights]).numpy()
    scores = torch.stack([s.float().cpu() for s in capture.scores]).numpy()
    return weights, scores


def capture_attention(
    model: TinyTransformer,
    tokenizer: Any,
    text: str,
    *,
    label: str = "model",
    max_tokens: int = 32,
    induction: np.ndarray | None = None,
) -> AttentionRecord:
    """Weights, scores and per-head statistics of ``model`` on ``text`` (first ``max_tokens``)
    (section 1.15)."""
    limit = min(max_tokens, model.config.context_length)
    ids = encode_first_tokens(tokenizer, text, limit)
    weights, scores = _run_attention(model, torch.tensor([ids]))
    weights, scores = weights[:, 0], scores[:, 0]
    stats = head_statistics(weights)
    stats["induction"] = induction_scores(model) if induction is None else induction
    return AttentionRecord(label, text, ids, token_labels(tokenizer, ids), weights, scores, stats)


def head_statistics(weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head summaries of (layers, heads, T, T) weights, averaged over queries t >= 1
    (section 1.15).

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
    """(batch, 2 * length) ids: a random sequence followed by an exact copy of itself
    (section 1.15)."""
    generator = torch.Generator().manual_seed(seed)
    half = torch.randint(0, vocab_size, (batch, length), generator=generator)
    return torch.cat([half, half], dim=1)


def induction_scores(
    model: TinyTransformer, *, length: int | None = None, batch: int = 4, seed: int = 0
) -> np.ndarray:
    """(layers, heads) mean weight from each second-half token to the token *after* its first
    occurrence -- the "look back, then copy" pattern of induction heads (Olsson et al. 2022)
    (section 1.15).

    On a random sequence repeated twice only an induction mechanism can predict the second
    half, so a high score is hard to get by accident.
    """
    config = model.config
    n = length or min(32, config.context_length // 2)
    if n < 2 or 2 * n > config.context_length:
        raise ValueError(f"induction probe length {n} must be >= 2 and fit twice in the context.")
    weights, _ = _run_attention(model, repeated_sequence(config.vocab_size, n, batch, seed))
    t = np.arange(n, 2 * n)
    # weights: (layers, batch, heads, 2n, 2n) -> mean over batch and positions -> (layers, heads)
    return weights[:, :, :, t, t - n + 1].mean(axis=(1, 3)).astype(np.float32)


def attention_records(
    models: Sequence[tuple[str, TinyTransformer]],
    tokenizer: Any,
    prompts: Sequence[str],
    max_tokens: int = 32,
) -> list[list[AttentionRecord]]:
    """``records[m][p]``: model ``m`` on prompt ``p`` (induction computed once per model)
    (section 1.15)."""
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
    """Shannon entropy in nats of a probability vector (zeros contribute nothing) (section 4.5)."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return max(0.0, float(-(p * np.log(p)).sum()))  # never "-0.000" for a one-hot


def mulberry32(seed: int):
    """A tiny 32-bit PRNG (public-domain "Mulberry32" recipe) that JavaScript reproduces
    bit for bit, so a seeded "sample N" histogram is identical in Python and in the book
    (section 4.5)."""
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


def sample_counts(probs: Sequence[float] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Counts of ``n`` seeded draws from ``probs`` by inverse CDF (the JS port does the same)
    (section 4.5)."""
    p = np.asarray(probs, dtype=np.float64)
    if n < 0 or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("sample_counts needs n >= 0 and a non-negative, non-zero distribution.")
    values = [float(x) for x in p]
    total = 0.0
    for x in values:  # sequential sums, exactly as the JavaScript adds them
        total += x
    cdf, acc = [], 0.0
    for x in values:
        acc += x / total
        cdf.append(acc)
    last = int(np.flatnonzero(p > 0)[-1])
    rand = mulberry32(seed)
    counts = np.zeros(len(p), dtype=np.int64)
    for _ in range(n):
        u = rand()
        index = min(bisect.bisect_right(cdf, u), last)
        while p[index] == 0:  # never land on a zero-probability token at a float boundary
            index += 1
        counts[index] += 1
    return counts


def log_sum_exp(values: np.ndarray) -> float:
    """log(sum(exp(values))) without overflow; -inf for an all -inf input (section 4.5)."""
    v = np.asarray(values, dtype=np.float64)
    top = np.max(v)
    if not math.isfinite(top):
        return float(top)
    return float(top + np.log(np.exp(v - top).sum()))


# ----------------------------------------------------------------------------- sampling


@dataclass
class GreedyPath:
    """A prompt and its greedy continuation: step ``s`` predicts the token after
    ``contexts[s]`` from ``logits[s]`` (the model's raw next-token logits, float32)
    (section 4.5)."""

    prompt: str
    contexts: list[list[int]]
    logits: list[np.ndarray]
    chosen: list[int]


def greedy_path(
    model: TinyTransformer, tokenizer: Any, prompt: str, n_steps: int = 8
) -> GreedyPath:
    """Run ``n_steps`` greedy steps from ``prompt`` and keep each step's logits (section 4.5)."""
    context = list(tokenizer.encode(prompt))
    if not context:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens.")
    contexts, logits, chosen = [], [], []
    for _ in range(n_steps):
        model_stage = step_distributions(model, context, SamplingConfig()).stages["model"]
        row = model_stage.logits.detach().float().cpu().numpy()
        contexts.append(list(context))
        logits.append(row)
        chosen.append(int(np.argmax(row)))
        context = [*context, chosen[-1]]
    return GreedyPath(prompt, contexts, logits, chosen)


def sampling_config(
    method: str = "sample",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> Any:
    """A :class:`tinytrans.generate.SamplingConfig` from widget values (0 / 1.0 = "off")
    (section 4.5).

    Greedy decoding is temperature 0 (argmax); beam search ranks continuations by the model's
    own log-probabilities, so it shows the T = 1 distribution without filters."""
    if method == "greedy":
        return SamplingConfig(temperature=0.0)
    if method == "beam":
        return SamplingConfig()
    return SamplingConfig(
        temperature=float(temperature),
        top_k=int(top_k) if top_k else None,
        top_p=float(top_p) if top_p is not None and top_p < 1.0 else None,
        min_p=float(min_p) if min_p else None,
    )


@dataclass
class SamplingView:
    """What the sampling view draws for one step and one setting (all arrays length V)
    (section 4.5)."""

    base: np.ndarray  # model probabilities at T = 1
    tempered: np.ndarray  # after temperature
    final: np.ndarray  # after every filter (renormalised)
    kept: np.ndarray  # bool: survives the filters
    curve_stage: str  # the distribution top-p sees, for the cumulative curve
    curve: np.ndarray  # its probabilities sorted descending, cumulated
    top_p: float | None
    stages: list[str]
    p_kept: int | None = None  # tokens the top-p stage keeps
    counts: np.ndarray | None = None  # "sample N" histogram of ``final``

    @property
    def entropy_base(self) -> float:
        return entropy_nats(self.base)

    @property
    def entropy_final(self) -> float:
        return entropy_nats(self.final)

    @property
    def effective_vocab(self) -> float:
        """exp(entropy): the number of equally likely tokens with the same uncertainty."""
        return math.exp(self.entropy_final)

    @property
    def num_kept(self) -> int:
        return int(self.kept.sum())

    def top_tokens(self, n: int = 12) -> list[int]:
        """Token ids ranked by the T = 1 probability (ties: lower id first)."""
        return [int(i) for i in np.lexsort((np.arange(len(self.base)), -self.base))[:n]]


def sampling_view(
    logits: np.ndarray | torch.Tensor,
    config: Any,
    *,
    sample_n: int = 0,
    seed: int = 0,
) -> SamplingView:
    """Per-stage distributions of one step via :func:`tinytrans.generate.filter_stages`
    (section 4.5)."""
    stages = filter_stages(torch.as_tensor(np.asarray(logits, dtype=np.float32)), config).stages
    names = list(stages)
    probs = {k: v.probs.double().numpy() for k, v in stages.items()}
    before_p = names[names.index("top-p") - 1] if "top-p" in names else "temperature"
    curve = np.cumsum(np.sort(probs[before_p])[::-1])
    final = stages[names[-1]]
    view = SamplingView(
        base=probs["model"],
        tempered=probs["temperature"],
        final=probs[names[-1]],
        kept=final.kept.numpy().copy(),
        curve_stage=before_p,
        curve=curve,
        top_p=config.top_p,
        stages=names,
        p_kept=stages["top-p"].num_kept if "top-p" in stages else None,
    )
    if sample_n:
        view.counts = sample_counts(view.final, sample_n, seed)
    return view


def beam_tree(
    model: TinyTransformer,
    tokenizer: Any,
    context: Sequence[int],
    num_beams: int = 2,
    depth: int = 4,
    eos_id: int | None = None,
) -> dict[str, Any]:
    """:func:`tinytrans.generate.beam_search` from ``context`` as JSON-ready nested data:
    per step the scored candidates (parent index, token label, cumulative log-probability,
    status kept/pruned/finished) and the final ranked beams (section 4.4)."""
    result = beam_search(
        model, list(context), num_beams=num_beams, max_new_tokens=depth,
        eos_id=eos_id, return_tree=True,
    )  # fmt: skip
    beams, tree = cast(tuple[list[Beam], BeamSearchTree], result)  # return_tree=True
    steps = [
        [
            {
                "parent": c.parent,
                "token": c.token,
                "label": display_piece(tokenizer.id_to_piece(c.token)),
                "log_prob": round(float(c.log_prob), 6),
                "score": round(float(c.score), 6),
                "status": c.status,
            }
            for c in candidates
        ]
        for candidates in tree.steps
    ]
    best = [
        {
            "text": "".join(display_piece(tokenizer.id_to_piece(i)) for i in b.ids),
            "log_prob": round(float(b.log_prob), 6),
            "score": round(float(b.score), 6),
        }
        for b in beams
    ]
    return {"num_beams": num_beams, "steps": steps, "best": best, "expanded": list(tree.expanded)}


# ----------------------------------------------------------------------------- sizing


def sizing_figures(
    config: ModelConfig,
    batch_size: int = 8,
    precision: str = "fp32",
    optimizer: str = "adamw",
    checkpointing: bool = False,
    tokens: float | None = None,
    device: str | None = None,
    mfu: float = 0.4,
) -> dict[str, Any]:
    """Parameters, memory and compute of ``config`` from :func:`tinytrans.sizing.summary`
    (section 5.8, the parameter explorer).

    ``precision`` is a training recipe of :mod:`tinytrans.precision` (``"fp32"``,
    ``"bf16-mixed"``, ``"fp16-mixed"``, ``"bf16-true"``); inference weights and the KV cache
    are sized in its matmul dtype. ``optimizer`` is a key of
    :data:`tinytrans.sizing.OPTIMIZER_STATE_BYTES`. ``tokens`` defaults to Chinchilla's 20 per
    parameter; ``device`` names a row of :data:`tinytrans.sizing.PEAK_TFLOPS` for the time
    estimate.
    """
    recipe = get_precision(precision)
    device = device or next(iter(sizing.PEAK_TFLOPS))
    dtype = recipe.compute
    n = sizing.count_parameters(config)
    tokens = sizing.chinchilla_tokens(n) if tokens is None else float(tokens)
    s = sizing.summary(
        config, batch_size, dtype, precision=recipe.name, optimizer=optimizer, tokens=tokens,
        peak_tflops=sizing.PEAK_TFLOPS[device], mfu=mfu,
    )  # fmt: skip
    memory = (s.training_checkpointed if checkpointing else s.training).as_dict()
    return {
        "parameters": s.parameters,
        "non_embedding": s.breakdown.non_embedding,
        "breakdown": s.breakdown.as_rows(),
        "memory": memory,
        "kv_cache": s.kv_cache,
        "weights_inference": s.weights[dtype],
        "forward_flops_per_token": s.forward_flops_per_token,
        "training_flops_per_token": s.training_flops_per_token,
        "tokens": tokens,
        "training_flops": s.training_flops,
        "six_nd": 6.0 * s.parameters * tokens,
        "training_seconds": s.training_seconds,
        "chinchilla_tokens": s.chinchilla_tokens,
        "predicted_loss": s.predicted_loss,
        "dtype": dtype,
        "precision": recipe.name,
    }


def measure_parameters(config: ModelConfig) -> int:
    """Build the real model on the ``meta`` device (no memory used) and count its parameters
    with :meth:`~tinytrans.model.TinyTransformer.num_parameters` (section 5.1)."""
    with torch.device("meta"):
        model = TinyTransformer(config)
    return model.num_parameters()
