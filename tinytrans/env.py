"""Where a chapter runs: device choice, seeds, time budgets and a version report.

Chapters call :func:`report` in their setup cell and :func:`budget` to size their training
runs: a few minutes on two CPU cores, proportionally more work on a GPU in the same time.
"""

from __future__ import annotations

import os
import platform
import random
import sys

import numpy as np
import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``cuda`` > ``mps`` > ``cpu`` for "auto"; otherwise the named device (checked)."""
    if preference != "auto":
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use 'auto'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a chapter's numbers repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def platform_name() -> str:
    """ "colab", "kaggle" or "local" — some setup advice differs between them."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.path.isdir("/kaggle/working"):
        return "kaggle"
    return "local"


def budget(cpu_seconds: float, device: torch.device | str | None = None) -> float:
    """A chapter's training time budget in seconds.

    The CPU figure is what CI and a laptop spend. On a GPU the same wall clock buys far more
    steps, so the budget stays the same unless ``TINYTRANS_BUDGET_SCALE`` says otherwise.
    """
    scale = float(os.environ.get("TINYTRANS_BUDGET_SCALE", "1"))
    if scale <= 0:
        raise ValueError(f"TINYTRANS_BUDGET_SCALE must be positive, got {scale}.")
    return cpu_seconds * scale


def versions() -> dict[str, str]:
    """Versions and hardware a reader needs when asking for help."""
    from tinytrans import __version__

    device = pick_device()
    info = {
        "tinytrans": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform_name(),
        "device": str(device),
        "cpu threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report() -> None:
    """Print :func:`versions` as one aligned block."""
    info = versions()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}} : {value}")
