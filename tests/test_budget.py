"""The budget recipe (section 3.6): what it chooses for a time on a machine, and the CLI default.

The machine is a model here (``seconds per step = overhead + FLOPs / rate``), so the choices
are exact and independent of the computer running the tests; one test times real steps.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytrans.env
from tinytrans import sizing
from tinytrans.cli import build_parser, main
from tinytrans.cli import train as train_cli
from tinytrans.config import ModelConfig
from tinytrans.train import budget as B

VOCAB = 65
#: About what two cores of the reference machine do: 10 ms a step plus 90 GFLOP/s.
OVERHEAD_S, RATE = 0.010, 9e10


def reference_machine(config: ModelConfig, batch_size: int) -> float:
    tokens = batch_size * config.context_length
    return OVERHEAD_S + tokens * sizing.training_flops_per_token(config) / RATE


def recipe(seconds: float, machine=reference_machine) -> B.BudgetRecipe:
    return B.budget_recipe(seconds, VOCAB, step_seconds=machine)


def shape(r: B.BudgetRecipe) -> tuple[int, int, int, int]:
    m = r.model
    return m.n_layers, m.d_model, m.context_length, r.batch_size


def test_ninety_seconds_buy_a_small_model_trained_for_many_tokens():
    r = recipe(90)
    # nanoGPT's README shape (4 x 128) would get under 4 tokens per parameter on this machine
    assert shape(r) == (3, 96, 64, 12) and "tokens per parameter" in r.rejected["4x128"]
    assert (r.model.positional, r.model.norm, r.model.activation) == ("rope", "rmsnorm", "swiglu")
    assert r.lr == 3e-3 and r.model.n_heads == 3
    assert r.predicted_steps >= B.MIN_STEPS
    assert r.predicted_tokens >= B.MIN_TOKENS_PER_PARAMETER * r.parameters


def test_ten_minutes_buys_a_wider_model_at_a_lower_learning_rate():
    r = recipe(600)
    assert shape(r) == (4, 160, 128, 12)
    assert r.lr == pytest.approx(3e-3 * math.sqrt(128 / 160))
    assert r.lr < recipe(90).lr


def test_larger_budgets_never_choose_a_smaller_model():
    sizes = [recipe(s).parameters for s in (5, 30, 90, 300, 600, 1800, 3600, 36000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_a_slower_machine_gets_a_smaller_model_for_the_same_time():
    def slow(config, batch):  # a quarter of the rate: one slow core
        return OVERHEAD_S + (reference_machine(config, batch) - OVERHEAD_S) * 4

    assert recipe(90, slow).parameters < recipe(90).parameters


def test_every_rung_above_the_choice_is_rejected_with_its_reason():
    r = recipe(90)
    bigger = [f"{g.n_layers}x{g.d_model}" for g in B.LADDER if g.d_model > r.model.d_model]
    assert list(r.rejected) == bigger
    assert all("steps <" in why or "per parameter" in why for why in r.rejected.values())


#: Two layers, 64-token windows and batch 64 at every width: the tokens-per-parameter bound
#: stays out of the way, so only the step count decides.
WIDE_LADDER = tuple(B.Rung(d, 2, 64, 64) for d in (64, 96, 128, 160, 192, 256, 384, 512))


def wide_fast_machine(config: ModelConfig, batch_size: int) -> float:
    """The reference machine, except that models wider than the probes run twice as fast, as
    larger matrix products do on a real CPU: the line through the probes overestimates them."""
    seconds = reference_machine(config, batch_size)
    return seconds / 2 if config.d_model > WIDE_LADDER[3].d_model else seconds


def test_the_recipe_times_the_rungs_above_the_fit_and_climbs_while_they_fit():
    calls = []

    def machine(config, batch):
        calls.append(config.d_model)
        return wide_fast_machine(config, batch)

    first_wide = WIDE_LADDER[4]
    # a budget in which the line gives the first rung past the probes 3/4 of the steps it needs
    line_step = reference_machine(first_wide.config(VOCAB), first_wide.batch_size)
    seconds = 0.75 * B.MIN_STEPS * line_step / (1 - B.EVAL_SHARE)
    by_line = B.budget_recipe(seconds, VOCAB, step_seconds=reference_machine, ladder=WIDE_LADDER)
    r = B.budget_recipe(seconds, VOCAB, step_seconds=machine, ladder=WIDE_LADDER)
    widths = [g.d_model for g in WIDE_LADDER]
    first, chosen = widths.index(by_line.model.d_model), widths.index(r.model.d_model)
    assert first == 3 and chosen > first  # the line stops at the probe; the timed steps climb
    # the two probes, then the rungs from the line's choice to one past the chosen, no more
    assert calls == [widths[0], widths[3], *widths[first + 1 : chosen + 2]]
    assert r.step_seconds == wide_fast_machine(r.model, r.batch_size)  # its own timed step
    assert r.predicted_steps >= B.MIN_STEPS
    above = WIDE_LADDER[chosen + 1]
    assert r.rejected[f"{above.n_layers}x{above.d_model}"].endswith("(timed)")
    assert by_line.rejected[f"{first_wide.n_layers}x{first_wide.d_model}"].endswith("(timed)")


def test_too_little_time_still_trains_the_smallest_model():
    r = recipe(0.5)
    assert shape(r) == (B.LADDER[0].n_layers, B.LADDER[0].d_model, 64, 12)
    assert r.predicted_steps >= 1 and r.warmup_steps >= 1


def test_schedule_and_evaluations_fit_the_predicted_run():
    r = recipe(600)
    assert r.warmup_steps == round(0.05 * r.predicted_steps)
    assert r.eval_interval == r.predicted_steps // 10
    assert r.predicted_steps * r.step_seconds <= 600 * (1 - B.EVAL_SHARE)
    values = r.train_values()
    assert values["eval_at_start"] is False and values["lr"] == r.lr


def test_describe_says_what_was_chosen():
    line = recipe(90).describe()
    r = recipe(90)
    assert "3 x 96" in line and f"{r.parameters:,} parameters" in line and "context 64" in line
    assert "lr 3.0e-03" in line and "steps" in line


@settings(max_examples=50, deadline=None)
@given(
    overhead=st.floats(0.0, 0.1),
    rate=st.floats(1e9, 1e14),
    f1=st.floats(1e6, 1e10),
    factor=st.floats(1.5, 1000.0),
)
def test_fit_step_time_recovers_the_line_through_two_points(overhead, rate, f1, factor):
    f2 = f1 * factor
    fitted = B.fit_step_time((f1, overhead + f1 / rate), (f2, overhead + f2 / rate))
    assert fitted.seconds(f1) == pytest.approx(overhead + f1 / rate, rel=1e-6)
    assert fitted.seconds(f2) == pytest.approx(overhead + f2 / rate, rel=1e-6)
    assert fitted.overhead_s >= 0


def test_fit_step_time_without_a_positive_slope_is_rate_limited():
    fitted = B.fit_step_time((1e9, 0.05), (4e9, 0.04))  # the bigger model was faster
    assert fitted.overhead_s == 0 and fitted.seconds(4e9) == pytest.approx(0.04)
    with pytest.raises(ValueError, match="larger model"):
        B.fit_step_time((4e9, 0.04), (1e9, 0.05))


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan])
def test_a_budget_that_is_not_positive_is_refused(seconds):
    with pytest.raises(ValueError, match="time budget must be positive"):
        recipe(seconds)


def test_a_busy_cpu_is_named_with_its_load_and_the_fix(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(tinytrans.env, "_runnable_tasks", lambda: 5)  # this thread + 4 others
    problem = tinytrans.env.cpu_load_problem()
    assert problem is not None and "4 other threads running on 2 cores" in problem
    assert "OMP_NUM_THREADS" in problem
    monkeypatch.setattr(tinytrans.env, "_runnable_tasks", lambda: 2)  # one other: a core free
    assert tinytrans.env.cpu_load_problem() is None
    monkeypatch.setattr(tinytrans.env, "_runnable_tasks", lambda: None)  # no /proc/loadavg
    assert tinytrans.env.cpu_load_problem() is None


def test_this_machine_reports_its_runnable_threads_or_none():
    count = tinytrans.env._runnable_tasks()
    assert count is None or count >= 1  # at least the thread asking


def test_the_recipe_warns_when_it_times_steps_on_a_busy_cpu(monkeypatch):
    monkeypatch.setattr(tinytrans.env, "_runnable_tasks", lambda: 9)
    monkeypatch.setattr(
        B, "measure_step_seconds", lambda c, b, d, optimizer: reference_machine(c, b)
    )
    with pytest.warns(RuntimeWarning, match="CPU is busy.*too small a model"):
        measured = B.budget_recipe(90, VOCAB)
    assert shape(measured) == shape(recipe(90))  # a warning, not another choice


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_the_recipe_times_its_steps_with_the_optimizer_it_trains_with(monkeypatch, optimizer):
    timed_with = set()

    def timer(config, batch_size, device, optimizer):
        timed_with.add(optimizer)
        return reference_machine(config, batch_size)

    monkeypatch.setattr(tinytrans.env, "_runnable_tasks", lambda: 1)
    monkeypatch.setattr(B, "measure_step_seconds", timer)
    r = B.budget_recipe(90, VOCAB, optimizer=optimizer)
    assert timed_with == {optimizer} and r.train_values()["optimizer"] == optimizer
    assert f", {optimizer}, lr " in r.describe()
    assert B.budget_recipe(90, VOCAB, step_seconds=reference_machine).optimizer == B.OPTIMIZER


def test_measured_step_time_is_a_real_training_step():
    config = B.LADDER[0].config(VOCAB)
    assert 0 < B.measure_step_seconds(config, 2, steps=1) < 10


def test_the_step_probe_leaves_out_both_slow_first_steps(monkeypatch):
    # five steps of 5, 3, 1, 2 and 1 s: the median of the last three is 1 s; timed from the
    # second step (one warm-up) it would read 2 s
    durations = iter([5.0, 3.0, 1.0, 2.0, 1.0])
    clock = {"now": 0.0, "started": False}

    def fake_clock() -> float:
        if clock["started"]:
            clock["now"] += next(durations)
        clock["started"] = not clock["started"]
        return clock["now"]

    monkeypatch.setattr(B.time, "perf_counter", fake_clock)
    config = B.LADDER[0].config(VOCAB)
    assert B.measure_step_seconds(config, 2) == 1.0


# --------------------------------------------------------------------------------------------
# The command line: --max-time alone means the budget recipe
# --------------------------------------------------------------------------------------------


def _spec(*flags: str) -> train_cli.RunSpec:
    return train_cli.resolve_run(build_parser(only="train").parse_args(["train", *flags]))


def test_max_time_alone_asks_for_the_budget_recipe():
    assert _spec("--max-time", "90").budget
    assert not _spec("--max-steps", "100").budget
    assert not _spec("--max-time", "90", "--preset", "course").budget
    assert not _spec("--max-time", "90", "--d-model", "96").budget
    assert not _spec("--max-time", "90", "--context-length", "128").budget
    assert _spec("--max-time", "90", "--positional", "learned").budget  # not a shape


@pytest.fixture
def fake_machine(monkeypatch):
    """The reference machine instead of timing this one."""
    timed_with = []

    def timer(config, batch_size, device="cpu", optimizer=B.OPTIMIZER):
        timed_with.append(optimizer)
        return reference_machine(config, batch_size)

    monkeypatch.setattr(B, "measure_step_seconds", timer)
    return timed_with


def test_the_recipe_replaces_the_preset_but_not_the_flags_given(fake_machine, capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Now is the winter of our discontent\n" * 200)
    spec, tokenizer = train_cli.apply_budget_recipe(
        _spec("--max-time", "90", "--corpus", str(corpus), "--lr", "1e-3", "--norm", "layernorm")
    )
    chosen = B.budget_recipe(90, tokenizer.vocab_size, step_seconds=reference_machine)
    assert (spec.model.n_layers, spec.model.d_model) == (chosen.model.n_layers, 96)
    assert spec.model.vocab_size == tokenizer.vocab_size
    assert spec.model.norm == "layernorm"  # the flag given wins over the recipe
    assert spec.train["lr"] == 1e-3 and spec.train["warmup_steps"] == chosen.warmup_steps
    assert spec.data["batch_size"] == 12 and spec.train["eval_at_start"] is False
    out = capsys.readouterr().out
    assert "budget recipe for 1.5 min" in out and "given and kept: lr, norm" in out


def test_cli_trains_the_recipes_model(fake_machine, tmp_path, capsys, monkeypatch):
    import tinytrans.train

    built = []

    class Recorded(tinytrans.train.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(tinytrans.train, "Trainer", Recorded)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Now is the winter of our discontent\n" * 400)
    out = tmp_path / "run"
    argv = ["train", "--max-time", "2", "--corpus", str(corpus), "--out", str(out),
            "--no-progress", "--sample-prompts", "N", "--sample-tokens", "5"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_config"]["name"].startswith("budget-")
    assert metrics["stop_reason"] == "max_time"
    assert "budget recipe for 2 s" in capsys.readouterr().out
    # --max-time ends the cosine when the time runs out, whatever the pace does
    assert any(isinstance(c, tinytrans.train.FinishOnTime) for c in built[0].callbacks)


def test_long_budgets_compile_the_step_and_short_ones_do_not():
    assert not recipe(90).compile and not recipe(B.COMPILE_MIN_SECONDS - 1).compile
    assert recipe(B.COMPILE_MIN_SECONDS).compile and recipe(600).compile
    assert recipe(600).train_values()["compile"] is True
    assert "compiled" in recipe(600).describe() and "compiled" not in recipe(90).describe()
    assert not B.budget_recipe(600, VOCAB, step_seconds=reference_machine, compile=False).compile


def test_no_compile_given_wins_over_the_recipe(fake_machine, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Now is the winter of our discontent\n" * 200)
    args = ("--max-time", "600", "--corpus", str(corpus))
    spec, _ = train_cli.apply_budget_recipe(_spec(*args))
    assert spec.train["compile"] is True
    spec, _ = train_cli.apply_budget_recipe(_spec(*args, "--no-compile"))
    assert spec.train["compile"] is False
    assert "given and kept: compile" in capsys.readouterr().out


def test_the_recipe_trains_with_muon_unless_another_optimizer_is_given(fake_machine, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Now is the winter of our discontent\n" * 200)
    spec, _ = train_cli.apply_budget_recipe(_spec("--max-time", "90", "--corpus", str(corpus)))
    assert spec.train["optimizer"] == "muon" and set(fake_machine) == {"muon"}
    fake_machine.clear()
    args = ("--max-time", "90", "--corpus", str(corpus), "--optimizer", "adamw")
    spec, _ = train_cli.apply_budget_recipe(_spec(*args))
    assert spec.train["optimizer"] == "adamw" and set(fake_machine) == {"adamw"}
