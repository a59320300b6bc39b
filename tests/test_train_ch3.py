"""Chapter 3's build-it-yourself pieces against the package: the hand-written training loop,
the clipping identity, the schedule exercise, and :class:`FinishOnTime` (the time budget whose
cosine ends on time)."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch
from _versions import FUSED_CPU_ADAMW

import tinytrans.env
from tinytrans.data import DataModule
from tinytrans.model import build_model
from tinytrans.train import Callback, FinishOnTime, TrainConfig, Trainer, lr_at, optimizer_groups

TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
) * 60


def _data() -> DataModule:
    return DataModule(text=TEXT, context_length=16, batch_size=4, seed=0)


def _model(vocab_size: int) -> torch.nn.Module:
    tinytrans.env.seed_everything(0)
    return build_model("course", vocab_size=vocab_size, context_length=16, d_model=16,
                       n_layers=1, n_heads=2, d_ff=32)  # fmt: skip


def _config(**changes: object) -> TrainConfig:
    base = dict(max_steps=20, lr=3e-3, warmup_steps=5, eval_interval=10, eval_batches=1,
                sample_prompts=(), device="cpu", progress=False, log=False, seed=0)  # fmt: skip
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


def train_by_hand(model, data, config, steps):
    """The chapter's loop (section 3.6): zero_grad, forward, loss, backward, clip, lr, step."""
    tinytrans.env.seed_everything(config.seed)
    optimizer = torch.optim.AdamW(optimizer_groups(model, config.weight_decay), lr=config.lr,
                                  betas=config.betas, eps=config.eps, fused=True)  # fmt: skip
    model.train()
    losses, norms = [], []
    for step in range(steps):
        x, y = data.get_batch("train")
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        optimizer.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return losses, norms


@pytest.mark.skipif(
    not FUSED_CPU_ADAMW,
    reason="the fused CPU AdamW the chapter's loop and Trainer use arrived in torch 2.4",
)
@pytest.mark.parametrize("changes", [{}, {"grad_clip": 0.05, "weight_decay": 0.5}])
def test_hand_loop_is_bit_identical_to_trainer(changes):
    config = _config(**changes)
    hand_data, ref_data = _data(), _data()
    hand, ref = _model(hand_data.vocab_size), _model(ref_data.vocab_size)
    losses, norms = train_by_hand(hand, hand_data, config, 20)
    ref_norms: list[float] = []
    trainer = Trainer(ref, ref_data, config,
                      callbacks=[Callback(on_step=lambda t, r: ref_norms.append(r["grad_norm"]))])  # fmt: skip
    trainer.fit()
    assert losses == trainer.state.train_losses
    assert norms == ref_norms
    for (name, a), b in zip(hand.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_clip_grad_norm_is_the_global_norm_and_clips_to_max_norm():
    data = _data()
    model = _model(data.vocab_size)
    x, y = data.get_batch("train")
    model(x, y)[1].backward()
    by_hand = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    max_norm = float(by_hand) / 4
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    assert math.isclose(float(total), float(by_hand), rel_tol=1e-5)
    after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    assert math.isclose(float(after), max_norm, rel_tol=1e-5)


def warmup_cosine(step: int, peak: float, floor: float, warmup: int, horizon: int) -> float:
    """The exercise's solution: linear warmup, then half a cosine to the floor, then flat."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return floor + (peak - floor) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize("warmup", [0, 1, 10])
def test_exercise_schedule_matches_lr_at(warmup):
    config = TrainConfig(max_steps=100, lr=2e-3, warmup_steps=warmup, min_lr_ratio=0.1)
    for step in range(130):
        ours = warmup_cosine(step, 2e-3, 2e-4, warmup, 100)
        assert math.isclose(ours, lr_at(step, config), rel_tol=1e-12)


class _VirtualClock:
    """Seconds that pass only when a batch is drawn: 1 s per step, 2 s from step 16 on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.batches = 0

    def __call__(self) -> float:
        return self.now

    def charge(self) -> None:
        self.batches += 1
        self.now += 1.0 if self.batches <= 15 else 2.0


def _slowing_run(monkeypatch, callbacks):
    clock = _VirtualClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    data = _data()
    get_batch = data.get_batch

    def slow_get_batch(split):
        if split == "train":
            clock.charge()
        return get_batch(split)

    data.get_batch = slow_get_batch  # type: ignore[method-assign]
    config = _config(max_steps=None, max_time=60.0, time_probe_steps=5, eval_interval=1000,
                     warmup_steps=2)  # fmt: skip
    lrs: list[float] = []
    trainer = Trainer(_model(data.vocab_size), data, config,
                      callbacks=[*callbacks, Callback(on_step=lambda t, r: lrs.append(r["lr"]))])  # fmt: skip
    trainer.fit()
    return trainer, lrs


def test_finish_on_time_ends_the_cosine_at_its_floor_when_steps_slow_down(monkeypatch):
    floor = 3e-3 * 0.1
    late, late_lrs = _slowing_run(monkeypatch, [])
    assert late.stop_reason == "max_time"
    assert late_lrs[-1] > 2 * floor  # without it: stopped part-way down the cosine
    on_time, lrs = _slowing_run(monkeypatch, [FinishOnTime()])
    assert on_time.stop_reason == "max_time"
    assert on_time.step == late.step  # the same steps fit; only the schedule differs
    assert lrs[-1] == pytest.approx(floor, rel=1e-9)
    assert all(b <= a for a, b in itertools.pairwise(lrs[2:]))  # after the warmup: never rises
    assert on_time.horizon <= late.horizon


def test_finish_on_time_changes_nothing_without_a_time_budget():
    data_a, data_b = _data(), _data()
    plain = Trainer(_model(data_a.vocab_size), data_a, _config())
    plain.fit()
    with_it = Trainer(_model(data_b.vocab_size), data_b, _config(), callbacks=[FinishOnTime()])
    with_it.fit()
    assert with_it.horizon == plain.horizon == 20
    assert with_it.state.train_losses == plain.state.train_losses


def test_a_run_stopped_early_carries_on_like_the_straight_run(tmp_path):
    """Section 3.10's overfitting run: early stopping ends it, and with the callback taken out
    ``fit`` carries on to ``max_steps`` exactly as a run without early stopping; ``best.pt``
    holds the best evaluation's weights and ``last.pt`` the last step's."""
    from tinytrans.checkpoint import load_checkpoint
    from tinytrans.evaluate import estimate_loss
    from tinytrans.train import EarlyStopping

    # min_delta so large that no evaluation counts as an improvement: stops after `patience`.
    stopping = _config(eval_interval=2, early_stopping_patience=2, min_delta=10.0,
                       out_dir=str(tmp_path / "stopped"))  # fmt: skip
    data = _data()
    run = Trainer(_model(data.vocab_size), data, stopping)
    run.fit()
    assert run.stop_reason == "early_stopping" and run.step == 4
    run.callbacks = [c for c in run.callbacks if not isinstance(c, EarlyStopping)]
    run.fit()
    assert run.stop_reason == "max_steps" and run.step == 20

    straight_data = _data()
    straight = Trainer(_model(straight_data.vocab_size), straight_data, _config(eval_interval=2))
    straight.fit()
    assert run.train_losses == straight.train_losses
    assert [r["val_loss"] for r in run.history] == [r["val_loss"] for r in straight.history]
    for (name, a), b in zip(run.model.state_dict().items(), straight.model.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name

    for which, step, loss in (("best", run.best_step, run.best_val_loss),
                              ("last", run.step, run.history[-1]["val_loss"])):  # fmt: skip
        model, _, info = load_checkpoint(tmp_path / "stopped" / f"{which}.pt")
        assert info["step"] == step
        assert estimate_loss(model, _data(), max_batches=1) == pytest.approx(loss, abs=1e-6)
