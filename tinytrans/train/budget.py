"""A training recipe chosen for a wall-clock budget (section 3.6).

A fixed preset is the wrong model for most budgets: in 90 seconds on two CPU cores the course
model (1.8M parameters, 256-token windows) manages about 200 optimizer steps, half of them in
warmup, and ends worse than a model half its size that takes 1,700. :func:`budget_recipe`
chooses for the time given instead:

1. It times a few real training steps of two shapes of a ladder of course-style models
   (RoPE, RMSNorm, SwiGLU, tied embeddings) on the device, and fits ``step time = overhead +
   FLOPs / rate`` (FLOPs per step from :func:`tinytrans.sizing.training_flops_per_token`,
   the course's one FLOP convention).
2. It predicts how many steps each rung of the ladder fits in the budget and picks the
   largest rung that still gets :data:`MIN_STEPS` steps and :data:`MIN_TOKENS_PER_PARAMETER`
   training tokens per parameter, then times the rungs above that choice one by one and
   climbs while a rung's own step time still meets both bounds (the line through two shapes
   overestimates wider models, whose larger matrix products run at a higher rate). Below
   that many steps warmup and noise dominate; below that many tokens per parameter a
   smaller model trained longer does better. Both bounds
   come from runs on this course's corpus, measured against nanoGPT's README recipe by
   ``benchmarks/bench_nanogpt.py``.
3. It trains with Muon on the hidden matrices (:data:`OPTIMIZER`,
   :class:`tinytrans.train.muon.MuonAdamW`): its steps cost more than AdamW's and are timed
   as such, and at equal wall clock it ends well below AdamW.
4. The learning rate falls with the width (``3e-3`` up to 128 dimensions, then as
   ``1/sqrt(d_model)``), warmup is 5 % of the predicted steps, and evaluations take about
   5 % of the time; the cosine horizon itself is set by the trainer's time probe.

``tinytrans train --max-time T`` uses it unless a preset or the model's shape is given; any
flag given (``--lr``, ``--batch-size``, ``--d-model``...) overrides the recipe's value.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinytrans import sizing
from tinytrans.config import ModelConfig
from tinytrans.env import cpu_load_problem

__all__ = [
    "COMPILE_MIN_SECONDS",
    "LADDER",
    "MIN_STEPS",
    "MIN_TOKENS_PER_PARAMETER",
    "OPTIMIZER",
    "BudgetRecipe",
    "Rung",
    "StepTimeModel",
    "budget_recipe",
    "fit_step_time",
    "measure_step_seconds",
    "swiglu_d_ff",
]

#: Fewer optimizer steps than this and the run is mostly warmup and noise.
MIN_STEPS = 1500
#: Fewer training tokens per parameter than this and a smaller model does better. Measured on
#: this corpus against the 64-character held-out windows (``benchmarks/bench_nanogpt.py``):
#: in 2.4 minutes 3 x 96 (about 9 tokens per parameter) beat both 4 x 128 (2) and 2 x 64 (60);
#: in 8 minutes 4 x 128 (7.5) beat 4 x 160 (3).
MIN_TOKENS_PER_PARAMETER = 4.0
#: The recipe's optimizer (``TrainConfig.optimizer``). On this corpus at nanoGPT's README shape
#: on two CPU cores, 1,500 Muon steps (40 ms each) reached 1.64 nats/char on the held-out
#: windows, 1,900 AdamW steps (32 ms each, the same time) 1.70.
OPTIMIZER = "muon"
#: Share of the budget the evaluations may take.
EVAL_SHARE = 0.05
#: Windows per evaluation: 8 batches, the noise of a loss estimate about 0.01 nats.
EVAL_BATCHES = 8
#: From this budget on the recipe compiles the training step (``TrainConfig.compile``). The
#: compilation costs tens of seconds on two CPU cores once and the compiled course-style step
#: is about 1.2x faster, so it pays after a few minutes (``benchmarks/bench_nanogpt.py``).
COMPILE_MIN_SECONDS = 300.0


def swiglu_d_ff(d_model: int) -> int:
    """SwiGLU's hidden width for about the parameters of a 4 d GELU FFN: 8/3 d, rounded up to
    a multiple of 8 (section 3.6)."""
    return (8 * d_model // 3 + 7) // 8 * 8


@dataclass(frozen=True)
class Rung:
    """One model of the ladder: its shape and the batch it trains with (section 3.6)."""

    d_model: int
    n_layers: int
    context_length: int
    batch_size: int

    def config(self, vocab_size: int) -> ModelConfig:
        """The course recipe at this shape: heads of 32 dimensions, SwiGLU at 8/3 d."""
        d_ff = swiglu_d_ff(self.d_model)
        return ModelConfig.preset(
            "course", vocab_size=vocab_size, context_length=self.context_length,
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.d_model // 32, d_ff=d_ff,
        ).replace(name=f"budget-{self.name}")  # fmt: skip

    @property
    def name(self) -> str:
        """``layers x width``, as the recipe's rejections name the rung."""
        return f"{self.n_layers}x{self.d_model}"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length

    def flops_per_step(self, vocab_size: int) -> int:
        config = self.config(vocab_size)
        return self.tokens_per_step * sizing.training_flops_per_token(config, self.context_length)


#: From smallest to largest. The third is nanoGPT's README CPU shape, built the course's way.
#: Past it the context grows with the width: in ten minutes on two cores, scored on 64-token
#: windows, 4 x 160 at 128 tokens reached 1.522 nats/char where the same model at 64 tokens
#: reached 1.543, 4 x 128 at 64 tokens 1.550 and 4 x 192 at 64 tokens (batch 16) 1.557.
LADDER: tuple[Rung, ...] = (
    Rung(64, 2, 64, 12),
    Rung(96, 3, 64, 12),
    Rung(128, 4, 64, 12),
    Rung(160, 4, 128, 12),
    Rung(192, 4, 128, 16),
    Rung(256, 6, 128, 16),
    Rung(384, 6, 256, 16),
    Rung(512, 8, 256, 32),
    Rung(768, 12, 512, 32),
)


@dataclass(frozen=True)
class StepTimeModel:
    """``seconds per step = overhead_s + FLOPs / flops_per_s``, fitted on this device
    (section 3.6)."""

    overhead_s: float
    flops_per_s: float

    def seconds(self, flops: float) -> float:
        return self.overhead_s + flops / self.flops_per_s


def fit_step_time(small: tuple[float, float], large: tuple[float, float]) -> StepTimeModel:
    """The line through two ``(FLOPs per step, seconds per step)`` measurements (section 3.6).

    A larger model that is not slower per FLOP than a smaller one is rate-limited only: then
    the overhead is 0 and the rate is the larger one's."""
    (f1, t1), (f2, t2) = small, large
    if f2 <= f1:
        raise ValueError("the second measurement must be of the larger model")
    slope = (t2 - t1) / (f2 - f1)
    if slope <= 0 or t1 - slope * f1 < 0:
        return StepTimeModel(0.0, f2 / t2)
    return StepTimeModel(t1 - slope * f1, 1.0 / slope)


def measure_step_seconds(config: ModelConfig, batch_size: int, device: str = "cpu",
                         steps: int = 3, warmup: int = 2,
                         optimizer: str = OPTIMIZER) -> float:  # fmt: skip
    """Median seconds of a full training step (forward, backward, clip, ``optimizer``) of
    ``config`` on random tokens, after ``warmup`` untimed steps (section 3.6).

    Two warm-up steps, not one: the first creates the optimizer's state and the second still
    pays for the allocator's first large blocks. Timed from the second, a 1.3M-parameter
    model's CPU step read about 1.3x its steady time, and the recipe chose a smaller model."""
    import torch

    from tinytrans.model import TinyTransformer
    from tinytrans.train.config import TrainConfig
    from tinytrans.train.loop import build_optimizer

    generator = torch.Generator().manual_seed(0)
    model = TinyTransformer(config).to(device).train()
    settings = TrainConfig(max_steps=1, lr=1e-4, optimizer=optimizer)
    update = build_optimizer(model, settings)  # the trainer's
    shape = (batch_size, config.context_length)
    x = torch.randint(config.vocab_size, shape, generator=generator).to(device)
    y = torch.randint(config.vocab_size, shape, generator=generator).to(device)
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        update.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        update.step()
        float(loss.detach())  # waits for the device
        times.append(time.perf_counter() - start)
    timed = sorted(times[warmup:])
    return timed[len(timed) // 2]


@dataclass(frozen=True)
class BudgetRecipe:
    """What :func:`budget_recipe` chose and why (section 3.6)."""

    seconds: float
    device: str
    model: ModelConfig
    batch_size: int
    lr: float
    warmup_steps: int
    eval_interval: int
    eval_batches: int
    predicted_steps: int
    step_seconds: float
    step_time: StepTimeModel
    rejected: dict[str, str] = field(default_factory=dict)
    compile: bool = False
    optimizer: str = OPTIMIZER

    @property
    def parameters(self) -> int:
        return sizing.count_parameters(self.model)

    @property
    def predicted_tokens(self) -> int:
        return self.predicted_steps * self.batch_size * self.model.context_length

    def train_values(self) -> dict[str, Any]:
        """The :class:`~tinytrans.train.TrainConfig` fields the recipe sets."""
        return {
            "optimizer": self.optimizer, "lr": self.lr, "warmup_steps": self.warmup_steps,
            "eval_interval": self.eval_interval, "eval_batches": self.eval_batches,
            "eval_at_start": False, "compile": self.compile,
        }  # fmt: skip

    def describe(self) -> str:
        """One line for the console: the choice, its size and its prediction."""
        m = self.model
        return (
            f"budget recipe for {sizing.format_duration(self.seconds)} on {self.device}: "
            f"{m.n_layers} x {m.d_model} course-style model ({self.parameters:,} parameters), "
            f"context {m.context_length}, batch {self.batch_size}, {self.optimizer}, "
            f"lr {self.lr:.1e}, warmup {self.warmup_steps}; about {self.predicted_steps:,} "
            f"steps of {1e3 * self.step_seconds:.0f} ms, "
            f"{sizing.format_count(self.predicted_tokens)} tokens ({self.predicted_tokens / self.parameters:.1f} per parameter)"
            + ("; compiled (torch.compile)" if self.compile else "")
        )


def _lr_for_width(d_model: int) -> float:
    return 3e-3 * min(1.0, math.sqrt(128 / d_model))


def budget_recipe(
    seconds: float,
    vocab_size: int,
    device: str = "cpu",
    *,
    step_seconds: Callable[[ModelConfig, int], float] | None = None,
    ladder: tuple[Rung, ...] = LADDER,
    compile: bool | None = None,
    optimizer: str = OPTIMIZER,
) -> BudgetRecipe:
    """The largest rung of ``ladder`` that trains well in ``seconds`` on ``device``
    (section 3.6).

    ``step_seconds(config, batch_size)`` times one step; by default
    ``measure_step_seconds`` on ``device`` (a few seconds for both probes on a CPU).
    Tests pass a model of a machine instead. ``compile``: compile the step; by default from
    ``COMPILE_MIN_SECONDS`` on (the rung is chosen from uncompiled step times, so a
    compiled run has time to spare, which the trainer's time probe turns into steps).
    ``optimizer``: the one it trains with, so the one its steps are timed with. The
    rung above the fit's choice is timed too, and chosen while its own step time fits. On a
    busy CPU (``tinytrans.env.cpu_load_problem``) it warns that its timings run slow."""
    if not seconds > 0:
        raise ValueError(f"the time budget must be positive, got {seconds!r} seconds")
    if step_seconds is None and device == "cpu" and (problem := cpu_load_problem()):
        warnings.warn(f"{problem}; the recipe may choose too small a model", RuntimeWarning,
                      stacklevel=2)  # fmt: skip
    timer = step_seconds or (
        lambda config, batch: measure_step_seconds(config, batch, device, optimizer=optimizer)
    )
    probes = (ladder[0], ladder[min(3, len(ladder) - 1)])
    timed = {r: timer(r.config(vocab_size), r.batch_size) for r in probes}
    model = fit_step_time(*[(r.flops_per_step(vocab_size), timed[r]) for r in probes])
    training_seconds = seconds * (1 - EVAL_SHARE)

    def per_step(rung: Rung) -> float:  # timed where it was, else the line's guess
        return timed.get(rung) or model.seconds(rung.flops_per_step(vocab_size))

    def shortfall(rung: Rung) -> str | None:
        steps = int(training_seconds / per_step(rung))
        tokens = steps * rung.tokens_per_step
        params = sizing.count_parameters(rung.config(vocab_size))
        if steps < MIN_STEPS:
            return f"{steps:,} steps < {MIN_STEPS:,}"
        if tokens < MIN_TOKENS_PER_PARAMETER * params:
            return f"{tokens / params:.2f} tokens per parameter"
        return None

    chosen, rejected = ladder[0], {}
    for rung in ladder:
        why = shortfall(rung)
        if why:
            rejected[rung.name] = why
        else:
            chosen = rung
    # The line through two shapes is only a guess away from them (a wider model's larger
    # matrix products run at a higher rate): time the next rung up and climb while it fits.
    for rung in ladder[ladder.index(chosen) + 1 :]:
        timed[rung] = timer(rung.config(vocab_size), rung.batch_size)
        why = shortfall(rung)
        if why:
            rejected[rung.name] = f"{why} (timed)"
            break
        chosen = rung
        del rejected[rung.name]
    chosen_step = per_step(chosen)
    steps = max(1, int(training_seconds / chosen_step))
    evals = 10  # the trainer's time probe also times one evaluation
    return BudgetRecipe(
        seconds=seconds,
        device=device,
        model=chosen.config(vocab_size),
        batch_size=chosen.batch_size,
        lr=_lr_for_width(chosen.d_model),
        warmup_steps=max(10, min(200, round(0.05 * steps))),
        eval_interval=max(1, steps // evals),
        eval_batches=EVAL_BATCHES,
        predicted_steps=steps,
        step_seconds=chosen_step,
        step_time=model,
        rejected=rejected,
        compile=seconds >= COMPILE_MIN_SECONDS if compile is None else compile,
        optimizer=optimizer,
    )
