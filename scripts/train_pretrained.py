"""Train the shipped ``shakespeare-char`` model, reproducibly, and write its files.

    python scripts/train_pretrained.py --threads 1     # ~30 min on one quiet CPU core
    python scripts/train_pretrained.py --resume        # continue after an interruption

What it does: the "course" preset, a character tokenizer (with ``<unk>`` so other corpora
can be encoded for fine-tuning) on the Shakespeare corpus, a fixed seed and a fixed number
of steps (not a time budget, so the run is the same on any machine). It keeps full training
checkpoints in ``--work`` and finally writes, into ``tinytrans/pretrained/``:

* ``shakespeare-char.pt`` -- weights in bf16 + model config + tokenizer (a few MB),
* ``shakespeare-char.tokenizer.json`` -- the tokenizer on its own,
* ``shakespeare-char.json`` -- the card: seed, corpus sha256, steps, time, command and the
  validation loss of the *shipped* (rounded) weights on the whole validation split.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from tinytrans import __version__
from tinytrans.checkpoint import load_checkpoint, save_model
from tinytrans.data import DataModule, load_corpus
from tinytrans.env import seed_everything
from tinytrans.evaluate import estimate_loss
from tinytrans.files import atomic_write_json
from tinytrans.model import build_model
from tinytrans.tokenizers import CharTokenizer
from tinytrans.train import TrainConfig, Trainer, sample_text

NAME = "shakespeare-char"
ROOT = Path(__file__).resolve().parents[1]
#: Validation batches of the quick check that tests/test_pretrained.py repeats.
QUICK_EVAL_BATCHES = 8
PROMPTS = ("ROMEO:\n", "KING HENRY V:\nOnce more", "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--work", default=str(ROOT / "runs" / "pretrained-shakespeare"))
    parser.add_argument("--out", default=str(ROOT / "tinytrans" / "pretrained"))
    parser.add_argument("--resume", action="store_true", help="continue from WORK/last.pt")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args(argv)


def make_data(seed: int, context_length: int, batch_size: int) -> DataModule:
    """Shakespeare with a character tokenizer that maps unseen characters to ``<unk>``."""
    text = load_corpus("shakespeare").text
    tokenizer = CharTokenizer.train(text, unknown="unk")
    return DataModule(
        tokenizer=tokenizer,
        corpus="shakespeare",
        context_length=context_length,
        batch_size=batch_size,
        seed=seed,
    )


def make_trainer(args: argparse.Namespace) -> Trainer:
    seed_everything(args.seed)
    context = build_model("course").config.context_length
    data = make_data(args.seed, context, args.batch_size)
    model = build_model("course", vocab_size=data.vocab_size)
    config = TrainConfig(
        max_steps=args.max_steps,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        eval_interval=250,
        eval_batches=QUICK_EVAL_BATCHES,
        sample_interval=500,
        sample_prompts=PROMPTS[:1],
        sample_tokens=200,
        seed=args.seed,
        out_dir=args.work,
        progress=args.progress,
        run_name=NAME,
        precision="fp32",
        device="cpu",
    )
    trainer = Trainer(model, data, config)
    if args.resume:
        trainer.resume(Path(args.work) / "last.pt")
    return trainer


def export(trainer: Trainer, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """Write the rounded weights, tokenizer and card; evaluate what was written."""
    out = Path(args.out)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    path = save_model(out / f"{NAME}.pt", trainer.model, trainer.tokenizer, dtype=dtype)
    trainer.tokenizer.save(out / f"{NAME}.tokenizer.json")
    model, tokenizer, _ = load_checkpoint(path)
    data = trainer.datamodule
    samples = [sample_text(model, tokenizer, p, 300, 0.8, seed=i) for i, p in enumerate(PROMPTS)]
    info = data.corpus_info
    card = {
        "name": NAME,
        "preset": "course",
        "description": "The course model trained on Shakespeare's plays, one token per character.",
        "model_config": model.config.to_dict(),
        "n_params": model.num_parameters(),
        "weights_dtype": args.dtype,
        "file_bytes": path.stat().st_size,
        "tokenizer": {"type": "char", "vocab_size": tokenizer.vocab_size, "unknown": "unk"},
        "corpus": {"name": info.name, "sha256": info.sha256, "n_chars": info.n_chars},
        "data": {
            "context_length": data.context_length,
            "batch_size": data.batch_size,
            "val_fraction": data.val_fraction,
            "seed": data.seed,
            "train_tokens": len(data.train_tokens),
            "val_tokens": len(data.val_tokens),
        },
        "train_config": trainer.config.to_dict(),
        "seed": args.seed,
        "steps": trainer.step,
        "tokens_seen": trainer.tokens_seen,
        "train_time_s": round(trainer.clock.total, 1),
        "wall_time_s": round(seconds, 1),
        "val_loss": estimate_loss(model, data, None),
        "val_loss_quick": estimate_loss(model, data, QUICK_EVAL_BATCHES),
        "quick_eval_batches": QUICK_EVAL_BATCHES,
        "eval_batch_size": data.batch_size,
        "history": trainer.history,
        "samples": [
            {"prompt": p, "text": s, "temperature": 0.8, "seed": i}
            for i, (p, s) in enumerate(zip(PROMPTS, samples, strict=True))
        ],
        "command": "python scripts/train_pretrained.py " + shlex.join(sys.argv[1:]),
        "torch": torch.__version__,
        "tinytrans": __version__,
        "threads": torch.get_num_threads(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / f"{NAME}.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    trainer = make_trainer(args)
    metrics = trainer.fit()
    if metrics["stop_reason"] == "interrupted":
        print("interrupted; run again with --resume", file=sys.stderr)
        return 130
    card = export(trainer, args, time.perf_counter() - started)
    print(f"steps {card['steps']}, val loss {card['val_loss']:.4f}, {card['file_bytes']:,} bytes")
    print(card["samples"][0]["text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
