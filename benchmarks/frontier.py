"""Sparsity frontier: test accuracy against prompt sparsity, LoRSP vs magnitude-pruned LoR-VP.

The claim under test (DESIGN.md §1): a sparse spiking prompt is as good as a dense one, and better
than the same values made sparse by a fixed mask. At each target sparsity s* in ``targets``,

- ``lorsp`` with ``target_sparsity = s*`` (the σ-normalised θ controller: which pixels are zero
  is decided per image by the spiking neurons), and
- ``lor_vp_pruned`` with ``target_sparsity = s*`` (LoR-VP whose smallest-|P| entries are zeroed by
  a mask fixed at mid-training: the fair baseline, same values, same budget),

are trained on the same seeds (the accuracy table's seeds and paired seeds: five), splits and
data order as the accuracy table (same settings, and runs shared through
``benchmarks/runs/accuracy/``), plus the two dense references: ``lorsp`` at its
natural sparsity and plain ``lor_vp``. Per target the report pairs the two methods seed by seed:
the difference of test accuracies, its mean and 95 % t-interval, and a verdict ("better",
"worse", "no detectable difference") read from that interval alone.

Does the controller hold its target beyond Fashion-MNIST, whose black background gives v2 zeros
for free? ``holds``: the same pair at s* = 0.9 on textures, mnist5k and Fashion-MNIST at 64 px
(first seed only), reporting the sparsity reached on the test set.

    .venv/bin/python -m benchmarks.frontier                  # ~ 30–60 min on 2 cores
    .venv/bin/python -m benchmarks.frontier --smoke --json /tmp/frontier.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.accuracy_table import SETTINGS as ACCURACY_SETTINGS
from benchmarks.accuracy_table import DatasetBudget, Settings, make_job, run_jobs
from benchmarks.bench_common import (
    RESULTS_DIR,
    RUNS_DIR,
    SCHEMA_VERSION,
    BenchmarkError,
    machine_info,
    mean_std,
    now_iso,
    paired_difference,
    write_report,
)

#: The method under test and its fair baseline (both take ``target_sparsity``).
METHOD, BASELINE = "lorsp", "lor_vp_pruned"
#: The dense references: LoRSP at its natural sparsity, LoR-VP unpruned.
DENSE_METHOD, DENSE_BASELINE = "lorsp", "lor_vp"
TARGETS = (0.5, 0.75, 0.9, 0.95)
#: Target of the hold-out checks on other data and resolution.
HOLD_TARGET = 0.9


@dataclass(frozen=True)
class FrontierSettings:
    """The training settings (shared with the accuracy table), the dataset and the targets."""

    mode: str
    training: Settings
    dataset: DatasetBudget
    targets: tuple[float, ...] = TARGETS
    #: ``(name, dataset budget, image size)`` of each hold-out check of the controller.
    holds: tuple[tuple[str, DatasetBudget, int], ...] = ()

    def __post_init__(self):
        if not self.targets or not all(0 < t < 1 for t in self.targets):
            raise BenchmarkError(f"FrontierSettings.targets must be in (0, 1), got {self.targets}")


def _settings(mode: str) -> FrontierSettings:
    training = ACCURACY_SETTINGS[mode]
    # The paired statistics rest on the accuracy table's seeds and its paired seeds (its runs
    # of the dense pair are reused).
    training = replace(training, seeds=training.seeds + training.paired_seeds, paired_seeds=())
    budgets = {d.name: d for d in training.datasets}
    fashion, textures = budgets["fashion_mnist"], budgets["textures"]
    mnist = budgets.get("mnist5k", DatasetBudget("mnist5k", 16, 8, 8, epochs=1))
    size = training.image_size
    holds = (
        ("textures", textures, size),
        ("mnist5k", mnist, size),
        (f"fashion_mnist {2 * size} px", fashion, 2 * size),
    )
    return FrontierSettings(mode, training, fashion, holds=holds)


SETTINGS = {mode: _settings(mode) for mode in ("default", "smoke")}


def pairs(settings: FrontierSettings) -> list[tuple[float | None, str, str, dict, dict]]:
    """``(target, method, baseline, method options, baseline options)`` per point of the plot;
    target ``None`` is the dense pair (natural LoRSP vs unpruned LoR-VP)."""
    out = [(None, DENSE_METHOD, DENSE_BASELINE, {}, {})]
    for target in settings.targets:
        options = {"target_sparsity": target}
        out.append((target, METHOD, BASELINE, options, options))
    return out


def jobs(settings: FrontierSettings, runs_dir: Path) -> list[dict[str, Any]]:
    """One training job per (pair, side, seed), tagged with its target and side."""
    return [
        make_job(
            settings.training,
            settings.dataset,
            prompter,
            seed,
            runs_dir,
            options=options,
            labels={"target": target, "side": side},
        )
        for seed in settings.training.seeds
        for target, method, baseline, m_opts, b_opts in pairs(settings)
        for side, prompter, options in (("method", method, m_opts), ("baseline", baseline, b_opts))
    ]


def hold_jobs(settings: FrontierSettings, runs_dir: Path) -> list[dict[str, Any]]:
    """Both methods at :data:`HOLD_TARGET` on each hold-out check, first seed."""
    seed = settings.training.seeds[0]
    options = {"target_sparsity": HOLD_TARGET}
    return [
        make_job(
            replace(settings.training, image_size=size),
            budget,
            prompter,
            seed,
            runs_dir,
            options=options,
            labels={"hold": name, "side": side, "target": HOLD_TARGET},
        )
        for name, budget, size in settings.holds
        for side, prompter in (("method", METHOD), ("baseline", BASELINE))
    ]


def summarise_holds(runs: list[dict], settings: FrontierSettings) -> list[dict[str, Any]]:
    """Per hold-out check: test accuracy and sparsity reached by each method."""
    out = []
    for name, budget, size in settings.holds:
        row = {"check": name, "dataset": budget.name, "image_size": size, "target": HOLD_TARGET}
        for side in ("method", "baseline"):
            done = [r for r in runs if r.get("hold") == name and r["side"] == side]
            ok = [r for r in done if "error" not in r]
            row[side] = ok[0]["prompter"] if ok else None
            row[f"{side}_test_accuracy"] = ok[0]["test_accuracy"] if ok else None
            row[f"{side}_prompt_sparsity"] = ok[0]["prompt_sparsity"] if ok else None
        out.append(row)
    return out


def _side(runs: list[dict], target: float | None, side: str) -> dict[int, dict]:
    return {
        r["seed"]: r
        for r in runs
        if "hold" not in r and r["target"] == target and r["side"] == side and "error" not in r
    }


def summarise(runs: list[dict], settings: FrontierSettings) -> list[dict[str, Any]]:
    """One point per (target, side) and the paired difference per target."""
    points = []
    for target, method, baseline, _, _ in pairs(settings):
        sides = {s: _side(runs, target, s) for s in ("method", "baseline")}
        point = {"target_sparsity": target, "method": method, "baseline": baseline}
        for side, by_seed in sides.items():
            acc = [by_seed[s]["test_accuracy"] for s in sorted(by_seed)]
            sparsity = [by_seed[s]["prompt_sparsity"] for s in sorted(by_seed)]
            acc_mean, acc_std = mean_std(acc)
            sp_mean, sp_std = mean_std(sparsity)
            point[f"{side}_result"] = {
                "seeds": sorted(by_seed),
                "test_accuracy_per_seed": acc,
                "test_accuracy_mean": acc_mean,
                "test_accuracy_std": acc_std,
                "val_accuracy_mean": mean_std(by_seed[s]["val_accuracy"] for s in by_seed)[0],
                "prompt_sparsity_per_seed": sparsity,
                "prompt_sparsity_mean": sp_mean,
                "prompt_sparsity_std": sp_std,
                "tunable_params": next((r["prompt_params"] for r in by_seed.values()), None),
            }
        paired = paired_difference(
            *({s: r["test_accuracy"] for s, r in sides[side].items()} for side in sides)
        )
        if paired:
            point["paired"] = paired
        points.append(point)
    return points


def build_report(settings: FrontierSettings, runs: list[dict], wall: float, started: str) -> dict:
    return {
        "benchmark": "frontier",
        "schema_version": SCHEMA_VERSION,
        "created": started,
        "machine": machine_info(),
        "settings": {
            "mode": settings.mode,
            "targets": list(settings.targets),
            "hold_target": HOLD_TARGET,
            "method": METHOD,
            "baseline": BASELINE,
            "dataset": asdict(settings.dataset),
            "training": {k: v for k, v in asdict(settings.training).items() if k != "datasets"},
        },
        "runs": sorted(
            runs, key=lambda r: (r.get("hold", ""), str(r["target"]), r["side"], r["seed"])
        ),
        "points": summarise(runs, settings),
        "holds": summarise_holds(runs, settings),
        "failures": [r for r in runs if "error" in r],
        "wall_seconds": wall,
        "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in runs),
    }


def run_frontier(
    settings: FrontierSettings, runs_dir: Path, json_path: Path | None, *, log=print
) -> dict[str, Any]:
    """Train (or reuse) every run of the frontier; write the JSON after each one."""
    started, started_at = time.perf_counter(), now_iso()
    todo = jobs(settings, runs_dir) + hold_jobs(settings, runs_dir)
    runs: list[dict] = []

    def finished(entry: dict) -> None:
        runs.append(entry)
        if json_path is not None:
            report = build_report(settings, runs, time.perf_counter() - started, started_at)
            write_report(json_path, report)
        what = f"{entry.get('hold', entry['dataset'])} {entry['prompter']} s*={entry['target']}"
        what += f" seed {entry['seed']}"
        if "error" in entry:
            log(f"[{len(runs)}/{len(todo)}] {what}: FAILED: {entry['error']}")
        else:
            log(
                f"[{len(runs)}/{len(todo)}] {what}: test {entry['test_accuracy']:.4f}, sparsity "
                f"{entry['prompt_sparsity']:.3f}{' (reused)' if entry['reused'] else ''}"
            )

    run_jobs(todo, settings.training.jobs, finished)
    report = build_report(settings, runs, time.perf_counter() - started, started_at)
    if json_path is not None:
        write_report(json_path, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="seconds, for tests")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the accuracy table's)")
    p.add_argument(
        "--targets", type=float, nargs="+", help=f"target sparsities (default {TARGETS})"
    )
    p.add_argument("--jobs", type=int, help="training processes side by side")
    p.add_argument("--no-holds", action="store_true", help="skip the hold-out checks")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR / "accuracy")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "frontier.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = SETTINGS["smoke" if args.smoke else "default"]
    training = settings.training
    if args.seeds:
        training = replace(training, seeds=tuple(args.seeds))
    if args.jobs:
        training = replace(training, jobs=args.jobs)
    try:
        settings = replace(
            settings,
            training=training,
            targets=tuple(args.targets or settings.targets),
            holds=() if args.no_holds else settings.holds,
        )
        report = run_frontier(settings, args.runs_dir, args.json)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for point in report["points"]:
        paired = point.get("paired")
        if paired:
            low, high = paired["ci95"]
            print(
                f"s*={point['target_sparsity']}: {point['method']} − {point['baseline']} = "
                f"{100 * paired['mean']:+.2f} points (95 % CI {100 * low:+.2f} … {100 * high:+.2f}; "
                f"{paired['wins']}/{len(paired['differences'])} seeds): {paired['verdict']}"
            )
    for hold in report["holds"]:
        print(
            f"hold {hold['check']} (s*={hold['target']}): {hold['method']} sparsity "
            f"{hold['method_prompt_sparsity']}, test {hold['method_test_accuracy']}; "
            f"{hold['baseline']} test {hold['baseline_test_accuracy']}"
        )
    print(f"wrote {args.json}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
