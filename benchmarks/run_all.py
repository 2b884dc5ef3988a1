"""``make bench``: accuracy table, sparsity frontier, energy of the variants, speed, then README.

Each stage is its own process (``python -m benchmarks.accuracy_table``, ``benchmarks.speed``,
``benchmarks.update_readme`` …), so every measurement starts from a clean interpreter; the stages run one after the other, never
side by side, because the speed ratios need the machine to themselves. The wall time of each
stage and of the whole goes to ``benchmarks/results/run_all.json``.

    make bench                                          # = .venv/bin/python -m benchmarks.run_all
    make bench-full                                     # = ... run_all --extended (64 px, 224 px, Lite2)
    .venv/bin/python -m benchmarks.run_all --fresh      # retrain every accuracy run
    .venv/bin/python -m benchmarks.run_all --full       # GPU host: larger accuracy settings
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_common import (
    REPO,
    RESULTS_DIR,
    RUNS_DIR,
    benchmark_command,
    machine_info,
    now_iso,
    write_report,
)

#: The tables only ``make bench-full`` (``--extended``) adds, in the order they run.
EXTENDED_TABLES = ("64px", "224px", "lite2")


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished, waited-for descendant (a stage and the
    processes it waited for: training workers, the Lava worker): on a shared machine the wall
    time says how busy it was, the CPU time what the benchmark costs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stages(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """``(name, command)`` of every stage, in order."""
    results = args.results_dir
    mode = ["--full"] if args.full else ["--smoke"] if args.smoke else []
    smoke = ["--smoke"] if args.smoke else []
    runs = ["--runs-dir", str(args.runs_dir)]
    readmes = [part for readme in args.readme for part in ("--readme", str(readme))]

    def table(name: str) -> tuple[str, list[str]]:
        json_path = results / f"accuracy_{name}.json"
        return (
            f"accuracy_{name}",
            benchmark_command("accuracy_table", "--table", name, "--json", str(json_path), *runs),
        )

    # The second head belongs to the headline; the extended tables run after the speed stage,
    # so that make bench's own stages finish (and are timed) first.
    headline_tables = [] if (args.full or args.smoke) else [table("ilm")]
    extended_tables = [table(name) for name in EXTENDED_TABLES] if args.extended else []
    return [
        (
            "accuracy",
            benchmark_command(
                "accuracy_table",
                *mode,
                "--json",
                str(results / "accuracy.json"),
                *runs,
                *(["--fresh"] if args.fresh else []),
            ),
        ),
        *headline_tables,
        (
            "frontier",
            benchmark_command("frontier", *smoke, "--json", str(results / "frontier.json"), *runs),
        ),
        (
            "energy",
            benchmark_command(
                "energy_table", *smoke, "--json", str(results / "energy.json"), *runs
            ),
        ),
        ("speed", benchmark_command("speed", *smoke, "--json", str(results / "speed.json"))),
        *extended_tables,
        (
            "update_readme",
            benchmark_command(
                "update_readme",
                "--results-dir",
                str(results),
                *readmes,
                "--plot",
                str(results / "accuracy_vs_params.png"),
            ),
        ),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="accuracy table at GPU-host settings")
    mode.add_argument("--smoke", action="store_true", help="seconds-long settings (tests)")
    mode.add_argument(
        "--extended",
        action="store_true",
        help="make bench-full: also the 64 px, 224 px and EfficientNet-Lite2 tables",
    )
    p.add_argument("--fresh", action="store_true", help="retrain every accuracy run")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR / "accuracy")
    p.add_argument(
        "--readme",
        type=Path,
        action="append",
        help="files with the results markers (default: README.md and docs/benchmarks.md)",
    )
    args = p.parse_args(argv)
    args.readme = args.readme or [REPO / "README.md", REPO / "docs" / "benchmarks.md"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, started_at = time.perf_counter(), now_iso()
    record = {"created": started_at, "machine": machine_info(), "stages": {}}
    status = 0
    for name, command in stages(args):
        print(f"== {name}: {' '.join(command)}", flush=True)
        stage_started, cpu_before = time.perf_counter(), children_cpu_seconds()
        code = subprocess.call(command, cwd=REPO)
        seconds = time.perf_counter() - stage_started
        cpu = children_cpu_seconds() - cpu_before
        record["stages"][name] = {"seconds": seconds, "cpu_seconds": cpu, "exit_code": code}
        print(
            f"== {name}: exit {code} after {seconds / 60:.1f} min ({cpu / 60:.1f} CPU-min)",
            flush=True,
        )
        if code != 0:
            status = code
            break
    record["wall_seconds"] = time.perf_counter() - started
    record["cpu_seconds"] = sum(stage["cpu_seconds"] for stage in record["stages"].values())
    record["ok"] = status == 0
    write_report(args.results_dir / "run_all.json", record)
    print(
        f"== make bench: {'ok' if status == 0 else 'FAILED'} in {record['wall_seconds'] / 60:.1f} min"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
