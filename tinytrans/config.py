"""The model's configuration: one dataclass that describes every architecture the course
discusses, and the named presets (section 1.12, "Building the seed's TinyTransformer and the
course model").

It imports nothing heavy (no torch), so the command line can build its flags from the fields
and ``tinytrans --help`` stays fast. :mod:`tinytrans.model` builds the network from it and
re-exports everything here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ACTIVATION_CHOICES",
    "NORM_CHOICES",
    "PLACEMENT_CHOICES",
    "POSITIONAL_CHOICES",
    "PRESETS",
    "RENAMED_PRESETS",
    "ModelConfig",
    "preset_names",
]

Positional = Literal["learned", "sinusoidal", "rope", "none"]
NormKind = Literal["layernorm", "rmsnorm"]
Placement = Literal["pre", "post"]
Activation = Literal["relu", "gelu", "gelu_exact", "swiglu"]

POSITIONAL_CHOICES = ("learned", "sinusoidal", "rope", "none")
NORM_CHOICES = ("layernorm", "rmsnorm")
PLACEMENT_CHOICES = ("pre", "post")
ACTIVATION_CHOICES = ("relu", "gelu", "gelu_exact", "swiglu")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Every architectural switch of the course's transformer, validated on construction.
    (Section 1.12.)"""

    vocab_size: int = 8000
    context_length: int = 128
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (MHA); 1 = MQA; in between = GQA
    d_ff: int = 512
    positional: Positional = "learned"
    norm: NormKind = "layernorm"
    norm_placement: Placement = "pre"
    activation: Activation = "gelu"
    bias: bool = False  # biases of the Linear layers (LayerNorm always has its own bias)
    tie_embeddings: bool = True
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and how to fix it."""
        for key in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{key} must be a positive integer, got {value!r}.")
        _check_choice("positional", self.positional, POSITIONAL_CHOICES)
        _check_choice("norm", self.norm, NORM_CHOICES)
        _check_choice("norm_placement", self.norm_placement, PLACEMENT_CHOICES)
        _check_choice("activation", self.activation, ACTIVATION_CHOICES)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                f"try n_heads in {_divisors(self.d_model)}."
            )
        kv = self.kv_heads
        if isinstance(kv, bool) or not isinstance(kv, int) or kv <= 0:
            raise ValueError(f"ModelConfig.n_kv_heads must be None or a positive int, got {kv!r}.")
        if self.n_heads % kv:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({kv}); "
                f"try n_kv_heads in {_divisors(self.n_heads)}."
            )
        if self.positional == "rope" and self.head_dim % 2:
            raise ValueError(
                f"RoPE rotates pairs of dimensions, so head_dim = d_model / n_heads must be even; "
                f"got {self.head_dim}."
            )
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}.")
        for key in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(
                    f"ModelConfig.{key} must be True or False, got {getattr(self, key)!r}."
                )
        for key in ("dropout", "rope_theta", "norm_eps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"ModelConfig.{key} must be a number, got {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"ModelConfig.{key} must be a finite number, got {value!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ValueError("rope_theta and norm_eps must be positive.")
        if not isinstance(self.name, str):
            raise ValueError(f"ModelConfig.name must be a string, got {self.name!r}.")

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        """Number of key/value heads after resolving ``None`` to ``n_heads``."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def attention_kind(self) -> str:
        """ "MHA", "GQA" or "MQA" — how many query heads share one key/value head."""
        if self.kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else "GQA"

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown ModelConfig field(s) {unknown}; known fields: {sorted(known)}."
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def diff(self, other: ModelConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: ``{field: (self_value, other_value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k != "name" and mine[k] != theirs[k]}

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named architecture, optionally with some fields overridden (e.g. ``vocab_size``)."""
        if name in RENAMED_PRESETS:
            warnings.warn(
                f"preset {name!r} is now called {RENAMED_PRESETS[name]!r}",
                DeprecationWarning,
                stacklevel=2,
            )
            name = RENAMED_PRESETS[name]
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {preset_names()}.")
        return cls(**{**PRESETS[name], "name": name, **overrides})


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"ModelConfig.{key} must be one of {list(choices)}, got {value!r}.")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


_LLAMA = dict(
    positional="rope", norm="rmsnorm", norm_placement="pre", activation="swiglu", bias=False
)
_GPT2 = dict(positional="learned", norm="layernorm", norm_placement="pre", activation="gelu")

#: Named architectures. Sizes are the published ones; where a real model has a feature the
#: switches do not express (Pythia's parallel residual and partial rotary), the preset keeps
#: every parameter-bearing choice so that counts and memory figures are exact.
PRESETS: dict[str, dict[str, Any]] = {
    # Seed 000's TinyTransformer: post-norm, GELU, learned positions, no Linear biases, untied.
    "tiny-postnorm": dict(
        vocab_size=8000, context_length=128, d_model=128, n_layers=2, n_heads=4, d_ff=256,
        positional="learned", norm="layernorm", norm_placement="post", activation="gelu",
        bias=False, tie_embeddings=False, norm_eps=1e-5,
    ),
    # Seed 001's nano-trickster: a character-level Llama-style model.
    "nano-trickster": dict(
        vocab_size=256, context_length=512, d_model=256, n_layers=6, n_heads=8, d_ff=768,
        **_LLAMA, tie_embeddings=True, norm_eps=1e-6,
    ),
    # Seed 003's paper-backed 40M design (five 64-dimensional heads).
    "llama-40m": dict(
        vocab_size=50257, context_length=1024, d_model=320, n_layers=16, n_heads=5, d_ff=854,
        **_LLAMA, tie_embeddings=True, norm_eps=1e-6,
    ),
    # Seed 003's two alternatives to it: the same recipe deeper and narrower (its option B,
    # 24 x 256), and a classic LayerNorm + GELU shape, shallower and wider (its option C, 8 x 384).
    "llama-40m-deep": dict(
        vocab_size=50257, context_length=1024, d_model=256, n_layers=24, n_heads=8, d_ff=682,
        **_LLAMA, tie_embeddings=True,
    ),
    "classic-40m-wide": dict(
        vocab_size=50257, context_length=1024, d_model=384, n_layers=8, n_heads=6, d_ff=1536,
        positional="rope", norm="layernorm", norm_placement="pre", activation="gelu",
        bias=False, tie_embeddings=True,
    ),
    # The course model: trains to readable Shakespeare in minutes on two CPU cores.
    "course": dict(
        vocab_size=96, context_length=256, d_model=192, n_layers=4, n_heads=6, d_ff=512,
        **_LLAMA, tie_embeddings=True, norm_eps=1e-6,
    ),
    # The same size built the GPT-2 way: the baseline the course model must beat.
    "course-gpt2": dict(
        vocab_size=96, context_length=256, d_model=192, n_layers=4, n_heads=6, d_ff=768,
        **_GPT2, bias=True, tie_embeddings=True,
    ),
    "gpt2-small": dict(
        vocab_size=50257, context_length=1024, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
        **_GPT2, bias=True, tie_embeddings=True,
    ),
    "pythia-70m": dict(
        vocab_size=50304, context_length=2048, d_model=512, n_layers=6, n_heads=8, d_ff=2048,
        positional="rope", norm="layernorm", norm_placement="pre", activation="gelu",
        bias=True, tie_embeddings=False,
    ),
    "mobilellm-125m": dict(
        vocab_size=32000, context_length=2048, d_model=576, n_layers=30, n_heads=9,
        n_kv_heads=3, d_ff=1536, **_LLAMA, tie_embeddings=True,
    ),
    "tinyllama-1.1b": dict(
        vocab_size=32000, context_length=2048, d_model=2048, n_layers=22, n_heads=32,
        n_kv_heads=4, d_ff=5632, **_LLAMA, tie_embeddings=False,
    ),
    "llama2-7b": dict(
        vocab_size=32000, context_length=4096, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
        **_LLAMA, tie_embeddings=False,
    ),
    # Llama 3.1 8B: grouped-query attention with 8 K/V heads, a 128K vocabulary, untied.
    "llama3.1-8b": dict(
        vocab_size=128256, context_length=8192, d_model=4096, n_layers=32, n_heads=32,
        n_kv_heads=8, d_ff=14336, **_LLAMA, tie_embeddings=False, rope_theta=500000.0,
    ),
    # GPT-3 175B (Brown et al. 2020, Table 2.1): GPT-2's layout at 96 x 12288, tied.
    "gpt3-175b": dict(
        vocab_size=50257, context_length=2048, d_model=12288, n_layers=96, n_heads=96,
        d_ff=49152, **_GPT2, bias=True, tie_embeddings=True,
    ),
}  # fmt: skip


#: The presets' former names, still accepted with a warning ("seed" read as an RNG seed).
RENAMED_PRESETS: dict[str, str] = {"seed-tiny": "tiny-postnorm", "seed-40m": "llama-40m"}


def preset_names() -> list[str]:
    """Names accepted by :meth:`ModelConfig.preset` (section 1.12)."""
    return list(PRESETS)
