"""Data-parallel training through PyTorch's own engine (torchrun + gloo + DDP).

The test launches ``python -m torch.distributed.run --nproc_per_node 2`` on this very file:
as a script it is the worker, training a tiny model for a few steps with the ordinary
:class:`~tinytrans.train.Trainer` and writing rank 0's losses. Each rank trains on half of
every global batch and DDP averages the gradients, so the losses must match one process
that sees the whole batch.

Tolerance: the two runs add the same numbers in a different order (two half-batch means
averaged by an all-reduce vs one full-batch mean), so they agree to float32 rounding, which
Adam's updates carry forward; ``rtol=1e-4`` over a few steps is far above that rounding and
far below any real difference (a missing all-reduce or a wrong slice changes the loss at
the second step by ~1e-2).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinytrans.data import DataModule
from tinytrans.model import build_model
from tinytrans.train import Callback, TrainConfig, Trainer

STEPS = 5


def _text() -> str:
    rng = random.Random(0)
    words = ["the", "king", "queen", "sword", "crown", "night", "day", "love", "death", "speak"]
    return "\n".join(
        f"{rng.choice(['KING', 'QUEEN'])}:\n{' '.join(rng.choices(words, k=6))}.\n"
        for _ in range(300)
    )


def train(grad_accum_steps: int = 1) -> tuple[list[float], list[float], list[float], int]:
    """Train the tiny model; returns (train losses, validation losses, this rank's own
    losses, world size). The same code runs with or without torchrun."""
    data = DataModule(text=_text(), context_length=16, batch_size=8, seed=0)
    torch.manual_seed(0)
    model = build_model(
        "course", vocab_size=data.vocab_size, context_length=16, d_model=32, n_layers=2,
        n_heads=2, d_ff=64,
    )  # fmt: skip
    config = TrainConfig(
        max_steps=STEPS, lr=3e-3, warmup_steps=1, eval_interval=2, eval_batches=3,
        grad_accum_steps=grad_accum_steps, progress=False, log=False, sample_prompts=(),
        seed=0, device="cpu",
    )  # fmt: skip
    local: list[float] = []
    keep = Callback(on_step=lambda t, record: local.append(record["local_loss"]))
    trainer = Trainer(model, data, config, callbacks=[keep])
    trainer.fit()
    val = [e["val_loss"] for e in trainer.history]
    return trainer.train_losses, val, local, trainer.dist.world_size


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["ranks_agree"]
    # each rank trained on its own half of the batch (different local losses) ...
    rank0, rank1 = result["local_losses"]
    assert all(abs(a - b) > 1e-4 for a, b in zip(rank0, rank1, strict=True))
    # ... and the reported loss is their mean
    means = [(a + b) / 2 for a, b in zip(rank0, rank1, strict=True)]
    assert result["losses"] == pytest.approx(means, rel=1e-6)
    single, single_val, _, world = train()
    assert world == 1 and len(single) == STEPS
    torch.testing.assert_close(
        torch.tensor(result["losses"]), torch.tensor(single), rtol=1e-4, atol=1e-5
    )
    # evaluation is sharded across ranks and all-reduced: same numbers as one process
    assert result["val_losses"] == pytest.approx(single_val, rel=1e-4)
    # gradient accumulation under DDP (no all-reduce on the first micro-batch: no_sync)
    accumulated, _, _, _ = train(grad_accum_steps=2)
    torch.testing.assert_close(
        torch.tensor(result["accumulated"]), torch.tensor(accumulated), rtol=1e-4, atol=1e-5
    )


def _worker(out: str) -> None:
    """Runs inside torchrun: train, check the ranks agree, let rank 0 write the result."""
    import torch.distributed as dist

    losses, val, local, world = train()
    gathered: list[list[float] | None] = [None] * world
    dist.all_gather_object(gathered, losses)
    locals_: list[list[float] | None] = [None] * world
    dist.all_gather_object(locals_, local)
    accumulated, _, _, _ = train(grad_accum_steps=2)
    if dist.get_rank() == 0:
        payload = {
            "world_size": world,
            "losses": losses,
            "ranks_agree": all(g == losses for g in gathered),
            "val_losses": val,
            "local_losses": locals_,
            "accumulated": accumulated,
        }
        Path(out).write_text(json.dumps(payload))
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
