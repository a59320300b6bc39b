"""What a training run is told: :class:`TrainConfig` and the learning-rate schedule
(sections 3.5 and 3.6)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tinytrans.precision import PRECISIONS, TRAINING_PRECISIONS, canonical_precision

__all__ = ["OPTIMIZERS", "TRAJECTORY_FIELDS", "TrainConfig", "lr_at"]

#: The optimizers the trainer builds (sections 3.5 and 3.12): AdamW everywhere, or Muon on the
#: hidden matrices with AdamW on the rest (:class:`tinytrans.train.muon.MuonAdamW`).
OPTIMIZERS = ("adamw", "muon")

#: Train-config fields that change the trajectory: resuming with other values is not exact.
TRAJECTORY_FIELDS = (
    "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "betas", "eps", "grad_clip",
    "grad_accum_steps", "precision", "seed",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the model and the data (section 3.6).

    Budget: training stops at whichever of ``max_steps``, ``max_tokens`` or ``max_time``
    (seconds of loop wall clock, evaluations included) comes first; at least one is required.

    Horizon of the cosine schedule (the step at which the learning rate reaches its floor):
    ``max_steps``, or the steps ``max_tokens`` needs, whichever is smaller. With ``max_time``
    the trainer times the first ``time_probe_steps`` steps (plus the cost of an evaluation)
    and sets the horizon to the number of steps that fit in the remaining time (capped by
    the other budgets). Until then the learning rate follows the warmup (or stays at its peak).
    The horizon is stored in checkpoints, so a resumed run follows the same schedule.

    ``precision`` is one of :data:`tinytrans.precision.TRAINING_PRECISIONS` (``auto``,
    ``fp32``, ``bf16-mixed``, ``fp16-mixed``; section 3.9); the older ``bf16`` and ``fp16``
    are accepted and stored under their canonical names.
    """

    # budget
    max_steps: int | None = None
    max_tokens: int | None = None
    max_time: float | None = None
    # optimizer and schedule (seed 004's AdamW + cosine, with GPT-style betas and decay)
    optimizer: str = "adamw"  # adamw | muon (Muon on the hidden matrices, AdamW on the rest)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    # hardware
    precision: str = "auto"  # auto | fp32 | bf16-mixed | fp16-mixed
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:1 | mps
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the training forward (the first step compiles)
    seed: int = 1337
    # evaluation, samples, early stopping
    eval_interval: int = 200
    eval_batches: int | None = 20
    eval_at_start: bool = True
    sample_interval: int = 0  # 0 = only at the end (if prompts and a tokenizer are given)
    sample_prompts: tuple[str, ...] = ("\n",)
    sample_tokens: int = 200
    sample_temperature: float = 0.8
    early_stopping_patience: int | None = None  # evaluations without improvement
    min_delta: float = 0.0
    # output
    out_dir: str | None = None
    save_checkpoints: bool = True
    progress: bool = True
    log: bool = True
    time_probe_steps: int = 10
    run_name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.betas, (str, bytes)) or not isinstance(self.betas, Sequence):
            raise ValueError(f"TrainConfig.betas must be two numbers, got {self.betas!r}.")
        if not all(_is_real(b) for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers, got {self.betas!r}.")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]  # checked above
        prompts = self.sample_prompts
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
            raise ValueError(
                f"TrainConfig.sample_prompts must be a tuple of strings, got {prompts!r}; "
                f"write sample_prompts=({prompts!r},) for one prompt."
            )
        self.sample_prompts = tuple(prompts)
        if not all(isinstance(p, str) for p in self.sample_prompts):
            raise ValueError(
                f"TrainConfig.sample_prompts must hold strings, got {self.sample_prompts!r}."
            )
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)
        self.precision = _training_precision(self.precision)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (section 3.6)."""
        if self.max_steps is None and self.max_tokens is None and self.max_time is None:
            raise ValueError("TrainConfig needs a budget: set max_steps, max_tokens or max_time.")
        for key in ("max_steps", "max_tokens", "grad_accum_steps", "eval_interval"):
            _check_positive_int(key, getattr(self, key), optional=key.startswith("max"))
        for key in ("eval_batches", "early_stopping_patience"):
            _check_positive_int(key, getattr(self, key), optional=True)
        for key in ("warmup_steps", "sample_interval", "sample_tokens", "time_probe_steps"):
            _check_positive_int(key, getattr(self, key), allow_zero=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}.")
        _check_positive("lr", self.lr)
        _check_positive("eps", self.eps)
        if self.max_time is not None:
            _check_positive("max_time", self.max_time, "leave it None for no time limit")
        if self.grad_clip is not None:
            _check_positive("grad_clip", self.grad_clip, "use None to turn clipping off")
        for key in ("sample_temperature", "weight_decay", "min_delta", "min_lr_ratio"):
            _check_non_negative(key, getattr(self, key))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        for key in ("out_dir", "run_name"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"TrainConfig.{key} must be a string or None, got {value!r}.")
        for key in ("save_checkpoints", "progress", "log", "eval_at_start",
                    "gradient_checkpointing", "compile"):  # fmt: skip
            if not isinstance(getattr(self, key), bool):
                raise ValueError(
                    f"TrainConfig.{key} must be True or False, got {getattr(self, key)!r}."
                )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        self.precision = _training_precision(self.precision)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), safe for JSON and ``weights_only`` loading."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["sample_prompts"] = list(self.sample_prompts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Undo :meth:`to_dict`; also reads configs saved by older runs (``bf16``, ``fp16``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig field(s) {unknown}.")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)


def _training_precision(name: Any) -> str:
    """The canonical name of a precision the Trainer runs; ``ValueError`` naming the choices."""
    if not isinstance(name, str):
        raise ValueError(f"precision must be one of {TRAINING_PRECISIONS}, got {name!r}.")
    try:
        canonical = canonical_precision(name)
    except ValueError:
        raise ValueError(
            f"precision must be one of {TRAINING_PRECISIONS}, got {name!r} "
            "(the older 'bf16' and 'fp16' mean the mixed recipes)."
        ) from None
    if canonical not in TRAINING_PRECISIONS:
        raise ValueError(
            f"precision {name!r} ({PRECISIONS[canonical].description}) is for sizing only; the "
            f"Trainer runs {TRAINING_PRECISIONS}."
        )
    return canonical


def _check_positive_int(
    key: str, value: Any, optional: bool = False, allow_zero: bool = False
) -> None:
    if value is None and optional:
        return
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"TrainConfig.{key} must be {kind} integer, got {value!r}.")


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_positive(key: str, value: Any, hint: str = "") -> None:
    """A finite number > 0 (``inf`` and ``nan`` are refused: they train on NaN)."""
    if not _is_real(value) or not math.isfinite(value) or not value > 0:
        extra = f"; {hint}" if hint else ""
        raise ValueError(
            f"TrainConfig.{key} must be a finite positive number, got {value!r}{extra}."
        )


def _check_non_negative(key: str, value: Any) -> None:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"TrainConfig.{key} must be a finite number >= 0, got {value!r}.")


def lr_at(step: int, config: TrainConfig, horizon: int | None = None) -> float:
    """Learning rate for optimizer update number ``step`` (0-based): a pure function
    (section 3.5).

    Linear warmup from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` updates, then a
    half cosine from ``lr`` down to ``min_lr_ratio * lr`` at ``horizon`` (default
    ``config.max_steps``), flat afterwards. Without a horizon the rate stays at its peak.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    peak, floor = config.lr, config.lr * config.min_lr_ratio
    warmup = config.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    horizon = config.max_steps if horizon is None else horizon
    if horizon is None:
        return peak
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
