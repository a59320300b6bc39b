"""What the loop does besides training, as callbacks (section 3.6).

The :class:`~tinytrans.train.Trainer` runs the steps, the evaluations and the checkpoints;
everything else hooks in: the progress bar, the console log, the metrics file, the samples,
early stopping and the time budget. :func:`default_callbacks` builds the ones a
:class:`~tinytrans.train.TrainConfig` asks for, so the defaults behave as the chapter
describes; a user's own callbacks run after them, in the order given.

Hooks, all optional (an object with only some of these methods is fine):

* ``on_fit_start(trainer)`` -- ``fit`` begins (also after a pause);
* ``on_step(trainer, record)`` -- after every optimizer update, on every rank (``record``:
  step, loss, lr, tokens, grad_norm, time, tokens_per_second);
* ``on_eval(trainer, record)`` -- after every evaluation, on rank 0 (the chapter redraws its
  live loss plot here);
* ``on_sample(trainer, samples)`` -- with a list of ``{"step", "prompt", "text"}``, rank 0;
* ``stop_reason(trainer)`` -- a reason to stop now (a string), or ``None``; rank 0 decides;
* ``on_stop(trainer)`` -- the run ended (budget, early stop, interrupt or divergence; not a
  pause), ``trainer.stop_reason`` says why; rank 0;
* ``on_fit_end(trainer)`` -- ``fit`` returns or raises, always.

Raising ``KeyboardInterrupt`` in a hook stops training cleanly, like Ctrl-C.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from tinytrans.model import TinyTransformer, eval_mode

if TYPE_CHECKING:
    from tinytrans.train.config import TrainConfig
    from tinytrans.train.loop import Trainer

__all__ = [
    "HOOKS",
    "Callback",
    "ConsoleLog",
    "EarlyStopping",
    "FinishOnTime",
    "MetricsFile",
    "ProgressBar",
    "Sampling",
    "TimeBudget",
    "default_callbacks",
    "sample_text",
]

#: The hooks the trainer calls, in the order of a run.
HOOKS = ("on_fit_start", "on_step", "on_eval", "on_sample", "stop_reason", "on_stop", "on_fit_end")

StepHook = Callable[["Trainer", dict[str, Any]], None]


class Callback:
    """Hooks the trainer calls (section 3.6): subclass and override, or pass functions.

    ``Callback(on_step=f, on_eval=g, on_sample=h)`` calls ``f(trainer, record)`` after every
    optimizer update, ``g(trainer, record)`` after every evaluation and ``h(trainer,
    samples)`` after sampling. The module docstring lists every hook.
    """

    def __init__(
        self,
        on_step: StepHook | None = None,
        on_eval: StepHook | None = None,
        on_sample: Callable[[Trainer, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._functions: dict[str, Callable[..., None] | None] = {
            "on_step": on_step, "on_eval": on_eval, "on_sample": on_sample,
        }  # fmt: skip

    def _call(self, hook: str, *args: Any) -> None:
        function = getattr(self, "_functions", {}).get(hook)
        if function is not None:
            function(*args)

    def on_fit_start(self, trainer: Trainer) -> None:
        """``fit`` begins."""

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After every optimizer update."""
        self._call("on_step", trainer, record)

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After every evaluation."""
        self._call("on_eval", trainer, record)

    def on_sample(self, trainer: Trainer, samples: list[dict[str, Any]]) -> None:
        """After sampling from the prompts."""
        self._call("on_sample", trainer, samples)

    def stop_reason(self, trainer: Trainer) -> str | None:
        """A reason to stop before the next step, or ``None``."""
        return None

    def on_stop(self, trainer: Trainer) -> None:
        """The run ended (not paused)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """``fit`` returns (or raises)."""


class TimeBudget(Callback):
    """``max_time``: fix the schedule's horizon from measured speed, then stop on time
    (section 3.6).

    After ``time_probe_steps`` timed steps (the first is a warm-up and not counted) plus the
    cost of one evaluation spread over ``eval_interval`` steps, the horizon becomes the number
    of steps that fit in the remaining time (capped by the other budgets). Rank 0's estimate
    is shared, so every rank follows the same schedule.
    """

    def __init__(self) -> None:
        super().__init__()
        self.step_seconds: list[float] = []

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.step_seconds.append(trainer.last_step_seconds)
        cfg = trainer.config
        if trainer.horizon_fixed or len(self.step_seconds) < cfg.time_probe_steps + 1:
            return
        per_step = statistics.median(self.step_seconds[1:])  # the first step warms up
        per_step += trainer.last_eval_seconds / cfg.eval_interval
        remaining = max(0.0, (cfg.max_time or 0.0) - trainer.clock.tick())
        estimate = trainer.step + int(remaining / max(per_step, 1e-9))
        if trainer.dist.enabled:
            shared = torch.tensor([estimate], device=trainer.device)
            dist.broadcast(shared, src=0)
            estimate = int(shared)
        trainer.horizon = estimate if trainer.horizon is None else min(trainer.horizon, estimate)
        trainer.horizon_fixed = True

    def stop_reason(self, trainer: Trainer) -> str | None:
        limit = trainer.config.max_time
        return "max_time" if limit is not None and trainer.clock.tick() >= limit else None


class FinishOnTime(Callback):
    """With ``max_time``: move the cosine horizon in when the run falls behind, so that the
    schedule reaches its floor by the time the budget runs out (section 3.6).

    :class:`TimeBudget` fixes the horizon once, from the speed of the first steps. Later steps
    can be slower (samples, evaluations, a machine that gets busy), and then the time runs out
    part-way down the cosine. After the horizon is fixed, this callback measures the pace since
    then at every step (loop wall clock per step, evaluations and samples included; from
    ``time_probe_steps`` steps on) and, when
    the steps left to the horizon would not fit in the time left, sets the horizon to the steps
    that do. It only ever moves the horizon in, so the learning rate never rises again. Pass it
    in ``callbacks=``; it changes nothing in a run without ``max_time``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.start: tuple[int, float] | None = None  # (step, clock) when the horizon was fixed

    def on_fit_start(self, trainer: Trainer) -> None:
        self.start = None  # after a pause or a resume, measure the pace afresh

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        limit, horizon = trainer.config.max_time, trainer.horizon
        if limit is None or horizon is None or not trainer.horizon_fixed:
            return
        now = trainer.clock.tick()
        if self.start is None:
            self.start = (trainer.step, now)
            return
        steps = trainer.step - self.start[0]
        if steps < max(1, trainer.config.time_probe_steps):  # a pace from a few steps is noise
            return
        pace = (now - self.start[1]) / steps
        left = limit - now - trainer.last_eval_seconds  # keep the time of one evaluation
        fit = trainer.step + int(max(0.0, left) / max(pace, 1e-9))
        if trainer.dist.enabled:
            shared = torch.tensor([fit], device=trainer.device)
            dist.broadcast(shared, src=0)
            fit = int(shared)
        if fit < horizon:
            trainer.horizon = max(trainer.step, fit)


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations without an improvement of more than ``min_delta``
    (section 3.6). The counter lives in :class:`~tinytrans.train.TrainState`, so it survives
    a resume."""

    def __init__(self, patience: int) -> None:
        super().__init__()
        self.patience = patience

    def stop_reason(self, trainer: Trainer) -> str | None:
        plateaued = trainer.evals_without_improvement >= self.patience
        return "early_stopping" if plateaued else None


class ProgressBar(Callback):
    """A tqdm bar over the steps (rank 0 only), showing loss, learning rate and tokens/s
    (section 3.6)."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        total = trainer.horizon if trainer.config.max_steps is None else trainer.config.max_steps
        self.bar = tqdm(total=total, initial=trainer.step, disable=not trainer.dist.is_main,
                        unit="step", dynamic_ncols=True)  # fmt: skip

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        bar = self.bar
        if bar is None or bar.disable:
            return
        if bar.total is None and trainer.horizon is not None:
            bar.total = trainer.horizon
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_second']:.0f}", refresh=False)  # fmt: skip

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def log(message: str) -> None:
    """Print a line without breaking a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message)


def eval_line(record: dict[str, Any], steps: int) -> str:
    """The console line of an evaluation (section 3.6): the training loss is the mean over the
    ``steps`` updates since the previous evaluation, and says so, beside the validation loss."""
    val = f"val loss {record['val_loss']:.4f}"
    if record["train_loss"] is None:
        return f"step {record['step']}: {val}"
    recent = "the last step" if steps == 1 else f"the last {steps} steps"
    return f"step {record['step']}: train loss {record['train_loss']:.4f} (mean of {recent}), {val}"


class ConsoleLog(Callback):
    """One line per evaluation, sample and stop (rank 0), through ``tqdm.write``
    (section 3.6)."""

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        earlier = [e["step"] for e in trainer.history if e is not record]
        log(eval_line(record, record["step"] - (earlier[-1] if earlier else 0)))

    def on_sample(self, trainer: Trainer, samples: list[dict[str, Any]]) -> None:
        for item in samples:
            log(f"[sample @ {item['step']}] {item['text']!r}")

    def on_stop(self, trainer: Trainer) -> None:
        self._stopped = True  # said in on_fit_end, after the final samples

    def on_fit_end(self, trainer: Trainer) -> None:
        if not getattr(self, "_stopped", False):
            return
        self._stopped = False
        reason = trainer.stop_reason
        if reason == "interrupted":
            out = trainer.out_dir
            where = f" to {out / 'last.pt'}" if trainer.saves and out is not None else ""
            log(f"interrupted ({trainer.interrupt_signal}) at step {trainer.step}; "
                f"saved the last checkpoint{where}")  # fmt: skip
        elif reason == "diverged":
            log(f"stopped: {trainer.divergence}; the checkpoints were not overwritten")
        else:
            log(f"stopped ({reason}) at step {trainer.step}")


class MetricsFile(Callback):
    """Keep ``out_dir/metrics.json`` current: after every evaluation and when the run ends
    (section 3.7). Written atomically, like the checkpoints it sits beside."""

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        trainer.write_metrics()

    def on_stop(self, trainer: Trainer) -> None:
        trainer.write_metrics()


class Sampling(Callback):
    """Sample from ``sample_prompts`` every ``sample_interval`` steps (0: only at the end)
    and when the run finishes (section 3.6). Rank 0 only; the global RNG is untouched."""

    def __init__(self, interval: int) -> None:
        super().__init__()
        self.interval = interval

    def _due(self, trainer: Trainer) -> bool:
        return bool(self.interval) and trainer.step > 0 and trainer.step % self.interval == 0

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        # On an evaluation step the sample follows the evaluation (see on_eval).
        evaluating = trainer.step % trainer.config.eval_interval == 0
        if self._due(trainer) and not evaluating and trainer.dist.is_main:
            trainer.sample()

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._due(trainer) and not self._sampled_now(trainer):
            trainer.sample()

    @staticmethod
    def _sampled_now(trainer: Trainer) -> bool:
        return bool(trainer.samples) and trainer.samples[-1]["step"] == trainer.step

    def on_stop(self, trainer: Trainer) -> None:
        if trainer.stop_reason in ("interrupted", "diverged"):
            return
        if not self._sampled_now(trainer):
            trainer.sample()


def default_callbacks(config: TrainConfig) -> list[Callback]:
    """The built-in callbacks ``config`` asks for, in the order they run (section 3.6)."""
    callbacks: list[Callback] = []
    if config.max_time is not None:
        callbacks.append(TimeBudget())
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(config.early_stopping_patience))
    if config.progress:
        callbacks.append(ProgressBar())
    if config.log:
        callbacks.append(ConsoleLog())
    callbacks.append(Sampling(config.sample_interval))
    if config.out_dir is not None:
        callbacks.append(MetricsFile())  # last: the file holds the samples just taken
    return callbacks


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
    """Prompt plus ``max_new_tokens`` sampled tokens; leaves the global RNG untouched
    (section 3.6)."""
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        try:
            from tinytrans.generate import generate
        except ImportError:
            return prompt + _fallback_generate(
                model, tokenizer, prompt, max_new_tokens, temperature, seed
            )
        out = generate(model, tokenizer, prompt, max_new_tokens, temperature=temperature, seed=seed)
        return prompt + (out if isinstance(out, str) else tokenizer.decode(out))
