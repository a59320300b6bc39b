"""Training: the :class:`Trainer` loop, its schedule, checkpoints, metrics and fine-tuning.

One loop serves a notebook on two CPU cores, a GPU and a ``torchrun`` job:

* **optimizer** -- AdamW with decoupled weight decay on the matrices only (norm scales,
  biases and embeddings are not decayed: shrinking them towards zero has no regularising
  meaning);
* **schedule** -- linear warmup, then cosine decay to ``min_lr_ratio * lr`` over a
  *horizon* (see :func:`lr_at` and :class:`TrainConfig` for how the horizon is fixed when
  only a time budget is given);
* **budget** -- stop at whichever comes first of ``max_steps``, ``max_tokens`` and
  ``max_time`` seconds (or an early stop on a validation plateau);
* **state** -- checkpoints hold everything needed to continue *exactly* (model, optimizer,
  scheduler position, RNG states, data position) and load with ``weights_only=True``;
* **distribution** -- under ``torchrun`` (``WORLD_SIZE > 1``) the same loop wraps the model
  in PyTorch's ``DistributedDataParallel``; each rank trains on its slice of the global batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import pickle
import random
import re
import signal
import statistics
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tinytrans.evaluate import estimate_loss, loss_sums
from tinytrans.model import ModelConfig, TinyTransformer

__all__ = [
    "Callback",
    "CheckpointWriteError",
    "DistInfo",
    "TrainConfig",
    "Trainer",
    "autocast_factory",
    "cleanup_distributed",
    "estimate_loss",
    "finetune",
    "fit_interleaved",
    "init_distributed",
    "load_checkpoint",
    "lr_at",
    "optimizer_groups",
    "overfit_one_batch",
    "resolve_precision",
    "save_model",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHECKPOINT_FORMAT = "tinytrans-checkpoint"
CHECKPOINT_VERSION = 1
#: Train-config fields that change the trajectory: resuming with other values is not exact.
TRAJECTORY_FIELDS = (
    "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "betas", "eps", "grad_clip",
    "grad_accum_steps", "precision", "seed",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Configuration and schedule
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the model and the data.

    Budget: training stops at whichever of ``max_steps``, ``max_tokens`` or ``max_time``
    (seconds of loop wall clock, evaluations included) comes first; at least one is required.

    Horizon of the cosine schedule (the step at which the learning rate reaches its floor):
    ``max_steps``, or the steps ``max_tokens`` needs, whichever is smaller. With ``max_time``
    the trainer times the first ``time_probe_steps`` steps (plus the cost of an evaluation)
    and sets the horizon to the number of steps that fit in the remaining time (capped by
    the other budgets). Until then the learning rate follows the warmup (or stays at its peak).
    The horizon is stored in checkpoints, so a resumed run follows the same schedule.
    """

    # budget
    max_steps: int | None = None
    max_tokens: int | None = None
    max_time: float | None = None
    # optimizer and schedule (seed 004's AdamW + cosine, with GPT-style betas and decay)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    # hardware
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:1 | mps
    gradient_checkpointing: bool = False
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
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
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
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
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
                    "gradient_checkpointing"):  # fmt: skip
            if not isinstance(getattr(self, key), bool):
                raise ValueError(
                    f"TrainConfig.{key} must be True or False, got {getattr(self, key)!r}."
                )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), safe for JSON and ``weights_only`` loading."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["sample_prompts"] = list(self.sample_prompts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig field(s) {unknown}.")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


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
    """Learning rate for optimizer update number ``step`` (0-based): a pure function.

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


# --------------------------------------------------------------------------------------------
# Hardware: device, precision, distribution, seeds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly one-process) data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (env:// rendezvous).

    ``gloo`` on CPU, ``nccl`` when CUDA is available. A single process returns rank 0 of 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo()
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def cleanup_distributed() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto``: cuda (this rank's GPU) > mps > cpu; otherwise the named device."""
    from tinytrans.env import pick_device

    device = pick_device(name)
    if device.type == "cuda" and device.index is None and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


#: Measured on the course's 2-core Xeon (no AMX): bf16 autocast ran the course model's
#: training step 1.46x *slower* than fp32 (benchmarks/bench_train.py re-measures it), so
#: "auto" keeps fp32 on CPU; ask for precision="bf16" on CPUs with AMX/AVX512-BF16.
CPU_AUTO_PRECISION = "fp32"


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: :func:`tinytrans.env.auto_precision` (bf16 on CUDA where it is native, else fp16
    with loss scaling; fp32 on CPU by measurement, see ``CPU_AUTO_PRECISION``, and on MPS)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}.")
    if requested != "auto":
        return requested
    from tinytrans.env import auto_precision

    return auto_precision(device, cpu=CPU_AUTO_PRECISION)


def autocast_factory(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A zero-argument factory of the mixed-precision context for ``precision``."""
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Every random-number state as tensors and plain numbers (``weights_only``-safe)."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
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
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices decay; norms, biases and embeddings do not.

    A tied output head shares the embedding matrix, so it is not decayed either.
    """
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        optimizer_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
    )


# --------------------------------------------------------------------------------------------
# Files: atomic writes, tokenizer (de)serialisation
# --------------------------------------------------------------------------------------------


def _readable(path: str) -> None:
    """Give a temporary file the permissions a normally created file would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


class CheckpointWriteError(OSError):
    """A checkpoint or metrics file could not be written (full disk, read-only folder...).

    The previous file of that name is left intact: writes go to a temporary file first."""


#: Temporary files of :func:`_atomic_write`: ``<name>.<pid>.<random>.tmp``. The pid lets a
#: later run tell the leftovers of a killed process (SIGKILL, power loss) from live writes.
_TMP_NAME = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
#: The names the writer used before the pid was added (``last.pt<random>.tmp``).
_LEGACY_TMP_NAME = re.compile(r"^(?:last\.pt|best\.pt|metrics\.json)[A-Za-z0-9_]{8}\.tmp$")
_LEGACY_TMP_AGE_S = 3600.0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; return them.

    A file is stale when the process named in it no longer runs (or, for the older naming
    without a pid, when it is over an hour old). Live writers' files are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        match = _TMP_NAME.match(entry.name)
        stale = match is not None and not _pid_alive(int(match["pid"]))
        if match is None and _LEGACY_TMP_NAME.match(entry.name):
            with contextlib.suppress(OSError):
                stale = now - entry.stat().st_mtime > _LEGACY_TMP_AGE_S
        if stale and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through ``write(handle)`` to a temporary file in the same folder, then rename:
    readers (and a Ctrl-C halfway) never leave a half-written file at ``path``.

    Any failure (a full disk makes ``torch.save`` raise ``RuntimeError``) removes the
    temporary file and becomes a :class:`CheckpointWriteError` naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp"
        )
    except OSError as error:
        raise CheckpointWriteError(
            f"cannot write {path}: {error.strerror or error}; choose another "
            "output folder (--out / out_dir) that you can write to"
        ) from error
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            write(handle)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError)) and not isinstance(
            error, CheckpointWriteError
        ):
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
            raise CheckpointWriteError(
                f"could not write {path} ({reason}); the previous {path.name} is intact -- "
                "free disk space or choose another output folder"
            ) from error
        raise
    return path


def _atomic_torch_save(obj: Any, path: Path) -> Path:
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def _atomic_write_json(payload: dict[str, Any], path: Path) -> Path:
    def dump(handle: Any) -> None:
        json.dump(payload, handle, indent=2)
        handle.write("\n")

    return _atomic_write(path, dump, mode="w")


def tokenizer_to_text(tokenizer: Any) -> str | None:
    """The tokenizer's own save file as a string (``None`` when there is no tokenizer)."""
    if tokenizer is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        tokenizer.save(path)
        return path.read_text(encoding="utf-8")


def tokenizer_from_text(text: str | None) -> Any:
    """Undo :func:`tokenizer_to_text` with :func:`tinytrans.tokenizers.load`."""
    if text is None:
        return None
    from tinytrans.tokenizers import load

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return load(path)


def _read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` and check the whole structure before anyone uses it."""
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
    _validate_checkpoint(state, path)
    return state


def _damaged(path: Any, what: str) -> ValueError:
    return ValueError(
        f"checkpoint {path} is damaged or was not written by tinytrans: {what}; "
        "use another checkpoint (last.pt or best.pt of a run)"
    )


_OPTIONAL_INT = (int, type(None))
#: Field -> allowed types of a training checkpoint (checked before anything is restored).
_TRAINING_FIELDS: dict[str, tuple[type, ...]] = {
    "train_config": (dict,),
    "optimizer": (dict,),
    "scaler": (dict,),
    "step": (int,),
    "tokens_seen": (int,),
    "tokens_per_step": _OPTIONAL_INT,
    "horizon": _OPTIONAL_INT,
    "horizon_fixed": (bool,),
    "train_time": (int, float),
    "history": (list,),
    "train_losses": (list,),
    "best_val_loss": (int, float),
    "best_step": _OPTIONAL_INT,
    "evals_without_improvement": (int,),
    "rng": (dict,),
    "data": (dict,),
    "run_id": (str,),
}


def _validate_checkpoint(state: dict[str, Any], path: Any) -> None:
    """Raise ``ValueError`` for a checkpoint whose structure is not what tinytrans writes."""
    version = state.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(path, f"version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {version}, newer than this tinytrans reads "
            f"({CHECKPOINT_VERSION}); upgrade tinytrans"
        )
    kind = state.get("kind")
    if kind not in ("training", "model"):
        raise _damaged(path, f"kind {kind!r} (expected 'training' or 'model')")
    weights = state.get("model")
    if not isinstance(weights, dict) or not weights:
        raise _damaged(path, "no model weights")
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _damaged(path, f"weight {key!r} is not a tensor")
    if not isinstance(state.get("model_config"), dict):
        raise _damaged(path, "no model_config")
    tokenizer = state.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise _damaged(path, "the tokenizer is not text")
    if kind != "training":
        return
    for key, types in _TRAINING_FIELDS.items():
        value = state.get(key)
        if (
            key not in state
            or not isinstance(value, types)
            or (isinstance(value, bool) and bool not in types)
        ):
            raise _damaged(path, f"field {key!r} is missing or has type {type(value).__name__}")
    if state["step"] < 0 or state["tokens_seen"] < 0:
        raise _damaged(path, "a negative step or token count")
    if not all(_is_real(v) for v in state["train_losses"]):
        raise _damaged(path, "train_losses holds something other than numbers")
    if len(state["train_losses"]) != state["step"]:
        raise _damaged(path, f"{len(state['train_losses'])} losses for {state['step']} steps")
    if not all(isinstance(e, dict) and isinstance(e.get("step"), int) for e in state["history"]):
        raise _damaged(path, "history entries without a step")
    optimizer = state["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
        optimizer.get("param_groups"), list
    ):
        raise _damaged(path, "the optimizer state has no 'state' and 'param_groups'")
    rng = state["rng"]
    if (
        not isinstance(rng.get("torch"), torch.Tensor)
        or not isinstance(rng.get("python"), dict)
        or not isinstance(rng.get("numpy"), dict)
    ):
        raise _damaged(path, "the random-number states are incomplete")
    if not isinstance(state["data"].get("samplers"), dict):
        raise _damaged(path, "the data position has no sampler states")


def _check_weights(
    expected: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor], source: str
) -> None:
    """Names and shapes of ``saved`` must be those of ``expected`` (a model's state dict)."""
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


def _config_from_checkpoint(state: dict[str, Any], path: Any) -> ModelConfig:
    try:
        return ModelConfig.from_dict(state["model_config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"checkpoint {path} has an invalid model_config: {error}") from None


def check_model_config(model_config: ModelConfig, saved: dict[str, Any], source: str) -> None:
    """Raise ``ValueError`` naming every field where ``saved`` differs from ``model_config``."""
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
    """An inference-only checkpoint: weights (optionally cast, e.g. to bf16), config, tokenizer.

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
    return _atomic_torch_save(state, Path(path))


def _quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
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
            raise _damaged(source, f"int8 weights for {name!r} do not fit the model")
        if tuple(values.shape) != tuple(module.weight().shape):
            raise _damaged(source, f"int8 weights for {name!r} have the wrong shape")
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


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu"
) -> tuple[TinyTransformer, Any, dict[str, Any]]:
    """``(model, tokenizer, info)`` from a training or inference checkpoint.

    The model is built from the saved config, gets the weights (as fp32) and is in eval mode.
    ``info`` holds everything else: ``step``, ``tokens_seen``, ``history``, ``best_val_loss``,
    ``train_config``, ``model_config``... (not the optimizer state).
    """
    state = _read_checkpoint(path, map_location)
    config = _config_from_checkpoint(state, path)
    # Shapes first, on the meta device: a config asking for more than the file holds fails
    # here instead of allocating it.
    _check_weights(_model_skeleton(config).state_dict(), state["model"], f"checkpoint {path}")
    tokenizer = tokenizer_from_text(state.get("tokenizer"))
    model = TinyTransformer(config)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    model.load_state_dict(weights)
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
    if state.get("quantization") == "int8-dynamic":
        from tinytrans.generate import quantize_int8

        model = quantize_int8(model.cpu())
        _restore_int8_weights(model, state.get("int8_weights"), str(path))
    skip = {"model", "optimizer", "scaler", "rng", "data", "tokenizer", "int8_weights"}
    info = {k: v for k, v in state.items() if k not in skip}
    info["path"] = str(path)
    return model, tokenizer, info


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------


class Callback:
    """Hooks the trainer calls: subclass and override, or pass functions.

    ``on_step(trainer, record)`` after every optimizer update (``record``: step, loss, lr,
    tokens, grad_norm, time); ``on_eval(trainer, record)`` after every evaluation (the chapter
    redraws its live loss plot here); ``on_sample(trainer, samples)`` with a list of
    ``{"step", "prompt", "text"}``. Raising ``KeyboardInterrupt`` stops training cleanly.
    """

    def __init__(
        self,
        on_step: Callable[[Trainer, dict[str, Any]], None] | None = None,
        on_eval: Callable[[Trainer, dict[str, Any]], None] | None = None,
        on_sample: Callable[[Trainer, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._functions = {"on_step": on_step, "on_eval": on_eval, "on_sample": on_sample}

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if getattr(self, "_functions", {}).get("on_step"):
            self._functions["on_step"](trainer, record)

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if getattr(self, "_functions", {}).get("on_eval"):
            self._functions["on_eval"](trainer, record)

    def on_sample(self, trainer: Trainer, samples: list[dict[str, Any]]) -> None:
        if getattr(self, "_functions", {}).get("on_sample"):
            self._functions["on_sample"](trainer, samples)


# --------------------------------------------------------------------------------------------
# Sampling during training
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _fallback_generate(
    model: TinyTransformer,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> str:
    """A minimal sampling loop (no cache) used when ``tinytrans.generate`` is unavailable."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.tensor([tokenizer.encode(prompt) or [0]], device=model.device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits, _ = model(ids[:, -model.config.context_length :])
        last = logits[0, -1].float().cpu()
        if temperature == 0:
            token = int(last.argmax())
        else:
            probs = torch.softmax(last / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]], device=model.device)], dim=1)
    return tokenizer.decode(new)


def sample_text(
    model: TinyTransformer,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    seed: int = 0,
) -> str:
    """Prompt plus ``max_new_tokens`` sampled tokens; leaves the global RNG untouched."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            try:
                from tinytrans.generate import generate
            except ImportError:
                return prompt + _fallback_generate(
                    model, tokenizer, prompt, max_new_tokens, temperature, seed
                )
            out = generate(
                model, tokenizer, prompt, max_new_tokens, temperature=temperature, seed=seed
            )
            return prompt + (out if isinstance(out, str) else tokenizer.decode(out))
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


@dataclass
class _Clock:
    """Loop wall clock that only runs inside ``fit`` (so pauses do not count)."""

    total: float = 0.0
    last: float | None = None

    def start(self) -> None:
        self.last = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        if self.last is not None:
            self.total += now - self.last
        self.last = now
        return self.total

    def stop(self) -> None:
        self.tick()
        self.last = None


class _Interrupts:
    """SIGINT and SIGTERM while :meth:`Trainer.fit` runs, turned into a clean stop.

    The first signal only sets a flag: the loop finishes the step (or evaluation) it is in,
    saves "last" and returns, so the checkpoint is always at a step boundary and a resume
    repeats the uninterrupted run bit for bit. A second signal stops at once by raising
    ``KeyboardInterrupt`` -- except inside a *critical section* (the optimizer update and its
    bookkeeping, checkpoint writes), where it waits for the section to end.
    """

    NAMES = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.received: list[str] = []
        self.depth = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        self.received = []
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                number = getattr(signal, name, None)
                if number is None:
                    continue
                with contextlib.suppress(ValueError, OSError):
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, previous in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, number: int, frame: Any) -> None:
        self.received.append(signal.Signals(number).name)
        if len(self.received) >= 2 and self.depth == 0:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return bool(self.received)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer a second signal's ``KeyboardInterrupt`` until this block is done."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and len(self.received) >= 2:
            raise KeyboardInterrupt


class _Diverged(Exception):
    """The loss (or gradient norm) stopped being a finite number."""


@dataclass
class _Probe:
    """Step and evaluation durations used to turn a time budget into a step horizon."""

    step_seconds: list[float] = field(default_factory=list)
    eval_seconds: float = 0.0


class Trainer:
    """Train a :class:`~tinytrans.model.TinyTransformer` on a :class:`~tinytrans.data.DataModule`.

    ``datamodule`` needs ``get_batch("train") -> (x, y)``, ``iter_eval_batches("val",
    max_batches)`` and ``state_dict()``/``load_state_dict()``. ``tokenizer`` (default: the
    datamodule's) is used for samples and stored in checkpoints. Call :meth:`fit`;
    :meth:`resume` first to continue from a checkpoint.
    """

    def __init__(
        self,
        model: TinyTransformer,
        datamodule: Any,
        config: TrainConfig | None = None,
        tokenizer: Any = None,
        callbacks: Iterable[Any] = (),
    ) -> None:
        self.config = config or TrainConfig(max_steps=1000)
        self.dist = init_distributed()
        self.device = resolve_device(self.config.device, self.dist)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.autocast = autocast_factory(self.precision, self.device)
        seed_everything(self.config.seed)
        self.datamodule = datamodule
        if hasattr(datamodule, "setup"):
            datamodule.setup()  # encode and split now, outside the training clock
        self.tokenizer = (
            tokenizer if tokenizer is not None else getattr(datamodule, "tokenizer", None)
        )
        self.callbacks = list(callbacks)
        self.model = model.to(self.device)
        self.model.gradient_checkpointing = self.config.gradient_checkpointing
        self._check_vocab()
        self.engine: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.engine = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = build_optimizer(self.model, self.config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.run_id = self.config.run_name or f"run-{uuid.uuid4().hex[:12]}"
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        # progress state (all of it goes into checkpoints)
        self.step = 0
        self.tokens_seen = 0
        self.tokens_per_step: int | None = None
        self.horizon: int | None = self.config.max_steps
        self.horizon_fixed = self.config.max_time is None
        self.history: list[dict[str, Any]] = []
        self.train_losses: list[float] = []
        self.samples: list[dict[str, Any]] = []
        self.best_val_loss = math.inf
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.stop_reason: str | None = None
        self.clock = _Clock()
        self.step_time = 0.0  # seconds spent in optimizer steps in this process ...
        self.timed_tokens = 0  # ... and the tokens (all ranks) they processed: tokens/s
        self._probe = _Probe()
        self._snapshot: dict[str, Any] | None = None
        self._interrupts = _Interrupts()
        #: The signal that stopped the last ``fit`` ("SIGINT", "SIGTERM"), if any.
        self.interrupt_signal: str | None = None
        #: Why the run diverged (a sentence), when ``stop_reason == "diverged"``.
        self.divergence: str | None = None
        if self.out_dir is not None and self.dist.is_main and self.config.save_checkpoints:
            remove_stale_temporaries(self.out_dir)

    # -- set-up checks ----------------------------------------------------------------------
    def _check_vocab(self) -> None:
        vocab = getattr(self.datamodule, "vocab_size", None)
        if isinstance(vocab, int) and vocab > self.model.config.vocab_size:
            raise ValueError(
                f"the data has vocab_size {vocab} but the model only {self.model.config.vocab_size}"
                f"; build the model with vocab_size={vocab}."
            )

    @property
    def out_dir(self) -> Path | None:
        return Path(self.config.out_dir) if self.config.out_dir else None

    def lr_at(self, step: int) -> float:
        """This run's learning rate at ``step`` (uses its horizon)."""
        return lr_at(step, self.config, self.horizon)

    # -- batches ----------------------------------------------------------------------------
    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the next global batch, on the device."""
        x, y = self.datamodule.get_batch("train")
        if self.tokens_per_step is None:
            self.tokens_per_step = x.numel() * self.config.grad_accum_steps
            self._horizon_from_tokens()
        if self.dist.enabled:
            rows, world = x.shape[0], self.dist.world_size
            if rows % world:
                raise ValueError(f"batch size {rows} is not divisible by world size {world}.")
            share = rows // world
            lo = self.dist.rank * share
            x, y = x[lo : lo + share], y[lo : lo + share]
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _horizon_from_tokens(self) -> None:
        if self.config.max_tokens is None or self.tokens_per_step is None:
            return
        steps = math.ceil(self.config.max_tokens / self.tokens_per_step)
        if self.horizon is None or steps < self.horizon:
            self.horizon = steps

    # -- one optimizer step -----------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """One optimizer update over ``grad_accum_steps`` micro-batches; returns its record."""
        cfg = self.config
        self._snapshot = {"data": copy.deepcopy(self.datamodule.state_dict()), "rng": capture_rng()}
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum_steps):
            x, y = self._next_batch()
            last = micro == cfg.grad_accum_steps - 1
            sync = nullcontext() if last or not self.dist.enabled else self.engine.no_sync()
            with sync:
                with self.autocast():
                    _, loss = self.engine(x, y)
                self.scaler.scale(loss / cfg.grad_accum_steps).backward()
            total += loss.detach().float()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip_gradients()
        local = total / cfg.grad_accum_steps
        self._check_finite(float(local), grad_norm)
        with self._interrupts.critical():  # the update and its bookkeeping: all or nothing
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            self.tokens_seen += self.tokens_per_step or 0
            mean_loss = self._mean_over_ranks(local)
            self.train_losses.append(mean_loss)
            self._snapshot = None
        return {"step": self.step, "loss": mean_loss, "local_loss": float(local), "lr": lr,
                "grad_norm": grad_norm, "tokens": self.tokens_seen}  # fmt: skip

    def _check_finite(self, loss: float, grad_norm: float) -> None:
        """Stop before a NaN/inf update reaches the weights (fp16's scaler skips inf grads)."""
        bad_grad = not math.isfinite(grad_norm) and self.precision != "fp16"
        bad = not math.isfinite(loss) or bad_grad
        if self.dist.enabled:  # one rank's NaN stops every rank (none waits in a collective)
            flag = torch.tensor([int(bad)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = bool(int(flag))
        if not bad:
            return
        if not math.isfinite(loss):
            what = f"the loss became {loss}"
        elif not math.isfinite(grad_norm):
            what = f"the gradient norm became {grad_norm}"
        else:
            what = "another rank's loss or gradient norm stopped being finite"
        raise _Diverged(f"{what} at step {self.step + 1}")

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        if self.dist.enabled:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.dist.world_size
        return float(value)

    # -- evaluation and samples -------------------------------------------------------------
    def evaluate(self, max_batches: int | None = -1) -> float:
        """Mean validation loss (``eval_batches`` batches by default; ``None`` = whole split).

        Under DDP the batches are shared out across ranks and the sums all-reduced.
        """
        limit = self.config.eval_batches if max_batches == -1 else max_batches
        batches = self.datamodule.iter_eval_batches("val", max_batches=limit)
        if self.dist.enabled:
            batches = (
                b for i, b in enumerate(batches) if i % self.dist.world_size == self.dist.rank
            )
        sum_loss, count = loss_sums(self.model, batches, self.autocast)
        if self.dist.enabled:
            sums = torch.tensor([sum_loss, float(count)], dtype=torch.float64, device=self.device)
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            sum_loss, count = float(sums[0]), int(sums[1])
        if count == 0:
            raise ValueError("the validation split produced no batches; is val_fraction > 0?")
        return sum_loss / count

    def _run_eval(self) -> dict[str, Any]:
        started = time.perf_counter()
        val_loss = self.evaluate()
        self._probe.eval_seconds = time.perf_counter() - started
        if not math.isfinite(val_loss):
            raise _Diverged(f"the validation loss became {val_loss} at step {self.step}")
        with self._interrupts.critical():  # the record, the best step and their files agree
            record = self._record_eval(val_loss)
        if self.dist.is_main:
            for callback in self.callbacks:
                if hasattr(callback, "on_eval"):
                    callback.on_eval(self, record)
        return record

    def _record_eval(self, val_loss: float) -> dict[str, Any]:
        since = [e["step"] for e in self.history]
        recent = self.train_losses[(since[-1] if since else 0) :]
        record = {
            "step": self.step,
            "tokens": self.tokens_seen,
            "time": round(self.clock.tick(), 3),
            "lr": self.lr_at(self.step),
            "train_loss": statistics.fmean(recent) if recent else None,
            "val_loss": val_loss,
        }
        self.history.append(record)
        improved = val_loss < self.best_val_loss - self.config.min_delta
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step = val_loss, self.step
        self.evals_without_improvement = 0 if improved else self.evals_without_improvement + 1
        if self.dist.is_main:
            self._after_eval(record, is_best=self.best_step == self.step)
        return record

    def _after_eval(self, record: dict[str, Any], is_best: bool) -> None:
        train = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
        self._log(f"step {record['step']}: train loss {train}, val loss {record['val_loss']:.4f}")
        if is_best:
            self._save("best")
        self._save("last")
        self.write_metrics()

    def sample(self) -> list[dict[str, Any]]:
        """Sample from each of ``config.sample_prompts`` (fixed seeds: comparable over time)."""
        if (
            self.tokenizer is None
            or not self.config.sample_prompts
            or not self.config.sample_tokens
        ):
            return []
        out = []
        for i, prompt in enumerate(self.config.sample_prompts):
            text = sample_text(self.model, self.tokenizer, prompt, self.config.sample_tokens,
                               self.config.sample_temperature, seed=self.config.seed + i)  # fmt: skip
            out.append({"step": self.step, "prompt": prompt, "text": text})
        self.samples.extend(out)
        for callback in self.callbacks:
            if hasattr(callback, "on_sample"):
                callback.on_sample(self, out)
        return out

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, pause_after: float | None = None) -> dict[str, Any]:
        """Train until a budget runs out (or ``pause_after`` seconds pass); return the metrics.

        A paused trainer continues where it left off on the next ``fit``. Ctrl-C (SIGINT),
        SIGTERM or a ``KeyboardInterrupt`` raised by a callback stop at a step boundary: the
        step under way finishes (a signal never lands inside an update), the "last" checkpoint
        is saved and ``fit`` returns with ``stop_reason == "interrupted"``; :meth:`resume`
        then continues bit for bit. A loss that stops being finite ends the run with
        ``stop_reason == "diverged"`` without overwriting the checkpoints.
        """
        self.stop_reason = None
        self.interrupt_signal = None
        self.divergence = None
        self.model.train()
        self.clock.start()
        fit_started = self.clock.total
        bar = self._progress_bar()
        try:
            with self._interrupts:
                try:
                    if self._eval_due():
                        self._run_eval()
                    while not self._should_stop(fit_started, pause_after):
                        self._one_iteration(bar)
                    if self.stop_reason == "interrupted":
                        self._interrupted()
                    elif self.stop_reason != "paused":
                        self._finish()
                except KeyboardInterrupt:
                    self._interrupted()
                except _Diverged as error:
                    self._diverged(str(error))
        finally:
            bar.close()
            self.clock.stop()
        return self.metrics()

    def _eval_due(self) -> bool:
        """An evaluation owed at this step: the first one, or one an interrupt cut short."""
        if self.history and self.history[-1]["step"] == self.step:
            return False
        if self.step == 0:
            return not self.history and self.config.eval_at_start
        return self.step % self.config.eval_interval == 0

    def _one_iteration(self, bar: Any) -> None:
        started = time.perf_counter()
        record = self.train_step()
        seconds = time.perf_counter() - started
        self.step_time += seconds
        self.timed_tokens += self.tokens_per_step or 0
        self._probe.step_seconds.append(seconds)
        self._maybe_fix_horizon()
        record["time"] = self.clock.tick()
        record["tokens_per_second"] = self.timed_tokens / max(self.step_time, 1e-9)
        self._update_bar(bar, record)
        for callback in self.callbacks:
            if hasattr(callback, "on_step"):
                callback.on_step(self, record)
        if self.step % self.config.eval_interval == 0:
            self._run_eval()
        if self.config.sample_interval and self.step % self.config.sample_interval == 0:
            self._sample_on_main()

    def _sample_on_main(self) -> None:
        if self.dist.is_main:
            for item in self.sample():
                self._log(f"[sample @ {item['step']}] {item['text']!r}")

    def _should_stop(self, fit_started: float, pause_after: float | None) -> bool:
        """Decide on rank 0's clock and share it, so every rank stops at the same step."""
        now, cfg = self.clock.tick(), self.config
        interrupted = self._interrupts.requested
        if self.dist.enabled:  # any rank's signal stops every rank at this step
            flag = torch.tensor([int(interrupted)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            interrupted = bool(int(flag))
        reasons = [
            (interrupted, "interrupted"),
            (cfg.max_steps is not None and self.step >= cfg.max_steps, "max_steps"),
            (cfg.max_tokens is not None and self.tokens_seen >= cfg.max_tokens, "max_tokens"),
            (cfg.max_time is not None and now >= cfg.max_time, "max_time"),
            (self._plateaued(), "early_stopping"),
            (pause_after is not None and now - fit_started >= pause_after, "paused"),
        ]
        code = next((i + 1 for i, (hit, _) in enumerate(reasons) if hit), 0)
        if self.dist.enabled:
            flag = torch.tensor([code], device=self.device)
            dist.broadcast(flag, src=0)
            code = int(flag)
        if code:
            self.stop_reason = reasons[code - 1][1]
        return code > 0

    def _plateaued(self) -> bool:
        patience = self.config.early_stopping_patience
        return patience is not None and self.evals_without_improvement >= patience

    def _maybe_fix_horizon(self) -> None:
        """With a time budget: after the probe steps, set the horizon from measured speed."""
        cfg = self.config
        if self.horizon_fixed or len(self._probe.step_seconds) < cfg.time_probe_steps + 1:
            return
        per_step = statistics.median(self._probe.step_seconds[1:])  # first step warms up
        per_step += self._probe.eval_seconds / cfg.eval_interval
        remaining = max(0.0, (cfg.max_time or 0.0) - self.clock.tick())
        estimate = self.step + int(remaining / max(per_step, 1e-9))
        if self.dist.enabled:
            shared = torch.tensor([estimate], device=self.device)
            dist.broadcast(shared, src=0)
            estimate = int(shared)
        self.horizon = estimate if self.horizon is None else min(self.horizon, estimate)
        self.horizon_fixed = True

    def _finish(self) -> None:
        if not self.history or self.history[-1]["step"] != self.step:
            self._run_eval()
        elif self.dist.is_main:
            self._save("last")
        already = bool(self.samples) and self.samples[-1]["step"] == self.step
        if self.config.sample_prompts and self.tokenizer is not None and not already:
            self._sample_on_main()
        if self.dist.is_main:
            self.write_metrics()
            self._log(f"stopped ({self.stop_reason}) at step {self.step}")

    def _rollback(self) -> None:
        """Undo a step cut short before its update (data position, RNG, gradients)."""
        if self._snapshot is not None:
            self.datamodule.load_state_dict(self._snapshot["data"])
            restore_rng(self._snapshot["rng"])
            self._snapshot = None
        self.optimizer.zero_grad(set_to_none=True)

    def _interrupted(self) -> None:
        """Save "last" at the step boundary reached (a half-done step is rolled back first).

        Interrupts never land inside an update (see :class:`_Interrupts`), so the weights,
        the optimizer and the step counter always agree, and the resume is exact."""
        self._rollback()
        self.stop_reason = "interrupted"
        received = self._interrupts.received
        self.interrupt_signal = received[0] if received else "SIGINT"
        if self.dist.is_main:
            with self._interrupts.critical():
                self._save("last")
                self.write_metrics()
            where = f" to {self.out_dir / 'last.pt'}" if self._saves else ""
            self._log(
                f"interrupted ({self.interrupt_signal}) at step {self.step}; saved the last checkpoint{where}"
            )

    def _diverged(self, reason: str) -> None:
        """Stop without saving the broken weights; the checkpoints keep the last good step."""
        self._rollback()
        self.stop_reason = "diverged"
        self.divergence = reason
        if self.dist.is_main:
            self.write_metrics()
            self._log(f"stopped: {reason}; the checkpoints were not overwritten")

    @property
    def _saves(self) -> bool:
        return self.out_dir is not None and self.config.save_checkpoints

    # -- progress and logging ---------------------------------------------------------------
    def _progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        total = self.horizon if self.config.max_steps is None else self.config.max_steps
        disable = not self.config.progress or not self.dist.is_main
        return tqdm(
            total=total, initial=self.step, disable=disable, unit="step", dynamic_ncols=True
        )

    def _update_bar(self, bar: Any, record: dict[str, Any]) -> None:
        if bar.disable:
            return
        if bar.total is None and self.horizon is not None:
            bar.total = self.horizon
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_second']:.0f}", refresh=False)  # fmt: skip

    def _log(self, message: str) -> None:
        if not self.config.log:
            return
        from tqdm.auto import tqdm

        tqdm.write(message)

    # -- metrics ----------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Everything the JSON metrics file holds."""
        val = [e["val_loss"] for e in self.history]
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "n_params": self.model.num_parameters(),
            "n_params_non_embedding": self.model.num_parameters(exclude_embeddings=True),
            "device": str(self.device),
            "precision": self.precision,
            "world_size": self.dist.world_size,
            "horizon": self.horizon,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_time_s": round(self.clock.total, 3),
            "tokens_per_second": self.timed_tokens / self.step_time if self.step_time else None,
            "final_val_loss": val[-1] if val else None,
            "best_val_loss": min(val) if val else None,
            "best_step": self.best_step,
            "stop_reason": self.stop_reason,
            "history": self.history,
            "samples": self.samples[-len(self.config.sample_prompts) or None :],
        }

    def write_metrics(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Write :meth:`metrics` as JSON, atomically (``out_dir/metrics.json`` by default)."""
        if path is None and self.out_dir is None:
            return None
        target = Path(path) if path is not None else self.out_dir / "metrics.json"  # type: ignore[operator]
        return _atomic_write_json(self.metrics(), target)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """The full training state, in ``weights_only``-loadable types."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": "training",
            "run_id": self.run_id,
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "tokens_per_step": self.tokens_per_step,
            "horizon": self.horizon,
            "horizon_fixed": self.horizon_fixed,
            "train_time": self.clock.total,
            "history": self.history,
            "train_losses": self.train_losses,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "rng": capture_rng(),
            "data": self.datamodule.state_dict(),
            "tokenizer": tokenizer_to_text(self.tokenizer),
        }

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write the training state atomically (temporary file + ``os.replace``)."""
        return _atomic_torch_save(self.checkpoint_state(), Path(path))

    def _save(self, which: str) -> None:
        if self._saves:
            self.save_checkpoint(self.out_dir / f"{which}.pt")  # type: ignore[operator]

    def resume(self, path: str | os.PathLike[str]) -> Trainer:
        """Restore a training checkpoint so that :meth:`fit` continues the run exactly."""
        state = _read_checkpoint(path, map_location="cpu")
        if state.get("kind") != "training":
            raise ValueError(f"{path} holds only model weights; it cannot resume training.")
        _config_from_checkpoint(state, path)
        check_model_config(self.model.config, state["model_config"], f"checkpoint {path}")
        self._validate_resume(state, path)  # everything checked before anything changes
        self._warn_config_changes(state["train_config"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.datamodule.load_state_dict(state["data"])
        for key in ("step", "tokens_seen", "tokens_per_step", "horizon", "horizon_fixed",
                    "history", "train_losses", "best_val_loss", "best_step",
                    "evals_without_improvement", "run_id"):  # fmt: skip
            setattr(self, key, state[key])
        self.clock.total = float(state["train_time"])
        restore_rng(state["rng"])
        return self

    def _validate_resume(self, state: dict[str, Any], path: Any) -> None:
        """Check weights, optimizer, data position and settings against this trainer."""
        _check_weights(self.model.state_dict(), state["model"], f"checkpoint {path}")
        try:
            TrainConfig.from_dict(state["train_config"])
        except (TypeError, ValueError) as error:
            raise _damaged(path, f"its train_config is invalid ({error})") from None
        mine = self.optimizer.state_dict()
        saved = state["optimizer"]
        groups = saved["param_groups"]
        if len(groups) != len(mine["param_groups"]) or any(
            not isinstance(g, dict) or len(g.get("params", ())) != len(m["params"])
            for g, m in zip(groups, mine["param_groups"], strict=False)
        ):
            raise _damaged(path, "its optimizer state was made for other parameters")
        shapes = {i: tuple(p.shape) for i, p in enumerate(self._parameters_in_order())}
        for index, entry in saved["state"].items():
            if index not in shapes or not isinstance(entry, dict):
                raise _damaged(path, f"optimizer state for an unknown parameter {index!r}")
            for name in ("exp_avg", "exp_avg_sq"):
                value = entry.get(name)
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != shapes[index]:
                    raise _damaged(
                        path, f"optimizer {name} of parameter {index} has the wrong shape"
                    )
        check = getattr(self.datamodule, "check_state_dict", None)
        if callable(check):
            check(state["data"])

    def _parameters_in_order(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _warn_config_changes(self, saved: dict[str, Any]) -> None:
        mine = self.config.to_dict()
        changed = [k for k in TRAJECTORY_FIELDS if k in saved and saved[k] != mine[k]]
        if changed:
            warnings.warn(
                f"resuming with different {changed} than the checkpoint; the run will not "
                "repeat the uninterrupted one exactly.",
                stacklevel=3,
            )


# --------------------------------------------------------------------------------------------
# Sanity check and fine-tuning
# --------------------------------------------------------------------------------------------


def fit_interleaved(trainers: Mapping[str, Trainer], slices: int = 10) -> dict[str, dict[str, Any]]:
    """Train time-budgeted trainers round-robin, ``max_time / slices`` seconds at a time.

    Each trainer's clock runs only inside its own ``fit``, so every run still gets exactly its
    ``max_time``; interleaving spreads changes in machine load over all runs instead of letting
    them fall on whichever run happened to be going (chapter 6's equal-time ablations).
    Returns ``{name: trainer.metrics()}``.
    """
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}.")
    for name, trainer in trainers.items():
        if trainer.config.max_time is None:
            raise ValueError(
                f"trainer {name!r} has no max_time; interleaving needs time budgets "
                "(TrainConfig(max_time=...))."
            )
    while any(t.stop_reason in (None, "paused") for t in trainers.values()):
        for trainer in trainers.values():
            if trainer.stop_reason in (None, "paused"):
                trainer.fit(pause_after=trainer.config.max_time / slices)
    return {name: t.metrics() for name, t in trainers.items()}


def overfit_one_batch(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    steps: int = 200,
    lr: float = 3e-3,
) -> list[float]:
    """Train on one batch only; the loss must fall towards zero. Returns the loss curve.

    The classic first check of a new model or loop: if it cannot memorise 1 batch, something
    (masking, targets, the optimizer wiring) is broken.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    device = next(model.parameters()).device
    x, y = (t.to(device) for t in batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    curve = []
    for _ in range(steps):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    return curve


def finetune(
    model: TinyTransformer | str | os.PathLike[str],
    datamodule: Any,
    config: TrainConfig | None = None,
    tokenizer: Any = None,
    compare: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[Trainer, dict[str, Any]]:
    """Continue training a (pretrained) model on a new corpus with a fresh optimizer and schedule.

    ``model``: a model or a checkpoint path. ``compare``: extra ``{name: datamodule}`` whose
    validation loss is measured before and after (e.g. the original corpus, to show forgetting).
    Returns ``(trainer, report)`` with ``report["before"]`` and ``report["after"]`` mapping
    ``"target"`` and each compared name to a validation loss.
    """
    if not isinstance(model, nn.Module):
        model, saved_tokenizer, _ = load_checkpoint(model)
        tokenizer = tokenizer if tokenizer is not None else saved_tokenizer
    config = config or TrainConfig(max_steps=200, lr=3e-4, warmup_steps=20)
    sets = {"target": datamodule, **(compare or {})}

    def losses() -> dict[str, float]:
        return {name: estimate_loss(model, dm, config.eval_batches) for name, dm in sets.items()}

    before = losses()
    trainer = Trainer(model, datamodule, config, tokenizer=tokenizer, callbacks=callbacks)
    result = trainer.fit()
    return trainer, {"before": before, "after": losses(), "metrics": result}
