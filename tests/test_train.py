"""Tests for tinytrans.train and tinytrans.evaluate: schedule, loop, checkpoints, exact resume."""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from _versions import FUSED_CPU_ADAMW
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans.data import DataModule
from tinytrans.evaluate import estimate_loss, ngram_loss, perplexity, sliding_windows
from tinytrans.model import TinyTransformer, build_model
from tinytrans.train import (
    Callback,
    TrainConfig,
    Trainer,
    finetune,
    fit_interleaved,
    load_checkpoint,
    lr_at,
    optimizer_groups,
    overfit_one_batch,
    resolve_precision,
    save_model,
)
from tinytrans.train.loop import report_graph_breaks

WORDS = [
    "the",
    "king",
    "queen",
    "sword",
    "crown",
    "night",
    "day",
    "love",
    "death",
    "speak",
    "hear",
    "fair",
    "foul",
]


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """A small deterministic corpus with speaker/line structure."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        speaker = rng.choice(["KING", "QUEEN", "FOOL"])
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        lines.append(f"{speaker}:\n{words.capitalize()}.\n")
    return "\n".join(lines)


TEXT = make_text()


def tiny_data(batch_size: int = 8, context_length: int = 16, seed: int = 0) -> DataModule:
    return DataModule(text=TEXT, context_length=context_length, batch_size=batch_size, seed=seed)


def tiny_model(vocab_size: int, seed: int = 0, **overrides) -> TinyTransformer:
    torch.manual_seed(seed)
    base = dict(
        vocab_size=vocab_size, context_length=16, d_model=32, n_layers=2, n_heads=2, d_ff=64
    )
    return build_model("course", **{**base, **overrides})


def quiet(**changes) -> TrainConfig:
    base = dict(
        max_steps=12, lr=3e-3, warmup_steps=2, eval_interval=4, eval_batches=2,
        progress=False, log=False, sample_prompts=(), seed=0,
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def run(config: TrainConfig, callbacks=(), resume: Path | None = None) -> Trainer:
    data = tiny_data()
    trainer = Trainer(tiny_model(data.vocab_size), data, config, callbacks=callbacks)
    if resume is not None:
        trainer.resume(resume)
    trainer.fit()
    return trainer


# ------------------------------------------------------------------ config and schedule


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(max_steps=0), "max_steps"),
        (dict(lr=-1.0), "lr"),
        (dict(grad_accum_steps=0), "grad_accum_steps"),
        (dict(min_lr_ratio=1.5), "min_lr_ratio"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(precision="fp8"), "precision"),
        (dict(max_time=0), "max_time"),
        (dict(eval_interval=0), "eval_interval"),
        (dict(grad_clip=0.0), "grad_clip"),
    ],
)
def test_invalid_train_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"max_steps": 10, **changes})


def test_train_config_needs_a_budget():
    with pytest.raises(ValueError, match="budget"):
        TrainConfig()


def test_train_config_round_trips_through_dict():
    config = quiet(betas=(0.8, 0.9))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_lr_schedule_warmup_cosine_floor():
    config = TrainConfig(max_steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, config) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:10]))  # warmup rises
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))  # then never rises
    assert lrs[55] == pytest.approx(0.55e-3)  # half way down the cosine
    assert lrs[100] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)
    assert lr_at(50, config, horizon=None) == lr_at(50, config)  # pure, default horizon


def test_lr_without_horizon_stays_at_peak():
    config = TrainConfig(max_time=60, lr=2e-3, warmup_steps=5)
    assert lr_at(1000, config) == 2e-3


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = build_model("course-gpt2", vocab_size=50, n_layers=1)
    decay, no_decay = optimizer_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all("norm" not in n and not n.endswith("bias") and "emb" not in n for n in decayed)
    assert "blocks.0.attn.q_proj.weight" in decayed
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len(list(model.parameters()))  # the tied head counted once


def test_auto_precision_on_cpu_is_fp32():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16-mixed"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", torch.device("cpu"))


# ------------------------------------------------------------------ sanity checks


def test_overfit_one_batch_drives_loss_towards_zero():
    data = tiny_data(batch_size=4)
    curve = overfit_one_batch(tiny_model(data.vocab_size), data.get_batch("train"), 60, 1e-2)
    assert len(curve) == 60
    assert curve[-1] < 0.15 < curve[0]


def test_fit_trains_and_writes_metrics_and_checkpoints(tmp_path):
    seen = {"step": 0, "eval": [], "sample": []}
    callback = Callback(
        on_step=lambda t, r: seen.__setitem__("step", seen["step"] + 1),
        on_eval=lambda t, r: seen["eval"].append(r["step"]),
        on_sample=lambda t, s: seen["sample"].extend(s),
    )
    config = quiet(
        max_steps=20, out_dir=str(tmp_path), sample_prompts=("KING:\n",), sample_tokens=8
    )
    trainer = run(config, callbacks=[callback])
    assert seen["step"] == 20 and seen["eval"] == [0, 4, 8, 12, 16, 20]
    assert len(seen["sample"]) == 1 and seen["sample"][0]["text"].startswith("KING:\n")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stop_reason"] == "max_steps" and metrics["step"] == 20
    assert metrics["final_val_loss"] < metrics["history"][0]["val_loss"] - 0.5
    assert metrics["best_val_loss"] == min(e["val_loss"] for e in metrics["history"])
    assert metrics["n_params"] == trainer.model.num_parameters()
    assert metrics["tokens_per_second"] > 0 and metrics["run_id"]
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / name, weights_only=True)  # only safe types inside
        assert state["model_config"] == trainer.model.config.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.usefixtures("one_thread")  # two threads on a loaded 2-core machine stall tiny steps
def test_budgets_max_tokens_and_max_time():
    trainer = run(quiet(max_steps=None, max_tokens=8 * 16 * 5 + 1))
    assert trainer.step == 6 and trainer.stop_reason == "max_tokens" and trainer.horizon == 6
    # Behaviour, not speed: one probe step after the warm-up step fixes the horizon, which a
    # tiny model reaches well inside the budget even on a loaded machine.
    trainer = run(
        quiet(
            max_steps=None, max_time=2.0, time_probe_steps=1, eval_interval=1000,
            eval_at_start=False,
        )
    )  # fmt: skip
    assert trainer.stop_reason == "max_time" and trainer.horizon is not None
    assert trainer.horizon_fixed and trainer.step >= 2


def test_early_stopping_on_plateau():
    trainer = run(quiet(max_steps=100, lr=1e-6, early_stopping_patience=2, min_delta=1.0))
    assert trainer.stop_reason == "early_stopping"
    assert trainer.step == 8  # evals at 0 (best), 4 and 8 without improvement


def test_gradient_accumulation_matches_one_big_batch():
    class Fixed:
        """Serves the halves of one batch (or the whole batch) in turn."""

        def __init__(self, parts):
            self.parts, self.i = parts, 0

        def get_batch(self, split):
            self.i += 1
            return self.parts[(self.i - 1) % len(self.parts)]

        def state_dict(self):
            return {"i": self.i}

    x, y = tiny_data(batch_size=8).get_batch("train")
    results = []
    for accum, parts in ((1, [(x, y)]), (2, [(x[:4], y[:4]), (x[4:], y[4:])])):
        model = tiny_model(80)
        trainer = Trainer(model, Fixed(parts), quiet(grad_accum_steps=accum, max_steps=1))
        record = trainer.train_step()
        results.append((record["loss"], [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_losses():
    plain = run(quiet(max_steps=4))
    checkpointed = run(quiet(max_steps=4, gradient_checkpointing=True))
    assert checkpointed.model.gradient_checkpointing
    torch.testing.assert_close(
        torch.tensor(plain.train_losses), torch.tensor(checkpointed.train_losses)
    )


def test_bf16_autocast_on_cpu_trains():
    trainer = run(quiet(max_steps=3, precision="bf16"))
    assert trainer.precision == "bf16-mixed" and all(math.isfinite(v) for v in trainer.train_losses)


# ------------------------------------------------------------------ exact resume


class StopAt(Callback):
    """Press Ctrl-C after ``step`` optimizer updates."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.at = step

    def on_step(self, trainer, record):
        if record["step"] == self.at:
            raise KeyboardInterrupt


def test_interrupt_saves_and_resume_is_bit_exact(tmp_path):
    full = run(quiet(out_dir=str(tmp_path / "full")))
    interrupted = run(quiet(out_dir=str(tmp_path / "cut")), callbacks=[StopAt(5)])
    assert interrupted.stop_reason == "interrupted" and interrupted.step == 5
    last = tmp_path / "cut" / "last.pt"
    assert torch.load(last, weights_only=True)["step"] == 5
    resumed = run(quiet(out_dir=str(tmp_path / "cut")), resume=last)
    assert resumed.step == 12
    assert torch.equal(torch.tensor(resumed.train_losses), torch.tensor(full.train_losses))
    assert torch.equal(torch.tensor(interrupted.train_losses), torch.tensor(full.train_losses[:5]))


def test_resume_from_a_periodic_checkpoint_is_bit_exact(tmp_path):
    copied = tmp_path / "step8.pt"

    def keep(trainer, record):
        if record["step"] == 8:
            shutil.copy(tmp_path / "run" / "last.pt", copied)

    full = run(quiet(out_dir=str(tmp_path / "run")), callbacks=[Callback(on_eval=keep)])
    resumed = run(quiet(), resume=copied)
    assert torch.equal(torch.tensor(resumed.train_losses[8:]), torch.tensor(full.train_losses[8:]))
    assert resumed.history[:3] == full.history[:3]


def test_resume_rejects_a_different_model_config(tmp_path):
    run(quiet(max_steps=2, out_dir=str(tmp_path)))
    data = tiny_data()
    other = Trainer(tiny_model(data.vocab_size, d_model=48), data, quiet())
    with pytest.raises(ValueError, match=r"d_model: model 48 vs checkpoint 32"):
        other.resume(tmp_path / "last.pt")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable tinytrans checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_load_checkpoint_and_save_model(tmp_path):
    trainer = run(quiet(max_steps=4, out_dir=str(tmp_path)))
    model, tokenizer, info = load_checkpoint(tmp_path / "last.pt")
    assert info["step"] == 4 and info["kind"] == "training" and not model.training
    assert tokenizer.decode(tokenizer.encode("KING:\nFair.")) == "KING:\nFair."
    x, _ = trainer.datamodule.get_batch("val")
    trainer.model.eval()
    torch.testing.assert_close(model(x)[0], trainer.model(x)[0])
    small = save_model(tmp_path / "small.pt", model, tokenizer, dtype=torch.bfloat16)
    assert small.stat().st_size < (tmp_path / "last.pt").stat().st_size / 4
    model16, tok16, info16 = load_checkpoint(small)
    assert info16["kind"] == "model" and tok16.vocab_size == tokenizer.vocab_size
    assert next(model16.parameters()).dtype == torch.float32


def test_finetune_uses_a_fresh_schedule_and_reports_before_after():
    data = tiny_data()
    model = run(quiet(max_steps=6)).model
    other = DataModule(
        text=make_text(300, seed=1).upper(), tokenizer=data.tokenizer, context_length=16,
        batch_size=8,
    )  # fmt: skip
    trainer, report = finetune(model, other, quiet(max_steps=5), compare={"original": data})
    assert trainer.step == 5 and trainer.history[0]["step"] == 0
    assert set(report["before"]) == set(report["after"]) == {"target", "original"}
    assert report["after"]["target"] < report["before"]["target"]


# ------------------------------------------------------------------ evaluation


def test_estimate_loss_is_the_token_weighted_mean():
    data = tiny_data()
    model = tiny_model(data.vocab_size).eval()
    batches = list(data.iter_eval_batches("val", max_batches=3))
    with torch.no_grad():
        expected = sum(float(model(x, y)[1]) * y.numel() for x, y in batches) / sum(
            y.numel() for _, y in batches
        )
    assert estimate_loss(model, data, max_batches=3) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 200), context=st.integers(1, 40), data=st.data())
def test_sliding_windows_score_every_token_once(n, context, data):
    stride = data.draw(st.integers(1, context))
    scored = []
    for begin, end, n_scored in sliding_windows(n, context, stride):
        assert 0 < end - begin <= context and 0 < n_scored <= end - begin
        targets = list(range(begin + 1, end + 1))[-n_scored:]
        if scored:  # later windows see at least context - stride tokens of history
            assert targets[0] - begin >= min(context - stride, begin)
        scored += targets
    assert scored == list(range(1, n))


def test_perplexity_with_stride_equal_to_context_is_the_chunked_value():
    data = tiny_data().setup()
    model = tiny_model(data.vocab_size).eval()
    ids = torch.as_tensor(data.val_tokens[:150].astype("int64"))
    nll, count = 0.0, 0
    for start in range(0, 149, 16):
        x, y = ids[start : start + 16], ids[start + 1 : start + 17]
        x = x[: len(y)]
        with torch.no_grad():
            logits, _ = model(x[None])
        nll += float(torch.nn.functional.cross_entropy(logits[0], y, reduction="sum"))
        count += len(y)
    assert perplexity(model, ids, stride=16) == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_perplexity_rejects_bad_inputs():
    model = tiny_model(80)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, list(range(20)), stride=17)
    with pytest.raises(ValueError, match="two tokens"):
        perplexity(model, [1], stride=1)


def test_ngram_loss_unigram_matches_the_formula():
    train, held = [0, 0, 0, 1], [0, 1, 2]
    # add-one counts over V = 3: p(0) = 4/7, p(1) = 2/7, p(2) = 1/7
    expected = -(math.log(4 / 7) + math.log(2 / 7) + math.log(1 / 7)) / 3
    assert ngram_loss(train, held, n=1, vocab_size=3) == pytest.approx(expected)


def test_ngram_loss_bigram_learns_a_deterministic_successor():
    stream = [0, 1, 2] * 200
    bigram = ngram_loss(stream, stream, n=2, vocab_size=3, alpha=1e-3)
    unigram = ngram_loss(stream, stream, n=1, vocab_size=3)
    assert bigram < 0.01 and unigram == pytest.approx(math.log(3))
    # the first evaluation token has no context and is not scored
    assert ngram_loss(stream, [0, 1], n=2, vocab_size=3, alpha=1e-3) == pytest.approx(
        -math.log((200 + 1e-3) / (200 + 3e-3))
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), "positive integer"),
        (dict(alpha=0.0), "alpha"),
        (dict(vocab_size=2), "vocab_size"),
        (dict(n=3, vocab_size=10**7), "too large"),
    ],
)
def test_ngram_loss_rejects_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ngram_loss([0, 1, 2, 1, 0], [0, 1, 2], **kwargs)


def test_trainer_checks_vocab_size():
    data = tiny_data()
    with pytest.raises(ValueError, match="vocab_size"):
        Trainer(tiny_model(data.vocab_size - 5), data, quiet())


# ------------------------------------------------------------------ command line


def test_cli_trains_then_resumes(tmp_path, capsys):
    from tinytrans.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "run"
    common = ["train", "--corpus", str(corpus), "--out", str(out), "--no-progress", "--preset"]
    common += ["tiny-postnorm"]
    small = ["--context-length", "16", "--batch-size", "4", "--eval-interval", "2"]
    small += ["--eval-batches", "1", "--warmup-steps", "1", "--sample-tokens", "0"]
    assert main([*common, *small, "--max-steps", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 3 and metrics["model_config"]["name"] == "tiny-postnorm"
    assert "best val loss" in capsys.readouterr().out
    assert main([*common, "--resume", "--max-steps", "5"]) == 0
    assert json.loads((out / "metrics.json").read_text())["step"] == 5


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    from tinytrans.cli import main

    assert main(["train", "--out", str(tmp_path), "--resume", "--no-progress"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


# ------------------------------------------------------------------ interleaved equal-time runs


def test_fit_interleaved_gives_every_run_its_whole_time_budget():
    data = tiny_data()
    trainers = {
        name: Trainer(
            tiny_model(data.vocab_size, seed=i),
            data,
            quiet(max_steps=None, max_time=0.5, eval_interval=1000, eval_at_start=False),
        )
        for i, name in enumerate(("a", "b"))
    }
    results = fit_interleaved(trainers, slices=4)
    assert set(results) == {"a", "b"}
    for trainer in trainers.values():
        assert trainer.stop_reason == "max_time"
        assert trainer.clock.total >= 0.5
        assert trainer.step > 0


def test_fit_interleaved_rejects_runs_without_a_time_budget():
    data = tiny_data()
    trainer = Trainer(tiny_model(data.vocab_size), data, quiet())
    with pytest.raises(ValueError, match="max_time"):
        fit_interleaved({"steps-only": trainer})
    with pytest.raises(ValueError, match="slices"):
        fit_interleaved({"steps-only": trainer}, slices=0)


def test_samples_never_contain_ids_beyond_the_tokenizer_vocabulary():
    """A model whose vocabulary is padded beyond its tokenizer's (here 96 > the data's ids)
    must still sample decodable text during training."""
    data = tiny_data()
    model = tiny_model(data.vocab_size + 20)
    with torch.no_grad():
        model.lm_head.weight[data.vocab_size :] += 5.0  # make the padding ids the likeliest
    trainer = Trainer(model, data, quiet(max_steps=1, sample_prompts=("KING:",), sample_tokens=20))
    trainer.fit()
    assert trainer.samples and all(isinstance(s["text"], str) for s in trainer.samples)


# ------------------------------------------------------------------ the package's structure


def test_train_state_round_trips_through_a_checkpoint(tmp_path):
    from tinytrans.train import TrainState

    trainer = run(quiet(max_steps=5, out_dir=str(tmp_path)))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    back = TrainState.from_dict(state)
    assert back == trainer.state
    assert back.step == 5 and len(back.train_losses) == 5
    assert TrainState.from_dict(back.to_dict() | {k: state[k] for k in ("optimizer", "scaler",
                                "rng", "data")}) == back  # fmt: skip
    # every restored key is a TrainState field or a component, written once
    from tinytrans.train.state import COMPONENTS

    restored = set(back.to_dict()) | set(COMPONENTS)
    common = {"format", "version", "kind", "model", "model_config", "train_config", "tokenizer"}
    assert set(state) == restored | common


def test_train_state_names_the_damaged_field():
    from tinytrans.train import TrainState

    with pytest.raises(ValueError, match="'best_step'"):
        TrainState.check({**TrainState(run_id="r").to_dict(), "best_step": "x"}, "f.pt")


def test_building_a_trainer_has_no_global_side_effects():
    import random

    import numpy as np
    import torch.distributed as dist

    data = tiny_data()
    model = tiny_model(data.vocab_size)
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    trainer = Trainer(model, data, quiet(seed=99))
    after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert (before[2] == after[2]).all()
    assert not dist.is_initialized()
    assert data._train_tokens is None  # the data is prepared by setup(), when fit starts
    trainer.fit()
    assert trainer.step == 12


def test_seeding_moved_to_fit_keeps_results_identical():
    """Whatever happens to the global RNG between Trainer() and fit(), the run is the same."""
    first = run(quiet(max_steps=4))
    data = tiny_data()
    trainer = Trainer(tiny_model(data.vocab_size), data, quiet(max_steps=4))
    torch.rand(1000)  # disturbs the global generator after construction
    trainer.fit()
    assert torch.equal(torch.tensor(first.train_losses), torch.tensor(trainer.train_losses))


class Recorder:
    """Records every hook call (a duck-typed callback: no base class needed)."""

    def __init__(self, log: list, name: str, stop_at: int | None = None) -> None:
        self.log, self.name, self.stop_at = log, name, stop_at

    def on_fit_start(self, trainer):
        self.log.append((self.name, "fit_start", trainer.step))

    def on_step(self, trainer, record):
        self.log.append((self.name, "step", record["step"]))

    def on_eval(self, trainer, record):
        self.log.append((self.name, "eval", record["step"]))

    def stop_reason(self, trainer):
        return "enough" if self.stop_at is not None and trainer.step >= self.stop_at else None

    def on_stop(self, trainer):
        self.log.append((self.name, "stop", trainer.stop_reason))

    def on_fit_end(self, trainer):
        self.log.append((self.name, "fit_end", trainer.step))


def test_callbacks_run_in_order_with_every_hook():
    log: list = []
    trainer = run(quiet(max_steps=8), callbacks=[Recorder(log, "a"), Recorder(log, "b")])
    assert [e for e in log if e[0] == "a"] == [
        ("a", "fit_start", 0), ("a", "eval", 0),
        *[("a", "step", s) for s in (1, 2, 3, 4)], ("a", "eval", 4),
        *[("a", "step", s) for s in (5, 6, 7, 8)], ("a", "eval", 8),
        ("a", "stop", "max_steps"), ("a", "fit_end", 8),
    ]  # fmt: skip
    assert [e[1:] for e in log[::2]] == [e[1:] for e in log[1::2]]  # a, then b, every time
    assert [e[0] for e in log[:2]] == ["a", "b"]
    assert trainer.stop_reason == "max_steps"


def test_a_callback_can_stop_the_run_and_builtins_come_first():
    from tinytrans.train import EarlyStopping, ProgressBar, TimeBudget

    log: list = []
    config = quiet(max_steps=50, progress=True, max_time=60.0, early_stopping_patience=3)
    data = tiny_data()
    recorder = Recorder(log, "r", stop_at=6)
    trainer = Trainer(tiny_model(data.vocab_size), data, config, callbacks=[recorder])
    kinds = [type(c) for c in trainer.callbacks]
    assert kinds[:3] == [TimeBudget, EarlyStopping, ProgressBar] and kinds[-1] is Recorder
    trainer.fit()
    assert trainer.stop_reason == "enough" and trainer.step == 6
    assert ("r", "stop", "enough") in log


def test_the_log_line_shows_the_recent_mean_training_loss(capsys):
    import re
    import statistics

    trainer = run(quiet(max_steps=8, log=True))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 0: val loss")
    for line, start in zip(lines[1:], (0, 4), strict=True):
        match = re.match(r"step (\d+): train loss ([\d.]+) \(mean of the last 4 steps\), val", line)
        assert match, line
        recent = statistics.fmean(trainer.train_losses[start : start + 4])
        assert float(match[2]) == pytest.approx(recent, abs=1e-4)
        assert int(match[1]) == start + 4


def test_precision_names_are_canonical_and_old_configs_still_resume(tmp_path):
    assert TrainConfig(max_steps=1, precision="bf16").precision == "bf16-mixed"
    assert TrainConfig(max_steps=1, precision="fp16").precision == "fp16-mixed"
    with pytest.raises(ValueError, match="sizing only"):
        TrainConfig(max_steps=1, precision="bf16-true")
    config = quiet(max_steps=6, precision="bf16-mixed", out_dir=str(tmp_path / "a"))
    full = run(config)

    def stop_at_3(trainer, record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    run(config.replace(out_dir=str(tmp_path / "b")), callbacks=[Callback(on_step=stop_at_3)])
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    state["train_config"]["precision"] = "bf16"  # as runs before the canonical names saved it
    torch.save(state, tmp_path / "old.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same precision under its old name: no warning
        resumed = run(config.replace(out_dir=str(tmp_path / "c")), resume=tmp_path / "old.pt")
    assert torch.equal(torch.tensor(resumed.train_losses), torch.tensor(full.train_losses))


def test_loading_weights_does_not_import_the_training_loop():
    import ast
    import subprocess
    import sys

    code = (
        "import sys, tinytrans.pretrained, tinytrans.checkpoint\n"
        "assert 'tinytrans.train' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import tinytrans.checkpoint

    tree = ast.parse(Path(tinytrans.checkpoint.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {m for m in imported if m and m.startswith(("torch.distributed", "tinytrans.train"))}


def test_old_import_paths_still_work():
    import tinytrans.checkpoint as checkpoint
    import tinytrans.train as train
    from tinytrans.files import AtomicWriteError, remove_stale_temporaries

    assert train.load_checkpoint is checkpoint.load_checkpoint
    assert train.save_model is checkpoint.save_model
    assert issubclass(train.CheckpointWriteError, AtomicWriteError)
    assert train.remove_stale_temporaries is remove_stale_temporaries
    for name in ("sample_text", "seed_everything", "capture_rng", "restore_rng",
                 "tokenizer_to_text", "tokenizer_from_text", "CPU_AUTO_PRECISION"):  # fmt: skip
        assert hasattr(train, name), name


# ------------------------------------------------------------------ the hot path


def test_the_optimizer_is_fused_where_torch_has_a_fused_kernel():
    trainer = Trainer(tiny_model(tiny_data().vocab_size), tiny_data(), quiet())
    groups = trainer.optimizer.param_groups
    assert all(bool(g.get("fused")) == FUSED_CPU_ADAMW for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]  # the same two groups


def test_compiled_training_matches_eager_and_has_no_graph_break():
    eager = run(quiet(max_steps=3, eval_interval=100))
    compiled = run(quiet(max_steps=3, eval_interval=100, compile=True))
    assert compiled.engine is not compiled.model  # the step ran the compiled module
    assert compiled.train_losses == pytest.approx(eager.train_losses, rel=1e-4)
    assert report_graph_breaks() == 0
    state = compiled.checkpoint_state()["model"]
    assert not any(key.startswith("_orig_mod") for key in state)  # checkpoints stay plain


def test_a_compilation_that_fails_warns_and_trains_uncompiled(monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, *args):
            raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda module: Broken())
    with pytest.warns(UserWarning, match="torch.compile failed .RuntimeError: no C\\+\\+ compiler"):
        trainer = run(quiet(max_steps=3, eval_interval=100, compile=True))
    assert trainer.step == 3 and trainer.engine is trainer.model
    eager = run(quiet(max_steps=3, eval_interval=100))
    assert trainer.train_losses == eager.train_losses
