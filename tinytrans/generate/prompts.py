"""Prompts in, checked token ids out: the boundary where decoding validates its input (section 4.1).

Every decoding function checks its prompt here, once, on the host: the ids are integers
inside the model's vocabulary and the prompt is not empty. The model's forward pass then
trusts them and never checks token values (that would be a device-to-host sync per step).
An empty prompt starts from the tokenizer's BOS token when it has one; otherwise it is a
``ValueError`` (a model cannot predict from nothing).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch

from tinytrans.model import TinyTransformer
from tinytrans.tokenizers import Tokenizer

__all__ = ["encode_prompt"]


def _as_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    """Prompt ids as a list of Python ints; floats, bools and strings are refused, never rounded."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise ValueError(f"prompt ids must be 1-D or (1, T), got shape {tuple(ids.shape)}.")
        if ids.dtype.is_floating_point or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"prompt ids must be integers, got a tensor of {ids.dtype}.")
        return [int(i) for i in ids.tolist()]
    if isinstance(ids, str):
        raise ValueError("a text prompt needs a tokenizer; pass token ids or a tokenizer.")
    values = list(ids)
    for i in values:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ValueError(
                f"prompt ids must be integers, got {i!r}; a float or string id is never rounded"
            )
    return [int(i) for i in values]


def _check_max_new_tokens(max_new_tokens: int) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")


def _check_ids(model: TinyTransformer, ids: list[int]) -> list[int]:
    """Non-empty ids inside the model's vocabulary, else a ValueError saying why."""
    if not ids:
        raise ValueError("the prompt is empty; give at least one token.")
    vocab = model.config.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(
            f"prompt token id {bad[0]} is outside the model's vocabulary [0, {vocab}); "
            "was it encoded with a different tokenizer?"
        )
    return ids


def _prompt_ids(model: TinyTransformer, ids: Sequence[int] | torch.Tensor) -> list[int]:
    """Checked ids of an id prompt (list or tensor)."""
    return _check_ids(model, _as_list(ids))


def encode_prompt(
    model: TinyTransformer,
    tokenizer: Tokenizer | None,
    prompt: str | Sequence[int] | torch.Tensor,
) -> list[int]:
    """Prompt -> checked ids (section 4.1). Text needs a tokenizer; empty prompts start from BOS if any."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer; pass token ids or a tokenizer.")
        try:
            ids = list(tokenizer.encode(prompt))
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ValueError(f"cannot encode the prompt: {error}") from error
    else:
        ids = _as_list(prompt)
    if not ids:
        bos = getattr(tokenizer, "bos_id", None)
        if bos is None:
            raise ValueError(
                "the prompt is empty and the tokenizer has no BOS token to start from; "
                "give at least one character or token."
            )
        ids = [int(bos)]
    return _check_ids(model, ids)


def _stop_ids(
    tokenizer: Tokenizer | None, stop_tokens: Iterable[int] | None, stop_at_eos: bool
) -> frozenset[int]:
    """The ids that end generation: ``stop_tokens`` plus, if asked, the tokenizer's EOS."""
    stops = {int(t) for t in stop_tokens or ()}
    eos = getattr(tokenizer, "eos_id", None)
    if stop_at_eos and eos is not None:
        stops.add(int(eos))
    return frozenset(stops)
