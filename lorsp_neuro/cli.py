"""The ``lorsp`` command line: it only parses arguments and calls library functions.

Each part of the toolkit contributes its subcommands through an ``add_commands(subparsers)``
function listed in :data:`COMMAND_MODULES`; handlers import their heavy dependencies (torch, timm)
only when run, so ``lorsp --help`` stays fast. A :class:`~lorsp_neuro.errors.LorspError` is
printed as one line and exits with status 2, as are argument errors and unreadable or unwritable
files (``OSError``); no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from lorsp_neuro import __version__
from lorsp_neuro.errors import LorspError

#: Modules with an ``add_commands(subparsers)`` function, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "lorsp_neuro.commands",
    "lorsp_neuro.train_commands",
    "exporters.commands",
    "hardware_sims.commands",
    "lorsp_neuro.ux_commands",
)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``; anything else is a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _prepare_json_output(args: argparse.Namespace) -> None:
    """Before the work, not after it: make ``--json FILE``'s folder, or fail if FILE cannot be."""
    path = getattr(args, "json", None)
    if path:
        if Path(path).is_dir():
            raise LorspError(f"--json {path}: is a folder, expected a file name")
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LorspError(f"--json {path}: cannot make folder {folder}: {exc.strerror}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lorsp",
        description="LoRSP: train sparse, instance-specific visual prompts made by spiking neurons "
        "(prompt = V ⊙ ρ: low-rank values V where, and as often as, the pixel neurons fire) for a "
        "frozen backbone; export the spiking part through NIR, run it in Lava, cost its energy.\n\n"
        "example:\n  lorsp demo --out demo_out   # the whole story in about 4 minutes",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"lorsp-neuro {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _prepare_json_output(args)
        return int(args.handler(args) or 0)
    except LorspError as exc:
        print(f"lorsp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"lorsp {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lorsp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
