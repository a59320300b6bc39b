"""The ``tinytrans`` command line: ``tinytrans train ...`` and ``tinytrans generate ...``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
they are imported lazily so ``tinytrans --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tinytrans import __version__

COMMANDS = {
    "train": ("tinytrans.cli.train", "train a model on a corpus and write checkpoints"),
    "generate": ("tinytrans.cli.generate", "generate text from a checkpoint (streams)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinytrans", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tinytrans {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"tinytrans {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
