"""What a training checkpoint restores, in one place: :class:`TrainState` (section 3.7).

The trainer's progress (step, tokens, schedule horizon, best validation loss, early-stopping
counter, loss history) and the states of the objects it drives (optimizer, loss scaler,
random-number generators, data samplers) are everything :meth:`Trainer.resume` needs to
continue a run bit for bit. The keys a checkpoint holds for them are written here once: in
the fields of :class:`TrainState` and in ``COMPONENTS``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tinytrans.checkpoint import damaged

__all__ = ["COMPONENTS", "TrainState", "capture_rng", "restore_rng"]


def _types(*types: type) -> dict[str, tuple[type, ...]]:
    """Field metadata: the types a checkpoint may hold for the field."""
    return {"types": types}


#: Objects whose ``state_dict`` a training checkpoint holds beside :class:`TrainState`.
COMPONENTS: dict[str, tuple[type, ...]] = {
    "optimizer": (dict,),
    "scaler": (dict,),
    "rng": (dict,),
    "data": (dict,),
}


@dataclass
class TrainState:
    """A run's progress: every number and list a checkpoint restores (section 3.7)."""

    run_id: str = field(metadata=_types(str))
    step: int = field(default=0, metadata=_types(int))
    tokens_seen: int = field(default=0, metadata=_types(int))
    tokens_per_step: int | None = field(default=None, metadata=_types(int, type(None)))
    horizon: int | None = field(default=None, metadata=_types(int, type(None)))
    horizon_fixed: bool = field(default=True, metadata=_types(bool))
    train_time: float = field(default=0.0, metadata=_types(int, float))
    history: list[dict[str, Any]] = field(default_factory=list, metadata=_types(list))
    train_losses: list[float] = field(default_factory=list, metadata=_types(list))
    best_val_loss: float = field(default=math.inf, metadata=_types(int, float))
    best_step: int | None = field(default=None, metadata=_types(int, type(None)))
    evals_without_improvement: int = field(default=0, metadata=_types(int))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (``weights_only``-loadable), keyed as in a checkpoint."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any], path: Any = "checkpoint") -> TrainState:
        """Check a training checkpoint's fields (and ``COMPONENTS``) and read them back;
        ``ValueError`` naming the first damaged field, before anything is changed."""
        cls.check(state, path)
        values = {f.name: state[f.name] for f in dataclasses.fields(cls)}
        values["train_time"] = float(values["train_time"])
        return cls(**values)

    @classmethod
    def check(cls, state: dict[str, Any], path: Any) -> None:
        """Raise ``ValueError`` unless ``state`` holds every field with an allowed type."""
        expected = {f.name: f.metadata["types"] for f in dataclasses.fields(cls)}
        for key, types in {**expected, **COMPONENTS}.items():
            value = state.get(key)
            if (
                key not in state
                or not isinstance(value, types)
                or (isinstance(value, bool) and bool not in types)
            ):
                raise damaged(path, f"field {key!r} is missing or has type {type(value).__name__}")
        if state["step"] < 0 or state["tokens_seen"] < 0:
            raise damaged(path, "a negative step or token count")
        losses = state["train_losses"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses):
            raise damaged(path, "train_losses holds something other than numbers")
        if len(losses) != state["step"]:
            raise damaged(path, f"{len(losses)} losses for {state['step']} steps")
        if not all(
            isinstance(e, dict) and isinstance(e.get("step"), int) for e in state["history"]
        ):
            raise damaged(path, "history entries without a step")
        _check_components(state, path)


def _check_components(state: dict[str, Any], path: Any) -> None:
    optimizer = state["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
        optimizer.get("param_groups"), list
    ):
        raise damaged(path, "the optimizer state has no 'state' and 'param_groups'")
    rng = state["rng"]
    if (
        not isinstance(rng.get("torch"), torch.Tensor)
        or not isinstance(rng.get("python"), dict)
        or not isinstance(rng.get("numpy"), dict)
    ):
        raise damaged(path, "the random-number states are incomplete")
    if not isinstance(state["data"].get("samplers"), dict):
        raise damaged(path, "the data position has no sampler states")


def capture_rng() -> dict[str, Any]:
    """Every random-number state as tensors and plain numbers (``weights_only``-safe)
    (section 3.7)."""
    version, py_state, gauss = random.getstate()
    legacy: tuple[str, np.ndarray, int, int, float] = np.random.get_state(legacy=True)  # type: ignore[assignment]  # numpy types the legacy form as dict | tuple
    kind, keys, pos, has_gauss, cached = legacy
    return {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(py_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng` (section 3.7)."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
