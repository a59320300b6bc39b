"""Where a chapter runs: device choice, seeds, time budgets and a version report.

Chapters call :func:`report` in their setup cell and :func:`budget` to size their training
runs: a few minutes on two CPU cores, proportionally more work on a GPU in the same time.
"""

from __future__ import annotations

import functools
import inspect
import os
import platform
import random
import re
import sys
import time

import numpy as np
import torch

from tinytrans.precision import canonical_precision

__all__ = [
    "auto_precision",
    "bf16_is_native",
    "budget",
    "cpu_load_problem",
    "cuda_problem",
    "fallback_reason",
    "has_kernels",
    "mps_problem",
    "pick_device",
    "platform_name",
    "report",
    "seed_everything",
    "versions",
]

#: Why the last ``pick_device("auto")`` passed over an accelerator (``None``: it did not).
fallback_reason: str | None = None


def _arch_number(digits: str) -> tuple[int, int]:
    """``"75"`` -> (7, 5); ``"100"`` -> (10, 0); ``"121"`` -> (12, 1)."""
    return int(digits[:-1]), int(digits[-1])


def has_kernels(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch built for ``arch_list`` (``torch.cuda.get_arch_list()``) can run on a GPU
    of compute ``capability``.

    Compiled kernels (``sm_XY``) run on the same major version with a minor version >= Y; the
    architecture-specific ones (``sm_90a``) only on exactly X.Y. PTX (``compute_XY``) is compiled
    at load time for any capability >= X.Y. An empty list (a build that does not say) is
    trusted, and the tiny operation in :func:`cuda_problem` decides.

    The appendix "How to run the chapters".
    """
    if not arch_list:
        return True
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", arch)
        if not match:
            continue
        kind, digits, suffix = match.groups()
        built = _arch_number(digits)
        if kind == "compute" and capability >= built:
            return True
        if kind == "sm" and suffix == "a" and capability == built:
            return True
        if kind == "sm" and suffix != "a" and capability[0] == built[0] and capability >= built:
            return True
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@functools.cache
def cuda_problem(index: int = 0) -> str | None:
    """Why CUDA device ``index`` cannot run this torch, in one line; ``None`` when it can.

    Checks that the installed build has kernels for the device's compute capability (a Kaggle
    P100, capability 6.0, has none in recent CUDA builds: ``is_available()`` is True and the first
    operation fails), then that a tiny operation really runs there.

    The appendix "How to run the chapters"."""
    try:
        major, minor = torch.cuda.get_device_capability(index)
        capability = (int(major), int(minor))
        name = torch.cuda.get_device_name(index)
        arch_list = list(torch.cuda.get_arch_list())
    except Exception as exc:  # a broken driver or runtime: report it, never crash a chapter
        return f"querying cuda:{index} failed ({_first_line(exc)})"
    if getattr(torch.version, "hip", None) is None and not has_kernels(capability, arch_list):
        return (
            f"{name} (compute capability {capability[0]}.{capability[1]}) has no kernels in "
            f"torch {torch.__version__}, which was built for {' '.join(arch_list)}"
        )
    try:
        x = torch.arange(8, dtype=torch.float32, device=f"cuda:{index}")
        if float((x * 2).sum().item()) != 56.0:
            return f"a test operation on cuda:{index} ({name}) gave a wrong result"
    except Exception as exc:
        return f"a test operation on cuda:{index} ({name}) failed ({_first_line(exc)})"
    return None


@functools.cache
def mps_problem() -> str | None:
    """Why Apple's MPS backend cannot be used, in one line; ``None`` when it can.
    (The appendix "How to run the chapters".)"""
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        built = mps is not None and mps.is_built()
        return "MPS is not available" + ("" if built else " (this torch was built without it)")
    try:
        (torch.ones(4, device="mps") * 2).sum().item()
    except Exception as exc:
        return f"a test operation on mps failed ({_first_line(exc)})"
    return None


def _explain_fallback(reason: str) -> None:
    global fallback_reason
    if reason != fallback_reason:
        print(f"tinytrans: using the CPU: {reason}.")
    fallback_reason = reason


def pick_device(preference: str = "auto") -> torch.device:
    """The device a chapter runs on.

    ``"auto"``: CUDA when the installed torch really runs on the GPU (kernels for its compute
    capability, and a tiny operation works), else MPS (same test), else the CPU; passing over
    an accelerator prints one line saying why (also kept in :data:`fallback_reason`).
    ``"cuda"``, ``"cuda:N"``, ``"mps"``: checked the same way (and that N exists); a device that
    cannot be used raises ``ValueError`` saying why. Anything else is passed to ``torch.device``.

    The appendix "How to run the chapters".
    """
    if preference == "auto":
        if torch.cuda.is_available():
            problem = cuda_problem(0)
            if problem is None:
                return torch.device("cuda")
            _explain_fallback(f"CUDA is present but unusable: {problem}")
            return torch.device("cpu")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            problem = mps_problem()
            if problem is None:
                return torch.device("mps")
            _explain_fallback(f"MPS is present but unusable: {problem}")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {preference!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {preference!r} requested but CUDA is not available; use 'auto' or 'cpu'."
            )
        count = torch.cuda.device_count()
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ValueError(
                f"device {preference!r} requested but this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1}); use one of those or 'auto'."
            )
        problem = cuda_problem(index)
        if problem is not None:
            raise ValueError(f"device {preference!r} cannot be used: {problem}; use 'cpu'.")
    elif device.type == "mps":
        problem = mps_problem()
        if problem is not None:
            raise ValueError(f"device {preference!r} cannot be used: {problem}; use 'cpu'.")
    return device


def bf16_is_native(device: torch.device | str | None = None) -> bool:
    """Whether a CUDA GPU computes bfloat16 in hardware (compute capability 8.0 and later).

    ``torch.cuda.is_bf16_supported()`` also counts emulation by default, so on a T4 (free Colab,
    Kaggle) it says True and bf16 runs much slower than fp16; ``including_emulation=False``
    asks the real question where torch has that argument, the capability answers elsewhere.

    The appendix "How to run the chapters"."""
    if not torch.cuda.is_available():
        return False
    index = torch.device(device).index if device is not None else None
    index = torch.cuda.current_device() if index is None else index
    check = torch.cuda.is_bf16_supported
    try:
        takes_emulation = "including_emulation" in inspect.signature(check).parameters
    except (TypeError, ValueError):
        takes_emulation = False
    with torch.cuda.device(index):
        if takes_emulation:
            return bool(check(including_emulation=False))
    if getattr(torch.version, "hip", None) is not None:
        return bool(check())
    return torch.cuda.get_device_capability(index) >= (8, 0)


def auto_precision(device: torch.device | str, cpu: str = "fp32") -> str:
    """What ``precision="auto"`` means on ``device``, as a canonical name of
    :mod:`tinytrans.precision` (section 3.9): on CUDA, ``bf16-mixed`` where bf16 is native,
    else ``fp16-mixed`` (the trainer adds a GradScaler for it); ``cpu`` on the CPU (the trainer
    passes its measured choice; older names are canonicalised); ``fp32`` on MPS and anything
    else."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16-mixed" if bf16_is_native(device) else "fp16-mixed"
    return canonical_precision(cpu) if device.type == "cpu" else "fp32"


def _runnable_tasks() -> int | None:
    """Threads running or ready to run right now, the caller's included (``/proc/loadavg``,
    Linux), or ``None`` where the system does not say."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_load_problem(samples: int = 5) -> str | None:
    """Why step times measured on this CPU now would mislead, or ``None`` (section 3.6).

    When other threads already keep every core busy, each OpenMP thread pool waits for threads
    the others hold: on two cores a second job with two threads can make a training step ten to
    seventy times slower. The count is a median of ``samples`` snapshots of the runnable threads
    less the caller, 10 ms apart; a load average would still count a job that ended a minute
    ago. ``None`` too where the system gives no count."""
    counts = []
    for _ in range(samples):
        if (count := _runnable_tasks()) is None:
            return None
        counts.append(count - 1)
        time.sleep(0.01)
    others = sorted(counts)[len(counts) // 2]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if others < (cores or 1):
        return None
    return (
        f"the CPU is busy ({others} other threads running on {cores} cores): steps timed now "
        "are slower than on a quiet machine; stop the other jobs, or give each one fewer "
        "threads (OMP_NUM_THREADS)"
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a chapter's numbers repeat.
    (The appendix "How to run the chapters".)"""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def platform_name() -> str:
    """ "colab", "kaggle" or "local" — some setup advice differs between them.
    (The appendix "How to run the chapters".)"""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.path.isdir("/kaggle/working"):
        return "kaggle"
    return "local"


def budget(cpu_seconds: float, device: torch.device | str | None = None) -> float:
    """A chapter's training time budget in seconds.

    The CPU figure is what CI and a laptop spend. On a GPU the same wall clock buys far more
    steps, so the budget stays the same unless ``TINYTRANS_BUDGET_SCALE`` says otherwise.

    The appendix "How to run the chapters".
    """
    scale = float(os.environ.get("TINYTRANS_BUDGET_SCALE", "1"))
    if scale <= 0:
        raise ValueError(f"TINYTRANS_BUDGET_SCALE must be positive, got {scale}.")
    return cpu_seconds * scale


def versions() -> dict[str, str]:
    """Versions and hardware a reader needs when asking for help.
    (The appendix "How to run the chapters".)"""
    from tinytrans import __version__

    device = pick_device()
    info = {
        "tinytrans": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform_name(),
        "device": str(device),
        "precision (auto)": auto_precision(device),
        "cpu threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report() -> None:
    """Print :func:`versions` as one aligned block (the appendix "How to run the chapters")."""
    info = versions()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}} : {value}")
