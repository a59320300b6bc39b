"""Training (chapter 3): the :class:`Trainer` loop, its schedule, state, callbacks and runtime.

The package mirrors the chapter:

* :mod:`~tinytrans.train.config` -- :class:`TrainConfig` and the schedule :func:`lr_at`
  (sections 3.5, 3.6);
* :mod:`~tinytrans.train.state` -- :class:`TrainState`, everything a checkpoint restores
  (section 3.7);
* :mod:`~tinytrans.train.runtime` -- process group, device, precision, autocast
  (sections 3.6, 3.9);
* :mod:`~tinytrans.train.callbacks` -- :class:`Callback` and the built-in ones: progress
  bar, console log, metrics file, samples, early stopping, time budget (section 3.6);
* :mod:`~tinytrans.train.loop` -- :class:`Trainer`, :func:`fit_interleaved`,
  :func:`overfit_one_batch`, :func:`finetune` (sections 3.4, 3.6, 3.11).

Checkpoint files are read and written by :mod:`tinytrans.checkpoint` (re-exported here), which
loads weights without the training loop.
"""

from __future__ import annotations

from tinytrans.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointWriteError,
    _dequantized_state,
    check_model_config,
    load_checkpoint,
    save_model,
    tokenizer_from_text,
    tokenizer_to_text,
)
from tinytrans.env import seed_everything
from tinytrans.evaluate import estimate_loss
from tinytrans.files import remove_stale_temporaries
from tinytrans.precision import TRAINING_PRECISIONS
from tinytrans.train.callbacks import (
    Callback,
    ConsoleLog,
    EarlyStopping,
    MetricsFile,
    ProgressBar,
    Sampling,
    TimeBudget,
    default_callbacks,
    sample_text,
)
from tinytrans.train.config import TRAJECTORY_FIELDS, TrainConfig, lr_at
from tinytrans.train.loop import (
    Trainer,
    build_optimizer,
    finetune,
    fit_interleaved,
    optimizer_groups,
    overfit_one_batch,
)
from tinytrans.train.runtime import (
    CPU_AUTO_PRECISION,
    DistInfo,
    autocast_factory,
    cleanup_distributed,
    init_distributed,
    resolve_device,
    resolve_precision,
)
from tinytrans.train.state import TrainState, capture_rng, restore_rng

#: The precisions :class:`TrainConfig` accepts (the same tuple as
#: :data:`tinytrans.precision.TRAINING_PRECISIONS`).
PRECISIONS = TRAINING_PRECISIONS

__all__ = [
    "Callback",
    "CheckpointWriteError",
    "ConsoleLog",
    "DistInfo",
    "EarlyStopping",
    "MetricsFile",
    "ProgressBar",
    "Sampling",
    "TimeBudget",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "autocast_factory",
    "cleanup_distributed",
    "default_callbacks",
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

#: Importable for older code, documented where they live.
_COMPATIBLE = (
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CPU_AUTO_PRECISION, TRAJECTORY_FIELDS,
    _dequantized_state, build_optimizer, capture_rng, check_model_config, remove_stale_temporaries,
    resolve_device, restore_rng, sample_text, seed_everything, tokenizer_from_text,
    tokenizer_to_text,
)  # fmt: skip
