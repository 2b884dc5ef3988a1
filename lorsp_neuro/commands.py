"""Subcommands of ``lorsp`` that belong to the core package."""

from __future__ import annotations

import json

from lorsp_neuro.cli import integer_at_least


def _lava_check(args) -> int:
    from hardware_sims.smoke import dense_lif_smoke

    report = dense_lif_smoke(steps=args.steps)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    print(
        f"Lava {report['lava_version']} at {report['python']}: Dense → LIF ran {report['steps']} steps "
        f"in {report['wall_s']:.2f} s, {report['spikes']} spikes, "
        f"matches the hand-computed Lava equations: {report['matches']}"
    )
    return 0 if report["matches"] else 1


def add_commands(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "lava-check",
        help="check the Lava environment with a small Dense → LIF run",
        description="Run a Dense → LIF network in the Lava environment through the worker and "
        "compare its spikes with the LIF equations computed here.\n\n"
        "example:\n  lorsp lava-check --steps 20 --json lava.json",
        formatter_class=formatter,
    )
    p.add_argument("--steps", type=integer_at_least(1), default=20, help="number of time steps")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(handler=_lava_check)
