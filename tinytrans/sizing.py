"""Sizing a transformer on paper: parameters, memory, compute, data, and predicted loss.

Every figure here is computed *analytically* from a :class:`~tinytrans.model.ModelConfig`, never
by building the model, so that a 7B-parameter Llama can be sized in microseconds. The tests check
each formula against the parameters of the built model (and of Hugging Face ``transformers``),
against the bytes PyTorch actually saves for backward, and against hand derivations.

Conventions (stated once, used everywhere):

* ``N`` is the number of *unique* trainable numbers: a head tied to the embedding counts 0.
* Bytes are exact integers; :func:`format_bytes` prints decimal units (1 MB = 10**6 bytes)
  unless asked for binary ones (1 MiB = 2**20 bytes).
* FLOPs count a multiply-add as 2 FLOPs. The forward pass costs ``2`` FLOPs per weight that
  multiplies an activation plus the attention term ``2 * n_layers * context * d_model``: the
  counting of Kaplan et al. (2020, Table 1), which charges each token for attending to its
  (on average, causally) visible keys. Training costs 3x the forward (backward = 2x forward),
  hence the familiar ``C = 6ND``. ``attention="full"`` charges the whole ``T x T`` square
  instead (``4·n_layers·context·d_model`` forward, PaLM's ``12·L·T·d`` for training), for
  comparing with MFUs published on that basis (section 5.5).
* Training memory follows a precision recipe of :mod:`tinytrans.precision` (``fp32``,
  ``bf16-mixed``, ``fp16-mixed``, ``bf16-true``), the names the Trainer runs (section 5.4).
* Speed and money come from one hardware table, :data:`HARDWARE` (datasheet dense peaks per
  dtype and memory bandwidth): a step takes ``max(FLOPs / peak, bytes / bandwidth)`` plus a
  measured overhead (the roofline, section 5.9), ZeRO divides the training states over the
  devices (section 5.10), and a price per GPU-hour turns FLOPs into dollars (section 5.11).
"""

from __future__ import annotations

import math
import numbers
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from tinytrans.model import ModelConfig, TinyTransformer
from tinytrans.precision import Precision, get_precision

__all__ = [
    "ATTENTION_COUNTS",
    "CHINCHILLA",
    "CHINCHILLA_REFIT",
    "CHINCHILLA_TOKENS_PER_PARAM",
    "DTYPE_BYTES",
    "HARDWARE",
    "OPTIMIZER_STATE_BYTES",
    "PEAK_TFLOPS",
    "ZERO_STAGES",
    "ChinchillaFit",
    "ComputeOptimal",
    "Hardware",
    "ParameterBreakdown",
    "SizingSummary",
    "StepTime",
    "TrainingCost",
    "TrainingMemory",
    "activation_bytes",
    "affordable_flops",
    "attention_matrix_bytes",
    "batches_per_epoch",
    "canonical_dtype",
    "chinchilla_loss",
    "chinchilla_optimal",
    "chinchilla_tokens",
    "count_parameters",
    "critical_batch_size",
    "decode_step",
    "dtype_bytes",
    "format_bytes",
    "format_count",
    "format_duration",
    "format_flops",
    "forward_flops_per_token",
    "get_hardware",
    "kv_cache_bytes",
    "layer_activation_bytes",
    "layer_detail",
    "loss_optimal",
    "matmul_parameters",
    "measure_matmul_flops",
    "measure_memory_bandwidth",
    "measured_activation_bytes",
    "measured_hardware",
    "optimizer_state_bytes",
    "parameter_breakdown",
    "prefill_step",
    "summary",
    "tokens_per_second",
    "training_cost",
    "training_flops",
    "training_flops_per_token",
    "training_memory",
    "training_seconds",
    "uniform_loss",
    "weight_bytes",
    "weight_bytes_table",
    "width_for_budget",
    "zero_memory",
]

# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------

#: Bytes per stored number. int4 packs two numbers per byte.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
}

_DTYPE_ALIASES: dict[str, str] = {
    "float32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "uint8": "int8",
}


@dataclass(frozen=True)
class Hardware:
    """One accelerator's datasheet: dense peak TFLOP/s per dtype, memory bandwidth and capacity
    (section 5.9).

    ``peak_tflops`` maps a canonical dtype name (``"fp32"``, ``"bf16"``, ``"fp16"``,
    ``"int8"``) to the dense peak (no sparsity) of the units that run it (tensor cores where
    there are some). ``bandwidth_gbs`` is the memory bandwidth in GB/s (10**9 bytes/s).
    """

    name: str
    peak_tflops: dict[str, float]
    bandwidth_gbs: float
    memory_bytes: int
    source: str = ""

    def peak_flops(self, dtype: DType = "bf16") -> float:
        """Peak FLOP/s in ``dtype``; a ``ValueError`` names the dtypes this device lists."""
        name = canonical_dtype(dtype)
        if name not in self.peak_tflops:
            raise ValueError(
                f"{self.name} has no {name} peak in the table; use one of "
                f"{sorted(self.peak_tflops)}."
            )
        return self.peak_tflops[name] * 1e12

    @property
    def bandwidth(self) -> float:
        """Memory bandwidth in bytes/s."""
        return self.bandwidth_gbs * 1e9


_GIB = 2**30

#: Datasheet figures (dense peaks, without 2-of-4 sparsity) for the roofline of section 5.9.
HARDWARE: dict[str, Hardware] = {
    # NVIDIA V100 SXM2 datasheet (2020): 125 TFLOP/s fp16 tensor, 15.7 fp32, HBM2 900 GB/s.
    "V100": Hardware("V100", {"fp16": 125.0, "fp32": 15.7}, 900.0, 32 * _GIB,
                     "NVIDIA V100 datasheet"),
    # NVIDIA A100 datasheet (2021): 312 TFLOP/s bf16/fp16, 19.5 fp32, 624 int8 (dense);
    # 40GB SXM: 1,555 GB/s; 80GB SXM: 2,039 GB/s.
    "A100-40GB": Hardware("A100-40GB", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5,
                                        "int8": 624.0}, 1555.0, 40 * _GIB,
                          "NVIDIA A100 datasheet"),
    "A100-80GB": Hardware("A100-80GB", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5,
                                        "int8": 624.0}, 2039.0, 80 * _GIB,
                          "NVIDIA A100 datasheet"),
    # NVIDIA H100 datasheet (2023), SXM: 989 TFLOP/s bf16/fp16 dense, 67 fp32, 3.35 TB/s.
    "H100-SXM": Hardware("H100-SXM", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0,
                                      "int8": 1979.0}, 3350.0, 80 * _GIB,
                         "NVIDIA H100 datasheet"),
    # NVIDIA T4 datasheet (Colab's free GPU): 65 TFLOP/s fp16 tensor, 8.1 fp32, 130 int8,
    # GDDR6 320 GB/s.
    "T4": Hardware("T4", {"fp16": 65.0, "fp32": 8.1, "int8": 130.0}, 320.0, 16 * _GIB,
                   "NVIDIA T4 datasheet"),
    # NVIDIA L4 datasheet: 121 TFLOP/s bf16/fp16 dense (242 with sparsity), 30.3 fp32,
    # 300 GB/s.
    "L4": Hardware("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3, "int8": 242.0}, 300.0,
                   24 * _GIB, "NVIDIA L4 datasheet"),
    # NVIDIA Ada whitepaper, RTX 4090: 165.2 TFLOP/s fp16/bf16 tensor with fp32 accumulate
    # (dense), 82.6 fp32, GDDR6X 1,008 GB/s.
    "RTX-4090": Hardware("RTX-4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}, 1008.0,
                         24 * _GIB, "NVIDIA Ada Lovelace architecture whitepaper"),
    # NVIDIA Ampere GA102 whitepaper, RTX 3090: 71 TFLOP/s fp16 tensor with fp32 accumulate,
    # 35.6 fp32, GDDR6X 936 GB/s.
    "RTX-3090": Hardware("RTX-3090", {"bf16": 71.0, "fp16": 71.0, "fp32": 35.6}, 936.0,
                         24 * _GIB, "NVIDIA Ampere GA102 whitepaper"),
    # Apple M2 press release (2022): 10-core GPU, 3.6 TFLOP/s fp32 (the same rate in fp16),
    # 100 GB/s unified memory (8 GB in the base model).
    "M2": Hardware("M2", {"fp16": 3.6, "fp32": 3.6}, 100.0, 8 * _GIB,
                   "Apple M2 announcement"),
    # Raspberry Pi Zero 2 W (seed 004's target): 4 Cortex-A53 cores at 1 GHz, each one 2-lane
    # fp32 fused multiply-add per cycle (64-bit NEON datapath): 4 x 1e9 x 4 = 16 GFLOP/s; 512 MB
    # of 32-bit LPDDR2 at 900 MT/s = 3.6 GB/s (derived from the product brief, not measured).
    "Pi-Zero-2W": Hardware("Pi-Zero-2W", {"fp32": 0.016}, 3.6, 512 * 2**20,
                           "Raspberry Pi Zero 2 W product brief; derived"),
}  # fmt: skip


def get_hardware(name: str | Hardware) -> Hardware:
    """The :data:`HARDWARE` row called ``name`` (a :class:`Hardware` is returned as is)
    (section 5.9)."""
    if isinstance(name, Hardware):
        return name
    if name not in HARDWARE:
        raise ValueError(f"unknown hardware {name!r}; use one of {list(HARDWARE)}.")
    return HARDWARE[name]


#: Dense datasheet peaks in TFLOP/s (without sparsity) for the time estimates of section 5.5,
#: labelled views of :data:`HARDWARE` (the one source of the numbers) for the widgets' menu.
PEAK_TFLOPS: dict[str, float] = {
    f"{label} ({dtype}{' tensor' if tensor else ''})": HARDWARE[key].peak_tflops[dtype]
    for label, key, dtype, tensor in (
        ("V100", "V100", "fp16", True),
        ("A100", "A100-40GB", "bf16", True),
        ("H100 SXM", "H100-SXM", "bf16", True),
        ("RTX 3090", "RTX-3090", "fp32", False),
        ("RTX 3090", "RTX-3090", "fp16", True),
    )
}

DType = str | torch.dtype


def canonical_dtype(dtype: DType) -> str:
    """The canonical name (``"fp32"``, ``"bf16"``, ...) of a dtype given as text or torch dtype
    (section 5.3)."""
    name = str(dtype).removeprefix("torch.").lower()
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        known = sorted(set(DTYPE_BYTES) | set(_DTYPE_ALIASES))
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {known}.")
    return name


def dtype_bytes(dtype: DType) -> float:
    """Bytes per number stored in ``dtype``, 0.5 for int4 (section 5.3)."""
    return DTYPE_BYTES[canonical_dtype(dtype)]


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterBreakdown:
    """Where the parameters of a configuration live, computed from the config alone (section 5.1).

    Per-layer fields (``attention``, ``ffn``, ``norms``) count one transformer block; the
    ``*_total`` properties multiply by ``n_layers``. ``head`` is 0 when ``head_tied`` is True,
    because the output layer reuses the token-embedding matrix.
    """

    name: str
    n_layers: int
    token_embedding: int
    position_embedding: int
    attention: int
    ffn: int
    norms: int
    final_norm: int
    head: int
    head_tied: bool
    #: One block's tensors by name (q_proj, k_proj, ..., ffn_norm), weights and biases together.
    layer_detail: dict[str, int] = field(default_factory=dict)

    @property
    def per_layer(self) -> int:
        return self.attention + self.ffn + self.norms

    @property
    def attention_total(self) -> int:
        return self.attention * self.n_layers

    @property
    def ffn_total(self) -> int:
        return self.ffn * self.n_layers

    @property
    def norms_total(self) -> int:
        return self.norms * self.n_layers

    @property
    def blocks(self) -> int:
        return self.per_layer * self.n_layers

    @property
    def embeddings(self) -> int:
        """Token plus learned-position tables (the lookups, which cost no FLOPs)."""
        return self.token_embedding + self.position_embedding

    @property
    def non_embedding(self) -> int:
        """Total minus the embedding tables (an untied head stays in, as in the model)."""
        return self.total - self.embeddings

    @property
    def total(self) -> int:
        return self.embeddings + self.blocks + self.final_norm + self.head

    def share(self, part: int) -> float:
        """``part`` as a fraction of the total."""
        return part / self.total

    def as_rows(self) -> list[dict[str, Any]]:
        """Table rows (component, per layer, count, share) ending with the total."""
        head_note = "tied to token embedding" if self.head_tied else ""
        rows = [
            ("token embedding", None, self.token_embedding, ""),
            ("position embedding", None, self.position_embedding, ""),
            ("attention", self.attention, self.attention_total, f"x {self.n_layers} layers"),
            ("feed-forward", self.ffn, self.ffn_total, f"x {self.n_layers} layers"),
            ("block norms", self.norms, self.norms_total, f"x {self.n_layers} layers"),
            ("final norm", None, self.final_norm, ""),
            ("output head", None, self.head, head_note),
            ("total", self.per_layer, self.total, "per-layer column: one block"),
        ]
        return [
            {
                "component": name,
                "per_layer": per_layer,
                "count": count,
                "share": count / self.total,
                "note": note,
            }
            for name, per_layer, count, note in rows
        ]


def _norm_params(config: ModelConfig) -> int:
    """LayerNorm has a scale and a bias per feature; RMSNorm only a scale."""
    return 2 * config.d_model if config.norm == "layernorm" else config.d_model


def _linear(d_in: int, d_out: int, bias: bool) -> int:
    return d_in * d_out + (d_out if bias else 0)


def layer_detail(config: ModelConfig) -> dict[str, int]:
    """Parameters of each tensor group in one block, named as in :mod:`tinytrans.model`
    (section 5.1)."""
    c, kv_dim, f, bias = config.d_model, config.kv_heads * config.head_dim, config.d_ff, config.bias
    detail = {
        "attn_norm": _norm_params(config),
        "q_proj": _linear(c, c, bias),
        "k_proj": _linear(c, kv_dim, bias),
        "v_proj": _linear(c, kv_dim, bias),
        "o_proj": _linear(c, c, bias),
        "ffn_norm": _norm_params(config),
    }
    if config.activation == "swiglu":
        detail["gate_proj"] = _linear(c, f, bias)
    detail["up_proj"] = _linear(c, f, bias)
    detail["down_proj"] = _linear(f, c, bias)
    return detail


def parameter_breakdown(config: ModelConfig) -> ParameterBreakdown:
    """Count every parameter of ``config`` by component, without building the model
    (section 5.1)."""
    detail = layer_detail(config)
    attention = sum(detail[k] for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
    ffn = sum(detail[k] for k in ("gate_proj", "up_proj", "down_proj") if k in detail)
    vocab_matrix = config.vocab_size * config.d_model
    return ParameterBreakdown(
        name=config.name,
        n_layers=config.n_layers,
        token_embedding=vocab_matrix,
        position_embedding=(
            config.context_length * config.d_model if config.positional == "learned" else 0
        ),
        attention=attention,
        ffn=ffn,
        norms=detail["attn_norm"] + detail["ffn_norm"],
        # Post-norm blocks already end in a norm, so only pre-norm models add a final one.
        final_norm=_norm_params(config) if config.norm_placement == "pre" else 0,
        head=0 if config.tie_embeddings else vocab_matrix,
        head_tied=config.tie_embeddings,
        layer_detail=detail,
    )


def count_parameters(config: ModelConfig, *, non_embedding: bool = False) -> int:
    """Unique trainable parameters of ``config`` (equals ``sum(p.numel())`` of the model)
    (section 5.1).

    ``non_embedding=True`` drops the token and learned-position tables, like
    ``TinyTransformer.num_parameters(exclude_embeddings=True)`` and Kaplan et al.'s ``N``.
    """
    breakdown = parameter_breakdown(config)
    return breakdown.non_embedding if non_embedding else breakdown.total


def width_for_budget(
    config: ModelConfig, n_layers: int, budget: int, *, head_dim: int | None = None
) -> ModelConfig:
    """``config`` with ``n_layers`` blocks and the width whose parameter count is closest to
    ``budget``: the equal-parameter shapes of a depth-versus-width comparison (section 5.7).

    ``d_model`` runs over multiples of ``head_dim`` (default: ``config.head_dim``), one head
    per ``head_dim`` dimensions; ``d_ff`` keeps the ratio ``d_ff / d_model`` of ``config``
    and grouped-query attention keeps its number of query heads per key/value head (so the
    head count steps by that group size). Everything else (vocabulary, tying, norms, ...) is
    unchanged.
    """
    head_dim = config.head_dim if head_dim is None else head_dim
    if n_layers < 1 or head_dim < 1 or budget < 1:
        raise ValueError(
            f"need n_layers, head_dim and budget >= 1, got {n_layers}, {head_dim}, {budget}."
        )
    ratio = config.d_ff / config.d_model
    group = config.n_heads // config.kv_heads
    best, best_gap = None, math.inf
    n_heads = group
    while True:
        d_model = n_heads * head_dim
        kv = None if config.n_kv_heads is None else n_heads // group
        candidate = config.replace(
            n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_kv_heads=kv,
            d_ff=max(1, round(ratio * d_model)), name=f"{config.name}-{n_layers}x{d_model}",
        )  # fmt: skip
        count = count_parameters(candidate)
        if abs(count - budget) < best_gap:
            best, best_gap = candidate, abs(count - budget)
        if count >= budget and best is not None:
            return best
        n_heads += group


def _as_count(model: ModelConfig | int) -> int:
    """A parameter count from a config or a plain number."""
    if isinstance(model, ModelConfig):
        return count_parameters(model)
    if isinstance(model, bool) or not isinstance(model, int | float) or model < 0:
        raise ValueError(f"expected a ModelConfig or a parameter count >= 0, got {model!r}.")
    return int(model)


# --------------------------------------------------------------------------------------------
# Memory: weights, KV cache, attention matrices, training state, activations
# --------------------------------------------------------------------------------------------


def weight_bytes(
    model: ModelConfig | int, dtype: DType = "fp32", group_size: int | None = None
) -> int:
    """Bytes to store the weights in ``dtype``: parameters x bytes per number (section 5.3).

    For int4/int8 with ``group_size`` set, add one fp16 scale per group of weights, as
    group-wise quantization schemes store (e.g. 64 weights share one scale).
    """
    n = _as_count(model)
    total = math.ceil(n * dtype_bytes(dtype))
    if group_size is not None:
        if group_size <= 0:
            raise ValueError(f"group_size must be a positive integer, got {group_size}.")
        total += 2 * math.ceil(n / group_size)
    return total


def weight_bytes_table(model: ModelConfig | int) -> dict[str, int]:
    """Weight bytes in fp32, bf16, int8 and int4 (the quantization ladder) (section 5.3)."""
    return {name: weight_bytes(model, name) for name in ("fp32", "bf16", "int8", "int4")}


def _check_count(name: str, value: object, allow_zero: bool = False) -> None:
    """``ValueError`` unless ``value`` is an integer >= 1 (>= 0 with ``allow_zero``)."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def kv_cache_bytes(
    config: ModelConfig,
    batch_size: int = 1,
    context_length: int | None = None,
    dtype: DType = "fp32",
) -> int:
    """Bytes of keys and values cached for generation (section 5.3).

    ``2 (K and V) x batch x context x layers x kv_heads x head_dim x bytes``: grouped-query and
    multi-query attention shrink it by ``n_heads / kv_heads``.
    """
    context = config.context_length if context_length is None else context_length
    _check_count("batch_size", batch_size)
    _check_count("context_length", context, allow_zero=True)
    numbers = 2 * batch_size * context * config.n_layers * config.kv_heads * config.head_dim
    return math.ceil(numbers * dtype_bytes(dtype))


def attention_matrix_bytes(
    config: ModelConfig,
    batch_size: int = 1,
    context_length: int | None = None,
    dtype: DType = "fp32",
) -> int:
    """Bytes of one layer's materialised attention scores: ``batch x heads x T x T x bytes``
    (section 5.4).

    This is the tensor that fused ("flash") attention never stores, and the reason long
    contexts blow up memory in a naive implementation.
    """
    context = config.context_length if context_length is None else context_length
    return math.ceil(batch_size * config.n_heads * context * context * dtype_bytes(dtype))


def _ffn_saved_widths(config: ModelConfig) -> int:
    """How many (tokens x d_ff) tensors the feed-forward keeps for backward.

    ReLU: its output (also the down projection's input). GELU (either form): its input and its
    output.
    SwiGLU: the gate pre-activation, silu(gate), the up projection and their product.
    """
    return {"relu": 1, "gelu": 2, "gelu_exact": 2, "swiglu": 4}[config.activation]


def layer_activation_bytes(
    config: ModelConfig,
    batch_size: int,
    context_length: int | None = None,
    dtype: DType = "fp32",
    fused_attention: bool = True,
) -> int:
    """Bytes one block keeps for the backward pass (no recomputation).

    Follows the accounting of Korthikanti et al. (2022, "Reducing Activation Recomputation in
    Large Transformer Models", section 4.1), generalised to the course's switches. With
    ``s`` tokens, ``b`` sequences, width ``h``, ``a`` heads, ``f = d_ff`` and ``e`` bytes per
    activation, a block stores:

    * ``8·sbh·e``: the inputs of the two norms, the attention input, Q, K and V (at full width:
      like most implementations, the model repeats grouped K/V heads before attention), the
      attention output (the output projection's input) and the feed-forward input;
    * ``k·sbf·e`` with ``k`` from :func:`_ffn_saved_widths` (2 for GELU);
    * attention: the ``a·s²·b`` softmax probabilities (explicit attention) or, for fused
      attention, only a float32 log-sum-exp per row (``4·abs`` bytes);
    * dropout (when ``config.dropout > 0``): 1-byte masks for the two residual branches
      (``2·sbh``) and, for explicit attention, the probabilities' mask and dropped copy.
      (PyTorch's CPU fused kernel does not do dropout and falls back to explicit attention.)

    For GPT (GELU, ``f = 4h``, explicit attention, dropout, ``e = 2``) this is exactly the
    paper's ``sbh·(34 + 5·a·s/h)`` bytes.
    """
    s = config.context_length if context_length is None else context_length
    b, h, a, f = batch_size, config.d_model, config.n_heads, config.d_ff
    e = dtype_bytes(dtype)
    sbh, dropout = s * b * h, config.dropout > 0
    total = (8 * sbh + _ffn_saved_widths(config) * s * b * f) * e
    if fused_attention:
        total += 4 * a * s * b
    else:
        probs = a * s * s * b
        total += probs * e + (probs * (1 + e) if dropout else 0)
    if dropout:
        total += 2 * sbh
    return math.ceil(total)


def activation_bytes(
    config: ModelConfig,
    batch_size: int,
    context_length: int | None = None,
    dtype: DType = "fp32",
    *,
    checkpointing: bool = False,
    fused_attention: bool = True,
) -> int:
    """Estimated bytes of activations saved for backward by a training step (section 5.4).

    Blocks: ``n_layers x`` :func:`layer_activation_bytes`, or with (full) activation
    checkpointing only each block's input (``sbh·e`` per layer) plus one block recomputed at a
    time during backward. Output: the final norm's and the head's inputs, the logits
    (``s·b·V·e``, returned to the caller) and cross-entropy's float32 log-probabilities
    (``4·s·b·V``); for small models with big vocabularies this term dominates.
    """
    s = config.context_length if context_length is None else context_length
    b, h, v = batch_size, config.d_model, config.vocab_size
    e = dtype_bytes(dtype)
    layer = layer_activation_bytes(config, b, s, dtype, fused_attention)
    if checkpointing:
        blocks = math.ceil(config.n_layers * s * b * h * e) + layer
    else:
        blocks = config.n_layers * layer
    head_inputs = (2 if config.norm_placement == "pre" else 1) * s * b * h * e
    embedding_dropout = s * b * h if config.dropout > 0 else 0
    logits = s * b * v * e + 4 * s * b * v
    return blocks + math.ceil(head_inputs + logits) + embedding_dropout


def measured_activation_bytes(
    model: ModelConfig | TinyTransformer,
    batch_size: int,
    context_length: int | None = None,
    *,
    checkpointing: bool = False,
    seed: int = 0,
) -> int:
    """Bytes that one training forward pass really keeps for backward: the measured
    counterpart of :func:`activation_bytes` (section 5.4).

    Runs one forward pass (with targets, so the loss is included) of a random
    ``batch_size x context_length`` batch under ``torch.autograd.graph.saved_tensors_hooks``
    and adds up the distinct storages autograd saves that are not parameters or buffers,
    plus the returned logits. Given a config, it builds the model (seeded with ``seed``) on
    the CPU. With ``checkpointing=True`` the model runs with gradient checkpointing, so only
    each block's input is saved; the block recomputed during backward is not included (add
    :func:`layer_activation_bytes` for the peak).
    """
    if isinstance(model, ModelConfig):
        torch.manual_seed(seed)
        model = TinyTransformer(model)
    if not isinstance(model, TinyTransformer):
        raise TypeError(f"expected a ModelConfig or a TinyTransformer, got {type(model).__name__}.")
    config = model.config
    context = config.context_length if context_length is None else context_length
    was_training, was_checkpointing = model.training, model.gradient_checkpointing
    model.train()
    model.gradient_checkpointing = checkpointing
    tensors = [*model.parameters(), *model.buffers()]
    weights = {t.untyped_storage().data_ptr() for t in tensors}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch_size, context), generator=generator)
    ids = ids.to(device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            logits, _ = model(ids, ids)
    finally:
        model.train(was_training)
        model.gradient_checkpointing = was_checkpointing
    return sum(seen.values()) + logits.numel() * logits.element_size()


#: Bytes of optimizer state per parameter (section 5.4). AdamW keeps two float32 moments,
#: SGD with momentum one float32 buffer, plain SGD nothing.
OPTIMIZER_STATE_BYTES: dict[str, int] = {"adamw": 8, "sgd-momentum": 4, "sgd": 0}


def optimizer_state_bytes(model: ModelConfig | int, optimizer: str = "adamw") -> int:
    """Bytes the optimizer keeps for ``model``'s parameters (section 5.4, "Training memory: states and activations").

    ``optimizer`` is a key of :data:`OPTIMIZER_STATE_BYTES`; anything else is a ``ValueError``
    naming the choices.
    """
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(
            f"optimizer must be one of {sorted(OPTIMIZER_STATE_BYTES)}, got {optimizer!r}."
        )
    return _as_count(model) * OPTIMIZER_STATE_BYTES[optimizer]


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of one training step, by kind (section 5.4, "Training memory: states and activations")."""

    weights: int
    gradients: int
    optimizer: int
    master_weights: int
    activations: int

    @property
    def states(self) -> int:
        """Everything proportional to the parameter count."""
        return self.weights + self.gradients + self.optimizer + self.master_weights

    @property
    def total(self) -> int:
        return self.states + self.activations

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "states": self.states, "total": self.total}


def _recipe(precision: str | Precision) -> Precision:
    """A :class:`~tinytrans.precision.Precision` from its name (or one given as is)."""
    return precision if isinstance(precision, Precision) else get_precision(precision)


def training_memory(
    config: ModelConfig,
    batch_size: int = 1,
    context_length: int | None = None,
    precision: str | Precision = "fp32",
    *,
    optimizer: str = "adamw",
    checkpointing: bool = False,
    fused_attention: bool = True,
) -> TrainingMemory:
    """Memory of one training step of ``config`` under a precision recipe (section 5.4).

    ``precision`` is a name of :data:`tinytrans.precision.PRECISIONS` (the Trainer's names;
    the older ``"bf16"``, ``"fp16"`` and ``"mixed"`` mean the mixed recipes) or a
    :class:`~tinytrans.precision.Precision`. It fixes the dtype of the weights and their
    gradients, whether an fp32 master copy is kept, and the dtype of the activations (the
    matmuls' dtype). The optimizer state comes from :data:`OPTIMIZER_STATE_BYTES`. Per
    parameter with AdamW: ``fp32`` and ``bf16-mixed`` = 4 + 4 + 8 = 16 B (autocast keeps fp32
    weights and gradients), ``bf16-true`` = 2 + 2 + 8 = 12 B; a Megatron-style recipe (bf16
    weights, fp32 master copy) is ``Precision(..., weights="bf16", master_weights=True)``:
    2 + 2 + 8 + 4 = 16 B. Activations: see :func:`activation_bytes`.
    """
    recipe = _recipe(precision)
    n = count_parameters(config)
    return TrainingMemory(
        weights=weight_bytes(n, recipe.weights),
        gradients=weight_bytes(n, recipe.weights),
        optimizer=optimizer_state_bytes(n, optimizer),
        master_weights=weight_bytes(n, "fp32") if recipe.master_weights else 0,
        activations=activation_bytes(
            config,
            batch_size,
            context_length,
            recipe.compute,
            checkpointing=checkpointing,
            fused_attention=fused_attention,
        ),
    )


# --------------------------------------------------------------------------------------------
# Compute
# --------------------------------------------------------------------------------------------


#: How the attention scores and the weighted values are charged: ``"causal"`` (the visible
#: half of the ``T x T`` square, Kaplan et al.; the default), ``"full"`` (the whole square,
#: PaLM's ``12·L·T·d`` per training token) or ``"none"`` (plain ``2N``).
ATTENTION_COUNTS = ("causal", "full", "none")

AttentionCount = Literal["causal", "full", "none"] | bool


def _attention_factor(attention: AttentionCount) -> int:
    """Multiples of ``n_layers·context·d_model`` that attention adds per forward token."""
    if attention is True or attention == "causal":
        return 2
    if attention is False or attention == "none":
        return 0
    if attention == "full":
        return 4
    raise ValueError(f"attention must be one of {list(ATTENTION_COUNTS)}, got {attention!r}.")


def forward_flops_per_token(
    config: ModelConfig,
    context_length: int | None = None,
    *,
    attention: AttentionCount = "causal",
) -> int:
    """FLOPs of one token's forward pass, ``2N_matmul + 2·n_layers·context·d_model``
    (section 5.5).

    ``N_matmul`` is every block parameter plus the ``d_model x vocab`` output head (which is
    a matmul even when tied); the embedding lookup costs nothing. The attention term is
    Kaplan et al.'s (2020): QK^T and AV each cost ``2·d_model`` FLOPs per visible key, and a
    causal token sees ``context / 2`` keys on average. ``attention="full"`` charges every key
    (``4·n_layers·context·d_model``, PaLM's basis for MFU); ``"none"`` (or ``False``) gives
    plain 2N; ``True`` means ``"causal"``.
    """
    factor = _attention_factor(attention)
    context = config.context_length if context_length is None else context_length
    return 2 * matmul_parameters(config) + factor * config.n_layers * context * config.d_model


def matmul_parameters(config: ModelConfig) -> int:
    """The weights a forward token multiplies (and a decode step reads): every block
    parameter, the final norm and the ``d_model x vocab`` head, tied or not; the embedding
    lookups are left out (section 5.5)."""
    breakdown = parameter_breakdown(config)
    return breakdown.blocks + breakdown.final_norm + config.vocab_size * config.d_model


def training_flops_per_token(
    config: ModelConfig,
    context_length: int | None = None,
    *,
    attention: AttentionCount = "causal",
    recompute: bool = False,
) -> int:
    """Forward + backward FLOPs per token: 3x the forward, 4x with activation recomputation
    (section 5.5). This is the basis of every MFU the course reports (benchmarks included)."""
    passes = 4 if recompute else 3
    return passes * forward_flops_per_token(config, context_length, attention=attention)


def training_flops(
    model: ModelConfig | int,
    tokens: float,
    context_length: int | None = None,
    *,
    attention: AttentionCount = "causal",
) -> float:
    """Total training compute for ``tokens`` tokens (section 5.5).

    Given a parameter count: ``6ND``. Given a config: per-token training FLOPs (which include
    the attention term unless ``attention="none"``) times ``tokens``.
    """
    if isinstance(model, ModelConfig):
        return training_flops_per_token(model, context_length, attention=attention) * tokens
    return 6.0 * _as_count(model) * tokens


def training_seconds(
    flops: float, peak_tflops: float, mfu: float = 0.4, n_devices: int = 1
) -> float:
    """Wall-clock seconds to execute ``flops`` at ``mfu`` x peak on ``n_devices`` devices
    (section 5.5).

    MFU (model FLOPs utilisation) is the fraction of the datasheet peak that does useful model
    arithmetic; 30-50% is good for large models on GPUs, small models often manage far less.
    """
    if peak_tflops <= 0 or not 0 < mfu <= 1 or n_devices < 1:
        raise ValueError(
            f"need peak_tflops > 0, 0 < mfu <= 1 and n_devices >= 1; "
            f"got {peak_tflops}, {mfu}, {n_devices}."
        )
    return flops / (peak_tflops * 1e12 * mfu * n_devices)


def tokens_per_second(
    config: ModelConfig,
    peak_tflops: float,
    mfu: float = 0.4,
    n_devices: int = 1,
    context_length: int | None = None,
) -> float:
    """Training throughput in tokens/s implied by a peak, an MFU and the per-token FLOPs
    (section 5.5)."""
    per_token = training_flops_per_token(config, context_length)
    return 1.0 / training_seconds(per_token, peak_tflops, mfu, n_devices)


def batches_per_epoch(n_examples: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one pass over ``n_examples`` (a partial last batch counts unless
    ``drop_last``, as in ``torch.utils.data.DataLoader``) (section 5.5)."""
    return n_examples // batch_size if drop_last else math.ceil(n_examples / batch_size)


# --------------------------------------------------------------------------------------------
# Inference speed: the roofline of a prefill and of a decode step
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTime:
    """The roofline estimate of one forward step (section 5.9).

    ``seconds = max(flops / peak, bytes / bandwidth) + overhead``: the step is as slow as the
    slower of its arithmetic and its memory traffic, plus a fixed cost (Python, kernel
    launches) that neither explains. ``tokens`` is how many tokens the step processes.
    """

    flops: float
    bytes: float
    compute_seconds: float
    memory_seconds: float
    overhead_seconds: float
    tokens: int

    @property
    def seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds) + self.overhead_seconds

    @property
    def bound(self) -> str:
        """``"compute"`` or ``"memory"``: which roof the step hits."""
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def _roofline(
    flops: float, moved: float, hardware: Hardware, dtype: str, overhead: float, tokens: int
) -> StepTime:
    if overhead < 0:
        raise ValueError(f"overhead_seconds must be >= 0, got {overhead}.")
    compute = flops / hardware.peak_flops(dtype)
    return StepTime(flops, moved, compute, moved / hardware.bandwidth, overhead, tokens)


def decode_step(
    config: ModelConfig,
    hardware: str | Hardware,
    batch_size: int = 1,
    context_length: int | None = None,
    dtype: DType = "bf16",
    *,
    overhead_seconds: float = 0.0,
) -> StepTime:
    """One decode step: ``batch_size`` sequences each add one token after ``context_length``
    cached ones (default: the full context) (section 5.9).

    FLOPs: per sequence :func:`forward_flops_per_token` with the new token attending to every
    cached key (``attention="full"`` at that length). Bytes: every multiplied weight once
    (:func:`matmul_parameters`, shared by the batch) plus each sequence's KV cache
    (:func:`kv_cache_bytes`). At small batches the weights dominate: decode is memory-bound.
    """
    _check_count("batch_size", batch_size)
    context = config.context_length if context_length is None else context_length
    _check_count("context_length", context, allow_zero=True)
    hw, name = get_hardware(hardware), canonical_dtype(dtype)
    flops = batch_size * forward_flops_per_token(config, context, attention="full")
    moved = weight_bytes(matmul_parameters(config), name) + kv_cache_bytes(
        config, batch_size, context, name
    )
    return _roofline(flops, moved, hw, name, overhead_seconds, batch_size)


def prefill_step(
    config: ModelConfig,
    hardware: str | Hardware,
    batch_size: int = 1,
    prompt_length: int | None = None,
    dtype: DType = "bf16",
    *,
    overhead_seconds: float = 0.0,
) -> StepTime:
    """The prefill of ``batch_size`` prompts of ``prompt_length`` tokens (section 5.9).

    FLOPs: every prompt token's forward pass (causal attention count); bytes: the weights once
    plus the KV cache written. Hundreds of tokens share each weight read, so prefill is
    compute-bound.
    """
    _check_count("batch_size", batch_size)
    length = config.context_length if prompt_length is None else prompt_length
    _check_count("prompt_length", length)
    hw, name = get_hardware(hardware), canonical_dtype(dtype)
    tokens = batch_size * length
    flops = tokens * forward_flops_per_token(config, length)
    moved = weight_bytes(matmul_parameters(config), name) + kv_cache_bytes(
        config, batch_size, length, name
    )
    return _roofline(flops, moved, hw, name, overhead_seconds, tokens)


def critical_batch_size(
    config: ModelConfig,
    hardware: str | Hardware,
    dtype: DType = "bf16",
    context_length: int = 0,
) -> float:
    """The decode batch at which :func:`decode_step` turns compute-bound (section 5.9).

    Per sequence a step costs ``F`` FLOPs and reads ``K`` bytes of cache; the ``W`` weight
    bytes are shared. Compute time equals memory time at ``B = (W / bw) / (F / peak - K / bw)``;
    ``math.inf`` when the cache alone outpaces the arithmetic (then no batch is compute-bound).
    With no cache (``context_length=0``) ``F = 2N`` and ``W = N x bytes``, so
    ``B = peak / bandwidth x bytes per parameter / 2``.
    """
    one = decode_step(config, hardware, 1, context_length, dtype)
    weights = weight_bytes(matmul_parameters(config), canonical_dtype(dtype))
    hw = get_hardware(hardware)
    per_sequence_gap = one.compute_seconds - (one.bytes - weights) / hw.bandwidth
    if per_sequence_gap <= 0:
        return math.inf
    return (weights / hw.bandwidth) / per_sequence_gap


def _median_seconds(call: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall-clock seconds of ``call`` over ``repeats`` runs after ``warmup`` runs: the
    median resists the outliers of a shared machine better than the mean."""
    _check_count("repeats", repeats)
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_memory_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """This machine's memory bandwidth in bytes/s: copies of an ``n_bytes`` float32 tensor
    (median of ``repeats``, after one warm-up), counting the read and the write (section 5.9).

    ``n_bytes`` should exceed the CPU's caches, or the copy measures the cache instead.
    """
    _check_count("n_bytes", n_bytes)
    source = torch.ones(max(1, n_bytes // 4))
    target = torch.empty_like(source)
    seconds = _median_seconds(lambda: target.copy_(source), repeats, warmup=1)
    return 2 * source.numel() * 4 / seconds


def measure_matmul_flops(size: int = 1024, repeats: int = 7, dtype: DType = "fp32") -> float:
    """This machine's achievable matmul rate in FLOP/s: products of two ``size x size``
    matrices (``2·size³`` FLOPs each, median of ``repeats`` after two warm-ups), the practical
    peak of the roofline and of the benchmarks' MFU (section 5.9)."""
    _check_count("size", size)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    name = canonical_dtype(dtype)
    if name not in torch_dtype:
        raise ValueError(
            f"dtype must be one of {sorted(torch_dtype)} to time a matmul, got {dtype!r}."
        )
    a = torch.randn(size, size, dtype=torch_dtype[name])
    b = torch.randn(size, size, dtype=torch_dtype[name])
    return 2 * size**3 / _median_seconds(lambda: a @ b, repeats, warmup=2)


def measured_hardware(name: str = "this machine", dtype: DType = "fp32") -> Hardware:
    """A :class:`Hardware` row measured here: :func:`measure_matmul_flops` and
    :func:`measure_memory_bandwidth` (section 5.9)."""
    peak = measure_matmul_flops(dtype=dtype)
    return Hardware(
        name, {canonical_dtype(dtype): peak / 1e12}, measure_memory_bandwidth() / 1e9, 0,
        "measured",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Training across devices: ZeRO
# --------------------------------------------------------------------------------------------

#: What each ZeRO stage shards across the data-parallel devices (Rajbhandari et al., 2020);
#: PyTorch's FSDP with full sharding is stage 3 (section 5.10).
ZERO_STAGES: dict[int, str] = {
    0: "DDP: every device holds everything",
    1: "optimizer states sharded",
    2: "+ gradients sharded",
    3: "+ parameters sharded (FSDP full shard)",
}


def zero_memory(memory: TrainingMemory, n_devices: int, stage: int) -> TrainingMemory:
    """Per-device training memory under ZeRO ``stage`` over ``n_devices`` (section 5.10).

    Stage 1 divides the optimizer state (with the fp32 master copy, which the optimizer owns)
    by ``n_devices``, stage 2 also the gradients, stage 3 also the weights. Activations belong
    to each device's own micro-batch and are not divided.
    """
    _check_count("n_devices", n_devices)
    if stage not in ZERO_STAGES:
        raise ValueError(f"stage must be one of {sorted(ZERO_STAGES)}, got {stage!r}.")

    def part(value: int, sharded_from: int) -> int:
        return math.ceil(value / n_devices) if stage >= sharded_from else value

    return TrainingMemory(
        weights=part(memory.weights, 3),
        gradients=part(memory.gradients, 2),
        optimizer=part(memory.optimizer, 1),
        master_weights=part(memory.master_weights, 1),
        activations=memory.activations,
    )


# --------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingCost:
    """GPU-hours and money to execute a compute budget (section 5.11)."""

    flops: float
    gpu_hours: float
    price_per_gpu_hour: float

    @property
    def dollars(self) -> float:
        return self.gpu_hours * self.price_per_gpu_hour


def training_cost(
    flops: float,
    hardware: str | Hardware,
    price_per_gpu_hour: float,
    *,
    mfu: float = 0.4,
    dtype: DType = "bf16",
) -> TrainingCost:
    """What ``flops`` of training cost on ``hardware`` at ``mfu`` x its ``dtype`` peak and
    ``price_per_gpu_hour`` (section 5.11). GPU-hours do not depend on how many devices share
    the work (at a fixed MFU), only the wall-clock time does."""
    if price_per_gpu_hour < 0:
        raise ValueError(f"price_per_gpu_hour must be >= 0, got {price_per_gpu_hour}.")
    peak = get_hardware(hardware).peak_flops(dtype) / 1e12
    return TrainingCost(flops, training_seconds(flops, peak, mfu) / 3600, price_per_gpu_hour)


def affordable_flops(
    dollars: float,
    hardware: str | Hardware,
    price_per_gpu_hour: float,
    *,
    mfu: float = 0.4,
    dtype: DType = "bf16",
) -> float:
    """The training compute ``dollars`` buy: the inverse of :func:`training_cost`
    (section 5.11)."""
    if dollars < 0 or price_per_gpu_hour <= 0:
        raise ValueError(
            f"need dollars >= 0 and price_per_gpu_hour > 0, got {dollars}, {price_per_gpu_hour}."
        )
    peak = get_hardware(hardware).peak_flops(dtype)
    return dollars / price_per_gpu_hour * 3600 * peak * mfu


# --------------------------------------------------------------------------------------------
# Data and loss: Chinchilla
# --------------------------------------------------------------------------------------------

#: Hoffmann et al. (2022): compute-optimal training uses about 20 tokens per parameter.
CHINCHILLA_TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class ChinchillaFit:
    """The parametric loss ``L(N, D) = E + A / N**alpha + B / D**beta`` (nats per token)
    (section 5.6)."""

    E: float = 1.69
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28


#: Hoffmann et al. (2022), "Approach 3" fitted constants.
CHINCHILLA = ChinchillaFit()

#: The same parametric form refitted to Hoffmann et al.'s data (reconstructed from their
#: plots) by Besiroglu et al. (2024, *Chinchilla Scaling: A replication attempt*). Its optimum
#: stays near 20 tokens per parameter across budgets, in line with Hoffmann's Approaches 1 and 2.
#: Both fits count N as all parameters, embeddings included.
CHINCHILLA_REFIT = ChinchillaFit(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)


@dataclass(frozen=True)
class ComputeOptimal:
    """A model size and token count that spend a compute budget (section 5.6)."""

    params: float
    tokens: float
    flops: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


def chinchilla_tokens(
    model: ModelConfig | int, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> float:
    """Compute-optimal training tokens for a model: about 20 per parameter (section 5.6)."""
    return tokens_per_param * _as_count(model)


def chinchilla_optimal(
    compute_flops: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> ComputeOptimal:
    """The N and D that spend ``compute_flops`` with ``C = 6ND`` and ``D = 20N`` (section 5.6).

    Substituting gives ``C = 120 N**2``, so ``N = sqrt(C / 120)``.
    """
    if compute_flops <= 0:
        raise ValueError(f"compute_flops must be positive, got {compute_flops}.")
    params = math.sqrt(compute_flops / (6.0 * tokens_per_param))
    return ComputeOptimal(params, tokens_per_param * params, compute_flops)


def chinchilla_loss(n_params: float, n_tokens: float, fit: ChinchillaFit = CHINCHILLA) -> float:
    """Predicted loss (nats/token) of ``n_params`` trained on ``n_tokens`` (section 5.6).

    Fitted on Chinchilla's data and tokenizer for 70M-16B models: use it for trends and
    ratios, not as a promise for another tokenizer or a 2M-parameter model.
    """
    if n_params <= 0 or n_tokens <= 0:
        raise ValueError(f"n_params and n_tokens must be positive, got {n_params}, {n_tokens}.")
    return fit.E + fit.A / n_params**fit.alpha + fit.B / n_tokens**fit.beta


def loss_optimal(compute_flops: float, fit: ChinchillaFit = CHINCHILLA) -> ComputeOptimal:
    """The N and D minimising :func:`chinchilla_loss` under ``C = 6ND`` (the fit's own optimum)
    (section 5.6).

    Setting the derivative to zero gives ``N = G (C/6)**(beta/(alpha+beta))`` with
    ``G = (alpha A / (beta B))**(1/(alpha+beta))``; it differs from the 20-tokens rule because
    the fit's exponents are not equal.
    """
    if compute_flops <= 0:
        raise ValueError(f"compute_flops must be positive, got {compute_flops}.")
    a, b = fit.alpha, fit.beta
    g = (a * fit.A / (b * fit.B)) ** (1.0 / (a + b))
    params = g * (compute_flops / 6.0) ** (b / (a + b))
    return ComputeOptimal(params, compute_flops / (6.0 * params), compute_flops)


def uniform_loss(vocab_size: int) -> float:
    """Cross-entropy of guessing uniformly over the vocabulary: ``ln V`` (loss at init)
    (section 3.3)."""
    return math.log(vocab_size)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _scaled(value: float, base: float, units: list[str], digits: int) -> tuple[str, str]:
    """``value`` as a number with ``digits`` significant figures and the matching unit."""
    index = 0
    while index + 1 < len(units) and abs(value) >= base ** (index + 1):
        index += 1
    while True:
        scaled = float(f"{value / base**index:.{digits}g}")
        if abs(scaled) >= base and index + 1 < len(units):  # 999.96K rounds up to 1.00M
            index += 1
            continue
        magnitude = math.floor(math.log10(abs(scaled))) if scaled else 0
        return f"{scaled:.{max(0, digits - 1 - magnitude)}f}", units[index]


def format_count(n: float, digits: int = 3) -> str:
    """``2_327_552 -> "2.33M"``: K, M, B, T with ``digits`` significant figures
    (chapter 5's tables, from section 5.2)."""
    if abs(n) < 1000 and float(n).is_integer():
        return str(int(n))
    text, unit = _scaled(n, 1000.0, ["", "K", "M", "B", "T"], digits)
    return f"{text}{unit}"


def format_bytes(n: float, binary: bool = False, digits: int = 3) -> str:
    """``9_310_208 -> "9.31 MB"`` (decimal) or ``"8.88 MiB"`` with ``binary=True``
    (chapter 5's tables, from section 5.2)."""
    if binary:
        units, base = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"], 1024.0
    else:
        units, base = ["B", "kB", "MB", "GB", "TB", "PB"], 1000.0
    if abs(n) < base and float(n).is_integer():
        return f"{int(n)} B"
    text, unit = _scaled(n, base, units, digits)
    return f"{text} {unit}"


def format_flops(flops: float, digits: int = 3) -> str:
    """``1.5e14 -> "150 TFLOP"``; beyond peta, scientific: ``3.15e23 -> "3.15e23 FLOP"``
    (chapter 5's tables, from section 5.2).

    A count of operations; append "/s" yourself for a rate.
    """
    if abs(flops) >= 1e18:
        mantissa, exponent = f"{flops:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(exponent)} FLOP"
    text, unit = _scaled(flops, 1000.0, ["", "K", "M", "G", "T", "P"], digits)
    return f"{text} {unit}FLOP"


def format_duration(seconds: float) -> str:
    """A duration in the largest sensible unit: ``"8.3 s"``, ``"2.5 h"``, ``"12 days"``
    (chapter 5's tables, from section 5.2)."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return (
                f"{seconds / size:.2g} {unit}"
                if seconds / size < 10
                else (f"{seconds / size:.0f} {unit}")
            )
    if seconds >= 1:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds * 1000:.2g} ms"


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizingSummary:
    """Every sizing figure of one configuration (what the widget and the CLI show) (section 5.8)."""

    config: ModelConfig
    batch_size: int
    context_length: int
    dtype: str
    precision: str
    optimizer: str
    breakdown: ParameterBreakdown
    weights: dict[str, int]
    kv_cache: int
    training: TrainingMemory
    training_checkpointed: TrainingMemory
    forward_flops_per_token: int
    training_flops_per_token: int
    chinchilla_tokens: float
    tokens: float | None
    training_flops: float | None
    training_seconds: float | None
    predicted_loss: float | None

    @property
    def parameters(self) -> int:
        return self.breakdown.total

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable numbers."""
        return {
            "name": self.config.name,
            "config": self.config.to_dict(),
            "batch_size": self.batch_size,
            "context_length": self.context_length,
            "dtype": self.dtype,
            "precision": self.precision,
            "optimizer": self.optimizer,
            "parameters": self.parameters,
            "non_embedding_parameters": self.breakdown.non_embedding,
            "breakdown": self.breakdown.as_rows(),
            "weights_bytes": dict(self.weights),
            "kv_cache_bytes": self.kv_cache,
            "training_memory": self.training.as_dict(),
            "training_memory_checkpointed": self.training_checkpointed.as_dict(),
            "forward_flops_per_token": self.forward_flops_per_token,
            "training_flops_per_token": self.training_flops_per_token,
            "chinchilla_tokens": self.chinchilla_tokens,
            "tokens": self.tokens,
            "training_flops": self.training_flops,
            "training_seconds": self.training_seconds,
            "predicted_loss": self.predicted_loss,
        }

    def as_rows(self) -> list[tuple[str, str]]:
        """(label, human-readable value) pairs for a compact table."""
        rows = [
            ("parameters", format_count(self.parameters)),
            (f"weights ({self.dtype})", format_bytes(self.weights[self.dtype])),
            ("weights (int4)", format_bytes(self.weights["int4"])),
            (
                f"KV cache (batch {self.batch_size} x {self.context_length})",
                format_bytes(self.kv_cache),
            ),
            ("training memory", format_bytes(self.training.total)),
            ("  with checkpointing", format_bytes(self.training_checkpointed.total)),
            ("forward FLOPs / token", format_flops(self.forward_flops_per_token)),
            ("Chinchilla tokens (20/param)", format_count(self.chinchilla_tokens)),
        ]
        if self.training_flops is not None and self.tokens is not None:
            rows.append((f"training compute ({format_count(self.tokens)} tokens)",
                         format_flops(self.training_flops)))  # fmt: skip
        if self.training_seconds is not None:
            rows.append(("training time", format_duration(self.training_seconds)))
        if self.predicted_loss is not None:
            rows.append(("Chinchilla-fit loss", f"{self.predicted_loss:.2f} nats"))
        return rows


def _default_precision(dtype: str) -> str:
    """The training recipe that goes with an inference dtype: fp32, or the mixed recipe."""
    return {"fp32": "fp32", "fp16": "fp16-mixed"}.get(dtype, "bf16-mixed")


def summary(
    config: ModelConfig,
    batch_size: int = 1,
    dtype: DType = "fp32",
    context_length: int | None = None,
    *,
    precision: str | None = None,
    optimizer: str = "adamw",
    tokens: float | None = None,
    peak_tflops: float | None = None,
    mfu: float = 0.4,
    n_devices: int = 1,
) -> SizingSummary:
    """All sizing figures for ``config`` at ``batch_size`` x ``context_length`` (section 5.8).

    ``dtype`` is the inference dtype (weights and KV cache). ``precision`` is the training
    recipe, a name of :mod:`tinytrans.precision` (``"fp32"``, ``"bf16-mixed"``,
    ``"fp16-mixed"``, ``"bf16-true"``); by default ``fp32`` for an fp32 ``dtype``, else the
    mixed recipe of that dtype. ``optimizer`` is a key of :data:`OPTIMIZER_STATE_BYTES`.
    Given ``tokens`` it adds the training compute and the Chinchilla-fit loss; given also
    ``peak_tflops`` it adds a training-time estimate.
    """
    dtype_name = canonical_dtype(dtype)
    context = config.context_length if context_length is None else context_length
    recipe = get_precision(precision or _default_precision(dtype_name))
    memory_args: dict[str, Any] = dict(
        config=config,
        batch_size=batch_size,
        context_length=context,
        precision=recipe,
        optimizer=optimizer,
    )
    breakdown = parameter_breakdown(config)
    weights = weight_bytes_table(config)
    weights.setdefault(dtype_name, weight_bytes(config, dtype_name))
    flops = training_flops(config, tokens, context) if tokens is not None else None
    seconds = None
    if flops is not None and peak_tflops is not None:
        seconds = training_seconds(flops, peak_tflops, mfu, n_devices)
    return SizingSummary(
        config=config,
        batch_size=batch_size,
        context_length=context,
        dtype=dtype_name,
        precision=recipe.name,
        optimizer=optimizer,
        breakdown=breakdown,
        weights=weights,
        kv_cache=kv_cache_bytes(config, batch_size, context, dtype_name),
        training=training_memory(**memory_args),
        training_checkpointed=training_memory(**memory_args, checkpointing=True),
        forward_flops_per_token=forward_flops_per_token(config, context),
        training_flops_per_token=training_flops_per_token(config, context),
        chinchilla_tokens=chinchilla_tokens(breakdown.total),
        tokens=tokens,
        training_flops=flops,
        training_seconds=seconds,
        predicted_loss=chinchilla_loss(breakdown.total, tokens) if tokens else None,
    )
