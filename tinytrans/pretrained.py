"""Pretrained models shipped inside the package, so every chapter can generate text offline.

``load_pretrained("shakespeare-char")`` returns ``(model, tokenizer)``: the "course" preset
trained on the Shakespeare corpus with a character tokenizer by
``scripts/train_pretrained.py``. ``card(name)`` returns its model card: how it was trained
(seed, corpus sha256, steps, time, command) and how good it is (validation loss).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tinytrans.checkpoint import load_checkpoint
from tinytrans.model import ModelConfig, TinyTransformer

__all__ = ["PRETRAINED_DIR", "available", "card", "checkpoint_path", "load_pretrained"]

#: Where the shipped files live (inside the installed package).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT = "shakespeare-char"


def available() -> list[str]:
    """Names of the shipped models (one ``<name>.json`` card each) (section 3.2)."""
    return sorted(
        p.stem for p in PRETRAINED_DIR.glob("*.json") if not p.stem.endswith(".tokenizer")
    )


def _file(name: str, suffix: str) -> Path:
    names = available()
    if name not in names:
        raise ValueError(f"unknown pretrained model {name!r}; available: {names}.")
    path = PRETRAINED_DIR / f"{name}{suffix}"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed package; reinstall tinytrans or rebuild it "
            "with `python scripts/train_pretrained.py`."
        )
    return path


def card(name: str = DEFAULT) -> dict[str, Any]:
    """The model card: training settings, data fingerprint, steps, time and validation loss
    (section 3.2)."""
    return json.loads(_file(name, ".json").read_text(encoding="utf-8"))


def checkpoint_path(name: str = DEFAULT) -> Path:
    """Path of the shipped checkpoint, loadable with
    :func:`tinytrans.checkpoint.load_checkpoint` (section 3.11)."""
    return _file(name, ".pt")


def load_pretrained(
    name: str = DEFAULT, map_location: str | torch.device = "cpu"
) -> tuple[TinyTransformer, Any]:
    """``(model, tokenizer)`` of a shipped model; the model is in eval mode, weights in fp32
    (sections 3.2 and 3.11). Loads through :mod:`tinytrans.checkpoint`, not the training loop."""
    from tinytrans.tokenizers import load

    model, embedded_tokenizer, _ = load_checkpoint(checkpoint_path(name), map_location)
    expected = card(name)["model_config"]
    if ModelConfig.from_dict(expected).diff(model.config):
        raise ValueError(f"the card and checkpoint of {name!r} disagree on the model config.")
    tokenizer_file = PRETRAINED_DIR / f"{name}.tokenizer.json"
    tokenizer = load(tokenizer_file) if tokenizer_file.is_file() else embedded_tokenizer
    return model, tokenizer
