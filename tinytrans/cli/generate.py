"""``tinytrans generate [CHECKPOINT]``: stream text from a checkpoint or the shipped model.

Examples::

    tinytrans generate --prompt "ROMEO:" --temperature 0.8 --top-k 40
    tinytrans generate runs/course/best.pt --prompt "To be" --temperature 0 --max-new-tokens 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "DEFAULT_PRETRAINED",
    "add_arguments",
    "generate_to_stream",
    "run",
]

DEFAULT_PRETRAINED = "shakespeare-char"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``generate`` options on ``parser``."""
    parser.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        metavar="CHECKPOINT",
        help=f"a checkpoint written by `tinytrans train` (default: the shipped "
        f"{DEFAULT_PRETRAINED!r} model)",
    )
    parser.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        help="name of the shipped model used when no CHECKPOINT is given",
    )
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="0 = greedy; higher = more random"
    )
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    parser.add_argument(
        "--top-p", type=float, default=None, help="keep the smallest set holding this mass"
    )
    parser.add_argument(
        "--min-p", type=float, default=None, help="drop tokens below min_p x the top probability"
    )
    parser.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="CTRL penalty (1 = off)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    parser.add_argument(
        "--no-cache", action="store_true", help="recompute the whole window every step (slow)"
    )
    parser.add_argument(
        "--no-echo", action="store_true", help="print only the continuation, not the prompt"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, tokenizer) from ``args.checkpoint`` or the shipped pretrained model."""
    if args.checkpoint is not None:
        path = Path(args.checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if not path.is_file():
            raise ValueError(f"{path} is a folder; pass a checkpoint file such as {path}/best.pt")
        from tinytrans.checkpoint import load_checkpoint

        model, tokenizer, _ = load_checkpoint(path, map_location="cpu")
    else:
        from tinytrans.pretrained import load_pretrained

        model, tokenizer = load_pretrained(args.pretrained)
    if tokenizer is None:
        raise ValueError("this checkpoint has no tokenizer; text generation needs one.")
    return model, tokenizer


def generate_to_stream(model: Any, tokenizer: Any, args: argparse.Namespace, stream: TextIO) -> str:
    """Write the prompt (unless ``--no-echo``) and the streamed continuation to ``stream``.

    Returns the continuation. All argument checks happen before anything is written.
    """
    from tinytrans.generate import stream_generate

    pieces = stream_generate(
        model,
        tokenizer,
        args.prompt,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        use_cache=not args.no_cache,
    )
    if not args.no_echo:
        stream.write(args.prompt)
    text = []
    for piece in pieces:
        stream.write(piece)
        stream.flush()
        text.append(piece)
    stream.write("\n")
    stream.flush()
    return "".join(text)


def run(args: argparse.Namespace) -> int:
    """Load the model and stream its continuation of ``--prompt`` to stdout."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}.")
        import torch

        torch.set_num_threads(threads)
    model, tokenizer = _load(args)
    generate_to_stream(model, tokenizer, args, sys.stdout)
    return 0
