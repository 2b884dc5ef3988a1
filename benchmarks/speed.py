"""Speed ratios, side by side in one run: training steps, spiking simulation, peak memory.

1. **Training step** (forward, loss, backward, AdamW step) of the same frozen backbone and linear
   probe on the same batch with four inputs: ``backbone`` (no prompt, but the input requires a
   gradient, so the backward pass runs through the backbone as it must for any prompt),
   ``lor_vp``, ``lorsp_ann`` and ``lorsp``. The methods are interleaved within every repetition
   (their order rotating), so a machine that slows down slows all of them; the median is kept.
   **Inference** (eval mode, no gradient: prompt + backbone + head) is timed the same way, so
   the spiking core's Norse inference is compared with LoR-VP's prompt + backbone.
2. **Simulation** of the trained-size spiking prompter (inference, T steps) per image at 32, 64,
   128 and 224 px: Norse (float32 torch, the training path) against Lava ``floating_pt`` through
   the worker, on real Fashion-MNIST test images. Per-image cost is the marginal one,
   ``(t(N images) − t(1 image)) / (N − 1)``, so fixed start-up is not spread over the images.
3. **Peak memory** of each: the process's peak RSS during each training step and each Norse
   run (Linux ``VmHWM``, reset before each through ``/proc/self/clear_refs``), with the RSS when
   it began; for Lava the peak RSS of the largest process of the run (``getrusage`` of the
   children of a small torch-free process that makes the worker call).

    .venv/bin/python -m benchmarks.speed                # about 5 minutes on 2 quiet cores
    .venv/bin/python -m benchmarks.speed --smoke --json /tmp/speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.bench_common import (
    REPO,
    RESULTS_DIR,
    SCHEMA_VERSION,
    BenchmarkError,
    RssPeakProbe,
    benchmark_command,
    loglog_slope,
    machine_info,
    median,
    now_iso,
    peak_rss_mib,
    render_speed,
    write_report,
)
from lorsp_neuro.errors import LorspError

#: Method name → prompter; ``backbone`` is the bare backbone (a gradient still flows to the input).
STEP_METHODS = {
    "backbone": "linear_probe",
    "lor_vp": "lor_vp",
    "lorsp_ann": "lorsp_ann",
    "lorsp": "lorsp",
}
NUM_CLASSES = 10


@dataclass(frozen=True)
class StepPoint:
    """One training-step measurement: image size, batch, repetitions after ``warmup``."""

    image_size: int
    batch_size: int
    reps: int
    warmup: int = 2


@dataclass(frozen=True)
class SpeedSettings:
    mode: str
    step_points: tuple[StepPoint, ...]
    sim_sizes: tuple[int, ...]
    sim_images: int
    norse_reps: int
    lava_reps: int
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    num_threads: int = 1
    lava_timeout_s: float = 900.0

    def __post_init__(self):
        if self.sim_images < 2:
            raise BenchmarkError("SpeedSettings.sim_images must be >= 2 (marginal cost per image)")


SETTINGS = {
    "default": SpeedSettings(
        mode="default",
        step_points=(StepPoint(32, 32, reps=15), StepPoint(224, 8, reps=5, warmup=1)),
        sim_sizes=(32, 64, 128, 224),
        sim_images=8,
        norse_reps=5,
        lava_reps=1,
    ),
    "smoke": SpeedSettings(
        mode="smoke",
        step_points=(StepPoint(16, 4, reps=2, warmup=1),),
        sim_sizes=(16,),
        sim_images=2,
        norse_reps=1,
        lava_reps=1,
    ),
}


# --------------------------------------------------------------------------------------------
# Training steps (shared with gpu_speed.py)


def build_step_models(
    backbone_name: str,
    image_size: int,
    *,
    pretrained: bool,
    device,
    methods=tuple(STEP_METHODS),
    channels_last: bool = True,
) -> dict[str, tuple[Any, Any]]:
    """``{method: (PromptedModel, AdamW)}`` sharing one frozen backbone, on ``device``."""
    import torch

    from lorsp_neuro.model import build_backbone, build_model
    from lorsp_neuro.run_config import TrainConfig

    base = TrainConfig(
        backbone=backbone_name,
        pretrained=pretrained,
        image_size=image_size,
        head="lp",
        channels_last=channels_last,
    )
    torch.manual_seed(0)
    backbone = build_backbone(base)
    out = {}
    for name in methods:
        model = build_model(base.replace(prompter=STEP_METHODS[name]), NUM_CLASSES, backbone)
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        out[name] = (model, torch.optim.AdamW(params, lr=1e-3))
    return out


def make_step(model, optimizer, x, y, *, amp: bool = False) -> Callable[[], float]:
    """A closure running one training step on ``(x, y)``; returns the loss.

    The input requires a gradient, so the backward pass always reaches the image: the bare
    backbone pays what any prompt's gradient costs, and a prompter adds only its own part.
    """
    import torch
    import torch.nn.functional as F

    device_type = x.device.type
    scaler = torch.amp.GradScaler(device_type, enabled=amp)

    def step() -> float:
        inputs = x.detach().requires_grad_(True)
        with torch.autocast(device_type, dtype=torch.float16, enabled=amp):
            logits, output = model(inputs)
        loss = F.cross_entropy(logits.float(), y)
        if "reg_loss" in output.stats:
            loss = loss + output.stats["reg_loss"].float()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    return step


def make_inference(model, x) -> Callable[[], None]:
    """A closure running the model on ``x`` in eval mode without autograd (prompt + backbone)."""
    import torch

    def infer() -> None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)

    return infer


def time_interleaved(
    steps: dict[str, Callable[[], Any]],
    reps: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    probe=None,
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Seconds of each step function per repetition, all functions inside every repetition.

    Repetition ``i`` runs the functions in an order rotated by ``i``, so no method always runs
    first (after an idle pause) or last. The first ``warmup`` repetitions are not kept. With a
    ``probe`` (``start() -> MiB at start``, ``stop() -> peak MiB since start``, called outside
    the timed region) the second result holds each function's largest peak and the smallest
    starting level over the kept repetitions.
    """
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    memory: dict[str, dict[str, float]] = {}
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            level = probe.start() if probe is not None else None
            sync()
            started = time.perf_counter()
            steps[name]()
            sync()
            elapsed = time.perf_counter() - started
            if rep < warmup:
                continue
            times[name].append(elapsed)
            if probe is not None:
                peak = probe.stop()
                seen = memory.setdefault(name, {"peak_memory_mib": peak, "start_memory_mib": level})
                seen["peak_memory_mib"] = max(seen["peak_memory_mib"], peak)
                seen["start_memory_mib"] = min(seen["start_memory_mib"], level)
    return times, memory


def step_ratios(medians: dict[str, float]) -> dict[str, float]:
    """``lorsp / backbone``, ``lor_vp / backbone``, ``lorsp / lor_vp`` (and the ANN twin's)."""
    ratios = {
        "lorsp_over_backbone": medians["lorsp"] / medians["backbone"],
        "lor_vp_over_backbone": medians["lor_vp"] / medians["backbone"],
        "lorsp_over_lor_vp": medians["lorsp"] / medians["lor_vp"],
    }
    if "lorsp_ann" in medians:
        ratios["lorsp_ann_over_backbone"] = medians["lorsp_ann"] / medians["backbone"]
        ratios["lorsp_over_lorsp_ann"] = medians["lorsp"] / medians["lorsp_ann"]
    return ratios


def random_batch(batch_size: int, image_size: int, device, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 3, image_size, image_size, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return x.to(device), y.to(device)


def measure_steps(settings: SpeedSettings, point: StepPoint, log=print) -> dict[str, Any]:
    """Interleaved step times of every method at one (image size, batch) point, on the CPU."""
    import torch

    torch.set_num_threads(settings.num_threads)
    device = torch.device("cpu")
    models = build_step_models(
        settings.backbone, point.image_size, pretrained=settings.pretrained, device=device
    )
    x, y = random_batch(point.batch_size, point.image_size, device)
    steps = {name: make_step(model, opt, x, y) for name, (model, opt) in models.items()}
    probe = RssPeakProbe()
    times, memory = time_interleaved(steps, point.reps, point.warmup, probe=probe)
    medians = {name: median(ts) for name, ts in times.items()}
    inference_times, _ = time_interleaved(
        {name: make_inference(model, x) for name, (model, _) in models.items()},
        point.reps,
        point.warmup,
    )
    inference = {name: median(ts) for name, ts in inference_times.items()}
    methods = {
        name: {
            "prompter": STEP_METHODS[name],
            "median_s": medians[name],
            "times_s": times[name],
            "tunable_params": models[name][0].prompter.num_tunable_parameters(),
            **memory[name],
            "memory_kind": "process peak RSS during the step"
            if probe.resettable
            else "process lifetime peak RSS (no per-step reset on this OS)",
        }
        for name in times
    }
    log(
        f"steps at {point.image_size} px, batch {point.batch_size}: "
        + ", ".join(f"{n} {m * 1e3:.1f} ms" for n, m in medians.items())
    )
    return {
        "image_size": point.image_size,
        "batch_size": point.batch_size,
        "reps": point.reps,
        "warmup": point.warmup,
        "methods": methods,
        "ratios": step_ratios(medians),
        "inference_s": inference,
        "inference_ratios": step_ratios(inference),
    }


# --------------------------------------------------------------------------------------------
# Child processes: one measurement each, so that each peak RSS is its own


def _child(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run ``benchmarks.speed <argv>`` in a fresh interpreter; its last stdout line is a JSON
    object."""
    command = benchmark_command("speed", *argv)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(
            f"benchmarks.speed {' '.join(argv)}: timed out after {timeout:g} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchmarkError(
            f"benchmarks.speed {' '.join(argv)} failed ({done.returncode}): {tail}"
        )
    return json.loads(lines[-1])


def _sim_images(size: int, count: int):
    """``count`` real Fashion-MNIST test images at ``size`` px (the same in every process)."""
    from lorsp_neuro.data import load_dataset

    splits = load_dataset(
        "fashion_mnist", train_size=0, val_size=0, test_size=count, image_size=size, seed=0
    )
    return splits.test.batch(slice(0, count))[0]


def _sim_prompter(size: int):
    """An untrained ``lorsp`` prompter at ``size`` px, built from seed 0 in every process."""
    import torch

    from lorsp_neuro.prompters import create_prompter

    torch.manual_seed(0)
    return create_prompter("lorsp", size).eval()


def norse_simulation(prompter, x, reps: int) -> dict[str, Any]:
    """Norse inference time of 1 and of ``len(x)`` images (median of ``reps``), with the
    process's peak RSS during the ``len(x)``-image runs."""
    import torch

    probe = RssPeakProbe()
    timings, out = {}, {}
    with torch.no_grad():
        for count in (1, len(x)):
            batch = x[:count]
            runs = []
            out["start_memory_mib"] = probe.start()
            for _ in range(reps):
                started = time.perf_counter()
                record = prompter.run_core(batch)
                runs.append(time.perf_counter() - started)
            out["peak_memory_mib"] = probe.stop()
            timings[count] = median(runs)
    out.update(
        time_1_s=timings[1],
        time_n_s=timings[len(x)],
        spikes_n=int(record.gates.sum() + record.pixels.sum()),
    )
    return out


def lava_child(args: argparse.Namespace) -> dict[str, Any]:
    """Lava ``floating_pt`` runs of 1 and of N images through the worker (inputs from a file).

    Peak memory is that of the largest process of the Lava run (``RUSAGE_CHILDREN``: the worker
    or a runtime process it waited for); this process imports no torch.
    """
    import numpy as np

    from hardware_sims.client import run_lava_images

    with np.load(args.inputs) as data:
        inputs = {k: data[k] for k in data.files}
    images = len(next(iter(inputs.values())))
    out: dict[str, Any] = {}
    spikes = None
    for count in (1, images):
        part = {k: v[:count] for k, v in inputs.items()}
        runs = []
        for _ in range(args.reps):
            started = time.perf_counter()
            result = run_lava_images(args.nir, part, args.steps, timeout=args.timeout)
            call = time.perf_counter() - started
            runs.append((result.status["run_s"], result.status["build_s"], call))
            spikes = int(sum(r["spikes"].sum() for r in result.records.values()))
        key = "1" if count == 1 else "n"
        out[f"run_{key}_s"] = median([r[0] for r in runs])
        out[f"build_{key}_s"] = median([r[1] for r in runs])
        out[f"call_{key}_s"] = median([r[2] for r in runs])
        out["lava_runs"] = result.status.get("lava_runs")
    out["spikes_n"] = spikes
    out["peak_memory_mib"] = peak_rss_mib(resource.RUSAGE_CHILDREN)
    return out


def measure_simulation(settings: SpeedSettings, size: int, workdir: Path, log=print) -> dict:
    """Norse and Lava time and memory per image at ``size`` px (module doc, item 2)."""
    import numpy as np

    from exporters.lorsp_export import export_lorsp, lorsp_host
    from exporters.validate import write_nir

    prompter = _sim_prompter(size)
    x = _sim_images(size, settings.sim_images)
    steps = int(prompter.config.steps)
    graph = export_lorsp(prompter)
    nir_path = write_nir(graph, workdir / f"lorsp-{size}.nir")
    inputs_path = workdir / f"inputs-{size}.npz"
    host_inputs = lorsp_host(graph).host_inputs(x.double())  # (T, B, ...) per input node
    np.savez(inputs_path, **{k: np.swapaxes(v.numpy(), 0, 1) for k, v in host_inputs.items()})
    n = settings.sim_images
    norse = norse_simulation(prompter, x, settings.norse_reps)
    lava = _child(
        [
            "_lava",
            "--nir",
            str(nir_path),
            "--inputs",
            str(inputs_path),
            "--steps",
            str(steps),
            "--reps",
            str(settings.lava_reps),
            "--timeout",
            str(settings.lava_timeout_s),
        ],
        timeout=4 * settings.lava_timeout_s,
    )
    # Norse runs the images as one batch: its per-image cost is the batch time over the batch
    # (no start-up to separate). Lava runs them back to back after a start-up of seconds: its
    # per-image cost is the marginal one, the start-up reported on its own.
    norse["per_image_s"] = norse["time_n_s"] / n
    lava["per_image_s"] = max(lava["run_n_s"] - lava["run_1_s"], 0.0) / (n - 1)
    lava["per_image_call_s"] = lava["call_n_s"] / n
    lava["fixed_startup_s"] = lava["run_1_s"] - lava["per_image_s"]
    neurons = prompter.spiking_core.num_pixel_neurons + prompter.config.rank
    log(
        f"simulation at {size} px ({neurons} neurons, T={steps}): Norse "
        f"{norse['per_image_s'] * 1e3:.2f} ms/image, Lava {lava['per_image_s'] * 1e3:.1f} ms/image"
    )
    return {
        "image_size": size,
        "neurons": neurons,
        "steps": steps,
        "images": n,
        "norse": norse,
        "lava": lava,
        "lava_over_norse": lava["per_image_s"] / norse["per_image_s"]
        if norse["per_image_s"] > 0 and lava["per_image_s"] > 0
        else None,
        "spikes_equal": norse["spikes_n"] == lava["spikes_n"],
    }


# --------------------------------------------------------------------------------------------


def run_benchmark(settings: SpeedSettings, json_path: Path | None, log=print) -> dict[str, Any]:
    started, started_at = time.perf_counter(), now_iso()
    step_time = [measure_steps(settings, point, log) for point in settings.step_points]
    with tempfile.TemporaryDirectory(prefix="lorsp-speed-") as tmp:
        simulation = [measure_simulation(settings, s, Path(tmp), log) for s in settings.sim_sizes]
    pixels = [entry["neurons"] for entry in simulation]
    report = {
        "benchmark": "speed",
        "schema_version": SCHEMA_VERSION,
        "created": started_at,
        "machine": machine_info(),
        "settings": {
            **asdict(settings),
            "reps": ", ".join(str(p.reps) for p in settings.step_points),
            "warmup": ", ".join(str(p.warmup) for p in settings.step_points),
            "sim_steps": simulation[0]["steps"],
        },
        "step_time": step_time,
        "simulation": simulation,
        "growth": {
            "Norse": loglog_slope(pixels, [e["norse"]["per_image_s"] for e in simulation]),
            "Lava": loglog_slope(pixels, [e["lava"]["per_image_s"] for e in simulation]),
        },
        "wall_seconds": time.perf_counter() - started,
    }
    if json_path is not None:
        write_report(json_path, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="seconds-long settings for tests")
    p.add_argument("--threads", type=int, help="torch threads (default 1)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "speed.json")
    children = p.add_subparsers(dest="child")  # internal: one measurement per process
    lava = children.add_parser("_lava")
    lava.add_argument("--nir", type=Path, required=True)
    lava.add_argument("--inputs", type=Path, required=True)
    lava.add_argument("--steps", type=int, required=True)
    lava.add_argument("--reps", type=int, default=1)
    lava.add_argument("--timeout", type=float, default=900.0)
    return p.parse_args(argv)


CHILDREN = {"_lava": lava_child}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.child:
            print(json.dumps(CHILDREN[args.child](args)))
            return 0
        settings = SETTINGS["smoke" if args.smoke else "default"]
        if args.threads:
            settings = replace(settings, num_threads=args.threads)
        report = run_benchmark(settings, args.json, log=lambda line: print(line, flush=True))
    except LorspError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_speed(report))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
