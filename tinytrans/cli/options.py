"""Command-line flags generated from the configuration dataclasses, and ``--config`` files.

Every field of :class:`tinytrans.config.ModelConfig` and of ``TrainConfig`` becomes a flag
(``d_model`` -> ``--d-model``): its type comes from the annotation, its choices from the
config's choice tuples, booleans become ``--x/--no-x``, and its help from the comment next to
the field, with the default shown. A flag left out on the command line is absent from the
parsed namespace (``argparse.SUPPRESS``), so the layers -- dataclass default, preset,
``--config`` file, command line -- can be applied in that order (section 3.6, "Training the
course model").

Nothing here imports torch: ``ModelConfig`` lives in the torch-free :mod:`tinytrans.config`
and ``TrainConfig`` is read from the torch-free ``tinytrans.train.config`` where it exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tinytrans import config as model_config_module
from tinytrans.precision import LEGACY_NAMES, TRAINING_PRECISIONS
from tinytrans.train.config import OPTIMIZERS

__all__ = [
    "CHOICES",
    "CONFIG_SECTIONS",
    "FLAG_NAMES",
    "HELP",
    "ConfigFileError",
    "add_dataclass_flags",
    "field_help",
    "flag_for",
    "given",
    "plain_text",
    "read_config_file",
    "train_config_class",
]

#: Choices of the fields whose values come from a fixed list (section 1.12's switches and
#: section 3.9's precisions; the older precision names are accepted too).
CHOICES: dict[str, tuple[str, ...]] = {
    "positional": model_config_module.POSITIONAL_CHOICES,
    "norm": model_config_module.NORM_CHOICES,
    "norm_placement": model_config_module.PLACEMENT_CHOICES,
    "activation": model_config_module.ACTIVATION_CHOICES,
    "precision": (*TRAINING_PRECISIONS, *LEGACY_NAMES),
    "optimizer": OPTIMIZERS,
}

#: Fields whose flag is not simply ``--field-name`` (existing flags kept working).
FLAG_NAMES: dict[str, tuple[str, ...]] = {
    "name": ("--model-name",),
    "grad_accum_steps": ("--grad-accum-steps", "--grad-accum"),
    "out_dir": ("--out", "--out-dir"),
}

#: Help for the fields whose source has no comment to show (or an outdated one); the comment
#: next to a field is used otherwise.
HELP: dict[str, str] = {
    # ModelConfig (section 1.12)
    "d_model": "width of the residual stream",
    "n_layers": "transformer blocks",
    "n_heads": "query heads per attention layer",
    "d_ff": "hidden width of the feed-forward layer",
    "positional": "how positions enter the model",
    "norm": "normalisation layer",
    "norm_placement": "pre-norm (before each sublayer) or post-norm (after the residual add)",
    "activation": "feed-forward activation (swiglu is gated)",
    "tie_embeddings": "share the token embedding with the output head",
    "dropout": "dropout probability",
    "rope_theta": "RoPE base frequency",
    "norm_eps": "epsilon of the normalisation layers",
    "name": "the model's name in checkpoints and metrics",
    # TrainConfig (chapter 3)
    "max_steps": "stop after this many optimizer steps",
    "max_tokens": "stop after this many training tokens",
    "max_time": "stop after this many seconds of training (evaluations included); without "
    "--preset or a shape flag the model is chosen for the time",
    "optimizer": "adamw, or muon: Muon on the hidden matrices and AdamW on the rest",
    "lr": "peak learning rate",
    "min_lr_ratio": "floor of the cosine schedule, as a fraction of --lr",
    "warmup_steps": "steps of linear warmup",
    "weight_decay": "weight decay (matrices only)",
    "betas": "AdamW betas",
    "eps": "AdamW epsilon",
    "grad_clip": "clip the gradient norm to this (none: no clipping)",
    "grad_accum_steps": "micro-batches per optimizer step",
    "precision": "numeric recipe (tinytrans.precision; older bf16/fp16 mean the mixed ones)",
    "gradient_checkpointing": "recompute activations in the backward pass to save memory",
    "compile": "torch.compile the training forward: the first step compiles (tens of "
    "seconds on a CPU), later steps run fused kernels",
    "seed": "seed of the weights, the batches and the samples",
    "eval_interval": "steps between evaluations",
    "eval_batches": "validation batches per evaluation (none: the whole split)",
    "eval_at_start": "evaluate once before the first step",
    "sample_prompts": "prompts of the samples written during training",
    "sample_tokens": "sample length (0: no samples)",
    "sample_temperature": "temperature of the samples",
    "min_delta": "smallest improvement of the validation loss that counts (early stopping)",
    "out_dir": "folder for checkpoints and metrics",
    "save_checkpoints": "write last.pt and best.pt",
    "progress": "show the progress bar",
    "log": "print the evaluation lines",
    "time_probe_steps": "steps timed to fit the schedule into --max-time",
    "run_name": "a name for the run in metrics.json",
}

#: The sections of a ``--config`` file.
CONFIG_SECTIONS = ("model", "train", "data")


class ConfigFileError(ValueError):
    """A ``--config`` file that is missing, unreadable or holds an unknown key or a bad value.
    (Section 3.6.)"""


def train_config_class() -> type[Any]:
    """``TrainConfig``, from the torch-free ``tinytrans.train.config`` module, so that
    ``tinytrans train --help`` stays fast (section 3.6)."""
    from tinytrans.train.config import TrainConfig

    return TrainConfig


def flag_for(name: str) -> str:
    """The main flag of field ``name`` (``d_model`` -> ``--d-model``) (section 3.6)."""
    return FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))[0]


_REST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain_text(text: str) -> str:
    """``text`` without reST markup: ``:class:`X``` -> ``X`` and ````x```` -> ``x``.
    (Section 3.6.)"""
    text = _REST_ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return " ".join(text.replace("``", "").split())


def _field_comments(cls: type) -> dict[str, str]:
    """The comment of each field of dataclass ``cls``: ``#:`` lines above it or ``# ...`` after."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    names = {f.name for f in dataclasses.fields(cls)}
    line_field: dict[int, str] = {}
    for number, line in enumerate(source.splitlines(), 1):
        match = re.match(r"\s+(\w+)\s*:", line)
        if match and match.group(1) in names:
            line_field[number] = match.group(1)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, text = token.start[0], token.string
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            nxt = row + 1
            if nxt in line_field:
                comments[line_field[nxt]] = " ".join(pending)
                pending = []
        elif row in line_field:
            comments.setdefault(line_field[row], text[1:].strip())
        else:
            pending = []
    return comments


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value) or "none"
    if value is None:
        return "none"
    if isinstance(value, str):
        return repr(value) if not value.strip() else value
    return str(value)


def field_help(comment: str, default: Any, *, default_text: str | None = None) -> str:
    """Help text: the field's comment without markup, then ``(default: X)`` (section 3.6)."""
    shown = default_text if default_text is not None else _show(default)
    text = plain_text(comment)
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A converter that also reads ``none`` (any case) as ``None``."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("none", "off") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _argument_spec(name: str, hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords (type, choices, nargs, action) for a field of type ``hint``."""
    base, optional = _unwrap_optional(hint)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    origin, args = typing.get_origin(base), typing.get_args(base)
    spec: dict[str, Any] = {}
    if origin is typing.Literal or name in CHOICES:
        spec["choices"] = CHOICES.get(name, tuple(str(a) for a in args))
        return spec
    if origin is tuple:
        item = args[0] if args else str
        spec["type"] = item
        spec["nargs"] = len(args) if args and args[-1] is not Ellipsis else "+"
        spec["metavar"] = item.__name__.upper()
        return spec
    convert = base if base in (int, float, str) else str
    spec["type"] = _optional(convert) if optional else convert
    spec["metavar"] = convert.__name__.upper()
    return spec


def add_dataclass_flags(
    group: Any,
    cls: type,
    *,
    skip: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    default_text: dict[str, str] | None = None,
) -> list[str]:
    """Add a flag for every field of dataclass ``cls`` to ``group``; return the field names.
    (Section 3.6.)

    ``defaults`` replaces a field's default in the help text (where the command line's default
    differs from the dataclass's); ``default_text`` replaces the shown default altogether.
    Fields in ``skip`` get no flag here (the caller adds its own)."""
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    skipped = set(skip)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skipped:
            continue
        default: Any = f.default
        factory = f.default_factory
        if default is dataclasses.MISSING and callable(factory):
            default = factory()
        if defaults and f.name in defaults:
            default = defaults[f.name]
        spec = _argument_spec(f.name, hints[f.name])
        text = (default_text or {}).get(f.name)
        comment = HELP.get(f.name) or comments.get(f.name, "")
        spec["help"] = field_help(comment, default, default_text=text)
        names = FLAG_NAMES.get(f.name, (flag_for(f.name),))
        group.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, **spec)
        added.append(f.name)
    return added


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The fields among ``names`` given on the command line (absent ones were not) (section 3.6)."""
    values = {}
    for name in names:
        if hasattr(args, name):
            value = getattr(args, name)
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def _load_file(path: Path) -> Any:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigFileError(f"--config {path} {what}; pass a JSON or TOML config file")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except (UnicodeDecodeError, OSError) as error:
        raise ConfigFileError(f"--config {path} cannot be read ({error})") from None
    except ValueError as error:  # JSONDecodeError and TOMLDecodeError
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        first = str(error).splitlines()[0]
        raise ConfigFileError(f"--config {path} is not valid {kind}: {first}") from None


def read_config_file(
    path: str | Path, known: Mapping[str, Iterable[str] | None]
) -> dict[str, dict[str, Any]]:
    """The ``model``/``train``/``data`` sections of a config file, every key checked.

    A run's ``metrics.json`` works too: its ``model_config`` and ``train_config`` (and the
    ``data`` options the command line saved there) repeat the run exactly. ``known`` maps each
    section to its accepted keys (``None``: any); anything else is a :class:`ConfigFileError`
    naming the key.

    Section 3.6.
    """
    path = Path(path)
    content = _load_file(path)
    if not isinstance(content, dict):
        raise ConfigFileError(f"--config {path} must hold an object with {CONFIG_SECTIONS}")
    if "model_config" in content or "train_config" in content:  # a run's metrics.json
        content = {
            "model": content.get("model_config") or {},
            "train": content.get("train_config") or {},
            "data": content.get("data") or {},
        }
    unknown = sorted(set(content) - set(CONFIG_SECTIONS))
    if unknown:
        raise ConfigFileError(
            f"--config {path}: unknown section {unknown[0]!r}; use {list(CONFIG_SECTIONS)}"
        )
    sections: dict[str, dict[str, Any]] = {}
    for section in CONFIG_SECTIONS:
        values = content.get(section, {})
        if not isinstance(values, dict):
            raise ConfigFileError(f"--config {path}: [{section}] must be a table of settings")
        keys = known.get(section, ())
        if keys is None:
            sections[section] = dict(values)
            continue
        accepted = set(keys)
        for key in values:
            if key not in accepted:
                raise ConfigFileError(
                    f"--config {path}: unknown key {section}.{key}; known keys: "
                    f"{', '.join(sorted(accepted))}"
                )
        sections[section] = dict(values)
    return sections
