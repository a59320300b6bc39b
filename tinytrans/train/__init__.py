"""Training (chapter 3): the :class:`Trainer` loop, its schedule, state, callbacks and runtime.

The package mirrors the chapter:

* ``tinytrans.train.config`` -- :class:`TrainConfig` and the schedule :func:`lr_at`
  (sections 3.5, 3.6);
* ``tinytrans.train.state`` -- :class:`TrainState`, everything a checkpoint restores
  (section 3.7);
* ``tinytrans.train.runtime`` -- process group, device, precision, autocast
  (sections 3.6, 3.9);
* ``tinytrans.train.callbacks`` -- :class:`Callback` and the built-in ones: progress
  bar, console log, metrics file, samples, early stopping, time budget (section 3.6);
* ``tinytrans.train.muon`` -- :class:`MuonAdamW`, Muon on the hidden matrices and AdamW on
  the rest (section 3.5);
* ``tinytrans.train.budget`` -- :func:`budget_recipe`, a model, batch and learning rate
  chosen for a wall-clock budget (section 3.6);
* ``tinytrans.train.loop`` -- :class:`Trainer`, :func:`fit_interleaved`,
  :func:`overfit_one_batch`, :func:`finetune` (sections 3.4, 3.6, 3.11);
* ``tinytrans.train.experiments`` -- :func:`run_paired` and :func:`paired_difference`,
  paired-seed comparisons (section 7.1).

Checkpoint files are read and written by :mod:`tinytrans.checkpoint` (re-exported here), which
loads weights without the training loop.

Names are imported on first use (PEP 562), so ``tinytrans.train.config`` (and with it
``tinytrans train --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tinytrans import precision as _precision

if TYPE_CHECKING:
    from tinytrans.checkpoint import CheckpointWriteError, load_checkpoint, save_model
    from tinytrans.evaluate import estimate_loss
    from tinytrans.train.budget import BudgetRecipe, budget_recipe
    from tinytrans.train.callbacks import (
        Callback,
        ConsoleLog,
        EarlyStopping,
        FinishOnTime,
        MetricsFile,
        ProgressBar,
        Sampling,
        TimeBudget,
        default_callbacks,
    )
    from tinytrans.train.config import TrainConfig, lr_at
    from tinytrans.train.experiments import PairedDifference, paired_difference, run_paired
    from tinytrans.train.loop import (
        Trainer,
        compile_for_training,
        finetune,
        fit_interleaved,
        optimizer_groups,
        overfit_one_batch,
        report_graph_breaks,
    )
    from tinytrans.train.muon import MuonAdamW
    from tinytrans.train.runtime import (
        DistInfo,
        autocast_factory,
        cleanup_distributed,
        init_distributed,
        resolve_precision,
    )
    from tinytrans.train.state import TrainState

__all__ = [
    "BudgetRecipe",
    "Callback",
    "CheckpointWriteError",
    "ConsoleLog",
    "DistInfo",
    "EarlyStopping",
    "FinishOnTime",
    "MetricsFile",
    "MuonAdamW",
    "PairedDifference",
    "ProgressBar",
    "Sampling",
    "TimeBudget",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "autocast_factory",
    "budget_recipe",
    "cleanup_distributed",
    "compile_for_training",
    "default_callbacks",
    "estimate_loss",
    "finetune",
    "fit_interleaved",
    "init_distributed",
    "load_checkpoint",
    "lr_at",
    "optimizer_groups",
    "overfit_one_batch",
    "paired_difference",
    "report_graph_breaks",
    "resolve_precision",
    "run_paired",
    "save_model",
]

#: Every name this package gives, and the module it comes from (older names included:
#: importable for older code, documented where they live).
_SOURCES: dict[str, str] = {
    "_dequantized_state": "tinytrans.checkpoint",
    "autocast_factory": "tinytrans.train.runtime",
    "budget_recipe": "tinytrans.train.budget",
    "BudgetRecipe": "tinytrans.train.budget",
    "build_optimizer": "tinytrans.train.loop",
    "Callback": "tinytrans.train.callbacks",
    "capture_rng": "tinytrans.train.state",
    "check_model_config": "tinytrans.checkpoint",
    "CHECKPOINT_FORMAT": "tinytrans.checkpoint",
    "CHECKPOINT_VERSION": "tinytrans.checkpoint",
    "CheckpointWriteError": "tinytrans.checkpoint",
    "cleanup_distributed": "tinytrans.train.runtime",
    "compile_for_training": "tinytrans.train.loop",
    "ConsoleLog": "tinytrans.train.callbacks",
    "CPU_AUTO_PRECISION": "tinytrans.train.runtime",
    "default_callbacks": "tinytrans.train.callbacks",
    "DistInfo": "tinytrans.train.runtime",
    "EarlyStopping": "tinytrans.train.callbacks",
    "estimate_loss": "tinytrans.evaluate",
    "FinishOnTime": "tinytrans.train.callbacks",
    "finetune": "tinytrans.train.loop",
    "fit_interleaved": "tinytrans.train.loop",
    "init_distributed": "tinytrans.train.runtime",
    "load_checkpoint": "tinytrans.checkpoint",
    "lr_at": "tinytrans.train.config",
    "MetricsFile": "tinytrans.train.callbacks",
    "MuonAdamW": "tinytrans.train.muon",
    "optimizer_groups": "tinytrans.train.loop",
    "overfit_one_batch": "tinytrans.train.loop",
    "PairedDifference": "tinytrans.train.experiments",
    "paired_difference": "tinytrans.train.experiments",
    "ProgressBar": "tinytrans.train.callbacks",
    "remove_stale_temporaries": "tinytrans.files",
    "report_graph_breaks": "tinytrans.train.loop",
    "resolve_device": "tinytrans.train.runtime",
    "resolve_precision": "tinytrans.train.runtime",
    "restore_rng": "tinytrans.train.state",
    "run_paired": "tinytrans.train.experiments",
    "sample_text": "tinytrans.train.callbacks",
    "Sampling": "tinytrans.train.callbacks",
    "save_model": "tinytrans.checkpoint",
    "seed_everything": "tinytrans.env",
    "TimeBudget": "tinytrans.train.callbacks",
    "tokenizer_from_text": "tinytrans.checkpoint",
    "tokenizer_to_text": "tinytrans.checkpoint",
    "TrainConfig": "tinytrans.train.config",
    "Trainer": "tinytrans.train.loop",
    "TRAINING_PRECISIONS": "tinytrans.precision",
    "TrainState": "tinytrans.train.state",
    "TRAJECTORY_FIELDS": "tinytrans.train.config",
}

#: The precisions :class:`TrainConfig` accepts (the same tuple as
#: :data:`tinytrans.precision.TRAINING_PRECISIONS`).
PRECISIONS: tuple[str, ...] = _precision.TRAINING_PRECISIONS


def __getattr__(name: str) -> Any:
    """Import ``name``'s module on first use and cache the name here (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
