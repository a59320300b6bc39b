"""Muon for the hidden matrices, AdamW for the rest, as one optimizer (section 3.12).

Muon (Jordan et al. 2024) keeps a momentum of each hidden matrix's gradient, as SGD does, and
replaces the update by the nearest semi-orthogonal matrix (``U V^T`` of its SVD, approximated
by five Newton-Schulz iterations): every direction of the matrix moves by the same amount,
where AdamW's update is dominated by a few large ones. Embeddings, the tied output head,
norms and biases are not hidden matrices; they keep AdamW. The update is scaled by
``0.2 sqrt(max(rows, cols))`` so that its RMS matches AdamW's (Liu et al. 2025) and both
halves follow one learning rate and one schedule.

The budget recipe trains with it (:data:`tinytrans.train.budget.OPTIMIZER` records the
comparison with AdamW at equal wall clock); chapter 3 compares the two at equal steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["NEWTON_SCHULZ_COEFFICIENTS", "MuonAdamW", "orthogonalize"]

#: The quintic iteration's coefficients (Jordan et al. 2024): chosen for the steepest slope at
#: zero, so five iterations bring every singular value into about [0.7, 1.2].
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalize(updates: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About ``U V^T`` of each matrix in ``updates`` (``(..., rows, cols)``): Newton-Schulz
    iterations in bfloat16, batched over the leading dimensions (section 3.12)."""
    x = updates.bfloat16()
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix is the smaller one
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)  # singular values <= 1
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(updates.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups marked ``muon=True``, AdamW on the others (section 3.12).

    One optimizer, so that the trainer's learning-rate schedule, gradient scaler and
    checkpoints see one object. Matrices of the same shape are orthogonalized together."""

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "momentum": momentum, "ns_steps": ns_steps, "muon": False}  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon updates matrices only: put vectors in a muon=False group")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """One update of every parameter with a gradient."""
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        for group in self.param_groups:
            pairs = [(p, p.grad) for p in group["params"] if p.grad is not None]
            (self._muon if group["muon"] else self._adamw)(group, pairs)

    def _muon(self, group: dict[str, Any], pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for p, grad in pairs:
            by_shape.setdefault(tuple(p.shape), []).append((p, grad))
        beta = group["momentum"]
        for shape, same in by_shape.items():
            nesterov = []
            for p, grad in same:
                buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buffer.lerp_(grad, 1 - beta)
                nesterov.append(grad.lerp(buffer, beta))
            updates = orthogonalize(torch.stack(nesterov), group["ns_steps"])
            lr = group["lr"] * 0.2 * math.sqrt(max(shape))  # AdamW's update RMS
            for (p, _), update in zip(same, updates, strict=True):
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-lr)

    def _adamw(self, group: dict[str, Any], pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        beta1, beta2 = group["betas"]
        for p, grad in pairs:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = float(state["step"])
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
            p.mul_(1 - group["lr"] * group["weight_decay"])
            p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**step))
