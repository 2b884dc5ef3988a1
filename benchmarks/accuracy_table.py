"""Accuracy table: the prompters on two offline datasets through frozen EfficientNet-Lite0.

``linear_probe``, ``vp_pad``, ``full_dense``, ``lor_vp``, ``lorsp_ann`` and ``lorsp`` (v2) are
trained with the same backbone, head, data, budget, learning rates and seeds
(``lorsp_neuro.training``); ``--prompters lorsp_v1`` adds the v1 design. Per (dataset, prompter) the table gives the test accuracy of the
checkpoint best on validation (mean ± sample std over the seeds), tunable parameters, prompt
sparsity and, from the trained spiking checkpoints' recorded spikes, SynOps and energy per image
under the Loihi profile next to the ANN twin's MAC energy (``hardware_sims``). The budget is printed and stored with the JSON.

The default head is ``flm`` (frozen frequency label mapping): the prompt is then the only thing
that learns, which is where prompters differ; with a trainable linear probe every prompt stays
within noise of the plain probe at a CPU budget (DESIGN.md, prototype lessons). ``--head lp``
runs the other setting.

Settings: the default fits 60 minutes on 2 CPU cores (two training processes of one thread);
``--full`` is for a GPU host (224 px, more data and seeds); ``--smoke`` is seconds, for tests.
Flags override single settings of the chosen mode (``--batch-size``, ``--lr``, ``--epochs`` …,
the split sizes and epochs for every dataset of the table) and prompter options
(``--prompter-opt rank=8``, for every prompter of the table). Finished runs are kept in
``benchmarks/runs/accuracy/`` (a directory per run, named by a hash of its config, options
included) and reused by a rerun with the same settings; ``--fresh`` retrains everything.

    .venv/bin/python -m benchmarks.accuracy_table                 # ~ 15–45 min on 2 cores
    .venv/bin/python -m benchmarks.accuracy_table --full          # GPU host
    .venv/bin/python -m benchmarks.accuracy_table --smoke --json /tmp/acc.json
    # The budget of docs/training.md's v1 comparison (seed 0, 1,000 steps of 16), one JSON per head:
    .venv/bin/python -m benchmarks.accuracy_table --datasets fashion_mnist --seeds 0 --batch-size 16 --head lp --json /tmp/acc_lp.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.bench_common import (
    PROMPTERS,
    REPO,
    RESULTS_DIR,
    RUNS_DIR,
    SCHEMA_VERSION,
    TABLE_PROMPTERS,
    BenchmarkError,
    machine_info,
    mean_std,
    now_iso,
    paired_difference,
    render_accuracy,
    split_variant,
    write_report,
)
from lorsp_app.train_commands import parse_option
from lorsp_neuro.errors import LorspError
from lorsp_neuro.io import json_ready
from lorsp_neuro.run_config import HEADLINE_FIELDS

ENERGY_PROFILE = "loihi"
#: Prompters costed from their recorded spikes, and ANN twins costed in MACs.
SPIKING = ("lorsp", "lorsp_v1")
ANN_TWINS = ("lorsp_ann", "lorsp_v1_ann")
#: ANN-twin layers that run on the host (pooling, the prompt's readout), not on the chip.
HOST_LAYERS = ("descriptor_pool", "value_readout", "prompt_combine")


@dataclass(frozen=True)
class DatasetBudget:
    """One dataset of the table and its training budget (split sizes in images)."""

    name: str
    train_size: int
    val_size: int
    test_size: int
    epochs: int
    options: dict[str, Any] = field(default_factory=dict)
    #: A secondary dataset: rendered apart with ``note``, never given the paired seeds.
    secondary: bool = False
    note: str = ""

    def steps(self, batch_size: int) -> int:
        return math.ceil(self.train_size / batch_size) * self.epochs


@dataclass(frozen=True)
class Settings:
    """Everything shared by the runs of one table."""

    mode: str
    datasets: tuple[DatasetBudget, ...]
    seeds: tuple[int, ...]
    prompters: tuple[str, ...] = TABLE_PROMPTERS
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    head: str = "flm"
    image_size: int = 32
    batch_size: int = 32
    eval_batch_size: int = 250
    lr: float = 1e-3
    prompt_lr: float = 1e-2
    head_lr: float = 1e-2
    energy_images: int = 100
    device: str = "cpu"
    num_threads: int | None = 1
    jobs: int = 2
    #: Prompter options changed from the registry defaults, for every run of the table.
    prompter_options: dict[str, Any] = field(default_factory=dict)
    #: ``(method, baseline)`` rows compared seed by seed (paired differences, 95 % interval).
    comparisons: tuple[tuple[str, str], ...] = (("lorsp", "lor_vp"),)
    #: Extra seeds for the rows of ``comparisons`` (primary datasets only): the paired
    #: statistics get ``seeds + paired_seeds``, the other rows ``seeds``.
    paired_seeds: tuple[int, ...] = ()
    #: What the table is, for its heading in the README (the mode's name when empty).
    title: str = ""

    def __post_init__(self):
        if not self.seeds:
            raise BenchmarkError("Settings.seeds: at least one seed is needed")
        for label in self.prompters:
            split_variant(label)  # an unknown prompter or a malformed option names the row
        for pair in self.comparisons:
            missing = [label for label in pair if label not in self.prompters]
            if missing:
                raise BenchmarkError(
                    f"Settings.comparisons {pair}: {missing} not among the rows {self.prompters}"
                )
        for budget in self.datasets:
            if self.energy_images > budget.test_size:
                raise BenchmarkError(
                    f"Settings.energy_images={self.energy_images} exceeds the {budget.test_size} "
                    f"test images of {budget.name}"
                )
        if self.jobs < 1:
            raise BenchmarkError(f"Settings.jobs must be >= 1, got {self.jobs}")

    def compared_rows(self) -> set[str]:
        return {label for pair in self.comparisons for label in pair}

    def row_seeds(self, label: str, budget: DatasetBudget) -> tuple[int, ...]:
        """The seeds row ``label`` trains on ``budget``: the paired seeds too for a compared row
        of a primary dataset."""
        if label in self.compared_rows() and not budget.secondary:
            return tuple(dict.fromkeys(self.seeds + self.paired_seeds))
        return self.seeds


# Texture patches of 32 px: 3 × 256 = 768 images, all of them used (no official test split).
_TEXTURES_32 = {"patch_size": 32}
TEXTURES_NOTE = (
    "Secondary: 192 test images of 3 classes (every 32 px patch of the three 512 px textures is "
    "used), so one image is 0.5 points and the seed spread (several points) exceeds the gaps "
    "between methods; a sanity check, not a ranking."
)
#: The headline datasets: prompting matters on both, ≥ 2,000 test images resolve differences
#: of about a point; the same number of optimizer steps (500 of 32) on each.
FASHION_MNIST = DatasetBudget(
    "fashion_mnist", train_size=4000, val_size=500, test_size=2000, epochs=4
)
MNIST5K = DatasetBudget("mnist5k", train_size=2500, val_size=500, test_size=2000, epochs=6)
TEXTURES = DatasetBudget(
    "textures", 512, 64, 192, epochs=12, options=_TEXTURES_32, secondary=True, note=TEXTURES_NOTE
)
HEADLINE_SEEDS, PAIRED_SEEDS = (0, 1, 2), (3, 4)

SETTINGS: dict[str, Settings] = {
    # make bench (≤ 60 min on 2 cores with the other stages; measured: docs/benchmarks.md).
    "default": Settings(
        mode="default",
        title="Headline: EfficientNet-Lite0, 32 px, frozen label mapping",
        datasets=(FASHION_MNIST, MNIST5K, TEXTURES),
        seeds=HEADLINE_SEEDS,
        paired_seeds=PAIRED_SEEDS,
    ),
    # make bench: the leading methods with the second frozen head (label mapping refitted
    # every epoch).
    "ilm": Settings(
        mode="ilm",
        title="Second head: iterative label mapping (`ilm`), the leading methods",
        datasets=(FASHION_MNIST, MNIST5K),
        seeds=HEADLINE_SEEDS,
        prompters=("lor_vp", "lorsp"),
        head="ilm",
    ),
    # make bench-full: twice the resolution (Lite0's last feature map 2×2 instead of 1×1),
    # the grid option, and the sparse pair at s* = 0.9.
    "64px": Settings(
        mode="64px",
        title="Resolution: 64 px",
        datasets=(FASHION_MNIST,),
        seeds=HEADLINE_SEEDS,
        image_size=64,
        prompters=(
            "linear_probe",
            "lor_vp",
            "lor_vp_pruned@target_sparsity=0.9",
            "lorsp",
            "lorsp@target_sparsity=0.9",
            "lorsp@grid=8",
        ),
        comparisons=(
            ("lorsp", "lor_vp"),
            ("lorsp@grid=8", "lor_vp"),
            ("lorsp@target_sparsity=0.9", "lor_vp_pruned@target_sparsity=0.9"),
        ),
    ),
    # make bench-full: the backbone's native resolution once, on a small step budget.
    "224px": Settings(
        mode="224px",
        title="Native resolution: 224 px, one seed, a small budget",
        datasets=(DatasetBudget("fashion_mnist", 1000, 250, 1000, epochs=2),),
        seeds=(0,),
        image_size=224,
        batch_size=16,
        eval_batch_size=50,
        energy_images=8,
        prompters=("lor_vp", "lorsp"),
    ),
    # make bench-full: the headline comparison through a second, larger network.
    "lite2": Settings(
        mode="lite2",
        title="Second backbone: EfficientNet-Lite2 (ImageNet weights, offline), 32 px",
        datasets=(FASHION_MNIST, MNIST5K),
        seeds=HEADLINE_SEEDS,
        paired_seeds=PAIRED_SEEDS,
        backbone="efficientnet_lite2",
        prompters=("linear_probe", "lor_vp", "lorsp"),
    ),
    # A GPU host: the backbone's native 224 px, ten times the images, five seeds.
    "full": Settings(
        mode="full",
        title="GPU host: 224 px",
        datasets=(
            DatasetBudget("fashion_mnist", 40000, 5000, 10000, epochs=10),
            DatasetBudget("mnist5k", 2500, 500, 2000, epochs=20),
            replace(TEXTURES, epochs=40),
        ),
        seeds=(0, 1, 2, 3, 4),
        image_size=224,
        batch_size=64,
        energy_images=192,
        device="auto",
        num_threads=None,
        jobs=1,
    ),
    # Seconds: exercises every code path (training, energy, aggregation, JSON) for the tests.
    "smoke": Settings(
        mode="smoke",
        datasets=(
            DatasetBudget("fashion_mnist", 16, 8, 8, epochs=1),
            DatasetBudget(
                "textures", 16, 8, 8, epochs=1, options=_TEXTURES_32, secondary=True, note="smoke"
            ),
        ),
        seeds=(0, 1),
        image_size=16,
        batch_size=8,
        energy_images=2,
        jobs=1,
    ),
}
#: The tables ``--table`` selects (``full`` and ``smoke`` have their own flags).
TABLES = tuple(name for name in SETTINGS if name not in ("full", "smoke"))

#: Summary fields copied into every run entry of the JSON.
SUMMARY_FIELDS = HEADLINE_FIELDS
#: Config fields that do not change a run's result (not part of its identity).
INCIDENTAL = ("out", "num_threads", "progress", "device")
#: :class:`Settings` fields a flag of the same name overrides (``--batch-size 16``).
SETTING_FLAGS = (
    "backbone",
    "image_size",
    "batch_size",
    "lr",
    "prompt_lr",
    "head_lr",
    "num_threads",
)
#: :class:`DatasetBudget` fields a flag overrides for every dataset of the table.
BUDGET_FLAGS = ("train_size", "val_size", "test_size", "epochs")


# --------------------------------------------------------------------------------------------
# Runs


def resolved_prompter_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every option of prompter ``name``, ``options`` over its registry defaults, as
    ``config.json`` stores it; an unknown option or a bad value is a ``ConfigError`` naming it.

    Part of a run's identity: when a default changes (say LoRSP's ``alpha_lr_scale``), older run
    directories no longer match and are not reused.
    """
    from lorsp_neuro.config_checks import build_config
    from lorsp_neuro.prompters import prompter_class

    config = build_config(prompter_class(name).Config, f"prompter {name!r}", dict(options or {}))
    return json_ready(asdict(config))  # tuples as lists, as in config.json


def run_config(
    settings: Settings,
    budget: DatasetBudget,
    prompter: str,
    seed: int,
    options: dict[str, Any] | None = None,
) -> dict:
    """The ``TrainConfig`` fields of one run (without ``out``); ``options`` override the
    settings' prompter options, which override the registry defaults."""
    return {
        "prompter": prompter,
        "prompter_options": resolved_prompter_options(
            prompter, {**settings.prompter_options, **(options or {})}
        ),
        "backbone": settings.backbone,
        "pretrained": settings.pretrained,
        "head": settings.head,
        "dataset": budget.name,
        "dataset_options": dict(budget.options),
        "train_size": budget.train_size,
        "val_size": budget.val_size,
        "test_size": budget.test_size,
        "image_size": settings.image_size,
        "epochs": budget.epochs,
        "batch_size": settings.batch_size,
        "eval_batch_size": settings.eval_batch_size,
        "lr": settings.lr,
        "prompt_lr": settings.prompt_lr,
        "head_lr": settings.head_lr,
        "seed": seed,
        "device": settings.device,
        "num_threads": settings.num_threads,
        "progress": False,
    }


def config_digest(config: dict) -> str:
    """Eight hex digits identifying everything that changes a run's result."""
    identity = {k: v for k, v in config.items() if k not in INCIDENTAL}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def run_directory(runs_dir: Path, config: dict) -> Path:
    return (
        runs_dir
        / config["dataset"]
        / f"{config['prompter']}-seed{config['seed']}-{config_digest(config)}"
    )


def lorsp_energy(run_dir: Path, images: int) -> dict[str, Any]:
    """SynOps and energy per image of a trained ``lorsp`` run, from Norse spikes on ``images``
    test images (the hardware_sims cost model; SNN and ANN twin under the Loihi profile)."""
    from hardware_sims.estimate import estimate_energy

    # The table compares prompters on one backbone: its MACs are the same in every row.
    estimate = estimate_energy(run_dir, images, (ENERGY_PROFILE,), backbone=False)
    report = estimate.reports[ENERGY_PROFILE]
    return {
        "energy_images": estimate.images,
        "synops_per_image": report.synops_per_image,
        "binary_synops_per_image": report.binary_synops_per_image,
        "graded_synops_per_image": report.graded_synops_per_image,
        "neuron_updates_per_image": report.neuron_updates_per_image,
        "spikes_per_image": report.spikes_per_image,
        "energy_per_image_pj": report.energy_per_image_pj,
        "energy_breakdown_pj": report.energy_breakdown_pj,
        "ann_twin_macs_per_image": report.ann_twin_macs_per_image,
        "ann_twin_energy_per_image_pj": report.ann_twin_energy_pj,
        "snn_over_ann_energy": report.snn_over_ann_energy,
    }


def ann_twin_energy(prompter: str, prompter_options: dict, image_size: int) -> dict[str, Any]:
    """MACs and energy per image of an ANN twin under the Loihi profile's CMOS MAC figure.

    A dense layer does not skip zeros, so the count depends on the architecture only
    (``mac_count()`` of the twin); the host's pooling and prompt readout are counted apart.
    """
    from hardware_sims.energy import ann_energy_pj, get_profile
    from lorsp_neuro.prompters import create_prompter

    macs = create_prompter(prompter, image_size, **prompter_options).mac_count()
    host = sum(macs.pop(layer) for layer in HOST_LAYERS if layer in macs)
    chip = sum(macs.values())
    return {
        "ann_twin_macs_per_image": float(chip),
        "ann_twin_host_macs_per_image": float(host),
        "ann_twin_energy_per_image_pj": ann_energy_pj(
            float(chip), float(host), get_profile(ENERGY_PROFILE)
        ),
    }


def make_job(
    settings: Settings,
    budget: DatasetBudget,
    prompter: str,
    seed: int,
    runs_dir: Path,
    *,
    options: dict[str, Any] | None = None,
    energy_images: int = 0,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One job for :func:`run_one`: the run's config, its directory (named by the config), how
    many test images to cost its energy on (0: none), and labels copied into its entry.

    ``prompter`` is a table row's label (``"lorsp@grid=8"``, see
    :func:`~benchmarks.bench_common.split_variant`); ``options`` override the label's. The
    entry's ``row`` is the label."""
    name, row_options = split_variant(prompter)
    config = run_config(settings, budget, name, seed, {**row_options, **(options or {})})
    return {
        "config": config,
        "out": str(run_directory(runs_dir, config)),
        "energy_images": energy_images,
        "labels": {"row": prompter, **(labels or {})},
    }


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) one run and measure it; a failure is reported, not raised."""
    from lorsp_neuro.runs import SUMMARY_FILE, read_summary
    from lorsp_neuro.training import train

    config, run_dir = job["config"], Path(job["out"])
    entry = {k: config[k] for k in ("dataset", "prompter", "seed", "prompter_options")}
    entry.update(job["labels"])  # what a caller tagged the job with (frontier: target)
    entry["run_dir"] = str(run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        entry["reused"] = (run_dir / SUMMARY_FILE).is_file()
        if entry["reused"]:
            summary = read_summary(run_dir)
        else:
            summary = train({**config, "out": str(run_dir)}, resume=True)
        entry.update({k: summary.get(k) for k in SUMMARY_FIELDS})
        entry["budget"] = summary["budget"]
        if job["energy_images"] and config["prompter"] in SPIKING:
            entry.update(lorsp_energy(run_dir, job["energy_images"]))
        elif job["energy_images"] and config["prompter"] in ANN_TWINS:
            entry.update(
                ann_twin_energy(
                    config["prompter"],
                    config["prompter_options"],
                    summary["budget"]["image_size"],
                )
            )
    except LorspError as exc:
        entry["error"] = str(exc)
    entry["wall_seconds"] = time.perf_counter() - started
    # CPU time of this process (all its threads): what the run costs on an idle machine.
    entry["cpu_seconds"] = time.process_time() - cpu_started
    return entry


# --------------------------------------------------------------------------------------------
# Aggregation


def aggregate(runs: list[dict], settings: Settings) -> list[dict]:
    """One row per (dataset, prompter) over the seeds that finished, in table order."""
    rows = []
    for budget in settings.datasets:
        for prompter in settings.prompters:
            done = [
                r
                for r in runs
                if r["dataset"] == budget.name
                and r.get("row", r["prompter"]) == prompter
                and "error" not in r
            ]
            if not done:
                continue
            params = {(r["tunable_params"], r["prompt_params"], r["head_params"]) for r in done}
            if len(params) != 1:
                raise BenchmarkError(
                    f"{budget.name}/{prompter}: tunable parameters differ between seeds {params}"
                )
            acc_mean, acc_std = mean_std(r["test_accuracy"] for r in done)
            val_mean, val_std = mean_std(r["val_accuracy"] for r in done)
            sparsity_mean, sparsity_std = mean_std(r["prompt_sparsity"] for r in done)
            synops, _ = mean_std(r.get("synops_per_image") for r in done)
            energy, energy_std = mean_std(r.get("energy_per_image_pj") for r in done)
            ann_energy, _ = mean_std(r.get("ann_twin_energy_per_image_pj") for r in done)
            ann_macs, _ = mean_std(r.get("ann_twin_macs_per_image") for r in done)
            ratio, _ = mean_std(r.get("snn_over_ann_energy") for r in done)
            distinct, _ = mean_std(r["distinct_prompts"] for r in done)
            train_s, _ = mean_std(r["train_seconds"] for r in done)
            tunable, prompt_params, head_params = params.pop()
            rows.append(
                {
                    "dataset": budget.name,
                    "prompter": prompter,
                    "seeds": len(done),
                    "seed_list": sorted(r["seed"] for r in done),
                    "test_accuracy_mean": acc_mean,
                    "test_accuracy_std": acc_std,
                    "test_accuracy_per_seed": [r["test_accuracy"] for r in done],
                    "val_accuracy_mean": val_mean,
                    "val_accuracy_std": val_std,
                    "tunable_params": tunable,
                    "prompt_params": prompt_params,
                    "head_params": head_params,
                    "prompt_sparsity_mean": sparsity_mean,
                    "prompt_sparsity_std": sparsity_std,
                    "distinct_prompts_mean": distinct,
                    "synops_per_image": synops,
                    "energy_per_image_pj": energy,
                    "energy_per_image_pj_std": energy_std,
                    "ann_twin_macs_per_image": ann_macs,
                    "ann_twin_energy_per_image_pj": ann_energy,
                    "snn_over_ann_energy": ratio,
                    "train_seconds_mean": train_s,
                }
            )
    return rows


def paired_comparisons(runs: list[dict], settings: Settings) -> list[dict]:
    """Per primary dataset and ``(method, baseline)`` of :attr:`Settings.comparisons`: test
    accuracy ``method − baseline`` seed by seed, its mean, 95 % t-interval and verdict."""
    out = []
    for budget in settings.datasets:
        if budget.secondary:
            continue
        for method, baseline in settings.comparisons:
            accuracy = [
                {
                    r["seed"]: r["test_accuracy"]
                    for r in runs
                    if r["dataset"] == budget.name
                    and r.get("row", r["prompter"]) == label
                    and "error" not in r
                }
                for label in (method, baseline)
            ]
            paired = paired_difference(*accuracy)
            if paired:
                out.append(
                    {"dataset": budget.name, "method": method, "baseline": baseline, **paired}
                )
    return out


def dataset_budgets(runs: list[dict], settings: Settings) -> dict[str, dict]:
    """The budget each dataset actually ran with (from a finished run's summary), by name."""
    out = {}
    for budget in settings.datasets:
        ran = next(
            (r["budget"] for r in runs if r["dataset"] == budget.name and "budget" in r), None
        )
        planned = {
            "train_size": budget.train_size,
            "val_size": budget.val_size,
            "test_size": budget.test_size,
            "image_size": settings.image_size,
            "epochs": budget.epochs,
            "batch_size": settings.batch_size,
            "steps": budget.steps(settings.batch_size),
        }
        info = {**planned, **(ran or {})}
        info["steps_per_epoch"] = info["steps"] // info["epochs"]
        info["train_images_seen"] = info.get("train_images_seen", budget.train_size * budget.epochs)
        out[budget.name] = {
            "budget": info,
            "options": dict(budget.options),
            "secondary": budget.secondary,
            "note": budget.note,
        }
    return out


# --------------------------------------------------------------------------------------------


def build_report(
    settings: Settings, runs: list[dict], wall: float, started_at: str
) -> dict[str, Any]:
    from hardware_sims.energy import get_profile

    order = {label: i for i, label in enumerate(settings.prompters)}
    runs = sorted(
        runs, key=lambda r: (r["dataset"], order.get(r.get("row"), len(order)), r["seed"])
    )
    return {
        "benchmark": "accuracy",
        "schema_version": SCHEMA_VERSION,
        "created": started_at,
        "machine": machine_info(),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k != "datasets"},
            "energy_profile": ENERGY_PROFILE,
        },
        "ann_twin_mac_pj": get_profile(ENERGY_PROFILE).mac_pj,
        "datasets": dataset_budgets(runs, settings),
        "runs": runs,
        "rows": aggregate(runs, settings),
        "paired": paired_comparisons(runs, settings),
        "failures": [r for r in runs if "error" in r],
        "all_runs_trained_in_this_call": not any(r.get("reused") for r in runs),
        "wall_seconds": wall,
        "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in runs),
    }


def run_jobs(jobs: list[dict[str, Any]], workers: int, finished) -> None:
    """:func:`run_one` for every job, ``workers`` at a time; ``finished(entry)`` as each ends."""
    if workers == 1:
        for job in jobs:
            finished(run_one(job))
        return
    # Spawned workers start without the parent's threads (fork after torch's OpenMP pool can
    # hang); one torch thread each, so two workers use two cores without contention.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_one, job) for job in jobs]
        for future in as_completed(futures):
            finished(future.result())


def run_benchmark(
    settings: Settings, runs_dir: Path, json_path: Path | None, *, log=print
) -> dict[str, Any]:
    """Train every (dataset, prompter, seed), write the JSON after each finished run."""
    started, started_at = time.perf_counter(), now_iso()
    jobs = [
        make_job(settings, budget, label, seed, runs_dir, energy_images=settings.energy_images)
        for budget in settings.datasets
        for label in settings.prompters
        for seed in settings.row_seeds(label, budget)
    ]
    # The slowest prompters first, so that two workers finish at about the same time.
    cost = {"lorsp_v1": 0, "lorsp": 1, "lorsp_ann": 1, "full_dense": 2, "lor_vp": 2, "vp_pad": 2}
    jobs.sort(
        key=lambda j: (
            cost.get(j["config"]["prompter"], 3),
            j["config"]["dataset"] != "fashion_mnist",
        )
    )
    runs: list[dict] = []

    def finished(entry: dict) -> None:
        runs.append(entry)
        if json_path is not None:
            write_report(
                json_path, build_report(settings, runs, time.perf_counter() - started, started_at)
            )
        what = f"{entry['dataset']}/{entry['row']}/seed {entry['seed']}"
        if "error" in entry:
            log(f"[{len(runs)}/{len(jobs)}] {what}: FAILED: {entry['error']}")
        else:
            took = "reused" if entry["reused"] else f"{entry['train_seconds']:.0f} s"
            log(
                f"[{len(runs)}/{len(jobs)}] {what}: test {entry['test_accuracy']:.4f}, {took} "
                f"(total {time.perf_counter() - started:.0f} s)"
            )

    run_jobs(jobs, settings.jobs, finished)
    report = build_report(settings, runs, time.perf_counter() - started, started_at)
    if json_path is not None:
        write_report(json_path, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--table",
        choices=TABLES,
        default="default",
        help="which table: the headline (default), ilm, 64px, 224px or lite2",
    )
    mode.add_argument("--full", action="store_true", help="larger settings for a GPU host")
    mode.add_argument("--smoke", action="store_true", help="seconds-long settings for tests")
    p.add_argument("--head", choices=("lp", "flm", "ilm"), help="head (default: the table's)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the table's)")
    p.add_argument(
        "--paired-seeds",
        type=int,
        nargs="*",
        help="extra seeds of the compared rows (default: the table's; none: no extra seeds)",
    )
    p.add_argument(
        "--prompters",
        nargs="+",
        metavar="ROW",
        help=f"table rows: prompters of {PROMPTERS}, optionally with options, e.g. lorsp@grid=8",
    )
    p.add_argument("--datasets", nargs="+", help="a subset of the datasets (by name)")
    p.add_argument("--jobs", type=int, help="training processes in parallel (default: 2 on CPU)")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR / "accuracy")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "accuracy.json")
    p.add_argument("--fresh", action="store_true", help="delete --runs-dir first (retrain all)")
    defaults = SETTINGS["default"]
    for name in SETTING_FLAGS:
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(getattr(defaults, name)),
            help=f"override the mode's {name} (default settings: {getattr(defaults, name)})",
        )
    for name in BUDGET_FLAGS:
        p.add_argument(
            f"--{name.replace('_', '-')}", type=int, help=f"override {name} of every dataset"
        )
    p.add_argument(
        "--prompter-opt",
        action="append",
        default=[],
        type=parse_option,
        metavar="KEY=VALUE",
        help="a prompter option for every prompter of the table (repeatable; select them with "
        "--prompters)",
    )
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = SETTINGS["full" if args.full else "smoke" if args.smoke else args.table]
    changes: dict[str, Any] = {}
    if args.head:
        changes["head"] = args.head
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.paired_seeds is not None:
        changes["paired_seeds"] = tuple(args.paired_seeds)
    if args.prompters:
        changes["prompters"] = tuple(dict.fromkeys(args.prompters))
        changes["comparisons"] = tuple(
            pair for pair in settings.comparisons if set(pair) <= set(args.prompters)
        )
    if args.jobs:
        changes["jobs"] = args.jobs
    if args.prompter_opt:
        changes["prompter_options"] = dict(args.prompter_opt)
    changes.update(
        {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    )
    datasets = settings.datasets
    if args.datasets:
        known = {b.name: b for b in datasets}
        unknown = sorted(set(args.datasets) - set(known))
        if unknown:
            raise BenchmarkError(f"--datasets: unknown {unknown}; this table has {sorted(known)}")
        datasets = tuple(b for name, b in known.items() if name in args.datasets)
    budget = {name: getattr(args, name) for name in BUDGET_FLAGS if getattr(args, name) is not None}
    changes["datasets"] = tuple(replace(b, **budget) for b in datasets)
    return replace(settings, **changes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        if args.fresh and args.runs_dir.exists():
            shutil.rmtree(args.runs_dir)
        for budget in settings.datasets:
            print(
                f"{budget.name}: {budget.train_size} train / {budget.val_size} val / "
                f"{budget.test_size} test at {settings.image_size} px, {budget.epochs} epochs, "
                f"{budget.steps(settings.batch_size)} steps of {settings.batch_size}; "
                f"{len(settings.prompters)} rows × {len(settings.seeds)} seeds"
                + (
                    f" (+{len(settings.paired_seeds)} for the compared rows)"
                    if settings.paired_seeds and not budget.secondary
                    else ""
                )
                + f", head {settings.head}",
                flush=True,
            )
        if settings.prompter_options:
            print(f"prompter options: {settings.prompter_options}", flush=True)
        report = run_benchmark(
            settings, args.runs_dir, args.json, log=lambda line: print(line, flush=True)
        )
    except LorspError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_accuracy(report))
    print(f"\nJSON: {args.json}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
