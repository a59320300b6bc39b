"""``tinytrans train``: train a preset on a corpus, writing checkpoints and metrics.

Examples::

    tinytrans train --preset course --corpus shakespeare --max-time 180 --out runs/shakespeare
    tinytrans train --corpus my_text.txt --tokenizer bpe --vocab-size 1024 --max-steps 2000
    tinytrans train --out runs/shakespeare --resume          # continue from runs/.../last.pt
    torchrun --nproc_per_node 2 -m tinytrans train --max-steps 500 --out runs/ddp

On resume the model, tokenizer and training settings come from the checkpoint; budget flags
given on the command line (``--max-steps``/``--max-time``/``--max-tokens``) still apply.

A folder that already holds a run is never overwritten: pass ``--resume`` to continue it or
``--overwrite`` to start again there. Ctrl-C (SIGINT) and SIGTERM finish the current step,
save ``last.pt`` and exit with 130 or 143; ``--resume`` then continues exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "PRECISIONS",
    "RUN_FILES",
    "add_arguments",
    "check_device",
    "clear_run",
    "prepare_out_dir",
    "run",
]

_BUDGET = ("max_steps", "max_time", "max_tokens")
#: ``--precision`` choices: :data:`tinytrans.train.PRECISIONS`, written out so that
#: ``tinytrans train --help`` does not import torch (``tests/test_api.py`` keeps them equal).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The files that make a folder a run folder (and that ``--overwrite`` replaces).
RUN_FILES = ("last.pt", "best.pt", "metrics.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's flags."""
    parser.add_argument("--preset", default="course", help="model preset (default: course)")
    parser.add_argument(
        "--corpus", default="shakespeare", help="shakespeare, python-docs, a file or a URL"
    )
    parser.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    parser.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size")
    parser.add_argument("--context-length", type=int, default=None, help="default: the preset's")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-time", type=float, default=None, help="seconds of training")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per update")
    parser.add_argument("--eval-interval", type=int, default=200)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--sample-tokens", type=int, default=200, help="sample length at the end (0: none)"
    )
    parser.add_argument("--out", default="runs/train", help="folder for checkpoints and metrics")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run: a checkpoint path, or no value for OUT/last.pt",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it, an existing run is never touched)",
    )
    parser.add_argument(
        "--corpus-sha256", default=None, help="expected sha256 of a --corpus file or URL"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad values before any data is loaded or any file is written."""
    positive = ("batch_size", "grad_accum", "eval_interval", "eval_batches", "max_steps",
                "max_tokens", "context_length", "vocab_size", "threads")  # fmt: skip
    for key in positive:
        value = getattr(args, key, None)
        if value is not None and value < 1:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    for key in ("warmup_steps", "sample_tokens"):
        if getattr(args, key) < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}.")
    check_device(args.device)


def check_device(name: str) -> None:
    """``ValueError`` naming the fix for a device that does not exist on this machine."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {name!r} is not a device PyTorch knows; use auto, cpu, cuda or mps."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name} asked for CUDA, which this machine lacks; use auto or cpu."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(
            f"--device {name} needs Apple's MPS, which this machine lacks; use auto or cpu."
        )
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"--device {name}: tinytrans trains on cpu, cuda or mps; use one of those."
        )


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse to overwrite a run, and check that ``out`` is a folder we can write to.

    Returns the previous run's files, which ``--overwrite`` removes (:func:`clear_run`) once
    the new run is set up, so a new run never mixes with an old one's checkpoints."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; pass a folder for the run.")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not resume and not overwrite:
        raise ValueError(
            f"--out {out} already holds a run ({', '.join(existing)}); pass --resume to "
            "continue it, --overwrite to replace it, or another --out."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(
            f"cannot write to --out {out} ({reason}); choose a folder you can write to."
        ) from None
    return existing if overwrite and not resume else []


def clear_run(out: Path, names: list[str]) -> None:
    """Remove the previous run's files (rank 0 only): ``--overwrite`` after set-up worked."""
    if _main_rank():
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in _BUDGET if getattr(args, k) is not None}
    return given


def _fresh(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Model, data and config for a new run."""
    from tinytrans.data import DataModule
    from tinytrans.model import ModelConfig, build_model

    budget = _budget(args) or {"max_steps": 1000}
    preset = ModelConfig.preset(args.preset)
    context = preset.context_length if args.context_length is None else args.context_length
    if args.tokenizer == "bpe" and args.vocab_size is None:
        raise ValueError("--tokenizer bpe needs --vocab-size (e.g. 512 or 1024).")
    config = _config(args, budget)  # checked before the data is loaded
    data = DataModule(
        tokenizer=args.tokenizer,
        corpus=args.corpus,
        context_length=context,
        batch_size=args.batch_size,
        seed=args.seed,
        vocab_size=args.vocab_size,
        sha256=args.corpus_sha256,
    )
    from tinytrans.train import seed_everything

    seed_everything(args.seed)  # the initial weights depend on --seed, and only on it
    model = build_model(args.preset, vocab_size=data.vocab_size, context_length=context)
    return model, data, config


def _config(args: argparse.Namespace, budget: dict[str, Any]) -> Any:
    from tinytrans.train import TrainConfig

    return TrainConfig(
        **budget,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        grad_accum_steps=args.grad_accum,
        eval_interval=args.eval_interval,
        eval_batches=args.eval_batches,
        precision=args.precision,
        device=args.device,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        sample_tokens=args.sample_tokens,
        out_dir=args.out,
        progress=not args.no_progress,
    )


def _resumed(args: argparse.Namespace, path: Path) -> tuple[Any, Any, Any]:
    """Model, data and config rebuilt from a training checkpoint."""
    from tinytrans.data import DataModule
    from tinytrans.train import TrainConfig, load_checkpoint

    model, tokenizer, info = load_checkpoint(path)
    if info.get("kind") != "training":
        raise ValueError(f"{path} holds only model weights; it cannot resume training.")
    saved = TrainConfig.from_dict(info["train_config"])
    config = saved.replace(**_budget(args), out_dir=args.out, progress=not args.no_progress)
    batch = (info.get("tokens_per_step") or 0) // (
        model.config.context_length * saved.grad_accum_steps
    )
    data = DataModule(
        tokenizer=tokenizer,
        corpus=args.corpus,
        context_length=model.config.context_length,
        batch_size=batch or args.batch_size,
        seed=saved.seed,
        sha256=args.corpus_sha256,
    )
    return model.train(), data, config


def run(args: argparse.Namespace) -> int:
    """Train; returns 0, or 130/143 when interrupted by SIGINT/SIGTERM (after saving)."""
    import torch

    from tinytrans.cli import EXIT_SIGINT, EXIT_SIGTERM
    from tinytrans.train import Trainer, cleanup_distributed

    _check_arguments(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.resume is not None:
        path = out / "last.pt" if args.resume == "last" else Path(args.resume)
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint to resume from at {path}; start a new run without --resume"
            )
    else:
        path = None
    replaced = prepare_out_dir(out, resume=path is not None, overwrite=args.overwrite)
    model, data, config = _resumed(args, path) if path is not None else _fresh(args)
    clear_run(out, replaced)  # only now: a failed set-up leaves the old run as it was
    trainer = Trainer(model, data, config)
    if path is not None:
        trainer.resume(path)
    try:
        metrics = trainer.fit()
    finally:
        cleanup_distributed()
    if metrics["stop_reason"] == "diverged":
        raise ValueError(
            f"training diverged: {trainer.divergence}; the checkpoints in {out} keep the last "
            f"good evaluation -- lower --lr (it was {config.lr:g}) or raise --warmup-steps"
        )
    if trainer.dist.is_main:
        best = metrics["best_val_loss"]
        best_text = "no evaluation yet" if best is None else f"best val loss {best:.4f}"
        print(
            f"{metrics['stop_reason']} after {metrics['step']} steps, "
            f"{metrics['tokens_seen']:,} tokens, {metrics['train_time_s']:.0f}s; "
            f"{best_text}; wrote {out / 'metrics.json'}"
        )
    if metrics["stop_reason"] == "interrupted":
        if trainer.dist.is_main:
            print(f"continue with: tinytrans train --out {out} --resume")
        return EXIT_SIGTERM if trainer.interrupt_signal == "SIGTERM" else EXIT_SIGINT
    return 0
