"""Quantization and the size of a model (section 4.9).

:func:`quantize_int8` is PyTorch's int8 dynamic quantization (int8 kernels, one scale per
tensor). :func:`fake_quantize` rounds a weight matrix to ``bits``-bit integers with one
symmetric scale per output channel or per group of input weights and turns it back into
floats (quantize-dequantize), which measures what the rounding costs in quality without
integer kernels; :func:`quantize_weights` applies it (or bf16) to a copy of a model and
:func:`weight_storage_bytes` counts what the quantized weights would take to store.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from tinytrans.model import TinyTransformer

__all__ = [
    "WEIGHT_SCHEMES",
    "fake_quantize",
    "quantize_groups",
    "quantize_int8",
    "quantize_weights",
    "state_dict_bytes",
    "weight_storage_bytes",
]

#: The weight formats :func:`quantize_weights` knows (section 4.9): bits per stored weight
#: and the group size (None: one scale per output channel; 0: no integer rounding at all).
WEIGHT_SCHEMES: dict[str, tuple[int, int | None]] = {
    "fp32": (32, 0),
    "bf16": (16, 0),
    "int8-channel": (8, None),
    "int4-group": (4, 32),
}


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


def _check_bits_group(weight: torch.Tensor, bits: int, group_size: int | None) -> int:
    """The group size to use for ``weight`` (the row length when ``group_size`` is None)."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}.")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}.")
    size = weight.shape[1] if group_size is None else group_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"group_size must be None or an integer >= 1, got {group_size!r}.")
    if weight.shape[1] % size:
        raise ValueError(
            f"the rows of this {tuple(weight.shape)} weight do not split into groups of "
            f"{size}; choose a group size that divides {weight.shape[1]}."
        )
    return size


def quantize_groups(
    weight: torch.Tensor, bits: int, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer codes and one scale per group of a (out, in) weight (section 4.9).

    Each row is cut into groups of ``group_size`` consecutive weights (``None``: the whole
    row, one scale per output channel). A group's scale is ``max|w| / (2**(bits-1) - 1)``, so
    its largest weight maps to the largest code and rounding moves every weight by at most
    half a scale. Returns codes (out, in) as int8 and scales (out, in // group_size) as fp32.
    """
    size = _check_bits_group(weight, bits, group_size)
    top = 2 ** (bits - 1) - 1
    groups = weight.detach().float().reshape(weight.shape[0], -1, size)  # (out, groups, size)
    scales = groups.abs().amax(-1) / top  # (out, groups)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero group
    codes = torch.round(groups / scales[..., None]).clamp(-top, top)
    return codes.to(torch.int8).reshape(weight.shape), scales


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """``weight`` rounded by :func:`quantize_groups` and turned back into floats (section 4.9).

    Same shape and dtype as ``weight``; ``|w - fake_quantize(w)| <= scale / 2`` in every group.
    """
    size = _check_bits_group(weight, bits, group_size)
    codes, scales = quantize_groups(weight, bits, group_size)
    groups = codes.float().reshape(weight.shape[0], -1, size) * scales[..., None]
    return groups.reshape(weight.shape).to(weight.dtype)


def _check_scheme(scheme: str) -> tuple[int, int | None]:
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(
            f"unknown weight scheme {scheme!r}; choose one of {sorted(WEIGHT_SCHEMES)}."
        )
    return WEIGHT_SCHEMES[scheme]


def _matrices(model: nn.Module) -> set[int]:
    """ids of the weight matrices of every ``nn.Linear`` and ``nn.Embedding`` (tied ones once)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}


def quantize_weights(model: TinyTransformer, scheme: str) -> TinyTransformer:
    """A float copy of ``model`` whose weights went through ``scheme`` (section 4.9).

    ``"bf16"`` rounds every parameter to bfloat16; the integer schemes of
    ``WEIGHT_SCHEMES`` fake-quantize every linear and embedding matrix (a tied head
    once) and keep the norms in fp32. The copy computes in fp32, so its perplexity shows
    the cost of the rounding alone.
    """
    bits, group_size = _check_scheme(scheme)
    copy_ = copy.deepcopy(model)
    matrices = _matrices(copy_)
    with torch.no_grad():
        for param in copy_.parameters():
            if bits == 16:
                param.copy_(param.to(torch.bfloat16).float())
            elif bits < 16 and id(param) in matrices:
                param.copy_(fake_quantize(param, bits, group_size))
    return copy_


def weight_storage_bytes(model: TinyTransformer, scheme: str) -> int:
    """Bytes the parameters take when stored in ``scheme`` (section 4.9).

    Integer schemes: ``bits / 8`` bytes per matrix weight plus one fp32 scale per group,
    the norms in fp32. Counts each parameter once (a tied head is the embedding).
    """
    bits, group_size = _check_scheme(scheme)
    if group_size == 0:
        return sum(p.numel() for p in model.parameters()) * bits // 8
    matrices, total = _matrices(model), 0
    for param in model.parameters():
        if id(param) not in matrices:
            total += param.numel() * 4
            continue
        size = param.shape[1] if group_size is None else group_size
        total += param.numel() * bits // 8 + param.numel() // size * 4
    return total
