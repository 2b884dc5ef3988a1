"""Training-step ratios and images per second on CUDA with AMP (run by ``benchmarks/gpu.sh``).

The same measurement as ``speed.py``'s training steps (``backbone`` with a gradient to the input,
``lor_vp``, ``lorsp_ann``, ``lorsp`` (v2); one shared frozen backbone and linear probe; the same
batch; interleaved repetitions, median), on a GPU, for each of two backbones at 224 px with random
weights (weights do not change speed; nothing is downloaded): ViT-B/16 from timm and
EfficientNet-Lite0; fp16 autocast with gradient scaling, and the peak CUDA memory of each step
(``torch.cuda.max_memory_allocated``, reset before it).

Without CUDA it refuses; ``--cpu-dry-run`` runs the identical code path on the CPU with a tiny
timm model (``test_vit``) and Lite0 at 32 px in seconds, to check the script, and writes
``gpu_dry_run.json`` (never ``gpu.json``, so a dry run is never mistaken for GPU figures).

    bash benchmarks/gpu.sh                                # GPU host, < 6 minutes
    .venv/bin/python -m benchmarks.gpu_speed --backbone resnet50 --batch 128
    .venv/bin/python -m benchmarks.gpu_speed --cpu-dry-run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_common import (
    RESULTS_DIR,
    SCHEMA_VERSION,
    BenchmarkError,
    machine_info,
    median,
    now_iso,
    render_gpu,
    write_report,
)
from benchmarks.speed import (
    build_step_models,
    make_step,
    random_batch,
    step_ratios,
    time_interleaved,
)
from lorsp_neuro.errors import LorspError

MIB = 1024.0 * 1024.0


class CudaPeakProbe:
    """Peak CUDA memory allocated by torch during a stretch of work, MiB."""

    def __init__(self, device):
        self.device = device

    def start(self) -> float:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device) / MIB

    def stop(self) -> float:
        import torch

        return torch.cuda.max_memory_allocated(self.device) / MIB


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--backbone",
        nargs="+",
        default=["vit_base_patch16_224", "efficientnet_lite0"],
        help="timm model names (or efficientnet_lite0/1/2), measured one after the other",
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-amp", action="store_true", help="float32 instead of fp16 autocast")
    p.add_argument("--json", type=Path, help="default: results/gpu.json (gpu_dry_run.json)")
    p.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="the same code on the CPU with a tiny model, 32 px, batch 2: checks the script",
    )
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        args.backbone, args.image_size, args.batch = ["test_vit", "efficientnet_lite0"], 32, 2
        args.reps, args.warmup, args.no_amp = 2, 1, True
    if args.json is None:
        args.json = RESULTS_DIR / ("gpu_dry_run.json" if args.cpu_dry_run else "gpu.json")
    for name in ("image_size", "batch", "reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _measure_backbone(backbone: str, args, device, amp: bool, log) -> dict[str, Any]:
    """Step times of the four methods on ``backbone``, interleaved, with their peak memory."""
    import torch

    models = build_step_models(backbone, args.image_size, pretrained=False, device=device)
    x, y = random_batch(args.batch, args.image_size, device)
    steps = {n: make_step(model, opt, x, y, amp=amp) for n, (model, opt) in models.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    probe = CudaPeakProbe(device) if device.type == "cuda" else None
    times, memory = time_interleaved(steps, args.reps, args.warmup, sync=sync, probe=probe)
    medians = {n: median(ts) for n, ts in times.items()}
    methods = {
        n: {
            "median_s": medians[n],
            "times_s": times[n],
            "images_per_second": args.batch / medians[n],
            "tunable_params": models[n][0].prompter.num_tunable_parameters(),
            **memory.get(n, {"peak_memory_mib": None}),
        }
        for n in times
    }
    for n, m in methods.items():
        log(
            f"{backbone:22s} {n:10s} {m['median_s'] * 1e3:9.2f} ms/step "
            f"{m['images_per_second']:9.1f} img/s"
        )
    del models, steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "backbone": backbone,
        "image_size": args.image_size,
        "batch_size": args.batch,
        "methods": methods,
        "ratios": step_ratios(medians),
    }


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    import torch

    started, started_at = time.perf_counter(), now_iso()
    if args.cpu_dry_run:
        device, name = torch.device("cpu"), "CPU (dry run)"
    else:
        if not torch.cuda.is_available():
            raise BenchmarkError(
                "CUDA is not available here (torch.cuda.is_available() is False): run "
                "benchmarks/gpu.sh on a GPU host with a CUDA build of torch, or add --cpu-dry-run "
                "to check the script on the CPU"
            )
        device = torch.device("cuda:0")
        name = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True
    amp = not args.no_amp and device.type == "cuda"
    step_time = [_measure_backbone(backbone, args, device, amp, log) for backbone in args.backbone]
    return {
        "benchmark": "gpu",
        "schema_version": SCHEMA_VERSION,
        "created": started_at,
        "machine": machine_info(),
        "settings": {
            "backbones": list(args.backbone),
            "pretrained": False,
            "device": device.type,
            "device_name": name,
            "amp": amp,
            "reps": args.reps,
            "warmup": args.warmup,
            "dry_run": bool(args.cpu_dry_run),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
        "step_time": step_time,
        "wall_seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args, log=lambda line: print(line, flush=True))
    except LorspError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(args.json, report)
    print(render_gpu(report))
    for entry in report["step_time"]:
        ratios = entry["ratios"]
        print(
            f"\n{entry['backbone']}: LoRSP / backbone {ratios['lorsp_over_backbone']:.2f}x, "
            f"LoR-VP / backbone {ratios['lor_vp_over_backbone']:.2f}x, LoRSP / LoR-VP "
            f"{ratios['lorsp_over_lor_vp']:.2f}x"
        )
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
