"""Where the loop runs: process group, device, precision and autocast (sections 3.6, 3.9).

Nothing here runs at import or when a :class:`~tinytrans.train.Trainer` is built: the
process group is joined by :func:`init_distributed`, which the trainer calls when ``fit``
starts. :func:`dist_info` only reads ``torchrun``'s environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tinytrans.env import auto_precision, pick_device
from tinytrans.precision import TRAINING_PRECISIONS, canonical_precision, get_precision

__all__ = [
    "CPU_AUTO_PRECISION",
    "DistInfo",
    "autocast_factory",
    "cleanup_distributed",
    "dist_info",
    "init_distributed",
    "resolve_device",
    "resolve_precision",
]

#: Measured on the course's 2-core Xeon (no AMX): bf16 autocast ran the course model's
#: training step 1.46x *slower* than fp32 (benchmarks/bench_train.py re-measures it), so
#: "auto" keeps fp32 on CPU; ask for precision="bf16-mixed" on CPUs with AMX/AVX512-BF16.
CPU_AUTO_PRECISION = "fp32"

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly one-process) data-parallel job (section 3.6)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that logs and writes files)."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """This process's place in the job, read without joining anything (section 3.6): from the
    live process group if there is one, else from ``torchrun``'s environment variables."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    return DistInfo(rank, world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (env:// rendezvous)
    (section 3.6).

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
    """Leave the process group (if this process joined one) (section 3.6)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto``: cuda (this rank's GPU) > mps > cpu; otherwise the named device (section 3.6)."""
    device = pick_device(name)
    if device.type == "cuda" and device.index is None and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """The canonical precision the trainer runs (section 3.9). ``auto``:
    :func:`tinytrans.env.auto_precision` (bf16-mixed on CUDA where bf16 is native, else
    fp16-mixed with loss scaling; fp32 on CPU by measurement, see ``CPU_AUTO_PRECISION``, and
    on MPS). Older names (``bf16``, ``fp16``) are accepted."""
    precision = canonical_precision(requested)
    if precision == "auto":
        return auto_precision(device, cpu=CPU_AUTO_PRECISION)
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAINING_PRECISIONS}, got {requested!r}.")
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A zero-argument factory of the mixed-precision context for ``precision`` (section 3.9):
    autocast to :attr:`tinytrans.precision.Precision.autocast`, or nothing for fp32."""
    dtype = get_precision(precision).autocast
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=_DTYPES[dtype])
