"""Beam search and length normalisation (section 4.4).

:func:`beam_search` keeps the ``num_beams`` best partial continuations by cumulative
log-probability; :class:`BeamSearchTree` records every step's candidates for the widget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tinytrans.generate.prompts import _check_max_new_tokens, _prompt_ids
from tinytrans.model import TinyTransformer, eval_mode

__all__ = ["Beam", "BeamCandidate", "BeamSearchTree", "beam_search"]


@dataclass
class Beam:
    """One hypothesis: its new ids, summed log-probability and length-normalised score (section 4.4)."""

    ids: list[int]
    score: float
    log_prob: float
    finished: bool = False


@dataclass
class BeamCandidate:
    """A scored extension at one step of the search (for the beam-search widget, section 4.4)."""

    parent: int  # index of the extended beam among the previous step's kept beams
    token: int
    ids: list[int]
    log_prob: float
    score: float
    status: str  # "kept", "finished" (ended with eos) or "pruned"


@dataclass
class BeamSearchTree:
    """Per step, the best candidates and their fate; ``expanded`` counts all scored ones (section 4.4)."""

    prompt: list[int]
    steps: list[list[BeamCandidate]] = field(default_factory=list)
    expanded: list[int] = field(default_factory=list)


def _length_normalised(log_prob: float, length: int, length_penalty: float) -> float:
    """Score = log p / length ** alpha: alpha > 0 favours longer outputs, 0 is plain log p."""
    return log_prob / (max(length, 1) ** length_penalty)


def beam_search(
    model: TinyTransformer,
    ids: Sequence[int] | torch.Tensor,
    num_beams: int = 4,
    max_new_tokens: int = 20,
    *,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    return_tree: bool = False,
) -> list[Beam] | tuple[list[Beam], BeamSearchTree]:
    """The ``num_beams`` best continuations of ``ids``, best first (Beam.ids = new ids; section 4.4).

    Each step extends every live beam by every token, keeps the ``num_beams`` best
    extensions by cumulative log-probability, and retires those ending in ``eos_id``.
    Finished and surviving beams are ranked by ``log_prob / length ** length_penalty``.
    The prompt is cropped so that prompt + output fit in the context.
    """
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}.")
    _check_max_new_tokens(max_new_tokens)
    context = model.config.context_length
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens must be < context_length ({context}) for beam search.")
    prompt = _prompt_ids(model, ids)[-(context - max_new_tokens) :]
    tree = BeamSearchTree(prompt)
    with eval_mode(model), torch.inference_mode():
        beams = _beam_loop(model, prompt, num_beams, max_new_tokens, length_penalty, eos_id, tree)
    return (beams, tree) if return_tree else beams


def _beam_loop(
    model: TinyTransformer,
    prompt: list[int],
    num_beams: int,
    max_new_tokens: int,
    alpha: float,
    eos_id: int | None,
    tree: BeamSearchTree,
) -> list[Beam]:
    cache = model.new_cache(1, len(prompt) + max_new_tokens)
    logits, _ = model(torch.tensor([prompt], device=model.device), cache=cache)
    live_ids: list[list[int]] = [[]]
    live_logp = torch.zeros(1, device=model.device)  # (beams,)
    finished: list[Beam] = []
    for step in range(max_new_tokens):
        total = live_logp[:, None] + logits[:, -1].float().log_softmax(-1)  # (beams, V)
        vocab = total.shape[-1]
        top = total.flatten().topk(min(total.numel(), 2 * num_beams))
        parents: list[int] = []
        tokens: list[int] = []
        new_ids: list[list[int]] = []
        new_logp: list[float] = []
        candidates: list[BeamCandidate] = []
        for value, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            parent, token = divmod(index, vocab)
            ids = [*live_ids[parent], token]
            score = _length_normalised(value, len(ids), alpha)
            status = "pruned"
            if token == eos_id:
                status = "finished"
                finished.append(Beam(ids, score, value, finished=True))
            elif len(new_ids) < num_beams:
                status = "kept"
                parents.append(parent)
                tokens.append(token)
                new_ids.append(ids)
                new_logp.append(value)
            candidates.append(BeamCandidate(parent, token, ids, value, score, status))
        tree.steps.append(candidates)
        tree.expanded.append(total.numel())
        live_ids, live_logp = new_ids, torch.tensor(new_logp, device=model.device)
        if not live_ids or step == max_new_tokens - 1:
            break
        cache.reorder(torch.tensor(parents, device=model.device))
        logits, _ = model(torch.tensor(tokens, device=model.device)[:, None], cache=cache)
    survivors = [
        Beam(ids, _length_normalised(lp, len(ids), alpha), lp)
        for ids, lp in zip(live_ids, live_logp.tolist(), strict=True)
    ]
    ranked = sorted(finished + survivors, key=lambda b: b.score, reverse=True)
    return ranked[:num_beams]
