"""Shared helpers for the benchmark scripts: machine info, medians, the matmul peak, results.

Every benchmark script writes ``benchmarks/results/<name>.json`` through :func:`write_result`;
``benchmarks/report.py`` merges them into ``benchmarks/report.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tinytrans import sizing

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: The FLOP count behind every MFU the benchmarks report: chapter 5's, from tinytrans.sizing.
FLOPS_CONVENTION = (
    "tinytrans.sizing.training_flops_per_token (chapter 5): 3 x (2 N_matmul + 2 L T d) per "
    "token; N_matmul = block parameters + final norm + the d x V head; attention charged for "
    "the causal half of the T x T square (attention='full' would add PaLM's other half)"
)


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare a report with their own machine."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def measure_matmul_peak(n: int = 1024, repeats: int = 7, dtype=torch.float32) -> float:
    """This machine's achievable fp32 matmul rate in FLOP/s (median of ``repeats``): chapter 5's
    :func:`tinytrans.sizing.measure_matmul_flops`, the one home of the measurement."""
    return sizing.measure_matmul_flops(n, repeats, dtype)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write one benchmark's results (with machine info) atomically to ``results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    body = {"benchmark": name, "machine": machine_info(), **payload}
    tmp.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
