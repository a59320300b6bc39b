"""Convert TinyTransformer models to and from Hugging Face ``transformers`` (the architectures
of section 1.12; chapter 5 checks its parameter counts against them, section 5.1).

Two families map one-to-one onto a :class:`~tinytrans.model.ModelConfig`:

* **Llama** (``LlamaForCausalLM``): RoPE, RMSNorm, SwiGLU, pre-norm; grouped key/value heads,
  tied or untied head, with or without Linear biases.
* **GPT-2** (``GPT2LMHeadModel``): learned positions, LayerNorm, tanh-approximated GELU,
  pre-norm, Linear biases; tied or untied head.

Converting copies every weight exactly, so logits agree to float32 rounding and a round trip
ours -> HF -> ours returns an identical state dict. ``transformers`` is an optional extra: it
is imported only inside the functions that build Hugging Face objects.

Reading a pretrained checkpoint (needs internet, e.g. on Colab)::

    from transformers import GPT2LMHeadModel
    from tinytrans.interop import from_hf
    model = from_hf(GPT2LMHeadModel.from_pretrained("gpt2"))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tinytrans.model import ModelConfig, TinyTransformer

__all__ = [
    "ARCHITECTURES",
    "GPT2_GELUS",
    "HF_CLASSES",
    "HF_TABLES",
    "HFField",
    "HFTable",
    "check_hf_compatible",
    "config_from_hf",
    "config_to_hf",
    "from_hf",
    "hf_architecture",
    "hf_config_architecture",
    "hf_config_dict",
    "state_dict_from_hf",
    "state_dict_to_hf",
    "to_hf",
]

ARCHITECTURES = ("llama", "gpt2")
HF_CLASSES = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}
GPT2_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation we use

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------
# transformers, lazily
# --------------------------------------------------------------------------------------------


def _transformers() -> Any:
    """Import ``transformers`` or explain how to get it (it is an optional extra)."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "tinytrans.interop needs Hugging Face transformers for this: "
            "pip install transformers  (or: pip install 'tinytrans[hf]')"
        ) from error
    return transformers


# --------------------------------------------------------------------------------------------
# ModelConfig -> Hugging Face config
# --------------------------------------------------------------------------------------------


Getter = Callable[[str, Any], Any]


@dataclass(frozen=True)
class HFField:
    """One row of an architecture's field table: a :class:`ModelConfig` field and the Hugging
    Face config key that holds it, with the transforms each way (section 1.12).

    ``write(config)`` gives the HF value (default: the field as is); ``read(get, problems)``
    gives our value from a key getter, appending what it cannot reproduce to ``problems``
    (default: ``cast(get(hf, default))``). Several rows may share one
    of our fields (GPT-2 has three dropout rates): reading then requires them to agree.
    """

    ours: str
    hf: str
    default: Any = None
    cast: Callable[[Any], Any] | None = None
    write: Callable[[ModelConfig], Any] | None = None
    read: Callable[[Getter, list[str]], Any] | None = None

    def to_hf(self, config: ModelConfig) -> Any:
        return self.write(config) if self.write else getattr(config, self.ours)

    def from_hf(self, get: Getter, problems: list[str]) -> Any:
        if self.read:
            return self.read(get, problems)
        value = get(self.hf, self.default)
        return self.cast(value) if self.cast and value is not None else value


@dataclass(frozen=True)
class HFTable:
    """Everything that maps a :class:`ModelConfig` onto one Hugging Face family and back
    (section 1.12).

    ``fields``: the one-to-one (or one-to-many) field rows. ``fixed``: our fields the family
    cannot change (checked before writing, set when reading). ``constants``: HF keys written
    with the first of their accepted values and checked against all of them when read.
    """

    architecture: str
    fields: tuple[HFField, ...]
    fixed: Mapping[str, Any]
    constants: Mapping[str, tuple[Any, ...]]


def _kv_heads(config: ModelConfig) -> int:
    return config.kv_heads


def _gpt2_d_ff(get: Getter, problems: list[str]) -> Any:
    """GPT-2's ``n_inner`` is ``None`` for the default width ``4 * n_embd``."""
    d_model = get("n_embd", None)
    return get("n_inner", None) or 4 * d_model


def _rope_theta(get: Getter, problems: list[str]) -> float:
    """``rope_theta`` from ``rope_parameters`` (transformers 5) or the top level (4.x)."""
    parameters = get("rope_parameters", None) or {}
    for key in ("rope_parameters", "rope_scaling"):  # 5.x aliases the two; 4.x has only scaling
        value = get(key, None)
        kind = value.get("rope_type", value.get("type", "default")) if value else "default"
        if kind != "default":
            problems.append(f"{key}={value!r} (only plain RoPE is supported; needs None)")
            break
    factor = parameters.get("partial_rotary_factor", get("partial_rotary_factor", 1.0))
    if factor not in (None, 1, 1.0):
        problems.append(f"partial_rotary_factor={factor!r} (needs 1.0)")
    return float(parameters.get("rope_theta") or get("rope_theta", None) or 10000.0)


_LLAMA = HFTable(
    architecture="llama",
    fields=(
        HFField("vocab_size", "vocab_size"),
        HFField("context_length", "max_position_embeddings"),
        HFField("d_model", "hidden_size"),
        HFField("n_layers", "num_hidden_layers"),
        HFField("n_heads", "num_attention_heads"),
        HFField("n_kv_heads", "num_key_value_heads", write=_kv_heads),
        HFField("d_ff", "intermediate_size"),
        HFField("norm_eps", "rms_norm_eps", 1e-6, float),
        HFField("tie_embeddings", "tie_word_embeddings", False, bool),
        HFField("rope_theta", "rope_theta", read=_rope_theta),
        HFField("bias", "attention_bias", False, bool),
        HFField("bias", "mlp_bias", False, bool),
    ),
    fixed=dict(
        positional="rope", norm="rmsnorm", norm_placement="pre", activation="swiglu", dropout=0.0
    ),
    constants={"hidden_act": ("silu",), "attention_dropout": (0.0,)},
)

_GPT2 = HFTable(
    architecture="gpt2",
    fields=(
        HFField("vocab_size", "vocab_size"),
        HFField("context_length", "n_positions"),
        HFField("d_model", "n_embd"),
        HFField("n_layers", "n_layer"),
        HFField("n_heads", "n_head"),
        HFField("d_ff", "n_inner", read=_gpt2_d_ff),
        HFField("norm_eps", "layer_norm_epsilon", 1e-5, float),
        HFField("tie_embeddings", "tie_word_embeddings", True, bool),
        HFField("dropout", "resid_pdrop", 0.1, float),
        HFField("dropout", "embd_pdrop", 0.1, float),
        HFField("dropout", "attn_pdrop", 0.1, float),
    ),
    fixed=dict(
        positional="learned",
        norm="layernorm",
        norm_placement="pre",
        activation="gelu",
        bias=True,
        n_kv_heads=None,
    ),
    constants={
        "activation_function": GPT2_GELUS,
        "scale_attn_weights": (True,),
        "scale_attn_by_inverse_layer_idx": (False,),
        "add_cross_attention": (False,),
    },
)

#: The field table of each Hugging Face family, driving both directions.
HF_TABLES: dict[str, HFTable] = {"llama": _LLAMA, "gpt2": _GPT2}

#: Why a fixed field has to have its value, where "needs X" is not explanation enough.
_FIXED_NOTES = {
    ("llama", "dropout"): "Llama only drops attention weights; use dropout=0.0",
    ("gpt2", "n_kv_heads"): "GPT-2 has no grouped key/value heads; use None",
}
#: Hugging Face's special-token ids, kept when they exist in our vocabulary.
_TOKEN_IDS = {"llama": (1, 2), "gpt2": (50256, 50256)}


def hf_architecture(config: ModelConfig) -> str:
    """The Hugging Face family a config belongs to: ``"llama"`` (RoPE) or ``"gpt2"`` (learned)
    (section 1.12)."""
    if config.positional == "rope":
        return "llama"
    if config.positional == "learned":
        return "gpt2"
    raise ValueError(
        f"ModelConfig.positional={config.positional!r} has no Hugging Face counterpart here: "
        "to_hf supports Llama (positional='rope') and GPT-2 (positional='learned')."
    )


def _fixed_problems(config: ModelConfig, table: HFTable) -> list[str]:
    """Every fixed field of ``table`` that ``config`` sets otherwise."""
    problems = []
    for key, wanted in table.fixed.items():
        value = config.kv_heads if key == "n_kv_heads" else getattr(config, key)
        wanted = config.n_heads if key == "n_kv_heads" else wanted
        if value != wanted:
            shown = getattr(config, key)
            note = _FIXED_NOTES.get((table.architecture, key), f"needs {wanted!r}")
            problems.append(f"{key}={shown!r} ({note})")
    return problems


def check_hf_compatible(config: ModelConfig, architecture: str | None = None) -> str:
    """Return the target family, or raise ``ValueError`` listing every field it cannot express
    (section 1.12)."""
    architecture = architecture or hf_architecture(config)
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {list(ARCHITECTURES)}, got {architecture!r}."
        )
    problems = _fixed_problems(config, HF_TABLES[architecture])
    if problems:
        raise ValueError(
            f"ModelConfig {config.name!r} cannot be expressed as {HF_CLASSES[architecture]}: "
            + "; ".join(problems)
            + "."
        )
    return architecture


def _token_id(default: int, vocab_size: int) -> int | None:
    """Keep HF's default special-token id only when it exists in our vocabulary."""
    return default if default < vocab_size else None


def hf_config_dict(config: ModelConfig, architecture: str | None = None) -> dict[str, Any]:
    """The keyword arguments of the ``LlamaConfig``/``GPT2Config`` for ``config``, written from
    the family's :data:`HF_TABLES` row by row (plain data: no ``transformers`` needed)
    (section 1.12)."""
    architecture = check_hf_compatible(config, architecture)
    table = HF_TABLES[architecture]
    values = {row.hf: row.to_hf(config) for row in table.fields}
    values.update({key: accepted[0] for key, accepted in table.constants.items()})
    bos, eos = _TOKEN_IDS[architecture]
    values["bos_token_id"] = _token_id(bos, config.vocab_size)
    values["eos_token_id"] = _token_id(eos, config.vocab_size)
    return values


def config_to_hf(
    config: ModelConfig, architecture: str | None = None, attn_implementation: str = "sdpa"
) -> Any:
    """A ``LlamaConfig`` or ``GPT2Config`` describing the same network as ``config``
    (section 1.12)."""
    values = hf_config_dict(config, architecture)
    architecture = check_hf_compatible(config, architecture)
    cls = {"llama": "LlamaConfig", "gpt2": "GPT2Config"}[architecture]
    return getattr(_transformers(), cls)(**values, attn_implementation=attn_implementation)


# --------------------------------------------------------------------------------------------
# Hugging Face config -> ModelConfig
# --------------------------------------------------------------------------------------------


def _getter(hf_config: Any) -> Getter:
    """Read a field from a ``PretrainedConfig`` or from a plain ``config.json`` dict."""

    def get(key: str, default: Any = None) -> Any:
        if isinstance(hf_config, Mapping):
            return hf_config.get(key, default)
        return getattr(hf_config, key, default)

    return get


def hf_config_architecture(hf_config: Any) -> str:
    """``"llama"`` or ``"gpt2"`` from a config's ``model_type``; ``ValueError`` otherwise
    (section 1.12)."""
    model_type = _getter(hf_config)("model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model_type={model_type!r} is not supported: from_hf reads Llama ('llama') and "
            f"GPT-2 ('gpt2') checkpoints."
        )
    return model_type


def config_from_hf(hf_config: Any, name: str | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of a ``LlamaConfig``/``GPT2Config`` (or their ``config.json`` dict)
    (section 1.12).

    Raises ``ValueError`` naming every field whose value tinytrans cannot reproduce exactly.
    """
    architecture = hf_config_architecture(hf_config)
    try:
        fields, problems = _read_table(HF_TABLES[architecture], _getter(hf_config))
    except (TypeError, KeyError, AttributeError, ValueError) as error:
        raise ValueError(
            f"this {HF_CLASSES[architecture]} config is malformed ({type(error).__name__}: "
            f"{error}); pass the config.json of a real {architecture} checkpoint"
        ) from None
    if problems:
        raise ValueError(
            f"This {HF_CLASSES[architecture]} config cannot be expressed as a ModelConfig: "
            + "; ".join(problems)
            + "."
        )
    try:
        return ModelConfig(**fields, name=name or f"hf-{architecture}")
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"this {HF_CLASSES[architecture]} config does not give a valid model: {error}"
        ) from None


def _read_table(table: HFTable, get: Getter) -> tuple[dict[str, Any], list[str]]:
    """Our fields from an HF config by ``table``, and every value we cannot reproduce."""
    problems = _constant_problems(table, get)
    if table.architecture == "llama":
        problems += _llama_problems(get)
    read: dict[str, dict[str, Any]] = {}
    for row in table.fields:
        read.setdefault(row.ours, {})[row.hf] = row.from_hf(get, problems)
    fields: dict[str, Any] = dict(table.fixed)
    for ours, by_key in read.items():
        if len(set(by_key.values())) > 1:
            shown = ", ".join(f"{key}={value!r}" for key, value in by_key.items())
            problems.append(f"{shown} (tinytrans has one {ours} field; they must be equal)")
        fields[ours] = next(iter(by_key.values()))
    if fields.get("n_kv_heads") in (None, fields["n_heads"]):
        fields["n_kv_heads"] = None
    return fields, problems


def _constant_problems(table: HFTable, get: Getter) -> list[str]:
    """HF keys whose value the family's tinytrans model cannot compute."""
    problems = []
    for key, accepted in table.constants.items():
        value = get(key, accepted[0])
        if value not in accepted:
            needs = f"{accepted[0]!r}" if len(accepted) == 1 else f"one of {list(accepted)}"
            problems.append(f"{key}={value!r} (needs {needs})")
    return problems


def _llama_problems(get: Getter) -> list[str]:
    """Llama keys that no table row holds but that must agree with the rest."""
    hidden, heads, head_dim = (
        get("hidden_size", None), get("num_attention_heads", None), get("head_dim", None)
    )  # fmt: skip
    if head_dim is not None and hidden is not None and head_dim * heads != hidden:
        return [f"head_dim={head_dim} (needs hidden_size / num_attention_heads)"]
    return []


# --------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------


def _llama_names(config: ModelConfig) -> dict[str, str]:
    """tinytrans parameter name -> Hugging Face Llama name."""
    names = {
        "tok_emb.weight": "model.embed_tokens.weight",
        "final_norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    }
    kinds = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "attn_norm.weight"] = theirs + "input_layernorm.weight"
        names[ours + "ffn_norm.weight"] = theirs + "post_attention_layernorm.weight"
        for kind in kinds:
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                names[f"{ours}attn.{proj}.{kind}"] = f"{theirs}self_attn.{proj}.{kind}"
            for proj in ("gate_proj", "up_proj", "down_proj"):
                names[f"{ours}ffn.{proj}.{kind}"] = f"{theirs}mlp.{proj}.{kind}"
    return names


def _gpt2_names(config: ModelConfig) -> dict[str, str]:
    """tinytrans name -> GPT-2 name for the tensors that copy as they are or transposed."""
    names = {
        "tok_emb.weight": "transformer.wte.weight",
        "pos_emb.weight": "transformer.wpe.weight",
        "final_norm.weight": "transformer.ln_f.weight",
        "final_norm.bias": "transformer.ln_f.bias",
        "lm_head.weight": "lm_head.weight",
    }
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for kind in ("weight", "bias"):
            names[f"{ours}attn_norm.{kind}"] = f"{theirs}ln_1.{kind}"
            names[f"{ours}ffn_norm.{kind}"] = f"{theirs}ln_2.{kind}"
            names[f"{ours}attn.o_proj.{kind}"] = f"{theirs}attn.c_proj.{kind}"
            names[f"{ours}ffn.up_proj.{kind}"] = f"{theirs}mlp.c_fc.{kind}"
            names[f"{ours}ffn.down_proj.{kind}"] = f"{theirs}mlp.c_proj.{kind}"
    return names


def _layer_kinds(config: ModelConfig) -> list[tuple[int, str]]:
    return [(i, kind) for i in range(config.n_layers) for kind in ("weight", "bias")]


def _conv1d(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D stores (in, out) weights, nn.Linear (out, in): transpose 2-D weights."""
    return tensor.t().contiguous() if name.endswith(".weight") and tensor.dim() == 2 else tensor


def state_dict_to_hf(state: Mapping[str, torch.Tensor], config: ModelConfig) -> StateDict:
    """Rename (and for GPT-2 transpose and fuse) a tinytrans state dict into HF's layout
    (section 1.12)."""
    architecture = check_hf_compatible(config)
    if architecture == "llama":
        return {hf: state[ours].clone() for ours, hf in _llama_names(config).items()}
    out = {
        hf: (_conv1d(hf, state[ours]) if ours.startswith("blocks.") else state[ours]).clone()
        for ours, hf in _gpt2_names(config).items()
    }
    for i, kind in _layer_kinds(config):
        fused = torch.cat([state[f"blocks.{i}.attn.{p}_proj.{kind}"] for p in "qkv"], dim=0)
        out[f"transformer.h.{i}.attn.c_attn.{kind}"] = _conv1d(f".{kind}", fused)
    return out


_GPT2_BUFFERS = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")


def _normalise_hf_keys(state: Mapping[str, torch.Tensor], architecture: str) -> StateDict:
    """Add the ``transformer.`` prefix old GPT-2 files lack; drop non-weight buffers."""
    out: StateDict = {}
    for key, tensor in state.items():
        if architecture == "gpt2":
            if _GPT2_BUFFERS.search(key):
                continue
            if key != "lm_head.weight" and not key.startswith("transformer."):
                key = "transformer." + key
        elif key.endswith("rotary_emb.inv_freq"):
            continue
        out[key] = tensor
    return out


def state_dict_from_hf(state: Mapping[str, torch.Tensor], config: ModelConfig) -> StateDict:
    """The tinytrans state dict for a Hugging Face Llama/GPT-2 one (inverse of ``to_hf``'s)
    (section 1.12)."""
    architecture = check_hf_compatible(config)
    state = _normalise_hf_keys(state, architecture)
    if "lm_head.weight" not in state and config.tie_embeddings:
        state["lm_head.weight"] = state[
            "model.embed_tokens.weight" if architecture == "llama" else "transformer.wte.weight"
        ]
    names = _llama_names(config) if architecture == "llama" else _gpt2_names(config)
    expected = set(names.values())
    if architecture == "gpt2":
        expected |= {f"transformer.h.{i}.attn.c_attn.{kind}" for i, kind in _layer_kinds(config)}
    _check_keys(set(state), expected)
    out = {ours: state[hf] for ours, hf in names.items()}
    if architecture == "gpt2":
        out = {k: _conv1d(k, t) if k.startswith("blocks.") else t for k, t in out.items()}
        out.update(_split_c_attn(state, config))
    return {key: tensor.detach().clone() for key, tensor in out.items()}


def _split_c_attn(state: Mapping[str, torch.Tensor], config: ModelConfig) -> StateDict:
    """GPT-2's fused (C, 3C) query/key/value Conv1D -> three (C, C) Linear weights and biases."""
    out: StateDict = {}
    for i in range(config.n_layers):
        fused = f"transformer.h.{i}.attn.c_attn."
        weights = state[fused + "weight"].t().split(config.d_model, dim=0)
        biases = state[fused + "bias"].split(config.d_model, dim=0)
        for p, w, b in zip("qkv", weights, biases, strict=True):
            out[f"blocks.{i}.attn.{p}_proj.weight"] = w.contiguous()
            out[f"blocks.{i}.attn.{p}_proj.bias"] = b
    return out


def _check_keys(found: set[str], expected: set[str]) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise ValueError(
            "The state dict does not match its config: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}."
        )


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def to_hf(
    model: TinyTransformer, architecture: str | None = None, attn_implementation: str = "sdpa"
) -> Any:
    """A ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` computing exactly what ``model`` computes
    (section 1.12).

    The family follows ``model.config.positional`` (rope -> Llama, learned -> GPT-2) unless
    ``architecture`` says otherwise; configs the family cannot express raise ``ValueError``.
    The copy lives on the model's device and dtype and has its train/eval mode.
    """
    hf_config = config_to_hf(model.config, architecture, attn_implementation)
    transformers = _transformers()
    cls = getattr(transformers, HF_CLASSES[check_hf_compatible(model.config, architecture)])
    hf_model = cls(hf_config)
    from tinytrans.checkpoint import _dequantized_state

    # An int8 model (quantize_int8) exports its int8 weights dequantized to float.
    state = _dequantized_state(model) or model.state_dict()
    hf_model.load_state_dict(state_dict_to_hf(state, model.config), strict=True)
    hf_model.to(device=model.device, dtype=model.tok_emb.weight.dtype)
    return hf_model.train(model.training)


def from_hf(
    hf_model_or_state_dict: Any,
    hf_config: Any = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> TinyTransformer:
    """A :class:`TinyTransformer` with the weights of a Hugging Face Llama or GPT-2 model
    (section 1.12).

    Pass a ``LlamaForCausalLM``/``GPT2LMHeadModel`` (e.g. ``GPT2LMHeadModel.from_pretrained("gpt2")``
    on a machine with internet), or a state dict together with its ``hf_config`` (a
    ``PretrainedConfig`` or the ``config.json`` dict; then ``transformers`` is not needed).
    Old GPT-2 files (no ``transformer.`` prefix, ``attn.bias`` buffers, no ``lm_head``) load too.
    The model is returned in ``dtype`` (float32 by default), in eval mode.
    """
    if isinstance(hf_model_or_state_dict, Mapping):
        if hf_config is None:
            raise ValueError("from_hf(state_dict) needs hf_config (a PretrainedConfig or dict).")
        state = hf_model_or_state_dict
    else:
        hf_config = hf_config if hf_config is not None else hf_model_or_state_dict.config
        state = hf_model_or_state_dict.state_dict()
    config = config_from_hf(hf_config)
    try:
        converted = state_dict_from_hf(state, config)
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"the state dict does not match its config ({type(error).__name__}: {error}); pass "
            "the weights and the config.json of the same checkpoint"
        ) from None
    model = TinyTransformer(config)
    model.load_state_dict(converted, strict=True)
    return model.to(dtype=dtype).eval()
