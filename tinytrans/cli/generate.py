"""``tinytrans generate [CHECKPOINT]``: stream text from a checkpoint or the shipped model.
(Section 4.3.)

Examples::

    tinytrans generate --prompt "ROMEO:" --temperature 0.8 --top-k 40
    tinytrans generate runs/course/best.pt --prompt "To be" --temperature 0 --max-new-tokens 50
    tinytrans generate --num-samples 3 --seed 1 --device cuda

With ``--num-samples N`` the samples are independent; with ``--seed S`` sample ``i`` (from 0)
is drawn with seed ``S + i``, so each one can be reproduced alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "DEFAULT_PRETRAINED",
    "DEVICES",
    "add_arguments",
    "generate_to_stream",
    "run",
    "sample_header",
]

DEFAULT_PRETRAINED = "shakespeare-char"
#: ``--device`` choices (:func:`tinytrans.env.pick_device` checks the accelerator works).
DEVICES = ("auto", "cpu", "cuda", "mps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``generate`` options on ``parser`` (section 4.3)."""
    parser.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        metavar="CHECKPOINT",
        help=f"a checkpoint written by tinytrans train (default: the shipped "
        f"{DEFAULT_PRETRAINED!r} model)",
    )
    parser.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        help=f"name of the shipped model used when no CHECKPOINT is given "
        f"(default: {DEFAULT_PRETRAINED})",
    )
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=200, help="tokens to generate (default: 200)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="0 = greedy; higher = more random (default: 0.8)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="keep the k most likely tokens (default: all)"
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="keep the smallest set holding this mass (default: off)",
    )
    parser.add_argument(
        "--min-p",
        type=float,
        default=None,
        help="drop tokens below min_p x the top probability (default: off)",
    )
    parser.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="CTRL penalty (default: 1 = off)"
    )
    parser.add_argument(
        "--frequency-penalty",
        type=float,
        default=0.0,
        help="subtract this times a token's count so far (default: 0 = off)",
    )
    parser.add_argument(
        "--presence-penalty",
        type=float,
        default=0.0,
        help="subtract this once from every token seen so far (default: 0 = off)",
    )
    parser.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=0,
        help="never repeat an n-gram of this size (default: 0 = off)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for reproducible sampling (default: random)"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="recompute the whole window every step (slow)"
    )
    parser.add_argument(
        "--no-echo", action="store_true", help="print only the continuation, not the prompt"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps (default: cpu)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="independent samples, each under a header; --seed S seeds sample i with S + i "
        "(default: 1)",
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


def sample_header(index: int, total: int, seed: int | None) -> str:
    """The line above sample ``index`` (from 0) of ``total`` (section 4.3)."""
    seeded = f", seed {seed}" if seed is not None else ""
    return f"--- sample {index + 1} of {total}{seeded} ---\n"


def generate_to_stream(model: Any, tokenizer: Any, args: argparse.Namespace, stream: TextIO) -> str:
    """Write the prompt (unless ``--no-echo``) and the streamed continuation to ``stream``
    (section 4.3's sampling options). Returns the continuation. All argument checks happen
    before anything is written.
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
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        seed=args.seed,
        use_cache=not args.no_cache,
    )
    if not args.no_echo:
        stream.write(args.prompt)
    text = []
    for piece in pieces:
        if not isinstance(piece, str):  # only without a tokenizer
            raise TypeError("generate_to_stream needs a tokenizer to write text")
        stream.write(piece)
        stream.flush()
        text.append(piece)
    stream.write("\n")
    stream.flush()
    return "".join(text)


def run(args: argparse.Namespace) -> int:
    """Load the model and stream its continuation of ``--prompt`` to stdout (section 4.3)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}.")
        import torch

        torch.set_num_threads(threads)
    samples = getattr(args, "num_samples", 1)
    if samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {samples}.")
    device = _device(getattr(args, "device", "cpu"))
    model, tokenizer = _load(args)
    model = model.to(device)
    if samples == 1:
        generate_to_stream(model, tokenizer, args, sys.stdout)
        return 0
    for index in range(samples):
        seed = None if args.seed is None else args.seed + index
        sys.stdout.write(("\n" if index else "") + sample_header(index, samples, seed))
        sample_args = argparse.Namespace(**{**vars(args), "seed": seed})
        generate_to_stream(model, tokenizer, sample_args, sys.stdout)
    return 0


def _device(name: str) -> Any:
    """The ``torch.device`` for ``--device`` (checked by :func:`tinytrans.env.pick_device`)."""
    from tinytrans.env import pick_device

    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"--device {name!r} is not one of {', '.join(DEVICES)} (or cuda:N).")
    try:
        return pick_device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {name}: {error}; use auto or cpu.") from None
