"""``tinytrans size PRESET | --config FILE``: chapter 5's tables for one model, no training.

Examples::

    tinytrans size course
    tinytrans size llama-40m --batch-size 8 --precision bf16-mixed --tokens 2e9
    tinytrans size --config runs/shakespeare/metrics.json --json
    tinytrans size course --d-model 256 --n-layers 6 --peak-tflops 312

Every number comes from :mod:`tinytrans.sizing` (section 5.8, "Everything at once, and the
parameter explorer"); this module only lays out the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, TextIO

from tinytrans.cli.options import add_dataclass_flags, given, read_config_file
from tinytrans.config import ModelConfig, preset_names
from tinytrans.precision import LEGACY_NAMES, PRECISIONS, canonical_precision, get_precision

__all__ = ["add_arguments", "resolve_config", "run", "size_tables", "sizing_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``size`` subcommand's flags: a preset or a config file, then every model field.
    (Section 5.8.)"""
    parser.add_argument(
        "preset",
        nargs="?",
        default=None,
        metavar="PRESET",
        help=f"a model preset: {', '.join(preset_names())}",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON or TOML file with a model section, or a run's metrics.json (default: none)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="sequences (default: 1)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=[*PRECISIONS, *LEGACY_NAMES],
        help="training recipe, as tinytrans.precision names it (default: fp32)",
    )
    parser.add_argument(
        "--tokens",
        type=float,
        default=None,
        help="training tokens: adds compute and loss (default: none)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak: adds a time estimate (default: none)",
    )
    parser.add_argument(
        "--mfu", type=float, default=0.4, help="model FLOPs utilisation (default: 0.4)"
    )
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    model = parser.add_argument_group("model (override the preset's values)")
    add_dataclass_flags(
        model,
        ModelConfig,
        default_text={f.name: "the preset's" for f in dataclasses.fields(ModelConfig)},
    )


def resolve_config(args: argparse.Namespace) -> ModelConfig:
    """The model to size: the preset or the config file's model, then the model flags.
    (Section 5.8.)"""
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    flags = given(args, names)
    if args.config is not None:
        if args.preset is not None:
            raise ValueError("give a PRESET or --config, not both")
        known = {"model": [*names, "preset"], "train": None, "data": None}
        saved = read_config_file(args.config, known)["model"]
        preset = saved.pop("preset", None) or saved.get("name")
        base = preset if preset in preset_names() else "course"
        return ModelConfig.preset(base).replace(**{**saved, **flags})
    if args.preset is None:
        raise ValueError(f"name a PRESET ({', '.join(preset_names())}) or pass --config FILE")
    return ModelConfig.preset(args.preset).replace(**flags)


def _sizing_precision(name: str) -> tuple[str, str]:
    """(dtype of the stored numbers, canonical recipe name) for ``name`` (section 5.4)."""
    recipe = get_precision(canonical_precision(name))
    dtype = recipe.weights if recipe.autocast is None else recipe.compute
    return dtype, recipe.name


def sizing_summary(args: argparse.Namespace) -> Any:
    """:func:`tinytrans.sizing.summary` of the chosen model and options (section 5.8)."""
    from tinytrans import sizing

    config = resolve_config(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.tokens is not None and args.tokens <= 0:
        raise ValueError(f"--tokens must be positive, got {args.tokens:g}.")
    dtype, precision = _sizing_precision(args.precision)
    return sizing.summary(
        config,
        batch_size=args.batch_size,
        dtype=dtype,
        precision=precision,
        tokens=args.tokens,
        peak_tflops=args.peak_tflops,
        mfu=args.mfu,
    )


def size_tables(summary: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, rows) of each table: parameters, weights per dtype, training memory, summary.
    (Section 5.8.)"""
    from tinytrans import sizing

    breakdown = []
    for row in summary.breakdown.as_rows():
        value = f"{sizing.format_count(row['count']):>7}  {row['share']:6.1%}"
        if row["per_layer"] is not None and row["component"] != "total":
            value += f"  ({sizing.format_count(row['per_layer'])} per layer, {row['note']})"
        elif row["note"] and row["component"] != "total":
            value += f"  ({row['note']})"
        breakdown.append((row["component"], value))
    weights = [(dtype, sizing.format_bytes(n)) for dtype, n in summary.weights.items()]
    memory = [(kind, sizing.format_bytes(n)) for kind, n in summary.training.as_dict().items() if n]
    flops = sizing.format_flops(summary.training_flops_per_token)
    return [
        (f"parameters ({summary.config.name})", breakdown),
        ("weights by dtype", weights),
        (f"training memory (batch {summary.batch_size} x {summary.context_length})", memory),
        ("summary", [*summary.as_rows(), ("training FLOPs / token", flops)]),
    ]


def _write_tables(tables: list[tuple[str, list[tuple[str, str]]]], stream: TextIO) -> None:
    width = max(len(label) for _, rows in tables for label, _ in rows)
    for index, (title, rows) in enumerate(tables):
        stream.write(("\n" if index else "") + f"{title}\n")
        for label, value in rows:
            stream.write(f"  {label:<{width}}  {value}\n")


def run(args: argparse.Namespace) -> int:
    """Print the tables (or ``--json``) to stdout (section 5.8)."""
    summary = sizing_summary(args)
    if args.json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    else:
        _write_tables(size_tables(summary), sys.stdout)
    return 0
