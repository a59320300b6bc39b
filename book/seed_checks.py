"""Every number the course's source notes (the "seeds") work out by hand, recomputed.

This module belongs to the book, not to the package: the errata appendix
(``book/errata.ipynb``, which runs with ``book/`` as its working directory) imports it as
``seed_checks``, ``scripts/chapters.py errata`` writes the chapters' errata tables from it, and
the tests import it with ``book/`` on ``sys.path``. It is not in the wheel. The configurations the
seeds discuss are presets of :mod:`tinytrans.config` (``gpt3-175b``, ``llama3.1-8b``,
``llama-40m-deep``, ``classic-40m-wide``), so the chapters can use them with only
``pip install tinytrans``.

Each :class:`SeedCheck` pairs a figure a seed states (quoted as a constant: the seed's claim)
with the same quantity computed by :mod:`tinytrans.sizing`. ``ok`` says whether the claim is
right within the seed's own rounding (less than one unit of the last digit it printed, so
both rounded and truncated figures pass), within +-50% for figures it presents as rough
estimates of memory, and within 0.1 for scaling factors it states as laws ("2×", "4×"), which
are exact claims, not rounded figures. A check may be stricter than its last digit, never
looser (``tests/test_errata.py``, which also pins every computed value). The errata appendix
renders :func:`errata_rows` in one table per seed ("Seed 000" to "Seed 004").
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import torch

from tinytrans import sizing as S
from tinytrans import train as T
from tinytrans.config import ModelConfig
from tinytrans.evaluate import perplexity_from_loss

__all__ = [
    "CHAPTER_TABLES",
    "PI_ZERO_2_W_BYTES",
    "SECTION_ORDER",
    "SEEDS_WITHOUT_ARITHMETIC",
    "SEED_TITLES",
    "TABLE_COLUMNS",
    "ChapterTable",
    "SeedCheck",
    "adamw_decay_per_step",
    "chapter_table_source",
    "errata_rows",
    "format_value",
    "html_table",
    "markdown_table",
    "seed004_lr",
    "seed_checks",
    "seed_summary",
]

#: The Raspberry Pi Zero 2 W's memory, 512 MB of LPDDR2 (a hardware fact, not a computation),
#: from the hardware table of :mod:`tinytrans.sizing`, its one home.
PI_ZERO_2_W_BYTES = S.HARDWARE["Pi-Zero-2W"].memory_bytes

#: The seeds by id, as titled in their first heading.
SEED_TITLES: dict[str, str] = {
    "000": "Designing a Large Language Model (LLM)",
    "001": "Model Architecture Basics",
    "003": "Architecture Decisions - Backed by Papers",
    "004": "Training Guide: Understanding LLM Training from Corpus to Deployment",
}

#: Seeds that work nothing out by hand and so have no checks; seed 002 is a software blueprint.
SEEDS_WITHOUT_ARITHMETIC: dict[str, str] = {
    "002": "A Principled, Iterative, and Object-Oriented Approach to Building a Large Language "
    "Model From Scratch",
}


@dataclass(frozen=True)
class SeedCheck:
    """One figure a seed states, next to the value tinytrans computes for it.

    ``claimed`` is the seed's figure (or range) in base units (parameters, bytes, seconds, ...);
    ``correct`` is computed by :mod:`tinytrans.sizing`; ``unit`` says how to print both.
    """

    seed: str
    location: str
    quantity: str
    claim: str
    claimed: float | tuple[float, float]
    correct: float
    unit: str
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when ``correct`` lies strictly within ``tolerance`` of the claim (or range)."""
        low, high = self.claimed if isinstance(self.claimed, tuple) else (self.claimed,) * 2
        return low - self.tolerance < self.correct < high + self.tolerance

    def as_row(self) -> dict[str, str]:
        """Formatted strings for a table."""
        if isinstance(self.claimed, tuple):
            claimed = " to ".join(format_value(v, self.unit) for v in self.claimed)
        else:
            claimed = format_value(self.claimed, self.unit)
        return {
            "seed": self.seed,
            "location": self.location,
            "quantity": self.quantity,
            "claim": self.claim,
            "claimed": claimed,
            "correct": format_value(self.correct, self.unit),
            "verdict": "ok" if self.ok else "wrong",
            "note": self.note,
        }


def format_value(value: float, unit: str) -> str:
    """Human-readable ``value`` in ``unit`` (params, bytes, FLOPs, s, %, x, nats, ...)."""
    if unit == "batches":
        return f"{value:,.0f}"
    if unit in ("params", "tokens"):
        return S.format_count(value)
    if unit == "bytes":
        return S.format_bytes(value)
    if unit == "bytes (binary)":
        return S.format_bytes(value, binary=True)
    if unit == "FLOPs":
        return S.format_flops(value)
    if unit == "s":
        return S.format_duration(value)
    if unit == "GPU-hours":
        return f"{S.format_count(value)} GPU-hours"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "batches/s":
        return f"{value:,.1f} batches/s"
    if unit == "tokens/s":
        return f"{S.format_count(value)} tokens/s"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "x":
        return f"{value:,.0f}x" if abs(value) >= 100 else f"{value:.3g}x"
    if unit == "MiB":
        return f"{value:.3g} MiB"
    if unit == "nats":
        return f"{value:.2f}"
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------
# Helpers of the checks
# --------------------------------------------------------------------------------------------


def adamw_decay_per_step(lr: float, weight_decay: float) -> float:
    """Fraction of a weight one ``torch.optim.AdamW`` step removes when its gradient is zero.

    With a zero gradient the adaptive step is zero, so this is the decoupled decay alone:
    PyTorch multiplies the weight by ``1 - lr * weight_decay``.
    """
    weight = torch.ones(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay)
    weight.grad = torch.zeros_like(weight)
    optimizer.step()
    return 1.0 - weight.item()


def seed004_lr(epoch: int, *, as_coded: bool = True) -> float:
    """Seed 004's learning rate during (1-based) ``epoch`` of its 20: cosine from 0.0003 to 0.

    ``as_coded``: as its code sets it, ``CosineAnnealingLR(optimizer, T_max=20)`` stepped after
    each epoch, so epoch ``k`` trains at scheduler step ``k - 1``. Otherwise as its formula
    writes it, ``LR(epoch) = 0.0003 x (1 + cos(pi x epoch / 20)) / 2``. Both are
    :func:`tinytrans.train.lr_at` without warmup and with a floor of 0.
    """
    schedule = T.TrainConfig(lr=3e-4, warmup_steps=0, min_lr_ratio=0.0, max_steps=20)
    return T.lr_at(epoch - 1 if as_coded else epoch, schedule)


# --------------------------------------------------------------------------------------------
# The checks, seed by seed
# --------------------------------------------------------------------------------------------


Claim = float | tuple[float, float]


def _check(
    seed: str,
    location: str,
    quantity: str,
    claim: str,
    claimed: Claim,
    correct: float,
    unit: str,
    step: float,
    note: str = "",
) -> SeedCheck:
    """A check within ``step``, one unit of the claim's last printed digit (65,536 may be
    written 65K or 66K, but not 64K)."""
    return SeedCheck(seed, location, quantity, claim, claimed, float(correct), unit, step, note)


def _estimate(
    seed: str,
    location: str,
    quantity: str,
    claim: str,
    claimed: Claim,
    correct: float,
    unit: str,
    note: str = "",
) -> SeedCheck:
    """A check of a rough estimate: ok within +-50% of the claimed value (or range)."""
    high = max(claimed) if isinstance(claimed, tuple) else claimed
    return SeedCheck(seed, location, quantity, claim, claimed, float(correct), unit, high / 2, note)


#: Each seed's sections in the order they appear; checks are listed in this order.
SECTION_ORDER: dict[str, list[str]] = {
    "000": [
        "Core Concepts",
        "Scaling Laws table",
        "Batch Size",
        "Learning Rate",
        "Loss Function",
        "Batching",
        "Quantization",
        "Sizing Impact: Memory Calculation",
        "Compute Requirements",
        "Multi-Query Attention",
        "Gradient Accumulation",
        "Scaling Up: GPT-2 Small",
    ],
    "001": [
        "Embeddings",
        "Query, Key, Value",
        "Multi-Head Attention",
        "Feed-Forward Networks",
        "Normalization",
        "Output Layer",
        "Putting It All Together: TinyLlama",
        "The Scaling Laws",
        "Example: Nano-Trickster",
        "Memory Requirements",
        "Compute Bottlenecks",
        "Architectural Decisions That Changed Everything",
    ],
    "003": [
        "Weight Tying",
        "Activation Function",
        "Training Data Amount",
        "Reference Architectures",
        "Concrete Config",
        "Alternative Configs",
        "Our Constraints",
        "Scaling Law Analysis",
        "Data repetition",
    ],
    "004": [
        "TinyTransformer Architecture",
        "Training Workflow",
        "Parameter Count Calculation",
        "Memory Footprint",
        "Example: Model Instantiation",
        "Sequence Creation",
        "Train/Validation Split",
        "Batching Strategy",
        "Batch size table",
        "Per-batch memory",
        "Memory and Performance",
        "Loss Computation",
        "Why Loss Decreases",
        "AdamW Optimizer",
        "Training Metrics Export (JSON)",
        "Hyperparameter Interactions",
    ],
}


def _in_seed_order(checks: list[SeedCheck]) -> list[SeedCheck]:
    """``checks`` sorted by the position of their section in the seed (stable within one)."""
    order = SECTION_ORDER[checks[0].seed]
    return sorted(checks, key=lambda check: order.index(check.location))


def _seed000() -> list[SeedCheck]:
    tiny, gpt2, gpt3 = (
        ModelConfig.preset("tiny-postnorm"),
        ModelConfig.preset("gpt2-small"),
        ModelConfig.preset("gpt3-175b"),
    )
    bt, b3 = S.parameter_breakdown(tiny), S.parameter_breakdown(gpt3)
    n_tiny, n_gpt2, n_gpt3 = bt.total, S.count_parameters(gpt2), b3.total
    loc_table, loc_mem = "Scaling Laws table", "Sizing Impact: Memory Calculation"
    seed_time = S.training_seconds(S.training_flops(2_500_000, 10e6), 36, mfu=0.5)
    gpt3_hours = S.training_seconds(S.training_flops(175e9, 300e9), 312, mfu=0.5) / 3600
    mqa_saving = 1 - S.kv_cache_bytes(tiny.replace(n_kv_heads=1)) / S.kv_cache_bytes(tiny)
    c = _check
    checks = [
        c("000", "Core Concepts", "token embedding, 8,000 x 128", "= 1,024,000 parameters",
          1_024_000, bt.token_embedding, "params", 1),
        c("000", loc_table, "TinyTransformer embeddings (input + output)",
          "2 x vocab x d_model: 2.0M", 2.0e6, bt.token_embedding + bt.head, "params", 0.1e6),
        c("000", loc_table, "TinyTransformer attention per layer", "4 x d_model^2: 66K",
          66e3, bt.attention, "params", 1e3),
        c("000", loc_table, "TinyTransformer FFN per layer", "2 x d_model x dim_ff: 132K",
          132e3, bt.ffn, "params", 1e3, "2 x 128 x 256 = 65,536; 132K would need dim_ff = 512."),
        c("000", loc_table, "TinyTransformer total", "2.5M", 2.5e6, n_tiny, "params", 0.1e6,
          "The seed's own components sum to 2,327,552 (see seed 004)."),
        c("000", loc_table, "GPT-3 embeddings (input + output)", "12.8B", 12.8e9,
          2 * b3.token_embedding, "params", 0.1e9,
          "2 x 50,257 x 12,288; GPT-3 ties them, so 618M unique."),
        c("000", loc_table, "GPT-3 attention per layer", "4 x d_model^2: 48M", 48e6,
          b3.attention, "params", 1e6, "4 x 12,288^2 = 604M (plus biases)."),
        c("000", loc_table, "GPT-3 FFN per layer", "2 x d_model x dim_ff: 100M", 100e6, b3.ffn,
          "params", 1e6, "2 x 12,288 x 49,152 = 1.21B (plus biases)."),
        c("000", loc_table, "GPT-3 total", "175B", 175e9, n_gpt3, "params", 1e9),
        c("000", loc_mem, "TinyTransformer weights, fp32", "2.5M x 4 = 10 MB", 10e6,
          S.weight_bytes(tiny, "fp32"), "bytes", 1e6,
          "Within rounding, though it follows from the wrong 2.5M: 2,327,552 x 4 B = 9.31 MB."),
        c("000", loc_mem, "TinyTransformer weights, int8", "2.5M x 1 = 2.5 MB", 2.5e6,
          S.weight_bytes(tiny, "int8"), "bytes", 0.1e6),
        c("000", loc_mem, "GPT-2 small weights, fp32", "117M x 4 = 468 MB", 468e6,
          S.weight_bytes(gpt2, "fp32"), "bytes", 1e6,
          "117M is the GPT-2 paper's figure; the released model has 124,439,808 parameters."),
        c("000", loc_mem, "GPT-2 small weights, fp16", "117M x 2 = 234 MB", 234e6,
          S.weight_bytes(gpt2, "fp16"), "bytes", 1e6),
        c("000", loc_mem, "GPT-3 weights, fp16", "175B x 2 = 350 GB", 350e9,
          S.weight_bytes(gpt3, "fp16"), "bytes", 10e9),
        c("000", loc_mem, "weights in the inference budget, int8", "10 MB (int8 quantized)",
          10e6, S.weight_bytes(tiny, "int8"), "bytes", 1e6, "10 MB is the fp32 size."),
        c("000", loc_mem, "KV cache, batch 1, 1000 tokens, fp32", "~100 MB", 100e6,
          S.kv_cache_bytes(tiny, 1, 1000, "fp32"), "bytes", 10e6,
          "2 x 1000 x 2 layers x 128 x 4 B = 2.05 MB, fifty times less."),
        c("000", "Compute Requirements", "6ND for 2.5M params x 10M tokens", "150T FLOPS",
          150e12, S.training_flops(2_500_000, 10e6), "FLOPs", 1e12),
        c("000", "Compute Requirements", "training time at 36 TFLOP/s x 50%", "~8 GPU-hours",
          8 * 3600, seed_time, "s", 3600,
          "150 TFLOP / 18 TFLOP/s is 8.3 seconds: the seed divided by 18T 'FLOPS/hr'."),
        c("000", "Compute Requirements", "GPT-3 6ND on A100s (312 TFLOP/s) at the seed's 50%",
          "3,640,000 GPU-hours", 3.64e6, gpt3_hours, "GPU-hours", 0.01e6,
          "6 x 175B x 300B = 3.15e23 FLOP, i.e. GPT-3's reported 3,640 petaflop/s-days; "
          "3.64M GPU-hours implies 24 TFLOP/s per GPU (8% of an A100)."),
        c("000", "Scaling Up: GPT-2 Small", "GPT-2 small parameters", "117M", 117e6, n_gpt2,
          "params", 1e6),
        c("000", "Scaling Up: GPT-2 Small", "GPT-2 small / TinyTransformer", "47x larger", 47,
          n_gpt2 / n_tiny, "x", 1),
        c("000", "Scaling Up: GPT-2 Small", "GPT-2 small weights, int8", "117 MB (int8)", 117e6,
          S.weight_bytes(gpt2, "int8"), "bytes", 1e6),
        c("000", "Multi-Query Attention", "KV-cache saving of MQA, 4 heads", "-50%", 50,
          100 * mqa_saving, "%", 1, "MQA keeps 1 of n_heads K/V heads: 1 - 1/4 = 75%."),
        c("000", "Batch Size", "batches per epoch, 10,000 / 32", "313 batches", 313,
          S.batches_per_epoch(10_000, 32), "batches", 1),
        c("000", "Learning Rate", "one SGD step, 0.5 - 0.01 x 0.2", "= 0.498", 0.498,
          0.5 - 0.01 * 0.2, "", 0.001),
        c("000", "Loss Function", "cross-entropy when the right token has p = 0.7",
          "-log(0.7) = 0.36", 0.36, -math.log(0.7), "nats", 0.01),
        c("000", "Loss Function", "cross-entropy when the right token has p = 0.1",
          "-log(0.1) = 2.30", 2.30, -math.log(0.1), "nats", 0.01),
        c("000", "Batching", "speed-up of one 120 ms batch over 3 x 100 ms", "2.5x", 2.5,
          300 / 120, "x", 0.1),
        c("000", "Quantization", "size reduction fp32 -> int8", "4x", 4,
          S.weight_bytes(tiny, "fp32") / S.weight_bytes(tiny, "int8"), "x", 1),
        c("000", "Quantization", "size reduction fp32 -> int4", "8x", 8,
          S.weight_bytes(tiny, "fp32") / S.weight_bytes(tiny, "int4"), "x", 1,
          "Group-wise int4 also stores scales: one fp16 per 64 weights makes it 7.5x."),
        c("000", loc_mem, "inference total, 10 + 50 + 100 + 50 MB", "~210 MB", 210e6,
          (10 + 50 + 100 + 50) * 1e6, "bytes", 10e6,
          "The sum is right; its KV-cache term is fifty times too large (above)."),
        c("000", "Gradient Accumulation", "accumulation steps, 128 // 16", "= 8", 8,
          128 // 16, "count", 1),
        c("000", "Scaling Up: GPT-2 Small", "layers, 2 -> 12", "6x deeper", 6,
          gpt2.n_layers / tiny.n_layers, "x", 1),
        c("000", "Scaling Up: GPT-2 Small", "d_model, 128 -> 768", "6x wider", 6,
          gpt2.d_model / tiny.d_model, "x", 1),
        c("000", "Scaling Up: GPT-2 Small", "heads, 4 -> 12", "3x more", 3,
          gpt2.n_heads / tiny.n_heads, "x", 1),
        c("000", "Scaling Up: GPT-2 Small", "GPT-2 small on the same 10M tokens at 18 TFLOP/s",
          "500 GPU-hrs", 500,
          S.training_seconds(S.training_flops(n_gpt2, 10e6), 36, mfu=0.5) / 3600, "GPU-hours",
          100,
          "6 x 124M x 10M = 7.5 PFLOP: 7 minutes at the seed's 18 TFLOP/s (the same "
          "seconds-for-hours slip as its 8 GPU-hours)."),
    ]  # fmt: skip
    return _in_seed_order(checks)


def _attention_flops_per_token(config: ModelConfig, context: int) -> float:
    """Forward FLOPs per token of one attention layer: its projections plus the scores."""
    detail = S.parameter_breakdown(config)
    scores = S.forward_flops_per_token(config, context) - S.forward_flops_per_token(
        config, context, attention=False
    )
    return 2 * detail.attention + scores / config.n_layers


def _seed001() -> list[SeedCheck]:
    nano, tl = ModelConfig.preset("nano-trickster"), ModelConfig.preset("tinyllama-1.1b")
    bn, bl = S.parameter_breakdown(nano), S.parameter_breakdown(tl)
    qkv = sum(bn.layer_detail[k] for k in ("q_proj", "k_proj", "v_proj"))
    wide = S.parameter_breakdown(nano.replace(d_ff=1024, activation="gelu"))
    bpe = S.parameter_breakdown(nano.replace(vocab_size=32000))
    b8 = S.parameter_breakdown(ModelConfig.preset("llama3.1-8b"))
    mem = S.training_memory(tl, 8, 512, "bf16-true")
    flops_ratio = S.forward_flops_per_token(tl) / S.forward_flops_per_token(nano)
    llama3 = ModelConfig.preset("llama3.1-8b")
    gqa_saving = 1 - S.kv_cache_bytes(llama3) / S.kv_cache_bytes(llama3.replace(n_kv_heads=None))
    context_ratio = S.training_flops_per_token(nano, 1024) / S.training_flops_per_token(nano, 512)
    ffn_ratio = (1024 * 2 * bn.ffn) / (512 * 2 * bn.ffn)  # FFN FLOPs per sequence: T x 2 x params
    d_ratio = _attention_flops_per_token(nano.replace(d_model=512, n_heads=8), 512) / (
        _attention_flops_per_token(nano, 512)
    )
    loc_tl = "Putting It All Together: TinyLlama"
    loc_nano = "Example: Nano-Trickster"
    loc_mem = "Memory Requirements"
    pct = 100
    c = _check
    checks = [
        c("001", "Embeddings", "embedding, 32,000 x 256", "8.2M", 8.2e6, bpe.token_embedding,
          "params", 0.1e6),
        c("001", "Query, Key, Value", "Q, K, V weights per head (d = 256, 8 heads)",
          "3 x 256 x 256 = 196K per attention head", 196e3, qkv / nano.n_heads, "params", 1e3,
          "196,608 is Q+K+V for the whole layer; one head's share is 3 x 256 x 32."),
        c("001", "Multi-Head Attention", "attention layer, d = 256", "8 heads x 196K = 1.57M",
          1.57e6, bn.attention, "params", 0.01e6,
          "Heads split d_model, they do not multiply it: 4 x 256^2 = 262,144 for any count."),
        c("001", "Feed-Forward Networks", "FFN linear 1, 256 -> 1024", "262K", 262e3,
          wide.layer_detail["up_proj"], "params", 1e3),
        c("001", "Feed-Forward Networks", "FFN, 256 -> 1024 -> 256", "524K", 524e3, wide.ffn,
          "params", 1e3),
        c("001", "Normalization", "RMSNorm, d = 256", "256 parameters", 256,
          bn.layer_detail["attn_norm"], "params", 1),
        c("001", "Output Layer", "output layer, 256 x 32,000", "8.2M", 8.2e6,
          bpe.token_embedding, "params", 0.1e6),
        c("001", loc_tl, "TinyLlama attention per block", "~16.8M", 16.8e6, bl.attention,
          "params", 0.1e6, "16.8M is 4 x 2048^2; TinyLlama has 4 K/V heads (GQA): K and V are "
          "2048 x 256 each."),
        c("001", loc_tl, "TinyLlama FFN per block", "~23.1M", 23.1e6, bl.ffn, "params", 0.1e6,
          "SwiGLU has three 2048 x 5632 matrices, not two."),
        c("001", loc_tl, "TinyLlama norms per block", "~4K", 4e3, bl.norms, "params", 1e3),
        c("001", loc_tl, "TinyLlama parameters per block", "~40M", 40e6, bl.per_layer,
          "params", 1e6),
        c("001", loc_tl, "TinyLlama embedding", "65.5M", 65.5e6, bl.token_embedding, "params",
          0.1e6),
        c("001", loc_tl, "TinyLlama 22 blocks", "22 x 40M = 880M", 880e6, bl.blocks, "params",
          10e6),
        c("001", loc_tl, "TinyLlama output-layer parameters not shared with the embedding",
          "65.5M (weight-tied with embedding)", 0, bl.head, "params", 1,
          "TinyLlama does not tie (tie_word_embeddings = false): the head adds 65.5M."),
        c("001", loc_tl, "TinyLlama total", "~1.1B", 1.1e9, bl.total, "params", 0.1e9),
        c("001", loc_tl, "attention share of a TinyLlama block", "42% of block", 42,
          pct * bl.attention / bl.per_layer, "%", 1),
        c("001", loc_tl, "FFN share of a TinyLlama block", "58% of block", 58,
          pct * bl.ffn / bl.per_layer, "%", 1),
        c("001", loc_tl, "embedding share of TinyLlama", "6%", 6,
          pct * bl.share(bl.token_embedding), "%", 1),
        c("001", loc_tl, "blocks' share of TinyLlama", "80%", 80, pct * bl.share(bl.blocks), "%",
          1),
        c("001", loc_tl, "FFN share of TinyLlama", "~70% of all parameters", 70,
          pct * bl.share(bl.ffn_total), "%", 1),
        c("001", "Feed-Forward Networks", "FFN share of Llama-3.1-8B", "~75%", 75,
          pct * b8.share(b8.ffn_total), "%", 1),
        c("001", loc_nano, "nano-trickster embedding, 256 x 256", "65K", 65e3,
          bn.token_embedding, "params", 1e3),
        c("001", loc_nano, "nano-trickster parameters per block", "~1.8M", 1.8e6, bn.per_layer,
          "params", 0.1e6, "4 x 256^2 attention + 3 x 256 x 768 SwiGLU + 512 norm = 852,480."),
        c("001", loc_nano, "nano-trickster 6 blocks", "6 x 1.8M = 10.8M", 10.8e6, bn.blocks,
          "params", 0.1e6),
        c("001", loc_nano, "nano-trickster total", "~11M", 11e6, bn.total, "params", 1e6,
          "Even with a ReLU FFN (two matrices) it is 4.0M; no reading of the design gives 11M."),
        c("001", loc_mem, "TinyLlama weights, bf16", "1.1B params = 2.2GB", 2.2e9,
          S.weight_bytes(tl, "bf16"), "bytes", 0.1e9),
        c("001", loc_mem, "weights + gradients + AdamW, bf16 with fp32 moments", "~13GB", 13e9,
          mem.states, "bytes", 1e9,
          "2 + 2 + 8 bytes per parameter; keeping fp32 master weights adds 4.4 GB."),
        c("001", loc_mem, "AdamW state", "8.8GB", 8.8e9, mem.optimizer, "bytes", 0.1e9),
        _estimate("001", loc_mem, "activations, batch 8 x 512 tokens, bf16", "~4GB", 4e9,
                  mem.activations, "bytes",
                  "tinytrans's estimate without checkpointing; with full activation "
                  "checkpointing it is 1.5 GB."),
        _estimate("001", loc_mem, "training total, batch 8 x 512 tokens", "~17GB", 17e9,
                  mem.total, "bytes"),
        c("001", loc_mem, "TinyLlama gradients, bf16", "2.2GB, same size as weights", 2.2e9,
          mem.gradients, "bytes", 0.1e9),
        c("001", "Multi-Head Attention", "one head's Q (or K, V) matrix, d = 256, 8 heads",
          "Q/K/V: 32x32", 32 * 32, bn.layer_detail["q_proj"] / nano.n_heads, "params", 1,
          "Each head projects the full 256-wide input to 32 dimensions: 256 x 32 = 8,192."),
        c("001", loc_tl, "TinyLlama mlp_dim / hidden_dim", "~2.75x", 2.75, tl.d_ff / tl.d_model,
          "x", 0.01),
        c("001", loc_nano, "TinyLlama / nano-trickster forward FLOPs per token",
          "6x faster than TinyLlama", 6, flops_ratio, "x", 1,
          "Depth alone is 22 / 6 = 3.7x; per token TinyLlama does about 190x the arithmetic."),
        c("001", "The Scaling Laws", "training cost when the context doubles (512 -> 1,024), "
          "same parameters and tokens", "Training cost ∝ (num_params) × (num_tokens) × "
          "(context_length)", 2, context_ratio, "x", 0.1,
          "Per token, the context enters only the attention term 2·L·T·d; for nano-trickster "
          "doubling it adds about a seventh to the compute, it does not double it."),
        c("001", "Compute Bottlenecks", "attention FLOPs per token when d_model doubles "
          "(256 -> 512, T = 512)", "Double hidden_dim → 4× attention cost", 4, d_ratio, "x", 0.1,
          "The projections (8·d² per token) grow 4x, the scores (2·T·d) only 2x."),
        c("001", "Compute Bottlenecks", "FFN FLOPs per sequence when the sequence doubles "
          "(512 -> 1,024)", "Double Sequence Length → FFN Cost: Same", 1, ffn_ratio, "x",
          0.1, "Per token the FFN cost is unchanged; per sequence it doubles with the tokens, "
          "the same basis on which the seed's '4× attention cost' holds."),
        c("001", "Architectural Decisions That Changed Everything",
          "KV-cache saving of GQA, Llama 3 (8 of 32 K/V heads)", "30% memory reduction", 30,
          100 * gqa_saving, "%", 1,
          "The saving is 1 - kv_heads / n_heads: 75% here, 87.5% for TinyLlama's 4 of 32."),
    ]  # fmt: skip
    return _in_seed_order(checks)


def _seed003() -> list[SeedCheck]:
    m40 = ModelConfig.preset("llama-40m")
    b40 = S.parameter_breakdown(m40)
    n40 = b40.total
    opt_b, opt_c = (
        S.parameter_breakdown(ModelConfig.preset("llama-40m-deep")),
        S.parameter_breakdown(ModelConfig.preset("classic-40m-wide")),
    )
    gelu_ffn = S.parameter_breakdown(m40.replace(activation="gelu", d_ff=1280)).ffn
    budget, n_stated = 40e6, 40e6
    loc_tie, loc_cfg, loc_alt = "Weight Tying", "Concrete Config", "Alternative Configs"
    loc_ref, loc_data = "Reference Architectures", "Training Data Amount"
    loc_law = "Scaling Law Analysis"
    c = _check
    checks = []
    for d, claimed, share in (
        (512, 25.7e6, 64),
        (384, 19.3e6, 48),
        (320, 16.1e6, 40),
        (256, 12.9e6, 32),
    ):
        emb = S.parameter_breakdown(m40.replace(d_model=d, n_heads=d // 64)).token_embedding
        checks += [
            c(
                "003",
                loc_tie,
                f"embedding, 50,257 x {d}",
                f"{claimed / 1e6:.1f}M",
                claimed,
                emb,
                "params",
                0.1e6,
            ),
            c(
                "003",
                loc_tie,
                f"embedding share of 40M, d = {d}",
                f"{share}%",
                share,
                100 * emb / budget,
                "%",
                1,
            ),
        ]
    checks += [
        c(
            "003",
            "Activation Function",
            "GELU FFN, 320 -> 1280",
            "2 x 320 x 1280 = 819K",
            819e3,
            gelu_ffn,
            "params",
            1e3,
        ),
        c(
            "003",
            "Activation Function",
            "SwiGLU FFN, 320 -> 854",
            "3 x 320 x 854 = 820K",
            820e3,
            b40.ffn,
            "params",
            1e3,
        ),
        c(
            "003",
            loc_cfg,
            "40M design, one layer",
            "1,230,080",
            1_230_080,
            b40.per_layer,
            "params",
            1,
        ),
        c(
            "003",
            loc_cfg,
            "40M design, 16 layers",
            "19,681,280",
            19_681_280,
            b40.blocks,
            "params",
            1,
        ),
        c("003", loc_cfg, "40M design, total", "35,763,840", 35_763_840, n40, "params", 1),
        c("003", loc_cfg, "headroom under 40M", "~4.2M", 4.2e6, budget - n40, "params", 0.1e6),
        c(
            "003",
            loc_alt,
            "option B embedding",
            "12.9M",
            12.9e6,
            opt_b.token_embedding,
            "params",
            0.1e6,
        ),
        c("003", loc_alt, "option B per layer", "786K", 786e3, opt_b.per_layer, "params", 1e3),
        c("003", loc_alt, "option B, 24 layers", "18.9M", 18.9e6, opt_b.blocks, "params", 0.1e6),
        c(
            "003",
            loc_alt,
            "option B total",
            "~31.8M",
            31.8e6,
            opt_b.total,
            "params",
            0.1e6,
            "31,740,416 rounds to 31.7M: the seed added its rounded parts.",
        ),
        c(
            "003",
            loc_alt,
            "option B headroom under 40M",
            "8.2M headroom",
            8.2e6,
            budget - opt_b.total,
            "params",
            0.1e6,
        ),
        c(
            "003",
            loc_alt,
            "option C embedding",
            "19.3M",
            19.3e6,
            opt_c.token_embedding,
            "params",
            0.1e6,
        ),
        c("003", loc_alt, "option C per layer", "1.77M", 1.77e6, opt_c.per_layer, "params", 0.01e6),
        c("003", loc_alt, "option C, 8 layers", "14.2M", 14.2e6, opt_c.blocks, "params", 0.1e6),
        c("003", loc_alt, "option C total", "~33.5M", 33.5e6, opt_c.total, "params", 0.1e6),
        c(
            "003",
            loc_alt,
            "option C headroom under 40M",
            "6.5M headroom",
            6.5e6,
            budget - opt_c.total,
            "params",
            0.1e6,
        ),
        c(
            "003",
            loc_ref,
            "Pythia-70M",
            "70M",
            70e6,
            S.count_parameters(ModelConfig.preset("pythia-70m")),
            "params",
            1e6,
        ),
        c(
            "003",
            loc_ref,
            "MobileLLM-125M",
            "125M",
            125e6,
            S.count_parameters(ModelConfig.preset("mobilellm-125m")),
            "params",
            1e6,
        ),
        c(
            "003",
            loc_ref,
            "GPT-2 small",
            "124M",
            124e6,
            S.count_parameters(ModelConfig.preset("gpt2-small")),
            "params",
            1e6,
        ),
        c(
            "003",
            loc_data,
            "Chinchilla tokens for 40M parameters",
            "800M tokens",
            800e6,
            S.chinchilla_tokens(40_000_000),
            "tokens",
            1e6,
        ),
        c(
            "003",
            loc_data,
            "LLaMA 7B tokens per parameter (1T tokens)",
            "~143",
            143,
            1e12 / S.count_parameters(ModelConfig.preset("llama2-7b")),
            "x",
            1,
            "143 = 1T / the nominal 7B; the 6.74B actual parameters give 148.",
        ),
        c(
            "003",
            loc_data,
            "Pythia-70M tokens per parameter (300B tokens)",
            "~4,300",
            4300,
            300e9 / S.count_parameters(ModelConfig.preset("pythia-70m")),
            "x",
            100,
        ),
    ]
    seconds_23h = 23 * 3600
    for rate, tokens, ratio in ((50e3, 4.14e9, 116), (100e3, 8.28e9, 232), (150e3, 12.42e9, 347)):
        checks += [
            c(
                "003",
                loc_law,
                f"tokens in 23 h at {rate / 1e3:.0f}K tokens/s",
                f"{tokens / 1e9:.2f}B",
                tokens,
                rate * seconds_23h,
                "tokens",
                0.01e9,
            ),
            c(
                "003",
                loc_law,
                f"tokens per parameter at {rate / 1e3:.0f}K tokens/s",
                f"{ratio}x",
                ratio,
                rate * seconds_23h / n40,
                "x",
                1,
                "Uses the design's 35.8M parameters.",
            ),
        ]
    chinchilla_40 = S.chinchilla_tokens(n40)
    checks += [
        c(
            "003",
            loc_law,
            "multiple of Chinchilla-optimal tokens (low end)",
            "~6x",
            6,
            4.14e9 / chinchilla_40,
            "x",
            1,
        ),
        c(
            "003",
            loc_law,
            "multiple of Chinchilla-optimal tokens (high end)",
            "~17x",
            17,
            12.42e9 / chinchilla_40,
            "x",
            1,
        ),
        c(
            "003",
            loc_law,
            "throughput of 8 V100s (125 TFLOP/s) at the seed's 30% MFU",
            "50K-150K tokens/s",
            (50e3, 150e3),
            S.tokens_per_second(m40, 125, 0.3, 8),
            "tokens/s",
            10e3,
            "The table assumes 1-4% MFU, far below the 30-40% the seed expects.",
        ),
    ]
    for tokens, loss, ppl in (
        (800e6, 4.75, 116),
        (4.14e9, 4.06, 58),
        (8.28e9, 3.87, 48),
        (12.42e9, 3.78, 44),
    ):
        predicted = S.chinchilla_loss(n_stated, tokens)
        checks += [
            c(
                "003",
                loc_law,
                f"Chinchilla loss, N = 40M, D = {S.format_count(tokens)}",
                f"~{loss}",
                loss,
                predicted,
                "nats",
                0.01,
                "E + A/N^0.34 + B/D^0.28 with E=1.69, A=406.4, B=410.7.",
            ),
            c(
                "003",
                loc_law,
                f"perplexity, N = 40M, D = {S.format_count(tokens)}",
                f"~{ppl}",
                ppl,
                perplexity_from_loss(predicted),
                "x",
                1,
                "exp of the seed's own loss matches its perplexity; the loss is off.",
            ),
        ]
    checks.append(
        c("003", "Our Constraints", "GPU-hours in 23 h on 8 V100s", "184 GPU-hours", 184,
          8 * 23, "GPU-hours", 1)
    )  # fmt: skip
    for subset in (1e9, 2e9):  # "Max useful epochs: 4"
        checks.append(
            c("003", "Data repetition", f"effective tokens, {subset / 1e9:.0f}B x 4 epochs",
              f"~{4 * subset / 1e9:.0f}B", 4 * subset, 4 * subset, "tokens", 1e9)
        )  # fmt: skip
    return _in_seed_order(checks)


def _seed004() -> list[SeedCheck]:
    tiny = ModelConfig.preset("tiny-postnorm")
    bt = S.parameter_breakdown(tiny)
    n = bt.total
    mem = S.training_memory(tiny, 32, 128, "fp32")
    loc_count, loc_mem = "Parameter Count Calculation", "Memory Footprint"
    loc_batch = "Per-batch memory"
    c = _check
    checks = [
        c(
            "004",
            "TinyTransformer Architecture",
            "TinyTransformer parameters",
            "2.45M",
            2.45e6,
            n,
            "params",
            0.01e6,
            "Its own breakdown sums to 2,327,552 = 2.33M.",
        ),
        c("004", loc_count, "attention per block", "65,536", 65_536, bt.attention, "params", 1),
        c("004", loc_count, "FFN per block", "65,536", 65_536, bt.ffn, "params", 1),
        c("004", loc_count, "LayerNorms per block", "512", 512, bt.norms, "params", 1),
        c("004", loc_count, "per block", "131,584", 131_584, bt.per_layer, "params", 1),
        c("004", loc_count, "2 blocks", "263,168", 263_168, bt.blocks, "params", 1),
        c(
            "004",
            loc_count,
            "positional encoding, 128 x 128",
            "16,384",
            16_384,
            bt.position_embedding,
            "params",
            1,
        ),
        c(
            "004",
            loc_count,
            "output projection, 128 x 8,000",
            "1,024,000",
            1_024_000,
            bt.head,
            "params",
            1,
        ),
        c("004", loc_count, "total", "2,327,552", 2_327_552, n, "params", 1),
        c(
            "004",
            loc_mem,
            "fp32 weights",
            "9,310,208 bytes",
            9_310_208,
            S.weight_bytes(tiny, "fp32"),
            "bytes",
            1,
        ),
        c(
            "004",
            loc_mem,
            "fp32 weights in MB",
            "~9.3 MB",
            9.3e6,
            S.weight_bytes(tiny, "fp32"),
            "bytes",
            0.1e6,
        ),
        c(
            "004",
            "Example: Model Instantiation",
            "printed num_params * 4 / 1024**2",
            "~9.3 MB",
            9.3,
            S.weight_bytes(tiny, "fp32") / 2**20,
            "MiB",
            0.1,
            "Dividing by 1024**2 gives mebibytes: 8.88 MiB (= 9.31 MB).",
        ),
        c("004", loc_mem, "gradients", "9.3 MB", 9.3e6, mem.gradients, "bytes", 0.1e6),
        c("004", loc_mem, "AdamW state", "~18.6 MB", 18.6e6, mem.optimizer, "bytes", 0.1e6),
        _estimate(
            "004",
            loc_mem,
            "activations, batch 32 x 128, fp32",
            "~5-10 MB",
            (5e6, 10e6),
            mem.activations,
            "bytes",
            "The logits and cross-entropy's log-probabilities alone take "
            "2 x 32 x 128 x 8,000 x 4 B = 262 MB.",
        ),
        _estimate(
            "004",
            loc_mem,
            "training total, batch 32 x 128",
            "~40-50 MB",
            (40e6, 50e6),
            mem.total,
            "bytes",
        ),
    ]
    for batch, claimed in ((8, 50e6), (16, 100e6), (32, 150e6), (64, 300e6), (128, 600e6)):
        checks.append(
            _estimate("004", "Batch size table", f"training memory, batch {batch} x 128",
                      f"~{claimed / 1e6:.0f} MB", claimed,
                      S.training_memory(tiny, batch, 128).total, "bytes")
        )  # fmt: skip
    checks += [
        c(
            "004",
            loc_batch,
            "token embeddings, 32 x 128 x 128 x 4 bytes",
            "2 MB",
            2 * 2**20,
            32 * 128 * tiny.d_model * S.dtype_bytes("fp32"),
            "bytes (binary)",
            0.1 * 2**20,
            "Exactly 2 MiB.",
        ),
        c(
            "004",
            loc_batch,
            "attention scores, 32 x 4 heads x 128 x 128 x 4 bytes",
            "1 MB",
            1 * 2**20,
            S.attention_matrix_bytes(tiny, 32, 128, "fp32"),
            "bytes (binary)",
            0.1 * 2**20,
            "The product is 8,388,608 bytes = 8 MiB per layer.",
        ),
        _estimate(
            "004",
            loc_batch,
            "activations per batch",
            "~5-10 MB",
            (5e6, 10e6),
            mem.activations,
            "bytes",
        ),
        c(
            "004",
            "Batching Strategy",
            "batches per epoch, 611,884 / 32",
            "19,121 batches",
            19_121,
            S.batches_per_epoch(611_884, 32),
            "batches",
            1,
            "A DataLoader keeps the last partial batch unless drop_last=True (then 19,121).",
        ),
        c(
            "004",
            "Memory and Performance",
            "tokens/s at 19,121 batches per 60 s",
            "~10,000 tokens/second",
            10e3,
            32 * 128 * 19_121 / 60,
            "tokens/s",
            1e3,
            "32 x 128 tokens x 318.7 batches/s = 1.3M tokens/s (and 32 x 128 x 3.1 = 12,698).",
        ),
        c(
            "004",
            "Loss Computation",
            "loss of an untrained model, V = 8000",
            "~8.0 (untrained)",
            8.0,
            S.uniform_loss(tiny.vocab_size),
            "nats",
            0.1,
            "The seed itself notes log(8000) = 8.99.",
        ),
        c(
            "004",
            "Loss Computation",
            "ln(8000)",
            "log(8000) = 8.99",
            8.99,
            S.uniform_loss(tiny.vocab_size),
            "nats",
            0.01,
        ),
        c(
            "004",
            "Loss Computation",
            "probability of the right token at loss 2.5",
            "~92% probability",
            92,
            100 * math.exp(-2.5),
            "%",
            1,
            "exp(-2.5) = 8.2%: a loss of 2.5 is a perplexity of 12.",
        ),
    ]
    windows = 680_000 - 128  # stride-1 windows of 128 inputs + 1 target
    train = int(0.9 * windows)
    checks += [
        c("004", "Sequence Creation", "training windows, ~680,000 - 128", "679,872", 679_872,
          windows, "batches", 1, "Counted as the seed does, in windows (sequences)."),
        c("004", "Train/Validation Split", "training set, 90% of 679,872", "611,884 sequences",
          611_884, train, "batches", 1),
        c("004", "Train/Validation Split", "validation set, the other 10%", "67,988 sequences",
          67_988, windows - train, "batches", 1),
        c("004", loc_batch, "input ids, 32 x 128 x 8 bytes (int64)", "32 KB", 32 * 2**10,
          32 * 128 * torch.tensor(0).element_size(), "bytes (binary)", 2**10, "Exactly 32 KiB."),
        c("004", "Memory and Performance", "batches per second at 19,121 per 60 s",
          "≈ 318 batches/second", 318, 19_121 / 60, "batches/s", 1),
        c("004", "Why Loss Decreases", "one gradient step, 0.0003 x 0.5", "= 0.00015", 0.00015,
          0.0003 * 0.5, "", 0.000001),
        c("004", "Memory and Performance", "batches per second in its tokens-per-second line",
          "32 batch × 128 seq × 3.1 batches/sec", 3.1, 19_121 / 60, "batches/s", 0.1,
          "The line above it divides 19,121 batches by 60 s, 318.7 batches/s; the two lines "
          "differ by a factor of 100."),
        c("004", "Memory and Performance", "tokens/s at 3.1 batches/s", "~10,000 tokens/second "
          "processed (32 batch × 128 seq × 3.1 batches/sec)", 10e3, 32 * 128 * 3.1, "tokens/s",
          1e3, "Its own product is 12,698 tokens/s."),
        c("004", "TinyTransformer Architecture", "memory of the target device",
          "1GB device deployment (Raspberry Pi Zero 2W)", 1e9, PI_ZERO_2_W_BYTES, "bytes", 0.1e9,
          "The Raspberry Pi Zero 2 W has 512 MB of LPDDR2 (Raspberry Pi's product brief). Memory "
          "sizes come in whole steps (512 MB, 1 GB), so the check allows a tenth of the claim."),
        c("004", "Hyperparameter Interactions", "learning rate at batch 128 / at batch 32",
          "BS 32: 0.0003 ... BS 128: 0.00005", 0.00005 / 0.0003, math.sqrt(128 / 32), "x", 0.01,
          "The table lowers the rate as the batch grows. The usual rules raise it: linearly for "
          "SGD (Goyal et al.), by the square root for Adam (2x here). A larger batch averages "
          "out gradient noise and tolerates a larger step, not a smaller one."),
    ]  # fmt: skip
    # "Train for 20 epochs (~10 minutes)": every epoch sees all training windows of 128 tokens.
    # The reference rates are the seed's own: "~10,000 tokens/second" and "19,121 batches/epoch
    # ÷ 60 seconds"; the note gives the rate that ten minutes would take instead.
    tokens = 20 * train * tiny.context_length
    flops = S.training_flops(tiny, tokens)
    ten_minutes = 10 * 60
    seed_tokens_per_s, seed_batches_per_s = 10_000, 19_121 / 60
    loc_plan = "Training Workflow"
    per_token = S.training_flops_per_token(tiny)
    # λ = 0.01 is a setting, not a rounded figure, so the decay check uses a tolerance well
    # below it; the learning rates use the six decimals of the seed's own print(f"{lr:.6f}").
    decay = adamw_decay_per_step(lr=3e-4, weight_decay=0.01)
    steps = S.batches_per_epoch(train, 32)
    plan = (
        f"20 x {train:,} windows x 128 = {S.format_count(tokens)} tokens; at "
        f"{S.format_flops(per_token)} per token that is {S.format_flops(flops)}. Ten minutes "
        f"would take {format_value(tokens / ten_minutes, 'tokens/s')}, "
        f"{flops / ten_minutes / 1e12:.1f} TFLOP/s sustained."
    )
    checks += [
        _estimate("004", loc_plan, "20 epochs at the seed's ~10,000 tokens/second",
                  "Train for 20 epochs (~10 minutes)", ten_minutes, tokens / seed_tokens_per_s,
                  "s", plan),
        _estimate("004", loc_plan, "20 epochs at the seed's 19,121 batches per 60 s",
                  "Train for 20 epochs (~10 minutes)", ten_minutes,
                  tokens / (32 * tiny.context_length * seed_batches_per_s), "s",
                  "A minute per epoch, as its throughput section divides, is 20 minutes."),
        c("004", "AdamW Optimizer", "weight decay per step, fraction of W (λ = 0.01)",
          "W_t = W_{t-1} - α × m̂_t / (√v̂_t + ε) - λ × W_{t-1}", 0.01,
          decay, "", 0.001,
          f"Its AdamW(model.parameters(), lr=0.0003), with PyTorch's default weight_decay=0.01, "
          f"decays by lr x λ = {decay:.3g} per step, {100 * (1 - (1 - decay) ** steps):.1f}% "
          f"per epoch of {steps:,} steps; a bare λ x W would remove 1% of every weight each "
          f"step."),
        c("004", "Training Metrics Export (JSON)", "lr in epoch 2, as its code schedules it",
          '"epoch": 2, ... "lr": 0.000295', 0.000295, seed004_lr(2), "", 1e-6,
          "CosineAnnealingLR(T_max=20), stepped after each epoch: epoch 2 trains at step 1. "
          "(Epoch 1 at step 0 is the JSON's 0.0003.) Tolerance: the six decimals its code "
          "prints."),
        c("004", "Training Metrics Export (JSON)", "lr in epoch 2, by its formula",
          '"epoch": 2, ... "lr": 0.000295', 0.000295, seed004_lr(2, as_coded=False), "", 1e-6,
          "LR(epoch) = 0.0003 × (1 + cos(π × epoch / 20)) / 2 at epoch 2: the formula runs "
          "one epoch ahead of the code."),
        c("004", "Training Metrics Export (JSON)", "lr in epoch 20, as its code schedules it",
          '"epoch": 20, ... "lr": 0.00001', 0.00001, seed004_lr(20), "", 1e-6,
          "The last epoch trains at step 19, 0.0003 × (1 - cos(π / 20)) / 2."),
        c("004", "Training Metrics Export (JSON)", "lr in epoch 20, by its formula",
          '"epoch": 20, ... "lr": 0.00001', 0.00001, seed004_lr(20, as_coded=False), "", 1e-6,
          "cos(π) = -1: the formula ends at 0, as the seed's chart (\"Final LR: 0.0\") shows."),
    ]  # fmt: skip
    return _in_seed_order(checks)


def seed_checks() -> list[SeedCheck]:
    """All checks, seed by seed, in the order the figures appear."""
    return _seed000() + _seed001() + _seed003() + _seed004()


def errata_rows(only_wrong: bool = False, seed: str | None = None) -> list[dict[str, str]]:
    """Formatted rows for the book's errata table (optionally only the wrong ones, or one
    seed's)."""
    if seed is not None and seed not in SEED_TITLES:
        raise ValueError(f"no checks for seed {seed!r}; seeds with checks: {list(SEED_TITLES)}.")
    return [
        check.as_row()
        for check in seed_checks()
        if (not only_wrong or not check.ok) and (seed is None or check.seed == seed)
    ]


def seed_summary() -> list[dict[str, str | int]]:
    """Per seed: its title, how many figures were checked and how many are wrong."""
    checks = seed_checks()
    return [
        {
            "seed": seed,
            "title": title,
            "checked": sum(c.seed == seed for c in checks),
            "wrong": sum(c.seed == seed and not c.ok for c in checks),
        }
        for seed, title in SEED_TITLES.items()
    ]


#: Column titles of :func:`html_table`, in order (a row's ``claimed``, the seed's figure in
#: the units of ``correct``, is left out: ``claim`` quotes it).
TABLE_COLUMNS: dict[str, str] = {
    "location": "where",
    "quantity": "quantity",
    "claim": "the seed writes",
    "correct": "computed",
    "verdict": "verdict",
    "note": "note",
}


def html_table(rows: list[dict], columns: dict[str, str] | None = None) -> str:
    """An HTML table of ``rows`` (dicts), with ``columns`` mapping keys to headings
    (default :data:`TABLE_COLUMNS`). Cells are escaped; a "wrong" verdict is bold."""
    columns = TABLE_COLUMNS if columns is None else columns
    head = "".join(f"<th>{html.escape(title)}</th>" for title in columns.values())
    body = []
    for row in rows:
        cells = []
        for key in columns:
            text = html.escape(str(row.get(key, "")))
            if key == "verdict" and row.get(key) == "wrong":
                text = f"<strong>{text}</strong>"
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table class="tt-errata" style="font-size: 85%"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


# --------------------------------------------------------------------------------------------
# The chapters' errata tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChapterTable:
    """A chapter's table of one seed's checks, written into the chapter as a markdown cell.

    A chapter cannot import this module at run time (on Colab a reader has only the notebook
    and ``pip install tinytrans``), so ``python scripts/chapters.py errata`` writes the table
    into the cell ``cell_id`` and ``tests/test_errata.py`` fails when it is stale.
    """

    cell_id: str
    seed: str
    keys: tuple[str, ...]  # a check is shown when its quantity contains one of them

    def checks(self) -> list[SeedCheck]:
        """The seed's checks this table shows, in the seed's order."""
        return [
            check
            for check in seed_checks()
            if check.seed == self.seed and any(key in check.quantity for key in self.keys)
        ]


#: Chapter notebook (file name without ``.ipynb``) -> the errata table it shows.
CHAPTER_TABLES: dict[str, ChapterTable] = {
    "05_sizing": ChapterTable(
        "907b8a6d", "003", ("Chinchilla", "perplexity", "tokens per parameter at")
    ),
}


def markdown_table(checks: list[SeedCheck]) -> str:
    """A markdown table of ``checks``: the quantity, the seed's figure, the computed one and
    the verdict (a "wrong" one in bold), as a chapter shows them."""
    seeds = sorted({check.seed for check in checks})
    lines = [
        f"| quantity | seed {', '.join(seeds)} writes | computed | verdict |",
        "| :-- | --: | --: | :-- |",
    ]
    for check in checks:
        row = {key: value.replace("|", "\\|") for key, value in check.as_row().items()}
        verdict = f"**{row['verdict']}**" if row["verdict"] == "wrong" else row["verdict"]
        lines.append(f"| {row['quantity']} | {row['claimed']} | {row['correct']} | {verdict} |")
    return "\n".join(lines)


def chapter_table_source(chapter: str) -> str:
    """The markdown source of ``chapter``'s errata cell (``chapter`` as in
    :data:`CHAPTER_TABLES`)."""
    if chapter not in CHAPTER_TABLES:
        raise ValueError(
            f"chapter {chapter!r} has no errata table; chapters with one: {list(CHAPTER_TABLES)}."
        )
    return markdown_table(CHAPTER_TABLES[chapter].checks())
