"""tinytrans: design, tokenize, train, run and size a small decoder-only transformer.

The package mirrors the course: ``model`` (chapter 1), ``tokenizers`` and ``data``
(chapter 2), ``train`` (chapter 3), ``generate`` (chapter 4), ``sizing`` (chapter 5);
``widgets`` and ``interop`` sit on top.

The names most programs need are also here, at the top level (``tinytrans.ModelConfig``,
``tinytrans.Trainer``, ``tinytrans.load_pretrained``, ...). They are imported on first use
(PEP 562), so ``import tinytrans`` does not import torch. ``tinytrans.generate`` is the
chapter 4 module (``tinytrans.generate.generate`` is the function): Python binds a package's
submodule to its name, so the two cannot share it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

#: Top-level name -> the module that defines it (every name is that module's own object).
_API: dict[str, str] = {
    # chapter 1
    "ModelConfig": "tinytrans.config",
    "TinyTransformer": "tinytrans.model",
    "KVCache": "tinytrans.model",
    "PRESETS": "tinytrans.config",
    "build_model": "tinytrans.model",
    "preset_names": "tinytrans.config",
    # chapter 2
    "Tokenizer": "tinytrans.tokenizers",
    "CharTokenizer": "tinytrans.tokenizers",
    "BPETokenizer": "tinytrans.tokenizers",
    "SentencePieceTokenizer": "tinytrans.tokenizers",
    "train_tokenizer": "tinytrans.tokenizers",
    "DataModule": "tinytrans.data",
    "TokenDataset": "tinytrans.data",
    "load_corpus": "tinytrans.data",
    # chapter 3
    "TrainConfig": "tinytrans.train",
    "Trainer": "tinytrans.train",
    "Callback": "tinytrans.train",
    "save_model": "tinytrans.checkpoint",
    "load_checkpoint": "tinytrans.checkpoint",
    "finetune": "tinytrans.train",
    "estimate_loss": "tinytrans.evaluate",
    "load_pretrained": "tinytrans.pretrained",
    # chapter 4
    "SamplingConfig": "tinytrans.generate",
    "stream_generate": "tinytrans.generate",
    "generate_batch": "tinytrans.generate",
    "beam_search": "tinytrans.generate",
    # chapter 5
    "count_parameters": "tinytrans.sizing",
    # on top
    "to_hf": "tinytrans.interop",
    "from_hf": "tinytrans.interop",
}

#: The subpackages and modules, also reachable as attributes (``tinytrans.sizing``).
_MODULES = (
    "checkpoint",
    "cli",
    "data",
    "env",
    "evaluate",
    "generate",
    "interop",
    "model",
    "pretrained",
    "sizing",
    "tokenizers",
    "train",
    "widgets",
)

__all__ = [
    "PRESETS",
    "BPETokenizer",
    "Callback",
    "CharTokenizer",
    "DataModule",
    "KVCache",
    "ModelConfig",
    "SamplingConfig",
    "SentencePieceTokenizer",
    "TinyTransformer",
    "TokenDataset",
    "Tokenizer",
    "TrainConfig",
    "Trainer",
    "beam_search",
    "build_model",
    "count_parameters",
    "estimate_loss",
    "finetune",
    "from_hf",
    "generate_batch",
    "load_checkpoint",
    "load_corpus",
    "load_pretrained",
    "preset_names",
    "save_model",
    "stream_generate",
    "to_hf",
    "train_tokenizer",
]


def __getattr__(name: str) -> Any:
    """Import a top-level name's module on first use (PEP 562) and cache the name here."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API, *_MODULES})
