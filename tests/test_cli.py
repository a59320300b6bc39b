"""The command line: flags generated from the config dataclasses, ``--config`` files (and a
run's own metrics.json), ``tinytrans size``, ``generate --num-samples/--device`` and one-line
errors with exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from tinytrans.cli import EXIT_ERROR, build_parser, main
from tinytrans.cli import size as size_cli
from tinytrans.cli import train as train_cli
from tinytrans.cli.options import CHOICES, flag_for, plain_text, train_config_class
from tinytrans.config import (
    ACTIVATION_CHOICES,
    NORM_CHOICES,
    PLACEMENT_CHOICES,
    POSITIONAL_CHOICES,
    ModelConfig,
)
from tinytrans.precision import TRAINING_PRECISIONS
from tinytrans.tokenizers import TOKENIZER_KINDS

TEXT = "To be, or not to be, that is the question: whether tis nobler in the mind.\n" * 40


def _parser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _options(command: str) -> dict[str, argparse.Action]:
    return {s: a for a in _parser(command)._actions for s in a.option_strings}


def _help(command: str) -> str:
    return _parser(command).format_help()


@pytest.mark.parametrize("cls", [ModelConfig, train_config_class()], ids=["model", "train"])
def test_every_config_field_has_a_train_flag(cls):
    options = _options("train")
    for f in dataclasses.fields(cls):
        assert flag_for(f.name) in options, f"{cls.__name__}.{f.name} has no flag"
        assert options[flag_for(f.name)].dest == f.name


def test_every_model_field_has_a_size_flag():
    options = _options("size")
    for f in dataclasses.fields(ModelConfig):
        assert options[flag_for(f.name)].dest == f.name, f"ModelConfig.{f.name} has no flag"


def test_choices_and_types_come_from_the_configs():
    options = _options("train")
    assert tuple(options["--positional"].choices) == POSITIONAL_CHOICES
    assert tuple(options["--norm"].choices) == NORM_CHOICES
    assert tuple(options["--norm-placement"].choices) == PLACEMENT_CHOICES
    assert tuple(options["--activation"].choices) == ACTIVATION_CHOICES
    assert set(TRAINING_PRECISIONS) <= set(options["--precision"].choices)
    assert {"bf16", "fp16"} <= set(options["--precision"].choices)
    assert tuple(options["--tokenizer"].choices) == TOKENIZER_KINDS
    assert isinstance(options["--bias"], argparse.BooleanOptionalAction)
    assert "--no-gradient-checkpointing" in options
    assert options["--d-model"].type is int and options["--betas"].nargs == 2
    assert options["--weight-decay"].type is float
    assert CHOICES["precision"][: len(TRAINING_PRECISIONS)] == TRAINING_PRECISIONS


@pytest.mark.parametrize("command", ["train", "generate", "size"])
def test_help_shows_defaults_and_no_rest_markup(command):
    text = _help(command)
    assert "`" not in text and not re.search(r":(class|func|data|mod):", text)
    for action in _parser(command)._actions:
        if action.option_strings and action.help not in (None, argparse.SUPPRESS):
            if isinstance(action, argparse._StoreTrueAction) or action.dest in ("help", "resume"):
                continue  # on/off switches and --resume's two forms
            assert "default" in action.help, f"{action.option_strings[0]} shows no default"


def test_help_of_train_names_the_cli_defaults():
    text = " ".join(_help("train").split())
    assert "--lr FLOAT peak learning rate (default: 0.002)" in text
    assert "(default: the preset's; course: 192)" in text


def test_plain_text_strips_markup():
    assert plain_text("see :class:`tinytrans.ModelConfig` and ``x``") == "see ModelConfig and x"


def _train_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny-postnorm",
        "--context-length", "16", "--batch-size", "4", "--max-steps", "2", "--eval-interval", "1",
        "--eval-batches", "1", "--warmup-steps", "1", "--sample-tokens", "0", "--no-progress",
        "--d-model", "32", "--n-heads", "2", "--d-ff", "64", "--beta2", "0.99",
        "--precision", "fp32", "--device", "cpu", "--threads", "1", *extra,
    ]  # fmt: skip


def _namespace(argv: list[str]) -> argparse.Namespace:
    return build_parser(only=argv[0]).parse_args(argv)


def test_config_round_trip_from_a_runs_metrics(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "run"
    assert main(_train_argv(corpus, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_config"]["d_model"] == 32
    assert metrics["train_config"]["betas"] == [0.9, 0.99]
    assert metrics["data"]["corpus"] == str(corpus) and metrics["data"]["batch_size"] == 4
    spec = train_cli.resolve_run(
        _namespace(["train", "--config", str(out / "metrics.json"), "--out", str(out)])
    )
    assert spec.model.to_dict() == metrics["model_config"]
    rebuilt = train_config_class()(**spec.train).to_dict()
    assert rebuilt == metrics["train_config"]
    assert spec.data == metrics["data"]
    # flags override the file
    spec = train_cli.resolve_run(
        _namespace(["train", "--config", str(out / "metrics.json"), "--d-model", "64"])
    )
    assert spec.model.d_model == 64 and spec.model.d_ff == 64


def test_config_file_json_and_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[model]\npreset = "course"\nn_layers = 2\npositional = "sinusoidal"\n'
        '[train]\nlr = 0.0005\nmax_steps = 7\nbetas = [0.8, 0.9]\n[data]\ntokenizer = "char"\n'
    )
    spec = train_cli.resolve_run(_namespace(["train", "--config", str(toml), "--lr", "0.001"]))
    assert spec.model.n_layers == 2 and spec.model.positional == "sinusoidal"
    assert spec.model.d_model == ModelConfig.preset("course").d_model
    assert spec.train["lr"] == 0.001 and spec.train["max_steps"] == 7
    assert spec.train["betas"] == (0.8, 0.9)
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"model": {"n_kv_heads": 2}, "train": {"max_time": 5.0}}))
    spec = train_cli.resolve_run(_namespace(["train", "--config", str(js)]))
    assert spec.model.kv_heads == 2 and spec.train["max_time"] == 5.0
    assert "max_steps" not in spec.train or spec.train["max_steps"] is None


def test_precision_names(tmp_path):
    spec = train_cli.resolve_run(_namespace(["train", "--precision", "bf16-mixed"]))
    assert spec.train["precision"] in ("bf16-mixed", "bf16")  # bf16: before TrainConfig's rename
    train_config_class()(**spec.train)
    legacy = train_cli.resolve_run(_namespace(["train", "--precision", "bf16"]))
    assert legacy.train["precision"] == spec.train["precision"]


def _one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == EXIT_ERROR
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"tinytrans {argv[0]}: error: ")
    return lines[0]


def test_bad_config_files_exit_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert "does not exist" in _one_error_line(capsys, ["train", "--config", str(missing)])
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"model": {"d_modle": 3}}))
    line = _one_error_line(capsys, ["train", "--config", str(unknown)])
    assert "unknown key model.d_modle" in line
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"d_model": -4}}))
    assert "d_model" in _one_error_line(capsys, ["train", "--config", str(bad)])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "not valid JSON" in _one_error_line(capsys, ["train", "--config", str(broken)])
    section = tmp_path / "section.json"
    section.write_text(json.dumps({"modle": {}}))
    assert "unknown section" in _one_error_line(capsys, ["size", "--config", str(section)])


def test_bad_flags_exit_2_with_one_line(tmp_path, capsys):
    line = _one_error_line(capsys, ["train", "--batch-size", "0", "--out", str(tmp_path / "r")])
    assert "--batch-size must be at least 1" in line
    assert "needs --vocab-size" in _one_error_line(capsys, ["train", "--tokenizer", "sp-bpe"])
    assert "divisible" in _one_error_line(capsys, ["size", "course", "--n-heads", "5"])
    assert "PRESET" in _one_error_line(capsys, ["size"])
    assert "--num-samples" in _one_error_line(capsys, ["generate", "--num-samples", "0"])


def test_size_prints_sizings_numbers(capsys):
    from tinytrans import sizing

    assert main(["size", "course", "--batch-size", "2", "--tokens", "1e6"]) == 0
    text = capsys.readouterr().out
    config = ModelConfig.preset("course")
    expected = sizing.summary(config, batch_size=2, tokens=1e6)
    for label, value in expected.as_rows():
        assert f"{label}" in text and value in text
    assert sizing.format_count(sizing.count_parameters(config)) in text
    assert sizing.format_bytes(expected.weights["bf16"]) in text
    assert main(["size", "course", "--json", "--d-model", "96", "--n-heads", "4"]) == 0
    data = json.loads(capsys.readouterr().out)
    smaller = ModelConfig.preset("course", d_model=96, n_heads=4)
    assert data["parameters"] == sizing.count_parameters(smaller)
    assert data["kv_cache_bytes"] == sizing.kv_cache_bytes(smaller, 1, smaller.context_length)


def test_size_precision_changes_the_training_memory(capsys):
    args = _namespace(["size", "course", "--precision", "bf16-true"])
    pure = size_cli.sizing_summary(args)
    full = size_cli.sizing_summary(_namespace(["size", "course", "--precision", "fp32"]))
    assert pure.training.weights * 2 == full.training.weights


def test_size_reads_a_config_file(tmp_path, capsys):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"model": {"preset": "llama-40m", "n_layers": 4}}))
    assert main(["size", "--config", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["n_layers"] == 4 and data["config"]["d_model"] == 320


def test_generate_num_samples_on_cpu(tmp_path, capsys):
    from tinytrans.model import build_model
    from tinytrans.tokenizers import CharTokenizer
    from tinytrans.train import save_model

    tok = CharTokenizer.train("abcdefgh ")
    model = build_model(
        "tiny-postnorm", vocab_size=tok.vocab_size, context_length=32, d_model=32, d_ff=64
    )
    path = save_model(tmp_path / "m.pt", model, tok)
    argv = ["generate", str(path), "--prompt", "ab", "--max-new-tokens", "8", "--seed", "5"]
    assert main([*argv, "--num-samples", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "--- sample 1 of 2, seed 5 ---" in out and "--- sample 2 of 2, seed 6 ---" in out
    first, second = (part.split("---\n", 1)[1] for part in out.split("--- sample ")[1:])
    assert main([*argv[:-1], "6", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == second.strip()
    assert main([*argv, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == first.strip()
    assert "--device" in _one_error_line(capsys, [*argv, "--device", "tpu"])


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--positional", "bogus"],
        ["size", "course", "--d-model", "x"],
        ["generate", "--max-new-tokens", "x"],
    ],
)
def test_usage_errors_are_one_line_too(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tinytrans {argv[0]}: error: argument")
    assert lines[0].endswith(f"see tinytrans {argv[0]} --help")


def test_an_interrupt_while_the_parser_loads_exits_130(monkeypatch, capsys):
    """Ctrl-C can land while the command's flags are built (its modules import): it is an
    interrupt like any other, one line and exit 130, not a traceback and exit 1."""
    import tinytrans.cli as cli

    def interrupted(**_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["train", "--max-steps", "1"]) == cli.EXIT_SIGINT
    assert capsys.readouterr().err.strip() == "tinytrans train: interrupted"


def test_generate_has_a_flag_for_every_sampling_field():
    """``generate``'s sampling flags are written out (so ``--help`` needs no torch); this keeps
    them complete: a new SamplingConfig field without a flag fails here."""
    import argparse
    import dataclasses

    from tinytrans.cli import generate as cli_generate
    from tinytrans.generate import SamplingConfig

    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    flags = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(SamplingConfig):
        assert field.name in flags, f"tinytrans generate has no --{field.name.replace('_', '-')}"
        if field.name != "temperature":  # the CLI samples at 0.8 by default, the API at 1
            assert flags[field.name].default == field.default, field.name
