"""Checkpoint files: what a run saves and what loads a model back (section 3.7).

A checkpoint is a ``torch.save`` of plain data and tensors, tagged ``tinytrans-checkpoint``
with a format version, and loaded with ``weights_only=True``: a file cannot run code. Two
kinds share the format: ``"training"`` (everything :meth:`tinytrans.train.Trainer.resume`
needs, see :class:`tinytrans.train.TrainState`) and ``"model"`` (weights, config and
tokenizer, written by :func:`save_model`). Loading weights needs only this module, not the
training loop or ``torch.distributed``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinytrans.files import AtomicWriteError, atomic_write
from tinytrans.model import ModelConfig, TinyTransformer

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointWriteError",
    "check_model_config",
    "check_weights",
    "config_from_checkpoint",
    "damaged",
    "load_checkpoint",
    "read_checkpoint",
    "save_model",
    "save_state",
    "tokenizer_from_text",
    "tokenizer_to_text",
]

CHECKPOINT_FORMAT = "tinytrans-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointWriteError(AtomicWriteError):
    """A checkpoint or metrics file could not be written (full disk, read-only folder...)
    (section 3.7).

    The previous file of that name is left intact: writes go to a temporary file first."""


_WRITE_HINT = "free disk space or choose another output folder (--out / out_dir) you can write to"


def save_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` of ``state`` to ``path``, atomically (section 3.7); a failure is a
    :class:`CheckpointWriteError` and leaves the previous file intact."""
    return atomic_write(
        path,
        lambda handle: torch.save(dict(state), handle),
        error_type=CheckpointWriteError,
        hint=_WRITE_HINT,
    )


def tokenizer_to_text(tokenizer: Any) -> str | None:
    """The tokenizer's own save file as a string, to store in a checkpoint (section 3.7);
    ``None`` when there is no tokenizer."""
    if tokenizer is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        tokenizer.save(path)
        return path.read_text(encoding="utf-8")


def tokenizer_from_text(text: str | None) -> Any:
    """Undo :func:`tokenizer_to_text` with :func:`tinytrans.tokenizers.load` (section 3.7)."""
    if text is None:
        return None
    from tinytrans.tokenizers import load

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return load(path)


def damaged(path: Any, what: str) -> ValueError:
    """The one error for a checkpoint whose contents are not what tinytrans writes
    (section 3.7)."""
    return ValueError(
        f"checkpoint {path} is damaged or was not written by tinytrans: {what}; "
        "use another checkpoint (last.pt or best.pt of a run)"
    )


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check the parts every kind has
    (tag, version, kind, weights, model config, tokenizer) before anyone uses it
    (section 3.7). The training fields are checked by :class:`tinytrans.train.TrainState`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file; pass the path of a .pt checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():
            raise ValueError(
                f"{path} is not a readable tinytrans checkpoint (not a PyTorch file, or "
                "truncated); use a file written by `tinytrans train` or save_model"
            ) from None
        raise ValueError(
            f"{path} is not a tinytrans checkpoint: it holds Python objects beyond tensors and "
            "plain data, which tinytrans refuses to unpickle; use a file written by "
            "`tinytrans train` or save_model"
        ) from None
    except Exception as error:  # any failure to parse: truncated, foreign, damaged
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} is not a readable tinytrans checkpoint (truncated or not a PyTorch file: "
            f"{first[:120]}); use a file written by `tinytrans train` or save_model"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tinytrans checkpoint (no '{CHECKPOINT_FORMAT}' tag).")
    _validate_common(state, path)
    return state


def _validate_common(state: dict[str, Any], path: Any) -> None:
    """Raise ``ValueError`` unless the parts shared by both kinds are what tinytrans writes."""
    version = state.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise damaged(path, f"version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {version}, newer than this tinytrans reads "
            f"({CHECKPOINT_VERSION}); upgrade tinytrans"
        )
    kind = state.get("kind")
    if kind not in ("training", "model"):
        raise damaged(path, f"kind {kind!r} (expected 'training' or 'model')")
    weights = state.get("model")
    if not isinstance(weights, dict) or not weights:
        raise damaged(path, "no model weights")
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise damaged(path, f"weight {key!r} is not a tensor")
    if not isinstance(state.get("model_config"), dict):
        raise damaged(path, "no model_config")
    tokenizer = state.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise damaged(path, "the tokenizer is not text")


def check_weights(
    expected: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor], source: str
) -> None:
    """Names and shapes of ``saved`` must be those of ``expected`` (a model's state dict)
    (section 3.7)."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    wrong = [
        f"{k} {tuple(saved[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if extra:
            parts.append(f"unexpected {extra[:3]}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:3]}")
        raise ValueError(
            f"{source}: the weights do not match its model_config ({'; '.join(parts)}); the file "
            "is damaged or was edited -- use another checkpoint"
        )


def _model_skeleton(config: ModelConfig) -> TinyTransformer:
    """The model of ``config`` on the meta device: shapes only, no memory allocated."""
    with torch.device("meta"):
        return TinyTransformer(config)


def config_from_checkpoint(state: dict[str, Any], path: Any) -> ModelConfig:
    """The :class:`~tinytrans.model.ModelConfig` a checkpoint was saved from (section 3.7)."""
    try:
        return ModelConfig.from_dict(state["model_config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"checkpoint {path} has an invalid model_config: {error}") from None


def check_model_config(model_config: ModelConfig, saved: dict[str, Any], source: str) -> None:
    """Raise ``ValueError`` naming every field where ``saved`` differs from ``model_config``
    (section 3.7)."""
    differences = model_config.diff(ModelConfig.from_dict(saved))
    if differences:
        listed = ", ".join(
            f"{k}: model {a!r} vs checkpoint {b!r}" for k, (a, b) in differences.items()
        )
        raise ValueError(
            f"{source} was saved from a different model configuration ({listed}); build the "
            "model with the checkpoint's config (load_checkpoint does) or use another checkpoint."
        )


def save_model(
    path: str | os.PathLike[str],
    model: TinyTransformer,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """An inference-only checkpoint: weights (optionally cast, e.g. to bf16), config, tokenizer
    (section 3.7).

    Loads with :func:`load_checkpoint`; about 4 bytes per parameter in fp32, 2 in bf16/fp16.
    A model from :func:`tinytrans.generate.quantize_int8` is saved with its int8 weights
    (values, scale, zero point) beside their fp32 dequantization; :func:`load_checkpoint`
    quantizes the model again and puts back exactly those int8 weights.
    """
    quantized = _dequantized_state(model)
    if quantized is not None:
        if dtype is not None:
            raise ValueError(
                "an int8 model cannot be cast to another dtype; save it with dtype=None"
            )
        extra = {**(extra or {}), "quantization": "int8-dynamic",
                 "int8_weights": _int8_weights(model)}  # fmt: skip
    weights = (
        quantized
        if quantized is not None
        else {
            k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
            for k, v in model.state_dict().items()
        }
    )
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": "model",
        "model": {k: v.cpu() for k, v in weights.items()},
        "model_config": model.config.to_dict(),
        "tokenizer": tokenizer_to_text(tokenizer),
        **(extra or {}),
    }
    return save_state(state, path)


def _quantized_linears(model: nn.Module) -> dict[str, Any]:
    """The quantized Linear modules (typed ``Any``: their ``weight()`` is a method)."""
    return {
        name: module
        for name, module in model.named_modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized") and hasattr(module, "weight")
    }


def _int8_weights(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each quantized Linear's int8 values, scale and zero point (``weights_only``-safe)."""
    out = {}
    for name, module in _quantized_linears(model).items():
        weight = module.weight()
        if weight.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            continue  # per-channel: the fp32 copy is re-quantized on load instead
        out[name] = {
            "values": weight.int_repr().cpu(),
            "scale": float(weight.q_scale()),
            "zero_point": int(weight.q_zero_point()),
        }
    return out


def _restore_int8_weights(model: nn.Module, saved: Any, source: str) -> None:
    if not isinstance(saved, dict):
        return
    linears = _quantized_linears(model)
    for name, entry in saved.items():
        module = linears.get(name)
        values = entry.get("values") if isinstance(entry, dict) else None
        if module is None or not isinstance(values, torch.Tensor) or values.dtype != torch.int8:
            raise damaged(source, f"int8 weights for {name!r} do not fit the model")
        if tuple(values.shape) != tuple(module.weight().shape):
            raise damaged(source, f"int8 weights for {name!r} have the wrong shape")
        weight = torch._make_per_tensor_quantized_tensor(
            values, float(entry["scale"]), int(entry["zero_point"])
        )
        module.set_weight_bias(weight, module.bias())


def _dequantized_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The float state dict of a dynamically quantized model (``None`` for a float model)."""
    quantized = _quantized_linears(model)
    if not quantized:
        return None
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if any(key.startswith(f"{name}.") for name in quantized):
            continue
        if isinstance(value, torch.Tensor):
            state[key] = value.detach().cpu()
    for name, module in quantized.items():
        state[f"{name}.weight"] = module.weight().dequantize().detach().cpu()
        bias = module.bias()
        if bias is not None:
            state[f"{name}.bias"] = bias.detach().cpu()
    config = getattr(model, "config", None)
    if getattr(config, "tie_embeddings", False) and "tok_emb.weight" in state:
        # Tied: the loaded model shares one matrix, which quantize_int8 quantizes again.
        state["lm_head.weight"] = state["tok_emb.weight"]
    return state


#: Parts of a checkpoint that :func:`load_checkpoint` leaves out of ``info``.
_NOT_INFO = frozenset({"model", "optimizer", "scaler", "rng", "data", "tokenizer", "int8_weights"})


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu"
) -> tuple[TinyTransformer, Any, dict[str, Any]]:
    """``(model, tokenizer, info)`` from a training or inference checkpoint (section 3.7).

    The model is built from the saved config, gets the weights (as fp32) and is in eval mode.
    ``info`` holds everything else: ``step``, ``tokens_seen``, ``history``, ``best_val_loss``,
    ``train_config``, ``model_config``... (not the optimizer state).
    """
    state = read_checkpoint(path, map_location)
    config = config_from_checkpoint(state, path)
    # Shapes first, on the meta device: a config asking for more than the file holds fails
    # here instead of allocating it.
    check_weights(_model_skeleton(config).state_dict(), state["model"], f"checkpoint {path}")
    tokenizer = tokenizer_from_text(state.get("tokenizer"))
    model = TinyTransformer(config)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    model.load_state_dict(weights)
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
    if state.get("quantization") == "int8-dynamic":
        from tinytrans.generate import quantize_int8

        model = quantize_int8(model.cpu())
        _restore_int8_weights(model, state.get("int8_weights"), str(path))
    info = {k: v for k, v in state.items() if k not in _NOT_INFO}
    info["path"] = str(path)
    return model, tokenizer, info
