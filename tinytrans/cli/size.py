"""``tinytrans size PRESET | --config FILE``: chapter 5's tables for one model, no training.

Examples::

    tinytrans size course
    tinytrans size llama-40m --batch-size 8 --precision bf16-mixed --tokens 2e9
    tinytrans size --config runs/shakespeare/metrics.json --json
    tinytrans size course --d-model 256 --n-layers 6 --peak-tflops 312
    tinytrans size llama2-7b --hardware T4

Every number comes from :mod:`tinytrans.sizing` (section 5.8, "Everything at once, and the
parameter explorer", and section 5.9, "Inference speed: prefill, decode and the critical
batch"); this module only lays out the rows.
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

__all__ = [
    "DEFAULT_HARDWARE",
    "add_arguments",
    "decode_table",
    "resolve_config",
    "run",
    "size_tables",
    "sizing_summary",
]

#: The device of the decode table when ``--hardware`` is not given (a row of
#: ``tinytrans.sizing.HARDWARE``; named here so that ``--help`` does not import torch).
DEFAULT_HARDWARE = "A100-80GB"


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
    parser.add_argument(
        "--hardware",
        default=DEFAULT_HARDWARE,
        metavar="NAME",
        help="device of the decode table, a row of tinytrans.sizing.HARDWARE such as T4, L4, "
        f"H100-SXM (default: {DEFAULT_HARDWARE})",
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


def decode_table(summary: Any, hardware: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, rows) of the roofline on ``hardware``: prefill and decode tokens/s and the
    critical batch, in the inference dtype if the device lists it (else its first of bf16,
    fp16, fp32) (section 5.9)."""
    from tinytrans import sizing

    device = sizing.get_hardware(hardware)
    dtype = next(
        d for d in (summary.dtype, "bf16", "fp16", "fp32", *device.peak_tflops)
        if d in device.peak_tflops
    )  # fmt: skip
    config, batch, context = summary.config, summary.batch_size, summary.context_length
    prefill = sizing.prefill_step(config, device, batch, context, dtype)
    single = sizing.decode_step(config, device, 1, context, dtype)
    rows = [
        (f"prefill, batch {batch} x {context}", f"{prefill.tokens_per_second:,.0f} tokens/s"),
        (f"decode, batch 1 after {context}",
         f"{single.tokens_per_second:,.0f} tokens/s ({single.seconds * 1e3:.3g} ms/token, "
         f"{single.bound}-bound)"),
        ("critical batch, no cache", f"{sizing.critical_batch_size(config, device, dtype):.0f}"),
        (f"critical batch, {context} cached",
         f"{sizing.critical_batch_size(config, device, dtype, context):.4g}"),
    ]  # fmt: skip
    if batch > 1:
        batched = sizing.decode_step(config, device, batch, context, dtype)
        rate = f"{batched.tokens_per_second:,.0f} tokens/s ({batched.bound}-bound)"
        rows.insert(2, (f"decode, batch {batch} after {context}", rate))
    return f"decode roofline ({device.name}, {dtype}, no overhead)", rows


def _write_tables(tables: list[tuple[str, list[tuple[str, str]]]], stream: TextIO) -> None:
    width = max(len(label) for _, rows in tables for label, _ in rows)
    for index, (title, rows) in enumerate(tables):
        stream.write(("\n" if index else "") + f"{title}\n")
        for label, value in rows:
            stream.write(f"  {label:<{width}}  {value}\n")


def run(args: argparse.Namespace) -> int:
    """Print the tables (or ``--json``) to stdout (section 5.8)."""
    summary = sizing_summary(args)
    if not args.json:
        from tinytrans import sizing

        sizing.get_hardware(args.hardware)  # a bad name fails before any table is printed
    if args.json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    else:
        tables = [*size_tables(summary), decode_table(summary, args.hardware)]
        _write_tables(tables, sys.stdout)
    return 0
