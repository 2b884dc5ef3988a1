"""Energy per image of trained LoRSP variants (T, per pixel or grid) against the ANN twin and the backbone.

Every variant is **trained** at its own setting (same data, budget and seed as the accuracy table;
runs shared through ``benchmarks/runs/accuracy/``), so its accuracy and its firing are what that
setting gives, not the default network run at another T. Per variant, from Norse spikes on test
images and the ``hardware_sims`` cost model (:func:`hardware_sims.energy_study.energy_study`):
SynOps, neuron updates and energy per image under every hardware profile, the ANN twin's MACs and
energy on the same profile, and the frozen backbone's own MACs and energy per image, so the
prompt's cost is seen next to the network it prompts.

    .venv/bin/python -m benchmarks.energy_table                 # ~ 10–20 min on 2 cores
    .venv/bin/python -m benchmarks.energy_table --smoke --json /tmp/energy.json
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
    REPO,
    RESULTS_DIR,
    RUNS_DIR,
    SCHEMA_VERSION,
    BenchmarkError,
    machine_info,
    now_iso,
    render_energy,
    write_report,
)
from lorsp_neuro.errors import LorspError

#: ``(grid, T)`` of every trained variant; ``(None, 4)`` is the default ``lorsp``.
VARIANTS = ((None, 2), (None, 4), (None, 8), (8, 2), (8, 4), (8, 8))


@dataclass(frozen=True)
class EnergySettings:
    mode: str
    training: Settings
    dataset: DatasetBudget
    variants: tuple[tuple[int | None, int], ...] = VARIANTS
    seed: int = 0
    energy_images: int = 100


def _settings(mode: str) -> EnergySettings:
    training = ACCURACY_SETTINGS[mode]
    fashion = next(d for d in training.datasets if d.name == "fashion_mnist")
    if mode == "smoke":
        return EnergySettings(
            mode, training, fashion, variants=((None, 2), (4, 2)), energy_images=2
        )
    return EnergySettings(mode, training, fashion, energy_images=training.energy_images)


SETTINGS = {mode: _settings(mode) for mode in ("default", "smoke")}


def variant_options(grid: int | None, steps: int) -> dict[str, Any]:
    """Prompter options of a variant; the default (per pixel, T = 4) adds none, so it is the
    accuracy table's own run."""
    defaults = {"grid": None, "steps": 4}
    return {k: v for k, v in {"grid": grid, "steps": steps}.items() if v != defaults[k]}


def jobs(settings: EnergySettings, runs_dir: Path) -> list[dict[str, Any]]:
    # Energy is measured after training (measure), for every profile: no energy images here.
    return [
        make_job(
            settings.training,
            settings.dataset,
            "lorsp",
            settings.seed,
            runs_dir,
            options=variant_options(grid, steps),
            labels={"grid": grid, "steps": steps},
        )
        for grid, steps in settings.variants
    ]


def measure(entry: dict[str, Any], images: int) -> dict[str, Any]:
    """The trained run's energy study (as trained: its own T and grid), JSON-ready."""
    from hardware_sims.energy_study import energy_study

    # The entry's run_dir is relative to the repository when inside it (portable JSON).
    study = energy_study(REPO / entry["run_dir"], images)
    (variant,) = study.variants
    return {
        "energy_images": study.images,
        "synops_per_image": variant.synops_per_image,
        "binary_synops_per_image": variant.binary_synops_per_image,
        "graded_synops_per_image": variant.graded_synops_per_image,
        "neuron_updates_per_image": variant.neuron_updates_per_image,
        "active_neuron_updates_per_image": variant.active_neuron_updates_per_image,
        "spikes_per_image": variant.spikes_per_image,
        "host_macs_per_image": variant.host_macs_per_image,
        "pixel_neurons": variant.pixel_neurons,
        "energy_per_image_pj": variant.energy_per_image_pj,
        "energy_breakdown_pj": variant.energy_breakdown_pj,
        "ann_twin_macs_per_image": variant.ann_twin_macs_per_image,
        "ann_twin_energy_pj": variant.ann_twin_energy_pj,
        "snn_over_ann_energy": variant.snn_over_ann_energy,
        "backbone": study.backbone,
        "backbone_macs_per_image": study.backbone_macs_per_image,
        "backbone_energy_pj": study.backbone_energy_pj,
        "profiles": study.profiles,
    }


def run_energy(settings: EnergySettings, runs_dir: Path, json_path: Path | None, log=print):
    started, started_at = time.perf_counter(), now_iso()
    todo = jobs(settings, runs_dir)
    runs: list[dict] = []

    def finished(entry: dict) -> None:
        if "error" not in entry:
            try:
                entry.update(measure(entry, settings.energy_images))
            except LorspError as exc:
                entry["error"] = str(exc)
        runs.append(entry)
        what = f"lorsp grid={entry['grid']} T={entry['steps']}"
        if "error" in entry:
            log(f"[{len(runs)}/{len(todo)}] {what}: FAILED: {entry['error']}")
        else:
            log(
                f"[{len(runs)}/{len(todo)}] {what}: test {entry['test_accuracy']:.4f}, "
                f"{entry['synops_per_image']:,.0f} SynOps/image, loihi "
                f"{entry['energy_per_image_pj'].get('loihi', float('nan')) / 1e3:,.1f} nJ"
            )

    run_jobs(todo, settings.training.jobs, finished)
    order = {variant: i for i, variant in enumerate(settings.variants)}
    runs.sort(key=lambda r: order[(r["grid"], r["steps"])])
    report = {
        "benchmark": "energy",
        "schema_version": SCHEMA_VERSION,
        "created": started_at,
        "machine": machine_info(),
        "settings": {
            "mode": settings.mode,
            "variants": [list(v) for v in settings.variants],
            "seed": settings.seed,
            "energy_images": settings.energy_images,
            "dataset": asdict(settings.dataset),
            "training": {k: v for k, v in asdict(settings.training).items() if k != "datasets"},
        },
        "rows": runs,
        "failures": [r for r in runs if "error" in r],
        "wall_seconds": time.perf_counter() - started,
    }
    if json_path is not None:
        write_report(json_path, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="seconds, for tests")
    p.add_argument("--jobs", type=int, help="training processes side by side")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR / "accuracy")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "energy.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = SETTINGS["smoke" if args.smoke else "default"]
    if args.jobs:
        settings = replace(settings, training=replace(settings.training, jobs=args.jobs))
    try:
        report = run_energy(settings, args.runs_dir, args.json)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_energy(report))
    print(f"JSON: {args.json}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
