"""Paired-seed experiments: run every arm with the same seeds, compare them seed by seed (chapter 7).

Chapter 6 compares single runs with the spread of three baseline seeds. Chapter 7 pairs them:
each seed fixes the initial weights and the batch order, every arm of a comparison trains once
per seed, and the verdict is the *paired difference* ``arm - baseline`` per seed, summarised as
mean ± standard error over the seeds (section 7.1). Pairing removes the seed's luck, shared by
both arms, from the difference, so a few seeds settle what single runs cannot.

* :func:`run_paired` -- call one function per arm and seed, with every random generator seeded
  the same way before each call (section 7.1);
* :func:`paired_difference` -- the per-seed differences and their mean ± standard error, as a
  :class:`PairedDifference` (section 7.1).

This module does not import torch itself (it seeds through :func:`tinytrans.env.seed_everything`
only when it runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["PairedDifference", "paired_difference", "run_paired"]

Result = TypeVar("Result")


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences ``arm - baseline`` and their mean ± standard error (section 7.1).

    ``stderr`` is the sample standard deviation of the differences (``n - 1`` in the
    denominator) over ``sqrt(n)``; ``z`` is ``mean / stderr``, how many standard errors the
    mean lies from zero (``inf`` when every difference is the same non-zero number).
    """

    differences: tuple[float, ...]

    @property
    def n(self) -> int:
        """Number of seeds (section 7.1)."""
        return len(self.differences)

    @property
    def mean(self) -> float:
        """Mean paired difference (section 7.1)."""
        return math.fsum(self.differences) / self.n

    @property
    def stderr(self) -> float:
        """Standard error of the mean difference (section 7.1)."""
        mean = self.mean
        variance = math.fsum((d - mean) ** 2 for d in self.differences) / (self.n - 1)
        return math.sqrt(variance / self.n)

    @property
    def z(self) -> float:
        """``mean / stderr``: the mean in standard errors (section 7.1)."""
        if self.stderr == 0.0:
            return 0.0 if self.mean == 0.0 else math.copysign(math.inf, self.mean)
        return self.mean / self.stderr

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.stderr:.3f}"


def paired_difference(baseline: Sequence[float], arm: Sequence[float]) -> PairedDifference:
    """``arm[i] - baseline[i]`` for every seed ``i``, as a :class:`PairedDifference` (section 7.1).

    The two sequences must hold one value per seed, in the same seed order, and at least two
    seeds (a standard error needs two).
    """
    if len(baseline) != len(arm):
        raise ValueError(
            f"paired values need one value per seed in both arms, got {len(baseline)} baseline "
            f"and {len(arm)} arm values; run both arms with the same seeds."
        )
    if len(arm) < 2:
        raise ValueError(
            f"a standard error needs at least 2 seeds, got {len(arm)}; run more seeds."
        )
    values = [float(v) for v in (*baseline, *arm)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"paired values must be finite numbers, got {values}.")
    return PairedDifference(tuple(float(a) - float(b) for b, a in zip(baseline, arm, strict=True)))


def run_paired(
    arms: Mapping[str, Callable[[int], Result]], seeds: Sequence[int]
) -> dict[str, list[Result]]:
    """Call ``arms[name](seed)`` for every seed and arm; results per arm in seed order (section 7.1).

    Before every call all random generators are seeded with ``seed``
    (:func:`tinytrans.env.seed_everything`), so every arm starts from the same random state for
    the same seed: a data module built with ``seed`` draws the same batches in every arm, and arms
    with the same model configuration get the same initial weights. Arms whose shapes differ draw
    different initial weights (a model's constructor draws numbers for every layer), so they share
    the batches, not the weights. Seeds run in the outer loop, so a machine that slows down during
    the experiment slows all arms alike.
    """
    if not arms:
        raise ValueError("run_paired needs at least one arm, got none.")
    seeds = list(seeds)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}.")
    from tinytrans.env import seed_everything

    results: dict[str, list[Result]] = {name: [] for name in arms}
    for seed in seeds:
        for name, run in arms.items():
            seed_everything(seed)
            results[name].append(run(seed))
    return results
