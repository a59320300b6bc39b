"""The training loop: :class:`Trainer`, and the helpers around it (sections 3.4 to 3.11).

One loop serves a notebook on two CPU cores, a GPU and a ``torchrun`` job: AdamW with
decoupled weight decay on the matrices only, linear warmup then cosine decay
(:func:`~tinytrans.train.lr_at`), a budget of steps, tokens or seconds, evaluations,
checkpoints that resume bit for bit, and ``DistributedDataParallel`` when ``WORLD_SIZE > 1``.
Everything else (progress bar, console log, metrics file, samples, early stopping, the time
budget) is a callback, see :mod:`tinytrans.train.callbacks`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import statistics
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from tinytrans.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointWriteError,
    check_model_config,
    check_weights,
    config_from_checkpoint,
    damaged,
    load_checkpoint,
    read_checkpoint,
    save_state,
    tokenizer_to_text,
)
from tinytrans.env import seed_everything
from tinytrans.evaluate import estimate_loss, loss_sums
from tinytrans.files import atomic_write_json, remove_stale_temporaries
from tinytrans.model import TinyTransformer
from tinytrans.precision import get_precision
from tinytrans.train.callbacks import default_callbacks, sample_text
from tinytrans.train.config import TRAJECTORY_FIELDS, TrainConfig, lr_at
from tinytrans.train.muon import MuonAdamW
from tinytrans.train.runtime import (
    DistInfo,
    autocast_factory,
    dist_info,
    init_distributed,
    resolve_device,
    resolve_precision,
)
from tinytrans.train.state import TrainState, capture_rng, restore_rng

__all__ = [
    "Trainer",
    "build_optimizer",
    "compile_for_training",
    "finetune",
    "fit_interleaved",
    "optimizer_groups",
    "overfit_one_batch",
    "report_graph_breaks",
]


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices decay; norms, biases and embeddings do not (section 3.5).

    A tied output head shares the embedding matrix, so it is not decayed either.
    """
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimizer over :func:`optimizer_groups` (section 3.5).

    ``adamw``: AdamW with the config's betas and eps, fused (one kernel per tensor instead of
    about ten) where torch has it for the parameters' device: CUDA, and the CPU from torch
    2.4. On the course model on two CPU cores the update drops from about 8 % of a step to
    under 2 %; the for-loop implementation is the fallback everywhere else.
    ``muon``: :class:`~tinytrans.train.muon.MuonAdamW`, Muon on the decayed matrices and
    AdamW on the rest, one learning rate for both.
    """
    decay, no_decay = optimizer_groups(model, config.weight_decay)
    settings: dict[str, Any] = {"lr": config.lr, "betas": config.betas, "eps": config.eps}
    if config.optimizer == "muon":
        return MuonAdamW([{**decay, "muon": True}, no_decay], **settings)
    try:
        return torch.optim.AdamW([decay, no_decay], **settings, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or torch version
        return torch.optim.AdamW([decay, no_decay], **settings)


def compile_for_training(module: nn.Module) -> nn.Module:
    """``torch.compile(module)`` for the training forward and backward (section 3.12).

    Only the training step runs the compiled module; evaluation, samples and checkpoints use
    the plain model (the same weights), so no second graph is compiled for eval mode. The
    first step pays the compilation: on two CPU cores about 40 s for the course model, repaid
    after a few minutes of training at about 1.2x per step; on a GPU the fused kernels pay
    sooner. Graph breaks, if any, are reported once by :func:`report_graph_breaks`.
    """
    return cast(nn.Module, torch.compile(module))


def report_graph_breaks() -> int:
    """Warn once with the count and reasons of ``torch.compile`` graph breaks; return the count.

    The course models compile to one graph; a break (a Python construct the compiler cannot
    trace) splits the step into several graphs and gives back part of the speed-up
    (section 3.12).
    """
    from torch._dynamo.utils import counters  # torch >= 2.0, below the package's lower bound

    breaks: dict[str, int] = dict(counters.get("graph_break", {}))
    count = sum(breaks.values())
    if count:
        reasons = "; ".join(f"{reason} (x{n})" for reason, n in list(breaks.items())[:3])
        warnings.warn(
            f"torch.compile split the training step {count} times: {reasons}", stacklevel=2
        )
    return count


# --------------------------------------------------------------------------------------------
# Clock and interrupts
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


def _progress(name: str) -> Any:
    """A :class:`Trainer` attribute that is the field ``name`` of its :class:`TrainState`."""

    def get(trainer: Trainer) -> Any:
        return getattr(trainer.state, name)

    def set_(trainer: Trainer, value: Any) -> None:
        setattr(trainer.state, name, value)

    return property(get, set_, doc=f"``trainer.state.{name}``")


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """Train a :class:`~tinytrans.model.TinyTransformer` on a :class:`~tinytrans.data.DataModule`
    (section 3.6).

    ``datamodule`` needs ``get_batch("train") -> (x, y)``, ``iter_eval_batches("val",
    max_batches)`` and ``state_dict()``/``load_state_dict()``. ``tokenizer`` (default: the
    datamodule's) is used for samples and stored in checkpoints. ``callbacks`` run after the
    built-in ones of :func:`~tinytrans.train.default_callbacks`. Call :meth:`fit`;
    :meth:`resume` first to continue from a checkpoint (section 3.7).

    Building a trainer has no global side effects: the process group is joined, the global
    random-number generators are seeded (or restored by :meth:`resume`) and the data is
    prepared in :meth:`setup`, which :meth:`fit` calls first.
    """

    step = _progress("step")
    tokens_seen = _progress("tokens_seen")
    tokens_per_step = _progress("tokens_per_step")
    horizon = _progress("horizon")
    horizon_fixed = _progress("horizon_fixed")
    history = _progress("history")
    train_losses = _progress("train_losses")
    best_val_loss = _progress("best_val_loss")
    best_step = _progress("best_step")
    evals_without_improvement = _progress("evals_without_improvement")
    run_id = _progress("run_id")

    def __init__(
        self,
        model: TinyTransformer,
        datamodule: Any,
        config: TrainConfig | None = None,
        tokenizer: Any = None,
        callbacks: Iterable[Any] = (),
    ) -> None:
        self.config = config or TrainConfig(max_steps=1000)
        self.dist: DistInfo = dist_info()
        self.device = resolve_device(self.config.device, self.dist)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.autocast = autocast_factory(self.precision, self.device)
        self.datamodule = datamodule
        self._tokenizer = tokenizer
        self.callbacks: list[Any] = [*default_callbacks(self.config), *callbacks]
        self.model = model.to(self.device)
        self.model.gradient_checkpointing = self.config.gradient_checkpointing
        self._check_vocab(known_only=True)
        self.engine: nn.Module = self.model  # DistributedDataParallel(model) after setup()
        self._eager_engine: nn.Module = self.model  # the engine before torch.compile
        self.optimizer = build_optimizer(self.model, self.config)
        scaling = get_precision(self.precision).loss_scaling
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaling)
        self.state = TrainState(
            run_id=self.config.run_name or f"run-{uuid.uuid4().hex[:12]}",
            horizon=self.config.max_steps,
            horizon_fixed=self.config.max_time is None,
        )
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.samples: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.clock = _Clock()
        self.step_time = 0.0  # seconds spent in optimizer steps in this process ...
        self.timed_tokens = 0  # ... and the tokens (all ranks) they processed: tokens/s
        self.last_step_seconds = 0.0
        self.last_eval_seconds = 0.0
        self._snapshot: dict[str, Any] | None = None
        self._interrupts = _Interrupts()
        self._ready = False
        self._rng_to_restore: dict[str, Any] | None = None
        #: The signal that stopped the last ``fit`` ("SIGINT", "SIGTERM"), if any.
        self.interrupt_signal: str | None = None
        #: Why the run diverged (a sentence), when ``stop_reason == "diverged"``.
        self.divergence: str | None = None

    # -- set-up -----------------------------------------------------------------------------
    def setup(self) -> Trainer:
        """Everything with effects beyond this object, once (section 3.6): join the process
        group, seed the global RNGs (or restore a resumed run's), prepare the data, wrap the
        model for DDP and remove temporaries of killed runs. :meth:`fit` calls it."""
        if self._ready:
            return self
        self.dist = init_distributed()
        if self._rng_to_restore is None:
            seed_everything(self.config.seed)
        else:
            restore_rng(self._rng_to_restore)
            self._rng_to_restore = None
        if hasattr(self.datamodule, "setup"):
            self.datamodule.setup()  # encode and split now, outside the training clock
        self._check_vocab()
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.engine = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._eager_engine = self.engine
        if self.config.compile:
            self.engine = compile_for_training(self.engine)
        if self.out_dir is not None and self.dist.is_main and self.config.save_checkpoints:
            remove_stale_temporaries(self.out_dir)
        self._ready = True
        return self

    def _check_vocab(self, known_only: bool = False) -> None:
        """The model must cover the data's vocabulary. ``known_only``: check only when the
        tokenizer is already there (building a trainer loads no data)."""
        if known_only:
            vocab = getattr(self.tokenizer, "vocab_size", None)
        else:
            vocab = getattr(self.datamodule, "vocab_size", None)
        if isinstance(vocab, int) and vocab > self.model.config.vocab_size:
            raise ValueError(
                f"the data has vocab_size {vocab} but the model only {self.model.config.vocab_size}"
                f"; build the model with vocab_size={vocab}."
            )

    @property
    def tokenizer(self) -> Any:
        """The tokenizer given, else the datamodule's (used for samples and checkpoints)."""
        if self._tokenizer is not None:
            return self._tokenizer
        return getattr(self.datamodule, "tokenizer", None)

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = value

    @property
    def out_dir(self) -> Path | None:
        """Where checkpoints and metrics go (``None``: nowhere)."""
        return Path(self.config.out_dir) if self.config.out_dir else None

    @property
    def saves(self) -> bool:
        """Whether this run writes checkpoints."""
        return self.out_dir is not None and self.config.save_checkpoints

    def lr_at(self, step: int) -> float:
        """This run's learning rate at ``step`` (uses its horizon; section 3.5)."""
        return lr_at(step, self.config, self.horizon)

    def _dispatch(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            function = getattr(callback, hook, None)
            if callable(function):
                function(self, *args)

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, pause_after: float | None = None) -> dict[str, Any]:
        """Train until a budget runs out (or ``pause_after`` seconds pass); return the metrics
        (sections 3.6 and 3.7).

        A paused trainer continues where it left off on the next ``fit``. Ctrl-C (SIGINT),
        SIGTERM or a ``KeyboardInterrupt`` raised by a callback stop at a step boundary: the
        step under way finishes (a signal never lands inside an update), the "last" checkpoint
        is saved and ``fit`` returns with ``stop_reason == "interrupted"``; :meth:`resume`
        then continues bit for bit. A loss that stops being finite ends the run with
        ``stop_reason == "diverged"`` without overwriting the checkpoints.
        """
        self.setup()
        self.stop_reason = self.interrupt_signal = self.divergence = None
        self.model.train()
        self.clock.start()
        fit_started = self.clock.total
        try:
            with self._interrupts:
                try:
                    self._dispatch("on_fit_start")
                    if self._eval_due():
                        self._run_eval()
                    while not self._should_stop(fit_started, pause_after):
                        self._iteration()
                    if self.stop_reason == "interrupted":
                        self._interrupted()
                    elif self.stop_reason != "paused":
                        self._finish()
                except KeyboardInterrupt:
                    self._interrupted()
                except _Diverged as error:
                    self._diverged(str(error))
        finally:
            self.clock.stop()
            self._dispatch("on_fit_end")
        return self.metrics()

    def _iteration(self) -> None:
        """One optimizer step, its callbacks, and the evaluation when one is due."""
        started = time.perf_counter()
        record = self.train_step()
        self.last_step_seconds = time.perf_counter() - started
        self.step_time += self.last_step_seconds
        self.timed_tokens += self.tokens_per_step or 0
        record["time"] = self.clock.tick()
        record["tokens_per_second"] = self.timed_tokens / max(self.step_time, 1e-9)
        self._dispatch("on_step", record)
        if self.step % self.config.eval_interval == 0:
            self._run_eval()

    def _eval_due(self) -> bool:
        """An evaluation owed at this step: the first one, or one an interrupt cut short."""
        if self.history and self.history[-1]["step"] == self.step:
            return False
        if self.step == 0:
            return not self.history and self.config.eval_at_start
        return self.step % self.config.eval_interval == 0

    def _should_stop(self, fit_started: float, pause_after: float | None) -> bool:
        """Decide on rank 0's clock and share it, so every rank stops at the same step."""
        now, cfg = self.clock.tick(), self.config
        interrupted = self._any_rank(self._interrupts.requested)
        reasons: list[str | None] = [
            "interrupted" if interrupted else None,
            "max_steps" if cfg.max_steps is not None and self.step >= cfg.max_steps else None,
            "max_tokens" if cfg.max_tokens is not None and self.tokens_seen >= cfg.max_tokens
            else None,
            *(getattr(c, "stop_reason", lambda _: None)(self) for c in self.callbacks),
            "paused" if pause_after is not None and now - fit_started >= pause_after else None,
        ]  # fmt: skip
        code = next((i + 1 for i, reason in enumerate(reasons) if reason), 0)
        if self.dist.enabled:  # rank 0 decides for every rank (one small tensor a step)
            flag = torch.tensor([code], device=self.device)
            dist.broadcast(flag, src=0)
            code = int(flag)
            if code:  # a callback's reason may be rank 0's alone: share its name once
                shared: list[Any] = [reasons[code - 1]]
                dist.broadcast_object_list(shared, src=0)
                reasons[code - 1] = shared[0]
        if code:
            self.stop_reason = reasons[code - 1]
        return code > 0

    def _any_rank(self, flag: bool) -> bool:
        if not self.dist.enabled:
            return flag
        shared = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        return bool(int(shared))

    # -- one optimizer step -----------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """One optimizer update over ``grad_accum_steps`` micro-batches; returns its record
        (sections 3.6 and 3.9). One device-to-host copy per step: the loss and gradient norm
        the divergence check needs before the update."""
        self.setup()
        cfg = self.config
        self._snapshot = {"data": copy.deepcopy(self.datamodule.state_dict()), "rng": capture_rng()}
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum_steps):
            x, y = self._next_batch()
            last = micro == cfg.grad_accum_steps - 1
            sync = nullcontext() if last or not self.dist.enabled else self.engine.no_sync()  # type: ignore[operator]  # DDP's no_sync
            with sync:
                with self.autocast():
                    _, loss = self._forward(x, y)
                self.scaler.scale(loss / cfg.grad_accum_steps).backward()
            total += loss.detach().float()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        local_t = total / cfg.grad_accum_steps
        local, grad_norm = torch.stack([local_t, self._clip_gradients().float()]).tolist()
        self._check_finite(local, grad_norm)
        if self.config.compile and self.step == 0:
            report_graph_breaks()
        with self._interrupts.critical():  # the update and its bookkeeping: all or nothing
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            self.tokens_seen += self.tokens_per_step or 0
            mean_loss = self._mean_over_ranks(local_t) if self.dist.enabled else local
            self.train_losses.append(mean_loss)
            self._snapshot = None
        return {"step": self.step, "loss": mean_loss, "local_loss": local, "lr": lr,
                "grad_norm": grad_norm, "tokens": self.tokens_seen}  # fmt: skip

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training forward; a compilation that fails (no C++ compiler, an unsupported
        platform) warns once and the run goes on uncompiled, instead of losing the run."""
        try:
            return self.engine(x, y)
        except Exception as error:
            if self.engine is self._eager_engine:
                raise  # not a compilation problem: the error of the model itself
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            warnings.warn(
                f"torch.compile failed ({type(error).__name__}: {first_line}); training "
                "uncompiled. Pass compile=False (--no-compile) to skip the attempt.",
                stacklevel=3,
            )
            self.engine = self._eager_engine
            return self.engine(x, y)

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

    def _check_finite(self, loss: float, grad_norm: float) -> None:
        """Stop before a NaN/inf update reaches the weights (fp16's scaler skips inf grads)."""
        scaled = get_precision(self.precision).loss_scaling
        bad = not math.isfinite(loss) or (not math.isfinite(grad_norm) and not scaled)
        bad = self._any_rank(bad)  # one rank's NaN stops every rank (none waits in a collective)
        if not bad:
            return
        if not math.isfinite(loss):
            what = f"the loss became {loss}"
        elif not math.isfinite(grad_norm):
            what = f"the gradient norm became {grad_norm}"
        else:
            what = "another rank's loss or gradient norm stopped being finite"
        raise _Diverged(f"{what} at step {self.step + 1}")

    def _clip_gradients(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= self.dist.world_size
        return float(value)

    # -- evaluation and samples -------------------------------------------------------------
    def evaluate(self, max_batches: int | None = -1) -> float:
        """Mean validation loss (``eval_batches`` batches by default; ``None`` = whole split)
        (section 3.6). Under DDP the batches are shared out across ranks and the sums
        all-reduced."""
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
        self.last_eval_seconds = time.perf_counter() - started
        if not math.isfinite(val_loss):
            raise _Diverged(f"the validation loss became {val_loss} at step {self.step}")
        with self._interrupts.critical():  # the record, the best step and their files agree
            record = self._record_eval(val_loss)
            if self.dist.is_main:
                self._dispatch("on_eval", record)
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
            if self.best_step == self.step:
                self._save("best")
            self._save("last")
        return record

    def sample(self) -> list[dict[str, Any]]:
        """Sample from each of ``config.sample_prompts`` (fixed seeds: comparable over time)
        (section 3.6)."""
        cfg = self.config
        if self.tokenizer is None or not cfg.sample_prompts or not cfg.sample_tokens:
            return []
        out = []
        for i, prompt in enumerate(cfg.sample_prompts):
            text = sample_text(self.model, self.tokenizer, prompt, cfg.sample_tokens,
                               cfg.sample_temperature, seed=cfg.seed + i)  # fmt: skip
            out.append({"step": self.step, "prompt": prompt, "text": text})
        self.samples.extend(out)
        self._dispatch("on_sample", out)
        return out

    # -- how a run ends ---------------------------------------------------------------------
    def _finish(self) -> None:
        if not self.history or self.history[-1]["step"] != self.step:
            self._run_eval()
        elif self.dist.is_main:
            self._save("last")
        if self.dist.is_main:
            self._dispatch("on_stop")

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
                self._dispatch("on_stop")

    def _diverged(self, reason: str) -> None:
        """Stop without saving the broken weights; the checkpoints keep the last good step."""
        self._rollback()
        self.stop_reason = "diverged"
        self.divergence = reason
        if self.dist.is_main:
            self._dispatch("on_stop")

    # -- metrics ----------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Everything the JSON metrics file holds (section 3.7)."""
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
        """Write :meth:`metrics` as JSON, atomically (``out_dir/metrics.json`` by default)
        (section 3.7)."""
        target = Path(path) if path is not None else self.out_dir
        if target is None:
            return None
        if path is None:
            target = target / "metrics.json"
        return atomic_write_json(target, self.metrics(), error_type=CheckpointWriteError)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """The full training state, in ``weights_only``-loadable types (section 3.7)."""
        self.state.train_time = self.clock.total
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": "training",
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            **self.state.to_dict(),
            "rng": capture_rng(),
            "data": self.datamodule.state_dict(),
            "tokenizer": tokenizer_to_text(self.tokenizer),
        }

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write the training state atomically (temporary file + ``os.replace``)
        (section 3.7)."""
        return save_state(self.checkpoint_state(), path)

    def _save(self, which: str) -> None:
        if self.out_dir is not None and self.config.save_checkpoints:
            self.save_checkpoint(self.out_dir / f"{which}.pt")

    def resume(self, path: str | os.PathLike[str]) -> Trainer:
        """Restore a training checkpoint so that :meth:`fit` continues the run exactly
        (section 3.7). Everything is checked before anything changes; the global RNG states
        are put back when :meth:`fit` starts."""
        state = read_checkpoint(path, map_location="cpu")
        if state.get("kind") != "training":
            raise ValueError(f"{path} holds only model weights; it cannot resume training.")
        progress = TrainState.from_dict(state, path)
        config_from_checkpoint(state, path)
        check_model_config(self.model.config, state["model_config"], f"checkpoint {path}")
        self._validate_resume(state, path)
        self._warn_config_changes(TrainConfig.from_dict(state["train_config"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.datamodule.load_state_dict(state["data"])
        self.state = progress
        self.clock.total = progress.train_time
        if self._ready:
            restore_rng(state["rng"])
        else:
            self._rng_to_restore = state["rng"]
        return self

    def _validate_resume(self, state: dict[str, Any], path: Any) -> None:
        """Check weights, settings, optimizer and data position against this trainer."""
        check_weights(self.model.state_dict(), state["model"], f"checkpoint {path}")
        saved_config = state.get("train_config")
        if not isinstance(saved_config, dict):
            raise damaged(path, "field 'train_config' is missing or is not a dict")
        try:
            saved = TrainConfig.from_dict(saved_config)  # older files: the default, AdamW
        except (TypeError, ValueError) as error:
            raise damaged(path, f"its train_config is invalid ({error})") from None
        if saved.optimizer != self.config.optimizer:  # its state is another optimizer's
            raise ValueError(
                f"checkpoint {path} was trained with optimizer {saved.optimizer!r}; resume it "
                f"with optimizer={saved.optimizer!r} (--optimizer {saved.optimizer})"
            )
        mine = self.optimizer.state_dict()
        groups = state["optimizer"]["param_groups"]
        if len(groups) != len(mine["param_groups"]) or any(
            not isinstance(g, dict) or len(g.get("params", ())) != len(m["params"])
            for g, m in zip(groups, mine["param_groups"], strict=False)
        ):
            raise damaged(path, "its optimizer state was made for other parameters")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        shapes = {i: tuple(p.shape) for i, p in enumerate(params)}
        for index, entry in state["optimizer"]["state"].items():
            if index not in shapes or not isinstance(entry, dict):
                raise damaged(path, f"optimizer state for an unknown parameter {index!r}")
            for name, value in entry.items():  # AdamW's moments, Muon's momentum; not steps
                shaped = isinstance(value, torch.Tensor) and value.dim() > 0
                if shaped and tuple(value.shape) != shapes[index]:
                    raise damaged(
                        path, f"optimizer {name} of parameter {index} has the wrong shape"
                    )
        check = getattr(self.datamodule, "check_state_dict", None)
        if callable(check):
            check(state["data"])

    def _warn_config_changes(self, saved: TrainConfig) -> None:
        """Warn when a field that shapes the trajectory differs (names compared canonically,
        so a config saved as ``bf16`` matches ``bf16-mixed``)."""
        mine, theirs = self.config.to_dict(), saved.to_dict()
        changed = [k for k in TRAJECTORY_FIELDS if theirs[k] != mine[k]]
        if changed:
            warnings.warn(
                f"resuming with different {changed} than the checkpoint; the run will not "
                "repeat the uninterrupted one exactly.",
                stacklevel=3,
            )


# --------------------------------------------------------------------------------------------
# Interleaving, the sanity check and fine-tuning
# --------------------------------------------------------------------------------------------


def fit_interleaved(trainers: Mapping[str, Trainer], slices: int = 10) -> dict[str, dict[str, Any]]:
    """Train time-budgeted trainers round-robin, ``max_time / slices`` seconds at a time
    (section 6.4).

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
                trainer.fit(pause_after=trainer.config.max_time / slices)  # type: ignore[operator]  # checked above
    return {name: t.metrics() for name, t in trainers.items()}


def overfit_one_batch(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    steps: int = 200,
    lr: float = 3e-3,
) -> list[float]:
    """Train on one batch only; the loss must fall towards zero. Returns the loss curve
    (section 3.4).

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
    """Continue training a (pretrained) model on a new corpus with a fresh optimizer and
    schedule (section 3.11).

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
    trained = model

    def losses() -> dict[str, float]:
        return {name: estimate_loss(trained, dm, config.eval_batches) for name, dm in sets.items()}

    before = losses()
    trainer = Trainer(trained, datamodule, config, tokenizer=tokenizer, callbacks=callbacks)
    result = trainer.fit()
    return trainer, {"before": before, "after": losses(), "metrics": result}
