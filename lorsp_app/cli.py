"""The ``lorsp`` command line: it only parses arguments and calls library functions.

Each command family contributes its subcommands through an ``add_commands(subparsers, formatter)``
function of a module in :data:`COMMAND_MODULES`; handlers import their heavy dependencies (torch,
timm, Lava's client) only when run, so ``lorsp --help`` stays fast. A
:class:`~lorsp_neuro.errors.LorspError` is printed as one line and exits with status 2, as are
argument errors and unreadable or unwritable files (``OSError``); no traceback reaches the user.

Before any command runs, :func:`prepare_process` sets what must precede ``import torch``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from lorsp_app import (
    export_commands,
    hardware_commands,
    report_commands,
    train_commands,
)
from lorsp_neuro import __version__
from lorsp_neuro.errors import LorspError

#: Modules with an ``add_commands(subparsers, formatter)`` function, in the order ``--help``
#: lists them.
COMMAND_MODULES = (train_commands, export_commands, hardware_commands, report_commands)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def prepare_process() -> None:
    """Settings every command needs before torch or Norse is imported.

    OpenMP threads sleep rather than spin while they wait: on a CPU shared with other jobs,
    spinning threads burn the cores the working ones need (measured on 2 shared cores: a training
    step of EfficientNet-Lite0 at 32 px took 3.0 s of CPU with the default policy and 0.27 s with
    ``PASSIVE``); a user's own ``OMP_WAIT_POLICY`` wins, and it cannot act once torch is loaded.
    Norse 1.1.0 calls the deprecated ``torch.jit.script`` when imported, and torch warns about it
    on every run: a message for Norse's developers, not for our users, so exactly that
    ``FutureWarning`` is ignored.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )


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
    for module in COMMAND_MODULES:
        module.add_commands(subparsers, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    prepare_process()
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
