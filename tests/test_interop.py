"""tinytrans.interop: exact conversion to and from Hugging Face Llama and GPT-2 models.

Every Hugging Face model here is built locally from a config with random weights (no
downloads). Weights are randomised at a larger scale than the default init so that the
comparisons exercise every layer rather than an almost-identity network.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from tinytrans.interop import (
    HF_TABLES,
    check_hf_compatible,
    config_from_hf,
    config_to_hf,
    from_hf,
    hf_config_dict,
    state_dict_from_hf,
    to_hf,
)
from tinytrans.model import ModelConfig, TinyTransformer, preset_names

needs_hf = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)

ATOL = 1e-4

_TOY_LLAMA = dict(
    vocab_size=101, context_length=48, d_model=64, n_layers=2, n_heads=4, d_ff=96,
    positional="rope", norm="rmsnorm", norm_placement="pre", activation="swiglu",
    rope_theta=500.0, norm_eps=1e-5,
)  # fmt: skip
_TOY_GPT2 = dict(
    vocab_size=101, context_length=48, d_model=64, n_layers=2, n_heads=4, d_ff=160,
    positional="learned", norm="layernorm", norm_placement="pre", activation="gelu",
    bias=True, norm_eps=1e-6,
)  # fmt: skip

#: (id, config, attention implementation of the Hugging Face side)
CASES = [
    ("llama-mha-untied", ModelConfig(**_TOY_LLAMA, tie_embeddings=False), "eager"),
    ("llama-gqa-tied", ModelConfig(**_TOY_LLAMA, n_kv_heads=2, tie_embeddings=True), "sdpa"),
    ("llama-mqa-bias", ModelConfig(**_TOY_LLAMA, n_kv_heads=1, bias=True), "eager"),
    ("course", ModelConfig.preset("course"), "sdpa"),
    ("gpt2-tied", ModelConfig(**_TOY_GPT2, tie_embeddings=True), "eager"),
    ("gpt2-untied", ModelConfig(**_TOY_GPT2, tie_embeddings=False), "sdpa"),
    ("course-gpt2", ModelConfig.preset("course-gpt2"), "sdpa"),
]
IDS = [case[0] for case in CASES]


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights: norms' scales near 1, everything else N(0, 0.1^2); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1 + 0.1 * noise if p.dim() == 1 and name.endswith("weight") else 0.1 * noise)
    return model.eval()


def tokens(config: ModelConfig, batch: int = 2, length: int = 24, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, length), generator=generator)


def hf_model(config: ModelConfig, attn_implementation: str = "sdpa"):
    """A randomly initialised Hugging Face model of the family ``config`` maps to."""
    import transformers

    hf_config = config_to_hf(config, attn_implementation=attn_implementation)
    cls = {"llama": transformers.LlamaForCausalLM, "gpt2": transformers.GPT2LMHeadModel}
    return randomize(cls[hf_config.model_type](hf_config), seed=2)


def assert_same_logits(ours: TinyTransformer, hf, config: ModelConfig) -> None:
    idx = tokens(config)
    with torch.no_grad():
        expected = hf(idx).logits
        got, _ = ours(idx)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def assert_same_state(a: TinyTransformer, b: TinyTransformer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


@needs_hf
@pytest.mark.parametrize(("name", "config", "attn"), CASES, ids=IDS)
def test_ours_to_hf_logits_match(name, config, attn):
    ours = randomize(TinyTransformer(config))
    hf = to_hf(ours, attn_implementation=attn)
    family = "LlamaForCausalLM" if config.positional == "rope" else "GPT2LMHeadModel"
    assert type(hf).__name__ == family
    assert not hf.training
    assert_same_logits(ours, hf, config)


@needs_hf
@pytest.mark.parametrize(("name", "config", "attn"), CASES, ids=IDS)
def test_hf_to_ours_logits_match(name, config, attn):
    hf = hf_model(config, attn)
    ours = from_hf(hf)
    assert ours.config == config  # dataclass equality ignores the name
    assert_same_logits(ours, hf, config)


@needs_hf
@pytest.mark.parametrize(("name", "config", "attn"), CASES, ids=IDS)
def test_round_trip_gives_identical_state_dict(name, config, attn):
    ours = randomize(TinyTransformer(config))
    back = from_hf(to_hf(ours, attn_implementation=attn))
    assert back.config == config
    assert (back.lm_head.weight is back.tok_emb.weight) == config.tie_embeddings
    assert_same_state(ours, back)


@needs_hf
@pytest.mark.parametrize("index", [1, 4], ids=["llama-gqa", "gpt2"])
def test_greedy_generation_matches_hf_generate(index):
    _, config, attn = CASES[index]
    ours = randomize(TinyTransformer(config))
    hf = to_hf(ours, attn_implementation=attn)
    prompt = tokens(config, batch=1, length=6)
    expected = hf.generate(
        prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    idx = prompt
    with torch.no_grad():
        for _ in range(8):
            logits, _ = ours(idx)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert idx.tolist() == expected.tolist()


# --------------------------------------------------------------------------------------------
# State dicts and configs without a model object
# --------------------------------------------------------------------------------------------


@needs_hf
@pytest.mark.parametrize("index", [2, 5], ids=["llama", "gpt2"])
def test_from_state_dict_and_config_json_dict(index):
    _, config, attn = CASES[index]
    hf = hf_model(config, attn)
    ours = from_hf(dict(hf.state_dict()), hf.config.to_dict())
    assert_same_logits(ours, hf, config)


@needs_hf
def test_legacy_gpt2_checkpoint_layout_loads():
    """The original gpt2 files: no ``transformer.`` prefix, attention-mask buffers, no head."""
    _, config, _ = CASES[4]
    hf = hf_model(config)
    n = config.context_length
    legacy = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    del legacy["lm_head.weight"]
    for i in range(config.n_layers):
        legacy[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        legacy[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    assert_same_logits(from_hf(legacy, hf.config), hf, config)


@needs_hf
def test_llama_state_dict_with_rotary_buffers_loads():
    _, config, _ = CASES[0]
    hf = hf_model(config)
    state = dict(hf.state_dict())
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(config.head_dim // 2)
    assert_same_logits(from_hf(state, hf.config), hf, config)


def test_config_dicts_need_no_transformers():
    llama = dict(
        model_type="llama", vocab_size=50, max_position_embeddings=32, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, hidden_act="silu", rms_norm_eps=1e-5, rope_theta=1e4,
        rope_scaling=None, tie_word_embeddings=True,
    )  # fmt: skip
    config = config_from_hf(llama)
    assert (config.n_kv_heads, config.norm_eps, config.rope_theta) == (2, 1e-5, 1e4)
    assert config.tie_embeddings and config.activation == "swiglu" and not config.bias
    gpt2 = dict(model_type="gpt2", vocab_size=50, n_positions=32, n_embd=32, n_layer=1, n_head=4)
    config = config_from_hf(gpt2)
    assert (config.d_ff, config.dropout, config.tie_embeddings) == (128, 0.1, True)


@needs_hf
@pytest.mark.parametrize(("name", "config", "attn"), CASES, ids=IDS)
def test_config_round_trip(name, config, attn):
    hf_config = config_to_hf(config, attn_implementation=attn)
    assert hf_config._attn_implementation == attn
    assert config_from_hf(hf_config) == config


def _hf_compatible_presets() -> list[ModelConfig]:
    presets = []
    for name in preset_names():
        config = ModelConfig.preset(name)
        try:
            check_hf_compatible(config)
        except ValueError:
            continue
        presets.append(config)
    return presets


HF_PRESETS = _hf_compatible_presets()


def test_some_presets_are_hf_compatible():
    assert {"course", "course-gpt2", "gpt2-small", "tinyllama-1.1b"} <= {c.name for c in HF_PRESETS}


@pytest.mark.parametrize("config", HF_PRESETS, ids=lambda c: c.name)
def test_preset_round_trip_through_the_field_table_is_the_identity(config):
    """config -> HF fields -> config, with the table alone (no transformers needed)."""
    architecture = check_hf_compatible(config)
    fields = {"model_type": architecture, **hf_config_dict(config)}
    back = config_from_hf(fields, name=config.name)
    assert back == config and back.to_dict() == config.to_dict()


@needs_hf
@pytest.mark.parametrize("config", HF_PRESETS, ids=lambda c: c.name)
def test_preset_round_trip_through_transformers_is_the_identity(config):
    back = config_from_hf(config_to_hf(config), name=config.name)
    assert back.to_dict() == config.to_dict()


def test_each_table_covers_every_model_config_field():
    """Every ModelConfig field is either mapped to an HF key or fixed by the family."""
    names = set(ModelConfig.__dataclass_fields__) - {"name"}
    for architecture, table in HF_TABLES.items():
        covered = {row.ours for row in table.fields} | set(table.fixed)
        # GPT-2 has no rotary embeddings; its rope_theta stays ModelConfig's default.
        missing = names - covered - ({"rope_theta"} if architecture == "gpt2" else set())
        assert not missing, (architecture, missing)
        assert covered <= names, (architecture, covered - names)


@needs_hf
def test_gpt2_dropout_maps_to_all_three_rates():
    config = ModelConfig(**_TOY_GPT2, dropout=0.2)
    hf_config = config_to_hf(config)
    assert hf_config.resid_pdrop == hf_config.embd_pdrop == hf_config.attn_pdrop == 0.2
    assert config_from_hf(hf_config).dropout == 0.2


# --------------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "changes", "architecture", "message"),
    [
        (_TOY_LLAMA, dict(norm_placement="post"), None, "norm_placement='post'"),
        (_TOY_LLAMA, dict(activation="relu"), None, "activation='relu'"),
        (_TOY_LLAMA, dict(norm="layernorm"), None, "norm='layernorm'"),
        (_TOY_LLAMA, dict(dropout=0.1), None, "dropout=0.1"),
        (_TOY_LLAMA, dict(positional="sinusoidal"), None, "positional='sinusoidal'"),
        (_TOY_LLAMA, dict(positional="none"), None, "positional='none'"),
        (_TOY_LLAMA, {}, "gpt2", "positional='rope'"),
        (_TOY_GPT2, dict(bias=False), None, "bias=False"),
        (_TOY_GPT2, dict(n_kv_heads=2), None, "n_kv_heads=2"),
        (_TOY_GPT2, dict(activation="relu"), None, "activation='relu'"),
        (_TOY_GPT2, dict(norm_placement="post"), None, "norm_placement='post'"),
        (_TOY_GPT2, {}, "bert", "architecture"),
    ],
)
def test_unsupported_configs_name_the_field(base, changes, architecture, message):
    config = ModelConfig(**{**base, **changes})
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_hf_compatible(config, architecture)


def test_all_problems_are_listed_at_once():
    config = ModelConfig(**{**_TOY_GPT2, "bias": False, "activation": "relu"})
    with pytest.raises(ValueError, match="GPT2LMHeadModel") as error:
        check_hf_compatible(config)
    assert "bias=False" in str(error.value) and "activation='relu'" in str(error.value)


_LLAMA_JSON = dict(
    model_type="llama", vocab_size=50, max_position_embeddings=32, hidden_size=32,
    num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
)  # fmt: skip
_GPT2_JSON = dict(model_type="gpt2", vocab_size=50, n_positions=32, n_embd=32, n_layer=1, n_head=4)


@pytest.mark.parametrize(
    ("base", "changes", "message"),
    [
        (_LLAMA_JSON, dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
        (
            _LLAMA_JSON,
            dict(rope_parameters={"rope_type": "llama3", "factor": 8.0}),
            "rope_parameters",
        ),
        (_LLAMA_JSON, dict(attention_bias=True, mlp_bias=False), "attention_bias=True"),
        (_LLAMA_JSON, dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (_LLAMA_JSON, dict(head_dim=16), "head_dim=16"),
        (_LLAMA_JSON, dict(attention_dropout=0.1), "attention_dropout=0.1"),
        (_GPT2_JSON, dict(activation_function="relu"), "activation_function='relu'"),
        (_GPT2_JSON, dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (_GPT2_JSON, dict(resid_pdrop=0.1, attn_pdrop=0.0), "resid_pdrop"),
        (_GPT2_JSON, dict(model_type="bert"), "model_type='bert'"),
    ],
)
def test_unsupported_hf_configs_name_the_field(base, changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config_from_hf({**base, **changes})


@needs_hf
def test_hf_rope_scaling_object_is_rejected():
    import transformers

    hf_config = transformers.LlamaConfig(
        **{k: v for k, v in _LLAMA_JSON.items() if k != "model_type"},
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
    )
    with pytest.raises(ValueError, match="rope_"):
        config_from_hf(hf_config)


@needs_hf
def test_mismatched_state_dict_names_the_keys():
    _, config, _ = CASES[0]
    state = dict(hf_model(config).state_dict())
    del state["model.norm.weight"]
    state["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['model.norm.weight'\].*model.extra.weight"):
        state_dict_from_hf(state, config)


def test_state_dict_without_config_is_an_error():
    with pytest.raises(ValueError, match="hf_config"):
        from_hf({"lm_head.weight": torch.zeros(1)})


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match="pip install transformers"):
        config_to_hf(ModelConfig(**_TOY_LLAMA))


@pytest.mark.parametrize(
    "changes",
    [{"n_embd": None}, {"n_head": "four"}, {"n_embd": 30}],
)
def test_malformed_hf_configs_are_value_errors(changes):
    gpt2 = dict(model_type="gpt2", vocab_size=50, n_positions=32, n_embd=32, n_layer=1, n_head=4)
    with pytest.raises(ValueError):
        config_from_hf({**gpt2, **changes})


def test_malformed_llama_rope_parameters_are_value_errors():
    llama = dict(model_type="llama", vocab_size=50, max_position_embeddings=32, hidden_size=32,
                 num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
                 rope_parameters="not-a-dict")  # fmt: skip
    with pytest.raises(ValueError, match="malformed"):
        config_from_hf(llama)
