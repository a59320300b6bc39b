"""Tests for tinytrans.sizing.

Every analytic formula is checked against something independent: the parameters of the built
model, Hugging Face ``transformers`` models of the same architecture, the bytes PyTorch saves
for backward, torch's FLOP counter, and hand derivations. Every figure the seeds compute by
hand is reproduced; where a seed is wrong the test pins the correct figure and says, in a
comment, what the seed claimed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from tinytrans import sizing as S
from tinytrans.evaluate import perplexity_from_loss
from tinytrans.model import (
    ACTIVATION_CHOICES,
    NORM_CHOICES,
    PLACEMENT_CHOICES,
    POSITIONAL_CHOICES,
    ModelConfig,
    TinyTransformer,
    preset_names,
)
from tinytrans.precision import Precision

pytestmark = pytest.mark.usefixtures("one_thread")


def numel(config: ModelConfig) -> int:
    """Parameters of the built model, allocated on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = TinyTransformer(config)
    return sum(p.numel() for p in model.parameters())


def module_numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------


@st.composite
def configs(draw) -> ModelConfig:
    n_heads = draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([2, 4, 6]))
    return ModelConfig(
        vocab_size=draw(st.integers(1, 40)),
        context_length=draw(st.integers(1, 12)),
        d_model=n_heads * head_dim,
        n_layers=draw(st.integers(1, 3)),
        n_heads=n_heads,
        n_kv_heads=draw(st.sampled_from([None] + [k for k in (1, 2, 4) if n_heads % k == 0])),
        d_ff=draw(st.integers(1, 20)),
        positional=draw(st.sampled_from(POSITIONAL_CHOICES)),
        norm=draw(st.sampled_from(NORM_CHOICES)),
        norm_placement=draw(st.sampled_from(PLACEMENT_CHOICES)),
        activation=draw(st.sampled_from(ACTIVATION_CHOICES)),
        bias=draw(st.booleans()),
        tie_embeddings=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(configs())
def test_count_equals_built_model_for_random_configs(config):
    with torch.device("meta"):
        model = TinyTransformer(config)
    b = S.parameter_breakdown(config)
    assert S.count_parameters(config) == b.total == sum(p.numel() for p in model.parameters())
    # ... and every component matches the module it describes.
    assert b.token_embedding == model.tok_emb.weight.numel()
    assert b.position_embedding == (module_numel(model.pos_emb) if hasattr(model, "pos_emb") else 0)
    assert b.attention_total == sum(module_numel(block.attn) for block in model.blocks)
    assert b.ffn_total == sum(module_numel(block.ffn) for block in model.blocks)
    norms = sum(module_numel(blk.attn_norm) + module_numel(blk.ffn_norm) for blk in model.blocks)
    assert b.norms_total == norms
    assert b.final_norm == module_numel(model.final_norm)
    assert b.head == (0 if config.tie_embeddings else model.lm_head.weight.numel())
    assert b.head_tied == (model.lm_head.weight is model.tok_emb.weight)
    assert sum(b.layer_detail.values()) == b.per_layer
    for name, count in b.layer_detail.items():
        block = model.blocks[0]
        module = (
            getattr(block, name, None)
            or getattr(block.attn, name, None)
            or getattr(block.ffn, name)
        )
        assert module_numel(module) == count, name
    # The rows of the table add up to the total.
    rows = b.as_rows()
    assert sum(r["count"] for r in rows[:-1]) == rows[-1]["count"] == b.total
    assert S.count_parameters(config, non_embedding=True) == model.num_parameters(True)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_count_equals_numel(name):
    config = ModelConfig.preset(name)
    assert S.count_parameters(config) == numel(config)


EXPECTED_PRESET_COUNTS = {
    "tiny-postnorm": 2_327_552,  # seed 004 sums to this, then calls it "2.45M"; seed 000 says 2.5M
    "nano-trickster": 5_180_672,  # seed 001 claims ~11M
    "llama-40m": 35_763_840,  # seed 003 agrees
    "gpt2-small": 124_439_808,  # seed 000 uses the GPT-2 paper's 117M
    "pythia-70m": 70_426_624,
    "mobilellm-125m": 124_635_456,
    "tinyllama-1.1b": 1_100_048_384,
    "llama2-7b": 6_738_415_616,
}


@pytest.mark.parametrize("name,expected", EXPECTED_PRESET_COUNTS.items())
def test_published_counts(name, expected):
    assert S.count_parameters(ModelConfig.preset(name)) == expected


def _hf_models():
    transformers = pytest.importorskip(
        "transformers", reason="transformers is a test-only dependency (pip install tinytrans[hf])"
    )
    llama = dict(rms_norm_eps=1e-5, hidden_act="silu")
    return {
        "gpt2-small": (transformers.GPT2LMHeadModel, transformers.GPT2Config()),
        "pythia-70m": (
            transformers.GPTNeoXForCausalLM,
            transformers.GPTNeoXConfig(
                vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25,
                use_parallel_residual=True, tie_word_embeddings=False,
            ),
        ),
        "tinyllama-1.1b": (
            transformers.LlamaForCausalLM,
            transformers.LlamaConfig(
                vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                tie_word_embeddings=False, **llama,
            ),
        ),
        "llama2-7b": (
            transformers.LlamaForCausalLM,
            transformers.LlamaConfig(
                vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                tie_word_embeddings=False, **llama,
            ),
        ),
        "mobilellm-125m": (
            transformers.LlamaForCausalLM,
            transformers.LlamaConfig(
                vocab_size=32000, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                tie_word_embeddings=True, **llama,
            ),
        ),
    }  # fmt: skip


def test_counts_equal_hugging_face_transformers():
    for name, (model_class, hf_config) in _hf_models().items():
        with torch.device("meta"):
            model = model_class(hf_config)
        hf_count = sum(p.numel() for p in model.parameters())
        assert S.count_parameters(ModelConfig.preset(name)) == hf_count, name


def test_seed_004_breakdown_by_hand():
    """Seed 004, "Parameter Count Calculation", line by line."""
    b = S.parameter_breakdown(ModelConfig.preset("tiny-postnorm"))
    assert b.token_embedding == 8_000 * 128 == 1_024_000
    assert b.position_embedding == 128 * 128 == 16_384
    assert b.layer_detail["q_proj"] + b.layer_detail["k_proj"] + b.layer_detail["v_proj"] == 49_152
    assert b.layer_detail["o_proj"] == 16_384
    assert b.attention == 65_536
    assert b.ffn == 32_768 + 32_768
    assert b.norms == 2 * (128 * 2) == 512
    assert b.per_layer == 131_584
    assert b.blocks == 263_168
    assert b.head == 1_024_000 and not b.head_tied
    assert b.final_norm == 0  # post-norm: the blocks end in a norm already
    # Seed 004: "= 2,327,552 ≈ 2.45M params" -- the sum is right, the rounding is not.
    assert b.total == 2_327_552
    assert S.format_count(b.total) == "2.33M"


def test_seed_000_component_table():
    b = S.parameter_breakdown(ModelConfig.preset("tiny-postnorm"))
    assert b.attention == 4 * 128**2 == 65_536  # seed: "66K", right
    # Seed 000 claims "FFN per layer: 2 x d_model x dim_ff = 132K"; 2 x 128 x 256 is 65,536.
    assert b.ffn == 2 * 128 * 256 == 65_536
    # Seed 000's GPT-3 column: attention "48M" and FFN "100M" per layer, embeddings "12.8B".
    g3 = S.parameter_breakdown(ModelConfig.preset("gpt3-175b"))
    assert g3.attention == 4 * 12288**2 + 4 * 12288 == 604_028_928
    assert g3.ffn == 2 * 12288 * 49152 + 49152 + 12288 == 1_208_020_992
    assert g3.token_embedding == 50257 * 12288 == 617_558_016
    assert g3.total == 174_604_259_328  # "175B": right


def test_seed_001_attention_and_tinyllama():
    nano = S.parameter_breakdown(ModelConfig.preset("nano-trickster"))
    # Seed 001: "3 x 256 x 256 = 196K parameters per attention head" and "8 heads x 196K =
    # 1.57M per attention layer". Heads split d_model: the whole layer has 4 x 256^2.
    assert nano.attention == 4 * 256**2 == 262_144
    assert (
        nano.attention
        == S.parameter_breakdown(ModelConfig.preset("nano-trickster", n_heads=1)).attention
    )  # independent of the head count
    # Seed 001: TinyLlama "attention ~16.8M, FFN ~23.1M, norms ~4K, ~40M per block".
    tl = S.parameter_breakdown(ModelConfig.preset("tinyllama-1.1b"))
    assert tl.attention == 2 * 2048**2 + 2 * 2048 * 256 == 9_437_184  # GQA: 4 K/V heads of 64
    assert tl.ffn == 3 * 2048 * 5632 == 34_603_008  # SwiGLU: three matrices
    assert tl.norms == 4_096
    assert tl.per_layer == 44_044_288
    assert tl.blocks == 968_974_336  # seed: "22 x 40M = 880M"
    assert tl.head == 65_536_000  # seed: "weight-tied"; TinyLlama is not tied
    assert tl.total == 1_100_048_384  # "~1.1B": right
    # Seed 001: nano-trickster "~1.8M per block", "~11M total".
    assert nano.per_layer == 852_480
    assert nano.total == 5_180_672


def test_seed_003_forty_million_design():
    b = S.parameter_breakdown(ModelConfig.preset("llama-40m"))
    assert b.token_embedding == 50_257 * 320 == 16_082_240
    assert b.attention == 4 * 320 * 320 == 409_600
    assert b.ffn == 3 * 320 * 854 == 819_840
    assert b.norms == 640
    assert b.per_layer == 1_230_080
    assert b.blocks == 19_681_280
    assert b.final_norm == 320
    assert b.total == 35_763_840  # the seed's sum is right
    # Its options B (deeper) and C (classic), presets "llama-40m-deep" and "classic-40m-wide":
    assert S.count_parameters(ModelConfig.preset("llama-40m-deep")) == 31_740_416  # seed: ~31.8M
    assert S.count_parameters(ModelConfig.preset("classic-40m-wide")) == 33_467_520  # "~33.5M"


def test_width_for_budget_finds_the_equal_parameter_shapes():
    design = ModelConfig.preset("llama-40m")
    budget = S.count_parameters(design)
    # Seed 003's own design is the 16-layer member of its family.
    same = S.width_for_budget(design, 16, budget)
    assert (same.d_model, same.n_heads, same.d_ff) == (320, 5, 854)
    assert S.count_parameters(same) == budget
    for depth in (4, 8, 24, 48):
        shape = S.width_for_budget(design, depth, budget, head_dim=32)
        count = S.count_parameters(shape)
        assert shape.n_layers == depth and shape.d_model % 32 == 0
        for neighbour in (shape.d_model - 32, shape.d_model + 32):  # no closer width exists
            other = S.width_for_budget(design, depth, budget, head_dim=32).replace(
                d_model=neighbour, n_heads=neighbour // 32, d_ff=round(854 / 320 * neighbour)
            )
            assert abs(count - budget) <= abs(S.count_parameters(other) - budget)
    # Grouped-query attention keeps its query heads per key/value head.
    mobile = S.width_for_budget(ModelConfig.preset("mobilellm-125m"), 12, 124_635_456)
    assert mobile.n_heads == 3 * mobile.kv_heads
    with pytest.raises(ValueError, match="n_layers"):
        S.width_for_budget(design, 0, budget)


def test_breakdown_rows_and_shares():
    b = S.parameter_breakdown(ModelConfig.preset("tinyllama-1.1b"))
    rows = {r["component"]: r for r in b.as_rows()}
    assert rows["attention"]["per_layer"] == 9_437_184
    assert rows["total"]["share"] == 1.0
    assert b.share(b.ffn_total) == pytest.approx(0.692, abs=1e-3)  # seed 001: "~70%"
    tied = S.parameter_breakdown(ModelConfig.preset("gpt2-small"))
    assert "tied" in {r["component"]: r for r in tied.as_rows()}["output head"]["note"]


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def test_dtype_table_and_errors():
    assert [S.dtype_bytes(d) for d in ("fp32", "bf16", "fp16", "int8", "int4")] == [4, 2, 2, 1, 0.5]
    assert S.dtype_bytes(torch.bfloat16) == 2 and S.dtype_bytes("float32") == 4
    assert S.canonical_dtype(torch.float16) == "fp16"
    with pytest.raises(ValueError, match="bf16"):
        S.dtype_bytes("fp12")


def test_weight_bytes():
    tiny = ModelConfig.preset("tiny-postnorm")
    # Seed 004: "2,327,552 params x 4 bytes/param = 9,310,208 bytes ≈ 9.3 MB" (right).
    assert S.weight_bytes(tiny) == 9_310_208
    assert S.format_bytes(9_310_208) == "9.31 MB"
    # Seed 004 prints num_params * 4 / 1024**2 as "~9.3 MB"; that is 8.88 MiB.
    assert S.format_bytes(9_310_208, binary=True) == "8.88 MiB"
    assert S.weight_bytes_table(tiny) == {
        "fp32": 9_310_208, "bf16": 4_655_104, "int8": 2_327_552, "int4": 1_163_776,
    }  # fmt: skip
    # Group-wise int4: one fp16 scale per 64 weights adds 1/32 byte per weight.
    assert S.weight_bytes(6_400, "int4", group_size=64) == 3_200 + 200
    # Seed 001: "1.1B params = 2.2GB" in bf16.
    assert S.weight_bytes(ModelConfig.preset("tinyllama-1.1b"), "bf16") == 2_200_096_768
    with pytest.raises(ValueError, match="count"):
        S.weight_bytes(-5)


def test_kv_cache_bytes_match_the_model_cache():
    for overrides in (dict(), dict(n_kv_heads=2), dict(n_kv_heads=1)):
        config = ModelConfig(vocab_size=10, context_length=32, d_model=16, n_heads=4, **overrides)
        cache = TinyTransformer(config).new_cache(batch_size=3, max_len=20)
        assert S.kv_cache_bytes(config, 3, 20, "fp32") == cache.nbytes()
    # By hand: 2 x batch x context x layers x kv_heads x head_dim x bytes.
    assert (
        S.kv_cache_bytes(ModelConfig.preset("llama2-7b"), 1, 4096, "bf16")
        == 2 * 4096 * 32 * 32 * 128 * 2
    )  # 2 GiB
    assert S.kv_cache_bytes(ModelConfig.preset("tinyllama-1.1b"), 1, 2048, "bf16") == 46_137_344
    # Seed 000: "KV-cache: ~100 MB" for 1000 tokens of the TinyTransformer; it is 2.05 MB.
    assert S.kv_cache_bytes(ModelConfig.preset("tiny-postnorm"), 1, 1000) == 2_048_000
    # Seed 000: "MQA: -50% KV cache"; with 4 heads MQA keeps a quarter.
    tiny = ModelConfig.preset("tiny-postnorm")
    assert S.kv_cache_bytes(tiny.replace(n_kv_heads=1)) * 4 == S.kv_cache_bytes(tiny)


def test_attention_matrix_bytes_match_the_model():
    config = ModelConfig(vocab_size=10, context_length=32, d_model=16, n_heads=4)
    weights = (
        TinyTransformer(config).attention_maps(torch.zeros(3, 20, dtype=torch.long)).weights[0]
    )
    assert S.attention_matrix_bytes(config, 3, 20) == weights.numel() * weights.element_size()
    # Seed 004: "Attention scores: 32 x 4 heads x 128 x 128 x 4 bytes = 1 MB"; it is 8 MiB.
    assert S.attention_matrix_bytes(ModelConfig.preset("tiny-postnorm"), 32, 128) == 8 * 2**20


def _saved_activation_bytes(config: ModelConfig, batch: int, length: int, checkpointing=False):
    """Bytes of the tensors autograd saves in one training forward, plus the returned logits."""
    return S.measured_activation_bytes(config, batch, length, checkpointing=checkpointing)


def test_measured_activation_bytes_restores_the_model():
    config = ModelConfig(**ACTIVATION_BASE)
    model = TinyTransformer(config).eval()
    measured = S.measured_activation_bytes(model, 2, 16)
    assert not model.training and not model.gradient_checkpointing
    assert measured == S.measured_activation_bytes(config, 2, 16)
    assert S.measured_activation_bytes(model, 2, 16, checkpointing=True) < measured
    # The logits alone: 2 x 16 x vocab x 4 bytes are part of the count.
    assert measured > 2 * 16 * config.vocab_size * 4


ACTIVATION_BASE = dict(
    vocab_size=64, context_length=32, d_model=64, n_layers=2, n_heads=4, d_ff=256
)


@pytest.mark.parametrize(
    "overrides,tolerance",
    [
        (dict(norm="layernorm", activation="gelu", positional="learned"), 0.05),
        (dict(norm="layernorm", activation="relu", positional="rope", n_kv_heads=2), 0.05),
        (dict(norm="layernorm", activation="swiglu", norm_placement="post"), 0.05),
        # The model's RMSNorm keeps one extra (tokens x d_model) tensor per norm.
        (dict(norm="rmsnorm", activation="swiglu", positional="rope"), 0.15),
    ],
)
def test_activation_estimate_matches_what_autograd_saves(overrides, tolerance):
    config = ModelConfig(**{**ACTIVATION_BASE, **overrides})
    estimate = S.activation_bytes(config, 4, 32)
    assert estimate == pytest.approx(_saved_activation_bytes(config, 4, 32), rel=tolerance)
    # Checkpointing saves only block inputs in forward, then recomputes one block at a time.
    saved = _saved_activation_bytes(config, 4, 32, checkpointing=True)
    recomputed = S.layer_activation_bytes(config, 4, 32)
    checkpointed = S.activation_bytes(config, 4, 32, checkpointing=True)
    assert checkpointed == pytest.approx(saved + recomputed, rel=tolerance)
    assert checkpointed < estimate


def test_activation_formula_reduces_to_korthikanti():
    """Korthikanti et al. (2022): sbh(34 + 5as/h) bytes per GPT layer in 16-bit with dropout."""
    s, b, h, a = 2048, 4, 1024, 16
    gpt = ModelConfig(
        vocab_size=100, context_length=s, d_model=h, n_heads=a, d_ff=4 * h, dropout=0.1
    )
    per_layer = S.layer_activation_bytes(gpt, b, s, "bf16", fused_attention=False)
    assert per_layer == s * b * h * (34 + 5 * a * s / h)
    # Without dropout and with fused attention, the s^2 term disappears.
    fused = S.layer_activation_bytes(gpt.replace(dropout=0.0), b, s, "bf16")
    assert fused == 32 * s * b * h + 4 * a * s * b


def test_training_memory_recipes():
    config = ModelConfig.preset("tinyllama-1.1b")
    n = S.count_parameters(config)
    fp32 = S.training_memory(config, 1, 16, "fp32")
    mixed = S.training_memory(config, 1, 16, "bf16-mixed")
    pure = S.training_memory(config, 1, 16, "bf16-true")
    megatron = Precision("megatron", "bf16", "bf16", True, False, False, "bf16 + fp32 master")
    layout = S.training_memory(config, 1, 16, megatron)
    assert fp32.states == mixed.states == layout.states == 16 * n
    assert pure.states == 12 * n
    # bf16-mixed is what the Trainer runs: fp32 weights and gradients, no separate master copy,
    # activations in bf16 (the matmuls' dtype).
    assert (mixed.weights, mixed.gradients, mixed.master_weights) == (4 * n, 4 * n, 0)
    assert (layout.weights, layout.master_weights) == (2 * n, 4 * n)
    assert mixed.activations == pure.activations == S.activation_bytes(config, 1, 16, "bf16")
    assert fp32.activations == S.activation_bytes(config, 1, 16, "fp32")
    # The older names mean the mixed recipes, as everywhere else.
    assert (
        S.training_memory(config, 1, 16, "bf16")
        == S.training_memory(config, 1, 16, "mixed")
        == mixed
    )
    with pytest.raises(ValueError, match="precision must be one of"):
        S.training_memory(config, 1, 16, "fp8")
    with pytest.raises(ValueError, match="resolve it first"):
        S.training_memory(config, 1, 16, "auto")
    # Seed 001: weights + gradients + AdamW "~13GB", AdamW state "8.8GB" (both right).
    assert pure.states == 13_200_580_608
    assert pure.optimizer == 8_800_387_072
    assert fp32.total == fp32.states + fp32.activations
    assert set(fp32.as_dict()) >= {"weights", "gradients", "optimizer", "activations", "total"}
    # Seed 001: "Activations: ~4GB" for batch 8 x 512; the estimate is 7.84 GB (1.51 GB with
    # activation checkpointing).
    assert S.activation_bytes(config, 8, 512, "bf16") == pytest.approx(7.84e9, rel=0.01)
    assert S.activation_bytes(config, 8, 512, "bf16", checkpointing=True) == pytest.approx(
        1.51e9, rel=0.01
    )


def test_seed_004_training_memory():
    tiny = ModelConfig.preset("tiny-postnorm")
    memory = S.training_memory(tiny, 32, 128)
    assert memory.gradients == 9_310_208  # seed: "9.3 MB" (right)
    assert memory.optimizer == 18_620_416  # seed: "~18.6 MB" (right)
    # Seed 004: "Activations: ~5-10 MB", "Total training memory: ~40-50 MB". The logits and
    # cross-entropy's log-probabilities alone are 2 x 32 x 128 x 8000 x 4 bytes.
    assert memory.activations > 2 * 32 * 128 * 8000 * 4 == 262_144_000
    assert memory.activations == pytest.approx(315e6, rel=0.01)
    assert memory.total == pytest.approx(352e6, rel=0.01)


# --------------------------------------------------------------------------------------------
# Compute
# --------------------------------------------------------------------------------------------


def test_forward_flops_by_hand():
    tiny = ModelConfig.preset("tiny-postnorm")
    matmul_params = 263_168 + 128 * 8000  # blocks + head (the embedding lookup is free)
    assert S.forward_flops_per_token(tiny, attention=False) == 2 * matmul_params
    # Kaplan et al.: + 2 x n_layers x context x d_model.
    assert S.forward_flops_per_token(tiny) == 2 * matmul_params + 2 * 2 * 128 * 128
    # Tied GPT-2: every parameter except the position table multiplies an activation.
    gpt2 = ModelConfig.preset("gpt2-small")
    assert S.forward_flops_per_token(gpt2, attention=False) == 2 * (124_439_808 - 1024 * 768)
    assert S.training_flops_per_token(gpt2) == 3 * S.forward_flops_per_token(gpt2)
    assert S.training_flops_per_token(gpt2, recompute=True) == 4 * S.forward_flops_per_token(gpt2)


@pytest.mark.parametrize(
    "overrides", [dict(), dict(positional="rope", activation="swiglu", n_kv_heads=2, bias=True)]
)
def test_flops_match_torch_flop_counter(overrides):
    config = ModelConfig(
        vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4, d_ff=64, **overrides
    )
    model = TinyTransformer(config)
    T = 16
    with FlopCounterMode(display=False) as counter:
        model.attention_maps(torch.zeros(1, T, dtype=torch.long))  # explicit QK^T and AV
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    matmuls = counts.get("aten.mm", 0) + counts.get("aten.addmm", 0)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmuls == 2 * T * linear  # the head included, tied or not
    # Our count also charges 2 FLOPs per norm scale and bias (negligible, but honest).
    small = sum(p.numel() for n, p in model.named_parameters() if "norm" in n or ".bias" in n)
    no_attention = S.forward_flops_per_token(config, T, attention=False)
    assert no_attention * T == matmuls + 2 * T * small
    # Full (non-causal) QK^T and AV cost 4 x layers x T^2 x d; Kaplan charges the causal half.
    assert counts["aten.bmm"] == 4 * config.n_layers * T * T * config.d_model
    kaplan = (S.forward_flops_per_token(config, T) - no_attention) * T
    assert 2 * kaplan == counts["aten.bmm"]
    # attention="full" is PaLM's basis: the whole square the explicit path computes.
    full = S.forward_flops_per_token(config, T, attention="full")
    assert (full - no_attention) * T == counts["aten.bmm"]


def test_attention_count_is_one_explicit_option():
    config = ModelConfig.preset("course")
    n_matmul = S.forward_flops_per_token(config, attention="none") // 2
    L, T, d = config.n_layers, config.context_length, config.d_model
    assert S.forward_flops_per_token(config) == S.forward_flops_per_token(
        config, attention="causal"
    )
    assert S.forward_flops_per_token(config, attention=True) == 2 * n_matmul + 2 * L * T * d
    assert S.forward_flops_per_token(config, attention=False) == 2 * n_matmul
    # PaLM (Chowdhery et al., appendix B): 6N + 12 L T d per training token.
    assert S.training_flops_per_token(config, attention="full") == 6 * n_matmul + 12 * L * T * d
    assert S.training_flops(config, 10, attention="full") == 10 * (6 * n_matmul + 12 * L * T * d)
    with pytest.raises(ValueError, match="attention must be one of"):
        S.forward_flops_per_token(config, attention="half")


def test_optimizer_state_is_part_of_training_memory():
    config = ModelConfig.preset("course")
    n = S.count_parameters(config)
    assert S.OPTIMIZER_STATE_BYTES == {"adamw": 8, "sgd-momentum": 4, "sgd": 0}
    for name, per_parameter in S.OPTIMIZER_STATE_BYTES.items():
        memory = S.training_memory(config, 2, 64, "bf16-true", optimizer=name)
        assert memory.optimizer == S.optimizer_state_bytes(config, name) == per_parameter * n
        assert memory.states == (2 + 2 + per_parameter) * n
    assert S.training_memory(config).optimizer == 8 * n  # AdamW unless told otherwise
    summary = S.summary(config, 2, precision="fp32", optimizer="sgd")
    assert summary.training.optimizer == 0 and summary.optimizer == "sgd"
    with pytest.raises(ValueError, match="optimizer must be one of"):
        S.training_memory(config, optimizer="lion")


def test_training_flops_and_time():
    assert S.training_flops(2_500_000, 10e6) == 6 * 2.5e6 * 10e6 == 1.5e14  # seed 000: "150T"
    # Seed 000: "GPU-hours = 150T / 18T FLOPS/hr ≈ 8 GPU-hours" -- peak is per second: 8.3 s.
    assert S.training_seconds(1.5e14, 36, mfu=0.5) == pytest.approx(8.333, rel=1e-3)
    assert S.format_duration(S.training_seconds(1.5e14, 36, mfu=0.5)) == "8.3 s"
    gpt3 = S.training_flops(175e9, 300e9)
    assert gpt3 == pytest.approx(3.15e23)  # GPT-3's reported 3,640 petaflop/s-days = 3.14e23
    assert gpt3 / (1e15 * 86400) == pytest.approx(3646, rel=1e-3)
    config = ModelConfig.preset("llama-40m")
    assert S.training_flops(config, 1e9) == S.training_flops_per_token(config) * 1e9
    rate = S.tokens_per_second(config, 125, 0.3, 8)
    assert rate == pytest.approx(8 * 125e12 * 0.3 / S.training_flops_per_token(config))
    # Seed 003 expects 50K-150K tokens/s from 8 V100s at 30-40% MFU; that MFU gives 1.2M.
    assert rate == pytest.approx(1.219e6, rel=1e-3)
    with pytest.raises(ValueError, match="mfu"):
        S.training_seconds(1e12, 100, mfu=1.5)


def test_batches_per_epoch():
    assert S.batches_per_epoch(10_000, 32) == 313  # seed 000 (right)
    # Seed 004: "611,884 / 32 = 19,121 batches"; a DataLoader keeps the partial last batch.
    assert S.batches_per_epoch(611_884, 32) == 19_122
    assert S.batches_per_epoch(611_884, 32, drop_last=True) == 19_121


# --------------------------------------------------------------------------------------------
# Chinchilla
# --------------------------------------------------------------------------------------------


def test_chinchilla_tokens_and_optimum():
    assert S.chinchilla_tokens(70e9) == pytest.approx(1.4e12)  # Chinchilla: 70B on 1.4T
    assert S.chinchilla_tokens(40_000_000) == 800e6  # seed 003 (right)
    budget = 6 * 70e9 * 1.4e12
    point = S.chinchilla_optimal(budget)
    assert point.params == pytest.approx(70e9) and point.tokens == pytest.approx(1.4e12)
    assert point.tokens_per_param == pytest.approx(20)
    assert 6 * point.params * point.tokens == pytest.approx(budget)
    with pytest.raises(ValueError, match="compute"):
        S.chinchilla_optimal(0)


def test_chinchilla_loss_values():
    # By hand at Chinchilla's own size: 1.69 + 406.4/70e9^0.34 + 410.7/1.4e12^0.28.
    assert S.chinchilla_loss(70e9, 1.4e12) == pytest.approx(1.9366, abs=1e-4)
    # Gopher (280B on 300B tokens) used a similar budget and the fit predicts it is worse.
    assert S.chinchilla_loss(280e9, 300e9) > S.chinchilla_loss(70e9, 1.4e12)
    assert S.chinchilla_loss(1e30, 1e30) == pytest.approx(1.69)  # the irreducible E
    # Seed 003's table (N = 40M) claims 4.75, 4.06, 3.87, 3.78.
    predicted = [S.chinchilla_loss(40e6, d) for d in (800e6, 4.14e9, 8.28e9, 12.42e9)]
    assert predicted == pytest.approx([4.068, 3.581, 3.434, 3.360], abs=1e-3)
    # ... and perplexities 116, 58, 48, 44 (the exp of its own losses).
    assert [perplexity_from_loss(x) for x in predicted] == pytest.approx(
        [58.4, 35.9, 31.0, 28.8], abs=0.1
    )
    with pytest.raises(ValueError):
        S.chinchilla_loss(0, 1)


def test_loss_optimal_minimises_the_fit():
    budget = 1e21
    best = S.loss_optimal(budget)
    assert 6 * best.params * best.tokens == pytest.approx(budget)

    def loss(n):
        return S.chinchilla_loss(n, budget / (6 * n))

    assert loss(best.params) < loss(best.params * 1.1)
    assert loss(best.params) < loss(best.params / 1.1)


def test_uniform_loss_and_perplexity():
    # Seed 004: "Loss ~8.0 (untrained) ... (log(8000) ≈ 8.99)": untrained is 8.99, not 8.0.
    assert S.uniform_loss(8000) == pytest.approx(8.987, abs=1e-3)
    assert perplexity_from_loss(S.uniform_loss(8000)) == pytest.approx(8000)
    # Seed 004: "Loss ~2.5: predicts the correct token with ~92% probability"; it is 8.2%.
    assert math.exp(-2.5) == pytest.approx(0.082, abs=1e-3)


# --------------------------------------------------------------------------------------------
# Formatting and summary
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,text",
    [
        (2_327_552, "2.33M"), (65_536, "65.5K"), (999, "999"), (0, "0"), (124_439_808, "124M"),
        (1_100_048_384, "1.10B"), (6_738_415_616, "6.74B"), (999_960, "1.00M"), (1.4e12, "1.40T"),
    ],
)  # fmt: skip
def test_format_count(value, text):
    assert S.format_count(value) == text


def test_format_bytes_flops_duration():
    assert S.format_bytes(512) == "512 B"
    assert S.format_bytes(2_200_096_768) == "2.20 GB"
    assert S.format_bytes(2**31, binary=True) == "2.00 GiB"
    assert S.format_bytes(1024, binary=True) == "1.00 KiB"
    assert S.format_flops(1.5e14) == "150 TFLOP"
    assert S.format_flops(3.15e23) == "3.15e23 FLOP"
    assert S.format_duration(90) == "1.5 min"
    assert S.format_duration(3 * 86400) == "3 days"
    assert S.format_duration(0.004) == "4 ms"


def test_summary_is_consistent_and_serialisable():
    config = ModelConfig.preset("course")
    result = S.summary(config, batch_size=8, dtype="bf16", tokens=20e6, peak_tflops=0.2, mfu=0.3)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["parameters"] == S.count_parameters(config) == result.parameters
    assert data["kv_cache_bytes"] == S.kv_cache_bytes(config, 8, 256, "bf16")
    assert data["weights_bytes"]["int4"] == S.weight_bytes(config, "int4")
    assert result.training == S.training_memory(config, 8, 256, "bf16-mixed")
    assert data["precision"] == result.precision == "bf16-mixed" and data["optimizer"] == "adamw"
    fp16 = S.summary(config, 8, "fp16")
    assert fp16.precision == "fp16-mixed" and fp16.training == result.training
    assert result.training_checkpointed.activations < result.training.activations
    assert data["training_flops"] == S.training_flops(config, 20e6)
    assert data["training_seconds"] == pytest.approx(data["training_flops"] / (0.2e12 * 0.3))
    assert data["predicted_loss"] == pytest.approx(S.chinchilla_loss(result.parameters, 20e6))
    labels = [label for label, _ in result.as_rows()]
    assert "parameters" in labels and "training time" in labels
    plain = S.summary(config)
    assert plain.training_seconds is None and plain.dtype == "fp32"
    assert plain.training.master_weights == 0
    with pytest.raises(ValueError, match="dtype"):
        S.summary(config, dtype="fp7")


@pytest.mark.parametrize("kwargs", [{"batch_size": -1}, {"batch_size": 0}, {"context_length": -5},
                                    {"batch_size": 1.5}])  # fmt: skip
def test_kv_cache_bytes_refuses_negative_and_fractional_counts(kwargs):
    with pytest.raises(ValueError, match="must be an integer"):
        S.kv_cache_bytes(ModelConfig.preset("course"), **kwargs)
