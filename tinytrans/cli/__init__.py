"""The ``tinytrans`` command line: ``tinytrans train``, ``generate`` and ``size`` (section 3.6).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
only the chosen command's flags are built, and torch is imported only to run a command, so
``tinytrans --help`` and every ``tinytrans COMMAND --help`` stay fast.

Every failure is one line on stderr -- ``tinytrans COMMAND: error: <problem>; <fix>`` -- and
exit code 2. ``--debug`` (or ``TINYTRANS_DEBUG=1``) shows the traceback instead. An
interrupted ``train`` saves its last checkpoint and exits with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import _thread
import argparse
import importlib
import os
import sys
from typing import Any, NoReturn

from tinytrans import __version__

__all__ = [
    "COMMANDS",
    "DEBUG_ENV",
    "EXIT_ERROR",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "build_parser",
    "error_line",
    "main",
]

COMMANDS = {
    "train": ("tinytrans.cli.train", "train a model on a corpus and write checkpoints"),
    "generate": ("tinytrans.cli.generate", "generate text from a checkpoint (streams)"),
    "size": ("tinytrans.cli.size", "size a model: parameters, memory, FLOPs, tokens (chapter 5)"),
}
#: Environment variable that turns on ``--debug`` (tracebacks instead of one-line errors).
DEBUG_ENV = "TINYTRANS_DEBUG"
#: Exit codes: a failure, and interrupts (128 + the signal number, as shells report them).
EXIT_ERROR = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: Errors whose message already names the problem and the fix.
_EXPLAINED = (ValueError, OSError, ModuleNotFoundError)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line too (the usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``tinytrans`` parser; with ``only``, just that command gets its flags (the others
    are listed, so ``tinytrans --help`` needs no command's module) (section 3.6)."""
    parser = _Parser(prog="tinytrans", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tinytrans {__version__}")
    debug = _Parser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)",
    )
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[debug])
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is one), or ``None``."""
    return next((word for word in argv if word in COMMANDS), None)


def _debugging(args: argparse.Namespace | None) -> bool:
    flag = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return flag or bool(getattr(args, "debug", False))


def error_line(command: str, error: BaseException) -> str:
    """The one line printed for ``error``: the problem and, where known, the fix (section 3.6)."""
    text = " ".join(str(error).split()) if str(error).strip() else ""
    if isinstance(error, MemoryError):
        text = "out of memory; use a smaller model, --batch-size or --context-length"
    if not isinstance(error, (*_EXPLAINED, MemoryError)):
        kind = type(error).__name__
        text = f"{kind}: {text or 'no message'} (run again with --debug for the traceback)"
    return f"tinytrans {command}: error: {text}"


def _quiet_broken_pipe() -> None:
    """The reader of our output went away (``| head``): stop quietly, as ``cat`` does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _redeliver_lost_interrupt(unraisable: Any) -> None:
    """A Ctrl-C that lands where Python cannot raise it (a callback of the import machinery,
    during start-up) is printed as "Exception ignored ... Traceback" and then lost. Deliver it
    again, so the run stops with the one-line "interrupted" like any other Ctrl-C."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _thread.interrupt_main()
    else:
        sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    """Run ``tinytrans COMMAND ...`` and return its exit status: 0, 2 for bad input (one line
    on stderr), 130/143 when interrupted (section 3.6; the appendix "How to run the chapters")."""
    sys.unraisablehook = _redeliver_lost_interrupt
    words = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(words) or ""
    try:  # a Ctrl-C while the parser and the command's modules load is an interrupt too
        args = build_parser(only=command).parse_args(words)
        command = getattr(args, "command", None) or command
        if _debugging(args):
            return int(args._run(args) or 0)
        return _run_explained(args)
    except KeyboardInterrupt:
        print(f"tinytrans {command}: interrupted".rstrip(), file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 0


def _run_explained(args: argparse.Namespace) -> int:
    """Run the chosen command; any failure but an interrupt becomes one line and exit 2."""
    try:
        return int(args._run(args) or 0)
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as error:  # every failure becomes one line
        print(error_line(args.command, error), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
