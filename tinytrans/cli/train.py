"""``tinytrans train``: train a preset on a corpus, writing checkpoints and metrics (section 3.6).

Examples::

    tinytrans train --max-time 90 --out runs/quick    # model, batch and lr chosen for 90 s
    tinytrans train --preset course --corpus shakespeare --max-time 180 --out runs/shakespeare
    tinytrans train --corpus my_text.txt --tokenizer bpe --vocab-size 1024 --max-steps 2000
    tinytrans train --out runs/shakespeare --resume          # continue from runs/.../last.pt
    torchrun --nproc_per_node 2 -m tinytrans train --max-steps 500 --out runs/ddp
    tinytrans train --preset course --positional learned --norm layernorm --weight-decay 0
    tinytrans train --config runs/shakespeare/metrics.json --out runs/again  # repeat a run

Every ``ModelConfig`` and ``TrainConfig`` field is a flag. A new run's settings are layered:
the defaults, the preset, the ``--config`` file, then the flags given. With ``--max-time`` and
neither a preset nor a shape flag (``--d-model``, ``--n-layers``, ``--context-length``...), the
budget recipe (:mod:`tinytrans.train.budget`) takes the preset's place: it times the machine and
chooses the model, batch, learning rate and warmup for the time, then prints what it chose; any
flag given still wins. The data options
(``--corpus``, ``--tokenizer``, ``--vocab-size``, ``--batch-size``, ...) are saved in the
run's ``metrics.json`` next to its configs, so ``--config OUT/metrics.json`` rebuilds it.

On resume the model, tokenizer and training settings come from the checkpoint; budget flags
given on the command line (``--max-steps``/``--max-time``/``--max-tokens``) still apply.

A folder that already holds a run is never overwritten: pass ``--resume`` to continue it or
``--overwrite`` to start again there. Ctrl-C (SIGINT) and SIGTERM finish the current step,
save ``last.pt`` and exit with 130 or 143; ``--resume`` then continues exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinytrans.cli.options import (
    ConfigFileError,
    add_dataclass_flags,
    flag_for,
    given,
    read_config_file,
    train_config_class,
)
from tinytrans.config import ModelConfig, preset_names
from tinytrans.precision import TRAINING_PRECISIONS, canonical_precision

__all__ = [
    "DATA_DEFAULTS",
    "PRECISIONS",
    "RUN_FILES",
    "TRAIN_DEFAULTS",
    "RunSpec",
    "add_arguments",
    "apply_budget_recipe",
    "check_device",
    "clear_run",
    "prepare_out_dir",
    "resolve_run",
    "run",
]

_BUDGET = ("max_steps", "max_time", "max_tokens")
#: ``--precision`` choices: :data:`tinytrans.precision.TRAINING_PRECISIONS` (the older names
#: ``bf16``/``fp16`` are accepted too and mean the mixed recipes).
PRECISIONS = TRAINING_PRECISIONS
#: The files that make a folder a run folder (and that ``--overwrite`` replaces).
RUN_FILES = ("last.pt", "best.pt", "metrics.json")
#: Data options (the ``data`` section of a ``--config`` file) and their defaults.
DATA_DEFAULTS: dict[str, Any] = {
    "preset": "course",
    "corpus": "shakespeare",
    "tokenizer": "char",
    "vocab_size": None,
    "batch_size": 16,
    "corpus_sha256": None,
}
#: Where the command line's defaults differ from ``TrainConfig``'s.
TRAIN_DEFAULTS: dict[str, Any] = {"lr": 2e-3, "out_dir": "runs/train"}
#: Model fields set by the data options (the tokenizer decides the vocabulary).
_DATA_MODEL_FIELDS = ("vocab_size", "context_length")
#: Model fields that fix the model's size: given one, ``--max-time`` keeps the preset.
_SHAPE_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "context_length")


def _model_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelConfig)]


def _train_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(train_config_class())]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's flags: data options, every ``ModelConfig`` field and every
    ``TrainConfig`` field (section 3.6, "Training the course model")."""
    from tinytrans.tokenizers import TOKENIZER_KINDS

    data = parser.add_argument_group("data and preset")
    suppress = argparse.SUPPRESS
    data.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON or TOML file with model/train/data sections, or a run's metrics.json to "
        "repeat it; flags given here override the file (default: none)",
    )
    data.add_argument(
        "--preset",
        default=suppress,
        choices=preset_names(),
        help="model preset (default: course; with --max-time and no preset or shape flag, a "
        "model, batch and learning rate chosen for the time on this machine)",
    )
    data.add_argument(
        "--corpus",
        default=suppress,
        help="shakespeare, python-docs, a file or a URL (default: shakespeare)",
    )
    data.add_argument(
        "--tokenizer", default=suppress, choices=TOKENIZER_KINDS, help="tokenizer (default: char)"
    )
    data.add_argument(
        "--vocab-size",
        type=int,
        default=suppress,
        help="vocabulary size of a bpe/sp-* tokenizer, and so of the model (default: the "
        "character alphabet's size for char)",
    )
    data.add_argument(
        "--context-length",
        type=int,
        default=suppress,
        help="tokens per window (default: the preset's)",
    )
    data.add_argument(
        "--batch-size", type=int, default=suppress, help="windows per micro-batch (default: 16)"
    )
    data.add_argument(
        "--corpus-sha256",
        default=suppress,
        help="expected sha256 of a --corpus file or URL (default: none)",
    )
    course = ModelConfig.preset("course")
    model = parser.add_argument_group("model (override the preset's values)")
    add_dataclass_flags(
        model,
        ModelConfig,
        skip=_DATA_MODEL_FIELDS,
        default_text={
            f.name: f"the preset's; course: {getattr(course, f.name)}"
            for f in dataclasses.fields(ModelConfig)
        },
    )
    train = parser.add_argument_group("training")
    add_dataclass_flags(
        train,
        train_config_class(),
        defaults=TRAIN_DEFAULTS,
        default_text={"max_steps": "none; 1000 when no budget is given"},
    )
    for index, which in enumerate(("first", "second")):
        train.add_argument(
            f"--beta{index + 1}",
            type=float,
            default=suppress,
            help=f"the {which} AdamW beta alone (default: from --betas)",
        )
    runtime = parser.add_argument_group("run")
    runtime.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run: a checkpoint path, or no value for OUT/last.pt",
    )
    runtime.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it, an existing run is never touched)",
    )
    runtime.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


@dataclasses.dataclass
class RunSpec:
    """What a new run is built from: the model config (its ``vocab_size`` is the tokenizer's
    once the data is loaded), the ``TrainConfig`` keyword arguments and the data options.
    (Section 3.6.)"""

    model: ModelConfig
    train: dict[str, Any]
    data: dict[str, Any]
    #: True when the budget recipe chooses the model (``--max-time`` without a preset or a
    #: shape: :func:`tinytrans.train.budget.budget_recipe`).
    budget: bool = False
    #: The model flags given; they override the budget recipe's model too.
    model_flags: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The train and data options set by a flag or the ``--config`` file (not defaults).
    explicit: frozenset[str] = frozenset()


def _config_sections(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    empty: dict[str, dict[str, Any]] = {"model": {}, "train": {}, "data": {}}
    if getattr(args, "config", None) is None:
        return empty
    known = {
        "model": [*_model_fields(), "preset"],
        "train": _train_fields(),
        "data": list(DATA_DEFAULTS),
    }
    return read_config_file(args.config, known)


def _train_values(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    values = {**TRAIN_DEFAULTS, **file, **given(args, _train_fields())}
    if hasattr(args, "beta1") or hasattr(args, "beta2"):
        betas = list(values.get("betas", (0.9, 0.95)))
        betas[0] = getattr(args, "beta1", betas[0])
        betas[1] = getattr(args, "beta2", betas[1])
        values["betas"] = tuple(betas)
    if not any(values.get(k) is not None for k in _BUDGET):
        values["max_steps"] = 1000
    if "precision" in values:
        values["precision"] = canonical_precision(values["precision"])
    for key in ("betas", "sample_prompts"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return values


def resolve_run(args: argparse.Namespace) -> RunSpec:
    """The configs of a new run: defaults, then the preset, then ``--config``, then the flags.
    (Section 3.6.)

    Raises ``ValueError`` naming the flag or the file's key for a bad value."""
    sections = _config_sections(args)
    data = {**DATA_DEFAULTS, **sections["data"], **given(args, DATA_DEFAULTS)}
    model_file = dict(sections["model"])
    preset = given(args, ["preset"]).get("preset") or model_file.pop("preset", None)
    if preset is None:
        saved = model_file.get("name")
        preset = saved if saved in preset_names() else data["preset"]
    model_file.pop("preset", None)
    data["preset"] = preset
    flags = given(args, [f for f in _model_fields() if f not in _DATA_MODEL_FIELDS])
    flags.update(given(args, ["context_length"]))
    if data["vocab_size"] is None and data["tokenizer"] != "char":
        data["vocab_size"] = model_file.get("vocab_size")
    if data["tokenizer"] != "char" and data["vocab_size"] is None:
        raise ValueError(f"--tokenizer {data['tokenizer']} needs --vocab-size (e.g. 512 or 1024).")
    train = _train_values(args, sections["train"])
    from_flags = {*given(args, DATA_DEFAULTS), *given(args, _train_fields()), *flags}
    config_file = getattr(args, "config", None)

    def label(key: str) -> str:
        return flag_for(key) if key in from_flags or not config_file else f"{key} in {config_file}"

    _check_values({**model_file, **data, **train, **flags}, label)  # before any config is built
    source = f"--config {args.config}" if getattr(args, "config", None) else "the flags"
    model = ModelConfig.preset(preset).replace(**{**model_file, **flags})
    try:
        train_config_class()(**train)
    except TypeError as error:
        raise ConfigFileError(f"{source}: {error}") from None
    budget = (
        train.get("max_time") is not None
        and not given(args, ["preset"])
        and not sections["model"]
        and not any(name in flags for name in _SHAPE_FIELDS)
    )
    explicit = {*sections["train"], *sections["data"], *given(args, _train_fields())}
    explicit |= set(given(args, DATA_DEFAULTS))
    return RunSpec(model, train, data, budget, flags, frozenset(explicit))


def apply_budget_recipe(spec: RunSpec) -> tuple[RunSpec, Any]:
    """The run the budget recipe chooses for ``spec``'s ``max_time`` on its device, with the
    flags given still winning; prints what it chose. Returns the spec and the tokenizer it
    trained to learn the vocabulary size (section 3.6)."""
    from tinytrans.data import DataModule
    from tinytrans.env import pick_device
    from tinytrans.train.budget import OPTIMIZER, budget_recipe

    data = DataModule(
        tokenizer=spec.data["tokenizer"], corpus=spec.data["corpus"],
        vocab_size=spec.data["vocab_size"], sha256=spec.data["corpus_sha256"],
    ).prepare()  # fmt: skip
    device = str(pick_device(spec.train.get("device", "auto")))
    optimizer = spec.train["optimizer"] if "optimizer" in spec.explicit else OPTIMIZER
    recipe = budget_recipe(spec.train["max_time"], data.vocab_size, device, optimizer=optimizer)
    model = recipe.model.replace(**spec.model_flags)
    train = {**spec.train}
    train.update({k: v for k, v in recipe.train_values().items() if k not in spec.explicit})
    options = {**spec.data}  # the model config itself is saved in full with the run
    if "batch_size" not in spec.explicit:
        options["batch_size"] = recipe.batch_size
    print(recipe.describe())
    overridden = sorted(spec.explicit & {*recipe.train_values(), "batch_size"})
    if overridden or spec.model_flags:
        print(f"  given and kept: {', '.join([*overridden, *spec.model_flags])}")
    return dataclasses.replace(spec, model=model, train=train, data=options), data.tokenizer


def _check_values(values: dict[str, Any], label: Callable[[str], str] = flag_for) -> None:
    """Refuse bad values, naming the flag (or the file's key: ``label``), before any data is
    loaded or any file is written."""
    positive = ("batch_size", "grad_accum_steps", "eval_interval", "eval_batches", "max_steps",
                "max_tokens", "context_length", "vocab_size", "d_model", "n_layers", "n_heads",
                "n_kv_heads", "d_ff")  # fmt: skip
    for key in positive:
        value = values.get(key)
        if isinstance(value, (int, float)) and value < 1:
            raise ValueError(f"{label(key)} must be at least 1, got {value}.")
    for key in ("warmup_steps", "sample_tokens"):
        value = values.get(key, 0)
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"{label(key)} must be >= 0, got {value}.")


def check_device(name: str) -> None:
    """``ValueError`` naming the fix for a device that does not exist on this machine.
    (Section 3.6.)"""
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
    """Refuse to overwrite a run, and check that ``out`` is a folder we can write to (section 3.7).

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
    """Remove the previous run's files (rank 0 only): ``--overwrite`` after set-up worked.
    (Section 3.7.)"""
    if _main_rank():
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()


def _fresh(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Model, data, config and data options for a new run."""
    from tinytrans.data import DataModule

    spec = resolve_run(args)  # every value checked before the data is loaded
    tokenizer = spec.data["tokenizer"]
    if spec.budget:
        spec, tokenizer = apply_budget_recipe(spec)
    config = train_config_class()(**spec.train)
    data = DataModule(
        tokenizer=tokenizer,
        corpus=spec.data["corpus"],
        context_length=spec.model.context_length,
        batch_size=spec.data["batch_size"],
        seed=config.seed,
        vocab_size=spec.data["vocab_size"],
        sha256=spec.data["corpus_sha256"],
    )
    from tinytrans.env import seed_everything
    from tinytrans.model import build_model

    seed_everything(config.seed)  # the initial weights depend on --seed, and only on it
    model = build_model(spec.model, vocab_size=data.vocab_size)
    return model, data, config, spec.data


def _resumed(args: argparse.Namespace, path: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Model, data, config and data options rebuilt from a training checkpoint."""
    from tinytrans.checkpoint import load_checkpoint
    from tinytrans.data import DataModule

    model, tokenizer, info = load_checkpoint(path)
    if info.get("kind") != "training":
        raise ValueError(f"{path} holds only model weights; it cannot resume training.")
    saved = train_config_class().from_dict(info["train_config"])
    progress = getattr(args, "progress", True)
    config = saved.replace(**given(args, _BUDGET), out_dir=args.out, progress=progress)
    batch = (info.get("tokens_per_step") or 0) // (
        model.config.context_length * saved.grad_accum_steps
    )
    options = {**DATA_DEFAULTS, **given(args, DATA_DEFAULTS)}
    data = DataModule(
        tokenizer=tokenizer,
        corpus=options["corpus"],
        context_length=model.config.context_length,
        batch_size=batch or options["batch_size"],
        seed=saved.seed,
        sha256=options["corpus_sha256"],
    )
    options.update(batch_size=data.batch_size, vocab_size=model.config.vocab_size)
    return model.train(), data, config, options


def _save_data_options(path: Path, options: dict[str, Any]) -> None:
    """Add the data options to the run's ``metrics.json``, so ``--config`` can repeat it."""
    import json

    from tinytrans.files import atomic_write_json

    with contextlib.suppress(OSError, ValueError):
        metrics = json.loads(path.read_text(encoding="utf-8"))
        metrics["data"] = {key: options.get(key) for key in DATA_DEFAULTS}
        atomic_write_json(path, metrics)


def run(args: argparse.Namespace) -> int:
    """Train; returns 0, or 130/143 when interrupted by SIGINT/SIGTERM (after saving).
    (Section 3.6.)"""
    import torch

    from tinytrans.cli import EXIT_SIGINT, EXIT_SIGTERM
    from tinytrans.train import FinishOnTime, Trainer, cleanup_distributed

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}.")
    check_device(getattr(args, "device", "auto"))
    args.out = getattr(args, "out_dir", None) or _out_from_config(args)
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
    if path is None:
        resolve_run(args)  # refuse bad values before the folder is touched
    replaced = prepare_out_dir(out, resume=path is not None, overwrite=args.overwrite)
    model, data, config, options = _resumed(args, path) if path is not None else _fresh(args)
    clear_run(out, replaced)  # only now: a failed set-up leaves the old run as it was
    # With --max-time the cosine ends when the time does, however the pace changes (evaluations,
    # a compiled step, a machine that gets busy): FinishOnTime, section 3.6.
    trainer = Trainer(model, data, config, callbacks=[FinishOnTime()])
    if path is not None:
        trainer.resume(path)
    try:
        metrics = trainer.fit()
    finally:
        cleanup_distributed()
    if trainer.dist.is_main:
        _save_data_options(out / "metrics.json", options)
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


def _out_from_config(args: argparse.Namespace) -> str:
    """The run folder when ``--out`` is not given: the config file's, else the default."""
    if getattr(args, "config", None) is not None and args.resume is None:
        out = _config_sections(args)["train"].get("out_dir")
        if out:
            return str(out)
    return str(TRAIN_DEFAULTS["out_dir"])
