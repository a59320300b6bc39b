"""int8 dynamic quantization and the size of a model on disk (section 4.9)."""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from tinytrans.model import TinyTransformer

__all__ = ["quantize_int8", "state_dict_bytes"]


def quantize_int8(model: TinyTransformer) -> TinyTransformer:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8 (CPU; section 4.9).

    Weights are stored as int8 with one scale per tensor; activations are quantized on the
    fly at each call. Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated upstream
    in favour of ``torchao`` but still shipped with torch); its deprecation warnings are
    silenced. Embeddings stay float32 (a tied ``lm_head`` is quantized separately).
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # pragma: no cover - depends on the torch build
        raise RuntimeError(
            "this torch build has no torch.ao.quantization.quantize_dynamic"
        ) from error
    source = copy.deepcopy(model).cpu().eval()  # the original keeps its device and mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8, inplace=True)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the model's size on disk (section 4.9)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
