"""A configurable decoder-only transformer: one dataclass, small named modules, one forward path.

``ModelConfig`` describes every architecture the course discusses (the seed TinyTransformer,
GPT-2, Pythia, Llama, MobileLLM and the course model) by a handful of switches; ``TinyTransformer``
builds it from small modules whose names map one-to-one to the papers:

    tok_emb -> [pos_emb] -> blocks[i] = (attn_norm, attn, ffn_norm, ffn) -> [final_norm] -> lm_head

Shapes in comments use B = batch, T = new tokens, S = all key positions (cache + new),
C = d_model, H = query heads, K = key/value heads, D = head dimension, V = vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from tinytrans.config import (
    ACTIVATION_CHOICES,
    NORM_CHOICES,
    PLACEMENT_CHOICES,
    POSITIONAL_CHOICES,
    PRESETS,
    RENAMED_PRESETS,
    ModelConfig,
    preset_names,
)

__all__ = [
    "ACTIVATION_CHOICES",
    "NORM_CHOICES",
    "PLACEMENT_CHOICES",
    "POSITIONAL_CHOICES",
    "PRESETS",
    "RENAMED_PRESETS",
    "AttentionCapture",
    "CausalSelfAttention",
    "FeedForward",
    "KVCache",
    "ModelConfig",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositions",
    "TinyTransformer",
    "TransformerBlock",
    "apply_rotary",
    "build_model",
    "causal_mask",
    "eval_mode",
    "make_norm",
    "preset_names",
    "rotate_half",
    "sinusoidal_table",
    "validate_ids",
]

# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


_FUSED_RMS_NORM = hasattr(F, "rms_norm")


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): rescale only, no centring, no bias (section 1.9)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and _FUSED_RMS_NORM:
            # The same formula, fused where torch has a kernel for it (torch >= 2.4). On a CPU
            # under autograd it still runs element-wise, no faster (chapter 6, exercise 4).
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Normalise in float32 for stability under bf16/fp16 autocast.
        rms = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (x.float() * rms).type_as(x) * self.weight


def make_norm(config: ModelConfig) -> nn.Module:
    """LayerNorm (scale and bias) or RMSNorm (scale only), as the config says (section 1.9)."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of Vaswani et al. (2017): (length, dim) (section 1.6)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class SinusoidalPositions(nn.Module):
    """Adds the fixed sinusoidal table; no parameters, works for any position < max_len (section 1.6)."""

    table: torch.Tensor

    def __init__(self, context_length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(context_length, dim), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021): rotate query/key pairs by position x freq
    (section 1.6).

    Uses the "rotate half" pairing (dimension i with i + D/2), as Llama and GPT-NeoX do.
    """

    inv_freq: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, context_length: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache_len = 0
        self._build(context_length)

    def _build(self, length: int) -> None:
        steps = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(steps, self.inv_freq.float())
        angles = torch.cat([angles, angles], dim=-1)  # (length, D)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self._cache_len = length

    def forward(
        self, positions: torch.Tensor, length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for ``positions`` (T,) or (B, T), shaped to broadcast over heads (section 1.6).

        ``length``: a bound, known on the host, with every position ``< length``; the tables
        grow to it (doubling) when they are too short. The model passes its sequence length,
        so the hot path never reads a position back from the device. Without it the bound is
        read from ``positions`` (one device-to-host sync), for standalone use.
        """
        if length is None:
            length = int(positions.max()) + 1 if positions.numel() else 0
        if length > self._cache_len:
            self._build(max(length, 2 * self._cache_len))
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D) or (B, T, D)
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
        return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(a, b) -> (-b, a)`` on the two halves of the last dimension (section 1.6)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, T, D) queries or keys by their positions' angles (section 1.6)."""
    return (x * cos + rotate_half(x) * sin).type_as(x)


class KVCache:
    """Preallocated keys and values for incremental decoding (section 4.6).

    ``keys[i]``/``values[i]`` are (B, K, max_len, D) for layer i; ``length`` counts the positions
    filled so far. The model writes new keys at ``[length, length + T)`` in every layer and then
    advances ``length`` once.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.max_len = max_len or config.context_length
        shape = (batch_size, config.kv_heads, self.max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)
        ]
        self.length = 0

    @property
    def batch_size(self) -> int:
        """Sequences the cache holds (section 4.6)."""
        return self.keys[0].shape[0]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, K, T, D) new keys/values for ``layer``; return all keys/values so far (section 4.6)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} cached + {k.shape[2]} new > max_len "
                f"{self.max_len}. Create the cache with a larger max_len or crop the context."
            )
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Count ``n`` more filled positions, once per forward pass (section 4.6)."""
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search, section 4.4; finished requests, section 4.7)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]

    def crop(self, length: int) -> None:
        """Forget positions >= ``length`` (speculative decoding rolls back rejected drafts,
        section 4.8)."""
        self.length = min(self.length, length)

    def nbytes(self) -> int:
        """Bytes of every key and value tensor (section 4.6)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with grouped key/value heads (MHA, GQA or MQA; sections 1.4
    and 1.7).

    Two paths compute the same thing: ``F.scaled_dot_product_attention`` for speed, and an
    explicit ``softmax(QK^T / sqrt(D) + mask) V`` that can hand back the attention weights.
    """

    def __init__(self, config: ModelConfig, layer_index: int = 0) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.kv_heads,
            config.head_dim,
        )
        kv_dim = self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.k_proj = nn.Linear(config.d_model, kv_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.d_model, kv_dim, bias=config.bias)
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        capture: list[dict[str, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B,H,T,D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B,K,T,D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B,K,T,D)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B,K,S,D)
        if self.n_kv_heads != self.n_heads:  # share each K/V head among H/K query heads
            repeat = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(repeat, dim=1)  # (B,H,S,D)
            v = v.repeat_interleave(repeat, dim=1)
        if capture is not None:
            y = self._explicit(q, k, v, mask, capture)
        else:
            dropout = self.dropout if self.training else 0.0
            if mask is None:  # no cache, no padding: the fused causal kernel
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B,T,C)
        return self.resid_dropout(self.o_proj(y))

    def _explicit(self, q, k, v, mask, capture) -> torch.Tensor:
        T, S = q.shape[2], k.shape[2]
        if mask is None:
            mask = causal_mask(T, S, device=q.device)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B,H,T,S)
        masked = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(masked.float(), dim=-1).type_as(q)
        weights = torch.nan_to_num(weights)  # fully padded rows
        capture.append({"scores": scores.detach(), "weights": weights.detach()})
        return weights @ v  # (B,H,T,D)


def causal_mask(
    T: int, S: int, past: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (T, S) mask, True where query t (at absolute position past + t) may see key s (section 1.5)."""
    past = S - T if past is None else past
    rows = torch.arange(T, device=device)[:, None] + past
    cols = torch.arange(S, device=device)[None, :]
    return cols <= rows


class FeedForward(nn.Module):
    """Position-wise MLP: down(act(up(x))), or SwiGLU's down(silu(gate(x)) * up(x)) (section 1.8).

    ``gelu`` is GPT-2's tanh approximation (what its weights were trained with); ``gelu_exact``
    is the erf form of ``nn.GELU()`` (BERT, nanoGPT), about 2.5x cheaper on an AVX2 CPU.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.activation = config.activation
        if config.activation == "swiglu":
            self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)
        elif self.activation == "gelu":
            hidden = F.gelu(self.up_proj(x), approximate="tanh")
        elif self.activation == "gelu_exact":
            hidden = F.gelu(self.up_proj(x))
        else:
            hidden = F.relu(self.up_proj(x))
        return self.dropout(self.down_proj(hidden))


class TransformerBlock(nn.Module):
    """Attention then feed-forward, each in a residual branch with its norm before (pre-norm,
    GPT-2/Llama) or after the residual sum (post-norm, the original Transformer;
    section 1.10)."""

    def __init__(self, config: ModelConfig, layer_index: int = 0) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attn_norm = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ffn_norm = make_norm(config)
        self.ffn = FeedForward(config)

    def forward(self, x, rope=None, mask=None, cache=None, capture=None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.attn_norm(x), rope, mask, cache, capture)
            return x + self.ffn(self.ffn_norm(x))
        x = self.attn_norm(x + self.attn(x, rope, mask, cache, capture))
        return self.ffn_norm(x + self.ffn(x))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass
class AttentionCapture:
    """What :meth:`TinyTransformer.attention_maps` returns: per-layer (B, H, T, T) tensors (section 1.15)."""

    logits: torch.Tensor
    weights: list[torch.Tensor]
    scores: list[torch.Tensor]


class TinyTransformer(nn.Module):
    """A decoder-only language model built from a :class:`ModelConfig` (section 1.12)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb: nn.Module
        if config.positional == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        elif config.positional == "sinusoidal":
            self.pos_emb = SinusoidalPositions(config.context_length, config.d_model)
        if config.positional == "rope":
            self.rope = RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        # Post-norm blocks already end in a norm; pre-norm needs one before the head.
        self.final_norm = make_norm(config) if config.norm_placement == "pre" else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * layers).
        residual_std = 0.02 / math.sqrt(2 * config.n_layers)
        for block in cast(Iterable[TransformerBlock], self.blocks):
            nn.init.normal_(block.attn.o_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.ffn.down_proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- bookkeeping --------------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique trainable numbers (a tied head counts once; section 1.11)."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.tok_emb.weight.numel()
            if self.config.positional == "learned":
                total -= sum(p.numel() for p in self.pos_emb.parameters())
        return total

    @property
    def device(self) -> torch.device:
        """The device of the weights."""
        return self.tok_emb.weight.device

    def new_cache(
        self, batch_size: int = 1, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty :class:`KVCache` on the model's device for incremental decoding (section 4.6)."""
        return KVCache(
            self.config, batch_size, max_len, self.device, dtype or self.tok_emb.weight.dtype
        )

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        capture: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token ids ``idx`` (B, T) and, given targets, the mean loss
        (section 1.12).

        ``cache``: decode incrementally; ``idx`` holds only the new tokens, positions continue
        from ``cache.length``. ``attention_mask``: (B, S) with 1 for real tokens and 0 for
        padding, S = cached + new positions (left padding for batched prompts).
        ``position_ids``: (B, T) or (T,) absolute positions, by default counted from the cache.
        Targets equal to -100 are ignored by the loss.

        Only shapes and dtypes are checked here: checking token values would read the device
        back on every call (a sync on a GPU, a graph break under ``torch.compile``). Ids are
        checked where they enter (prompts, datasets, :meth:`validate_inputs`, :func:`validate_ids`).
        """
        self._check_input(idx, targets, cache)
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=idx.device)  # (T,)
        else:
            self._check_positions(position_ids, B, T)
        mask = self._attention_mask(B, T, past, attention_mask, idx.device, cache)

        x = self.tok_emb(idx)  # (B,T,C)
        if self.config.positional in ("learned", "sinusoidal"):
            x = x + self.pos_emb(position_ids)
        # Every position is < past + T (default positions count from the cache; batched
        # callers count real tokens only), a bound known here without reading the device.
        rope = self.rope(position_ids, past + T) if self.config.positional == "rope" else None
        x = self.drop(x)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(
                    block, x, rope, mask, None, capture, use_reentrant=False
                )
            else:
                x = block(x, rope, mask, cache, capture)
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.final_norm(x))  # (B,T,V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
            )
        return logits, loss

    def attention_maps(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> AttentionCapture:
        """Run the explicit attention path and return every layer's weights and raw scores (section 1.15)."""
        capture: list[dict[str, torch.Tensor]] = []
        with torch.no_grad():
            logits, _ = self(idx, attention_mask=attention_mask, capture=capture)
        return AttentionCapture(
            logits=logits,
            weights=[c["weights"] for c in capture],
            scores=[c["scores"] for c in capture],
        )

    def validate_inputs(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> None:
        """Check the *values* :meth:`forward` trusts, once, where they enter (section 1.12).

        Token ids and targets must lie in ``[0, vocab_size)`` (targets may be -100, ignored),
        position ids must be ``>= 0`` and, for learned or sinusoidal tables, ``< context_length``.
        Each check reads the device back once; call it on data you did not make with the
        model's own tokenizer, not inside a decoding or training loop.
        """
        vocab = self.config.vocab_size
        validate_ids(idx, vocab, hint="Is the tokenizer's vocab_size equal to the model's?")
        if targets is not None:
            validate_ids(targets, vocab, name="targets", ignore_index=-100)
        if position_ids is not None:
            tables = self.config.positional in ("learned", "sinusoidal")
            limit = self.config.context_length if tables else None
            validate_ids(position_ids, limit, name="position_ids")

    def _attention_mask(self, B, T, past, attention_mask, device, cache) -> torch.Tensor | None:
        """Boolean (B or 1, 1, T, S) mask, or None when the fused causal kernel suffices."""
        S = past + T
        if attention_mask is None:
            if past == 0:
                return None  # plain causal
            if T == 1:
                return torch.ones(1, 1, 1, S, dtype=torch.bool, device=device)
            return causal_mask(T, S, past, device)[None, None]
        if attention_mask.shape != (B, S):
            raise ValueError(
                f"attention_mask must be (batch, cached + new) = ({B}, {S}), "
                f"got {tuple(attention_mask.shape)}."
            )
        keep = attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]  # (B,1,1,S)
        mask = causal_mask(T, S, past, device)[None, None] & keep  # (B,1,T,S)
        # A query that is itself padding would see nothing; let it see itself to avoid NaNs.
        diagonal = torch.zeros_like(mask)
        steps = torch.arange(T, device=device)  # on the device: no host-to-device index copy
        diagonal[..., steps, past + steps] = True
        return mask | (diagonal & ~keep[..., past:].transpose(-1, -2))

    def _check_input(self, idx, targets, cache) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            raise ValueError("idx must be a (batch, time) tensor of token ids.")
        if idx.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int64):
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}.")
        total = idx.shape[1] + (cache.length if cache is not None else 0)
        if (
            self.config.positional in ("learned", "sinusoidal")
            and total > self.config.context_length
        ):
            raise ValueError(
                f"sequence of {total} tokens exceeds context_length "
                f"{self.config.context_length} ({self.config.positional} positions have no "
                f"entry beyond it); crop the input to the last {self.config.context_length} tokens."
            )
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}."
            )
        if targets is not None and (targets.dtype.is_floating_point or targets.dtype == torch.bool):
            raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}.")
        if cache is not None and cache.batch_size != idx.shape[0]:
            raise ValueError(
                f"the KV cache holds {cache.batch_size} sequences but idx has {idx.shape[0]}; "
                f"create it with model.new_cache(batch_size={idx.shape[0]})."
            )

    def _check_positions(self, position_ids: torch.Tensor, B: int, T: int) -> None:
        if not isinstance(position_ids, torch.Tensor) or position_ids.dtype.is_floating_point:
            raise ValueError("position_ids must be an integer tensor of shape (T,) or (B, T).")
        if tuple(position_ids.shape) not in ((T,), (B, T), (1, T)):
            raise ValueError(
                f"position_ids must have shape ({T},) or ({B}, {T}), got {tuple(position_ids.shape)}."
            )


def validate_ids(
    ids: torch.Tensor | Sequence[int],
    vocab_size: int | None,
    *,
    name: str = "token ids",
    ignore_index: int | None = None,
    hint: str = "",
) -> None:
    """Raise one clear ``ValueError`` if any of ``ids`` lies outside ``[0, vocab_size)`` (section 1.3).

    An embedding lookup is a row index, so an id outside the table is a crash on the CPU and
    a device-side assert on a GPU. :meth:`TinyTransformer.forward` does not check (that would
    be a host sync per call); check once where ids enter with this function.
    ``vocab_size=None`` checks only ``>= 0``; ``ignore_index`` values are skipped.
    """
    values = torch.as_tensor(ids)
    if not values.numel():
        return
    if values.dtype.is_floating_point or values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}.")
    if ignore_index is not None:
        values = values[values != ignore_index]
    if not values.numel():
        return
    low, high = int(values.min()), int(values.max())
    if low >= 0 and (vocab_size is None or high < vocab_size):
        return
    allowed = ">= 0" if vocab_size is None else f"in [0, {vocab_size})"
    ignored = f" or {ignore_index} (ignored)" if ignore_index is not None else ""
    raise ValueError(
        f"{name} must be {allowed}{ignored}; got range [{low}, {high}]. {hint}".rstrip()
    )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block in eval mode (dropout off) and restore the model's previous mode after it,
    even when the block raises. Evaluation, sampling and generation all use it (section 3.5)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def build_model(config: ModelConfig | str, **overrides: Any) -> TinyTransformer:
    """A model from a config or a preset name (with optional overrides; section 1.12)."""
    if isinstance(config, str):
        config = ModelConfig.preset(config, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return TinyTransformer(config)
