"""Tests for tinytrans.model: every switch, both attention paths, the KV cache, padding,
RoPE, configuration validation, input errors, initialisation and gradient checkpointing."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from tinytrans.model import (
    ACTIVATION_CHOICES,
    NORM_CHOICES,
    PLACEMENT_CHOICES,
    POSITIONAL_CHOICES,
    PRESETS,
    ModelConfig,
    RMSNorm,
    RotaryEmbedding,
    TinyTransformer,
    apply_rotary,
    build_model,
    preset_names,
    validate_ids,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(vocab_size=37, context_length=16, d_model=16, n_layers=2, n_heads=4, d_ff=24)


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def make(seed: int = 0, **overrides) -> TinyTransformer:
    torch.manual_seed(seed)
    return TinyTransformer(tiny(**overrides)).eval()


def ids(batch: int, length: int, vocab: int = TINY["vocab_size"], seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


# --------------------------------------------------------------------------------------------
# Every switch builds and runs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "positional,norm,placement",
    list(itertools.product(POSITIONAL_CHOICES, NORM_CHOICES, PLACEMENT_CHOICES)),
)
def test_every_switch_builds_and_runs(positional, norm, placement):
    x = ids(2, 5)
    for activation, bias, tie, kv in itertools.product(
        ACTIVATION_CHOICES, (False, True), (False, True), (None, 2, 1)
    ):
        config = ModelConfig(
            vocab_size=11, context_length=8, d_model=8, n_layers=1, n_heads=4,
            n_kv_heads=kv, d_ff=12, positional=positional, norm=norm, norm_placement=placement,
            activation=activation, bias=bias, tie_embeddings=tie,
        )  # fmt: skip
        torch.manual_seed(0)
        model = TinyTransformer(config)
        logits, loss = model(x % 11, x % 11)
        assert logits.shape == (2, 5, 11)
        assert torch.isfinite(logits).all() and torch.isfinite(loss)
    loss.backward()  # the last combination also trains
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Attention: the fused and explicit paths, and the weights themselves
# --------------------------------------------------------------------------------------------

ATTENTION_CONFIGS = [
    dict(),
    dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2),
    dict(positional="sinusoidal", norm_placement="post", n_kv_heads=1, bias=True),
    dict(positional="none", tie_embeddings=False),
]


@pytest.mark.parametrize("overrides", ATTENTION_CONFIGS)
def test_sdpa_path_equals_explicit_path(overrides):
    model = make(**overrides)
    x = ids(2, 9)
    with torch.no_grad():
        fused, _ = model(x)
    explicit = model.attention_maps(x)
    torch.testing.assert_close(fused, explicit.logits, atol=1e-5, rtol=1e-5)
    assert len(explicit.weights) == model.config.n_layers


@pytest.mark.parametrize("overrides", ATTENTION_CONFIGS[:2])
def test_attention_weights_are_causal_softmax_of_scaled_scores(overrides):
    model = make(**overrides)
    config = model.config
    x = ids(2, 7)
    weights = model.attention_maps(x).weights[0]  # (B, H, T, T)
    T = x.shape[1]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, config.n_heads, T))
    above = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    assert (weights[..., above] == 0).all()

    # Recompute layer 0 by hand from the model's own projections.
    with torch.no_grad():
        h = model.tok_emb(x)
        if config.positional == "learned":
            h = h + model.pos_emb(torch.arange(T))
        block = model.blocks[0]
        h = block.attn_norm(h) if config.norm_placement == "pre" else h
        B, D, K = 2, config.head_dim, config.kv_heads
        q = block.attn.q_proj(h).view(B, T, config.n_heads, D).transpose(1, 2)
        k = block.attn.k_proj(h).view(B, T, K, D).transpose(1, 2)
        if config.positional == "rope":
            cos, sin = model.rope(torch.arange(T))
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k = k.repeat_interleave(config.n_heads // K, dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)
        expected = torch.softmax(scores.masked_fill(above, float("-inf")), dim=-1)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# KV cache and padding
# --------------------------------------------------------------------------------------------

CACHE_CONFIGS = [
    dict(positional="learned"),
    dict(positional="rope", n_kv_heads=2),
    dict(positional="rope", n_kv_heads=1, norm="rmsnorm", activation="swiglu"),
    dict(positional="sinusoidal", n_kv_heads=2, norm_placement="post"),
    dict(positional="none", n_kv_heads=1, bias=True),
]


@pytest.mark.parametrize("overrides", CACHE_CONFIGS)
def test_kv_cache_incremental_logits_equal_full_forward(overrides):
    model = make(**overrides)
    x = ids(2, 9)
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_cache(batch_size=2)
        pieces = [model(x[:, :4], cache=cache)[0]]  # prefill
        pieces.append(model(x[:, 4:6], cache=cache)[0])  # a chunk of two with a past
        for t in range(6, 9):  # then one token at a time
            pieces.append(model(x[:, t : t + 1], cache=cache)[0])
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def _left_pad(sequences: list[torch.Tensor], pad_id: int = 0):
    """Left-padded ids, attention mask and position ids for a batch of 1-D sequences."""
    width = max(len(s) for s in sequences)
    batch = torch.full((len(sequences), width), pad_id)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        batch[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return batch, mask, positions


@pytest.mark.parametrize("overrides", CACHE_CONFIGS[:4])
def test_left_padded_batch_equals_unpadded_runs(overrides):
    model = make(**overrides)
    seqs = [ids(1, 7, seed=3)[0], ids(1, 4, seed=4)[0]]
    batch, mask, positions = _left_pad(seqs)
    new = ids(2, 1, seed=5)
    with torch.no_grad():
        padded, _ = model(batch, attention_mask=mask, position_ids=positions)
        cache = model.new_cache(batch_size=2)
        model(batch, attention_mask=mask, position_ids=positions, cache=cache)
        step_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
        step, _ = model(
            new, cache=cache, attention_mask=step_mask, position_ids=positions[:, -1:] + 1
        )
        for row, seq in enumerate(seqs):
            alone, _ = model(seq[None])
            torch.testing.assert_close(padded[row, -len(seq) :], alone[0], atol=1e-5, rtol=1e-5)
            extended, _ = model(torch.cat([seq, new[row]])[None])
            torch.testing.assert_close(step[row, 0], extended[0, -1], atol=1e-5, rtol=1e-5)


def test_kv_cache_overflow_names_the_fix():
    model = make()
    cache = model.new_cache(batch_size=1, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        model(ids(1, 5), cache=cache)


# --------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------


def test_rope_dot_product_depends_only_on_position_difference():
    rope = RotaryEmbedding(head_dim=8, context_length=64)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=generator), torch.randn(8, generator=generator)

    def rotated_dot(m: int, n: int) -> float:
        cos, sin = rope(torch.tensor([m, n]))
        qm = apply_rotary(q[None, None, None], cos[:1], sin[:1])
        kn = apply_rotary(k[None, None, None], cos[1:], sin[1:])
        return float((qm * kn).sum())

    for offset in (0, 1, 5, 17):
        values = [rotated_dot(m, m - offset) for m in (offset, offset + 3, offset + 20, 40)]
        assert max(values) - min(values) < 1e-5, (offset, values)
    assert abs(rotated_dot(5, 5) - rotated_dot(6, 5)) > 1e-3  # but it does depend on it
    assert abs(rotated_dot(9, 9) - float(q @ k)) < 1e-5  # no rotation at offset 0


def test_rope_extends_past_context_length():
    model = make(positional="rope")
    with torch.no_grad():
        logits, _ = model(ids(1, 24))  # context_length is 16
    assert logits.shape == (1, 24, TINY["vocab_size"])


# --------------------------------------------------------------------------------------------
# ModelConfig
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(context_length=-1), "context_length"),
        (dict(d_model=2.5), "d_model"),
        (dict(n_layers=True), "n_layers"),
        (dict(d_ff=0), "d_ff"),
        (dict(n_heads=3), "n_heads"),
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(n_kv_heads=0), "n_kv_heads"),
        (dict(positional="alibi"), "positional"),
        (dict(norm="batchnorm"), "norm"),
        (dict(norm_placement="sandwich"), "norm_placement"),
        (dict(activation="tanh"), "activation"),
        (dict(positional="rope", d_model=12, n_heads=4), "head_dim"),
        (dict(positional="sinusoidal", d_model=15, n_heads=5), "d_model"),
        (dict(dropout=1.0), "dropout"),
        (dict(rope_theta=0.0), "rope_theta"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny(**overrides)


def test_config_json_round_trip_and_diff():
    config = tiny(positional="rope", n_kv_heads=2, name="mine")
    again = ModelConfig.from_json(config.to_json())
    assert again == config and again.name == "mine"
    assert json.loads(config.to_json())["n_kv_heads"] == 2
    assert config.diff(again) == {}
    assert config.diff(config.replace(d_ff=48, name="other")) == {"d_ff": (24, 48)}
    with pytest.raises(ValueError, match="colour"):
        ModelConfig.from_dict({**config.to_dict(), "colour": "blue"})


def test_config_derived_sizes():
    assert tiny().kv_heads == 4 and tiny().attention_kind == "MHA"
    assert tiny(n_kv_heads=2).attention_kind == "GQA"
    assert tiny(n_kv_heads=1).attention_kind == "MQA"
    assert tiny().head_dim == 4


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError) as error:
        ModelConfig.preset("gpt-5")
    for name in preset_names():
        assert name in str(error.value)


def test_presets_build_with_overrides():
    assert set(preset_names()) == set(PRESETS)
    config = ModelConfig.preset("course", vocab_size=300)
    assert config.vocab_size == 300 and config.name == "course"
    assert build_model("course").config == ModelConfig.preset("course")


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_token_ids_out_of_range_are_caught_at_the_boundary():
    model = make()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 37\).*vocab_size"):
        model.validate_inputs(torch.tensor([[0, TINY["vocab_size"]]]))
    with pytest.raises(ValueError, match=r"got range \[-1, 0\]"):
        model.validate_inputs(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 5\); got range \[0, 5\]"):
        validate_ids([0, 5], 5)
    with pytest.raises(ValueError, match="must be integers"):
        validate_ids(torch.tensor([0.5]), 5)
    validate_ids([0, 4, -100], 5, ignore_index=-100)  # ignored values pass
    validate_ids([], 5)
    model.validate_inputs(ids(2, 4), ids(2, 4), torch.arange(4))  # valid input passes


def test_too_long_for_learned_positions():
    with pytest.raises(ValueError, match="context_length"):
        make()(ids(1, TINY["context_length"] + 1))
    with pytest.raises(ValueError, match="context_length"):
        make(positional="sinusoidal")(ids(1, TINY["context_length"] + 1))


def test_float_ids_and_bad_shapes():
    model = make()
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(ids(2, 4), ids(2, 3))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids(2, 4), attention_mask=torch.ones(2, 5))


# --------------------------------------------------------------------------------------------
# Initialisation, tying, checkpointing
# --------------------------------------------------------------------------------------------


def test_loss_at_init_is_log_vocab():
    vocab = 512
    model = make(vocab_size=vocab, d_model=64, n_heads=4, d_ff=128)
    x = ids(4, 16, vocab=vocab)
    with torch.no_grad():
        _, loss = model(x, ids(4, 16, vocab=vocab, seed=9))
    assert abs(float(loss) - math.log(vocab)) < 0.1


def test_tied_weights_are_shared():
    tied, untied = make(tie_embeddings=True), make(tie_embeddings=False)
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    extra = TINY["vocab_size"] * TINY["d_model"]
    assert untied.num_parameters() - tied.num_parameters() == extra
    # A step on the head moves the embedding too.
    before = tied.tok_emb.weight.detach().clone()
    _, loss = tied.train()(ids(2, 5), ids(2, 5, seed=3))
    loss.backward()
    torch.optim.SGD(tied.parameters(), lr=1.0).step()
    assert not torch.equal(before, tied.tok_emb.weight)


def test_gpt2_residual_projection_init_is_scaled():
    n_layers = 8
    model = make(d_model=256, n_heads=4, d_ff=256, n_layers=n_layers)
    with torch.no_grad():
        residual = torch.cat(
            [torch.cat([b.attn.o_proj.weight.flatten(), b.ffn.down_proj.weight.flatten()])
             for b in model.blocks]
        )  # fmt: skip
        others = torch.cat([b.attn.q_proj.weight.flatten() for b in model.blocks])
    assert float(residual.std()) == pytest.approx(0.02 / math.sqrt(2 * n_layers), rel=0.05)
    assert float(others.std()) == pytest.approx(0.02, rel=0.05)
    assert float(model.tok_emb.weight.detach().std()) == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("overrides", [dict(), dict(positional="rope", n_kv_heads=2)])
def test_gradient_checkpointing_gives_the_same_gradients(overrides):
    x, y = ids(2, 8), ids(2, 8, seed=2)

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = make(**overrides).train()
        model.gradient_checkpointing = checkpointing
        _, loss = model(x, y)
        loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5)


def test_ignore_index_and_loss_value():
    model = make()
    x, y = ids(2, 6), ids(2, 6, seed=4)
    y[:, :3] = -100
    with torch.no_grad():
        logits, loss = model(x, y)
    expected = F.cross_entropy(logits[:, 3:].reshape(-1, logits.size(-1)), y[:, 3:].reshape(-1))
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------ validation gaps (issue 13)


@pytest.mark.parametrize(
    "field, value",
    [("rope_theta", math.nan), ("norm_eps", math.nan), ("rope_theta", math.inf),
     ("bias", "yes"), ("tie_embeddings", 1), ("dropout", "0.1"), ("dropout", math.nan)],
)  # fmt: skip
def test_config_refuses_nan_and_ill_typed_fields(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: value})


def test_forward_refuses_bad_targets_positions_and_cache_batch():
    model = build_model(ModelConfig(vocab_size=20, context_length=16, d_model=32, n_heads=4,
                                    d_ff=64, positional="rope"))  # fmt: skip
    idx = torch.randint(0, 20, (2, 8))
    with pytest.raises(ValueError, match=r"targets must be in \[0, 20\) or -100 \(ignored\)"):
        model.validate_inputs(idx, torch.full((2, 8), 20))
    ignored = torch.full((2, 8), -100)
    model.validate_inputs(idx, ignored)  # -100 stays allowed: those positions are ignored
    model(idx, ignored)
    with pytest.raises(ValueError, match="position_ids must be >= 0"):
        model.validate_inputs(idx, position_ids=torch.arange(-1, 7))
    learned = make(positional="learned")
    with pytest.raises(ValueError, match=r"position_ids must be in \[0, 16\)"):
        learned.validate_inputs(ids(1, 2), position_ids=torch.tensor([3, 16]))
    cache = model.new_cache(batch_size=3)
    with pytest.raises(ValueError, match="KV cache holds 3 sequences"):
        model(idx, cache=cache)


def test_renamed_presets_still_load_with_a_warning():
    from tinytrans.model import RENAMED_PRESETS

    for old, new in RENAMED_PRESETS.items():
        with pytest.warns(DeprecationWarning, match=new):
            config = ModelConfig.preset(old)
        assert config == ModelConfig.preset(new)


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_previous_mode_even_on_error(training):
    from tinytrans.model import eval_mode

    model = TinyTransformer(ModelConfig.preset("course", n_layers=1)).train(training)
    with eval_mode(model) as same:
        assert same is model and not model.training
    assert model.training is training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training is training


# --------------------------------------------------------------------------------------------
# The hot path: no device-to-host sync, no graph break
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", POSITIONAL_CHOICES)
def test_forward_compiles_to_one_graph_without_host_syncs(positional):
    """``fullgraph=True`` refuses any graph break; reading a tensor back on the host
    (``int(t)``, ``.item()``, ``.tolist()``) is one, so this proves forward never syncs.
    The eager backend traces without generating code, so it is quick on the CPU."""
    torch._dynamo.reset()
    model = make(positional=positional)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x, y = ids(2, 8), ids(2, 8, seed=2)
    with torch.no_grad():
        logits, loss = compiled(x, y)
        expected, expected_loss = model(x, y)
        assert torch.allclose(logits, expected) and torch.allclose(loss, expected_loss)
        cache = model.new_cache(2, 16)
        compiled(x, cache=cache)  # prefill into the cache, then one batched decoding step
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, :3] = 0  # the second row is left padded, as generate_batch makes it
        position = torch.tensor([[8], [5]])
        step, _ = compiled(x[:, :1], cache=cache, attention_mask=mask, position_ids=position)
        assert cache.length == 9 and step.shape == (2, 1, TINY["vocab_size"])


def test_rope_tables_grow_to_a_length_known_on_the_host():
    rope = RotaryEmbedding(head_dim=8, context_length=4)
    cos, _ = rope(torch.arange(6), 6)
    assert rope.cos.shape[0] >= 6 and cos.shape == (6, 8)
    again = RotaryEmbedding(head_dim=8, context_length=64)
    assert torch.allclose(cos, again(torch.arange(6))[0])  # standalone: bound read from the ids


def test_gelu_exact_is_the_erf_form_and_gelu_the_tanh_form():
    x = torch.randn(2, 5, 16)
    for activation, approximate in (("gelu", "tanh"), ("gelu_exact", "none")):
        config = ModelConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2,
                             d_ff=24, activation=activation)  # fmt: skip
        ffn = TinyTransformer(config).blocks[0].ffn
        expected = ffn.down_proj(F.gelu(ffn.up_proj(x), approximate=approximate))
        torch.testing.assert_close(ffn(x), expected, rtol=0, atol=0)


def test_rms_norm_fast_path_matches_the_formula():
    norm = RMSNorm(16, eps=1e-6)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(3, 7, 16, dtype=torch.float64).float()
    formula = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), formula, rtol=1e-6, atol=1e-6)
    half = x.to(torch.bfloat16)  # the autocast path keeps its float32 normalisation
    assert norm(half).dtype == torch.float32
