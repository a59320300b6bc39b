"""``tinytrans train``: train a preset on a corpus, writing checkpoints and metrics.

Examples::

    tinytrans train --preset course --corpus shakespeare --max-time 180 --out runs/shakespeare
    tinytrans train --corpus my_text.txt --tokenizer bpe --vocab-size 1024 --max-steps 2000
    tinytrans train --out runs/shakespeare --resume          # continue from runs/.../last.pt
    torchrun --nproc_per_node 2 -m tinytrans train --max-steps 500 --out runs/ddp

On resume the model, tokenizer and training settings come from the checkpoint; budget flags
given on the command line (``--max-steps``/``--max-time``/``--max-tokens``) still apply.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tinytrans.train import PRECISIONS

_BUDGET = ("max_steps", "max_time", "max_tokens")


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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in _BUDGET if getattr(args, k) is not None}
    return given


def _fresh(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Model, data and config for a new run."""
    from tinytrans.data import DataModule
    from tinytrans.model import ModelConfig, build_model
    from tinytrans.train import TrainConfig

    budget = _budget(args) or {"max_steps": 1000}
    context = args.context_length or ModelConfig.preset(args.preset).context_length
    if args.tokenizer == "bpe" and args.vocab_size is None:
        raise ValueError("--tokenizer bpe needs --vocab-size (e.g. 512 or 1024).")
    data = DataModule(
        tokenizer=args.tokenizer,
        corpus=args.corpus,
        context_length=context,
        batch_size=args.batch_size,
        seed=args.seed,
        vocab_size=args.vocab_size,
    )
    model = build_model(args.preset, vocab_size=data.vocab_size, context_length=context)
    config = TrainConfig(
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
    return model, data, config


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
    )
    return model.train(), data, config


def run(args: argparse.Namespace) -> int:
    """Train; returns 0, or 130 when interrupted (the last checkpoint is saved first)."""
    from tinytrans.train import Trainer, cleanup_distributed

    if args.resume is not None:
        path = Path(args.out) / "last.pt" if args.resume == "last" else Path(args.resume)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        model, data, config = _resumed(args, path)
    else:
        path = None
        model, data, config = _fresh(args)
    trainer = Trainer(model, data, config)
    if path is not None:
        trainer.resume(path)
    try:
        metrics = trainer.fit()
    finally:
        cleanup_distributed()
    if trainer.dist.is_main:
        best = metrics["best_val_loss"]
        print(
            f"{metrics['stop_reason']} after {metrics['step']} steps, "
            f"{metrics['tokens_seen']:,} tokens, {metrics['train_time_s']:.0f}s; "
            f"best val loss {best:.4f}; wrote {Path(args.out) / 'metrics.json'}"
        )
    return 130 if metrics["stop_reason"] == "interrupted" else 0
