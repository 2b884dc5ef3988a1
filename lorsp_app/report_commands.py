"""Subcommands ``lorsp demo`` and ``lorsp visualize``: parse, call the library, print."""

from __future__ import annotations

import argparse

#: DemoSettings fields that ``lorsp demo`` lets a flag change: type, metavar, help.
_SETTING_FLAGS = {
    "head": (str, "HEAD", "flm or ilm (frozen label mapping) or lp (trainable linear probe)"),
    "image_size": (int, "PX", "image side in pixels"),
    "train_size": (int, "N", "training images"),
    "test_size": (int, "N", "test images"),
    "epochs": (int, "N", "training epochs"),
    "seed": (int, "N", "seed of the data splits and the initialisation"),
}


def _setting_defaults(name: str) -> str:
    from lorsp_app.demo import QUICK, DemoSettings

    return f"default {getattr(DemoSettings(), name)}, with --quick {getattr(QUICK, name)}"


def _demo(args) -> int:
    from lorsp_app.demo import QUICK, DemoSettings, format_report, run_demo

    settings = QUICK if args.quick else DemoSettings()
    # Flags given override the chosen settings; absent ones are not in args (SUPPRESS).
    changes = {name: getattr(args, name) for name in _SETTING_FLAGS if hasattr(args, name)}
    if changes:
        settings = settings.replace(**changes)
    report = run_demo(args.out, settings, json_path=args.json, progress=args.progress)
    print(format_report(report))
    return 0 if report["export_matches"] and report["spike_agreement"] == 1.0 else 1


def _visualize(args) -> int:
    from lorsp_neuro.io import write_json
    from lorsp_neuro.visualize import visualize_run

    result = visualize_run(
        args.run_dir,
        args.out,
        images=args.images,
        checkpoint=args.checkpoint,
        test_size=args.test_size,
        progress=args.progress,
    )
    write_json(args.json, result)
    print(
        f"{result['run_dir']} ({result['prompter']}, {result['checkpoint']} checkpoint): prompt "
        f"sparsity {result['mean_prompt_sparsity']:.1%} on average (from "
        f"{result['min_prompt_sparsity']:.1%} to {result['max_prompt_sparsity']:.1%}) over "
        f"{result['test_images']} test images, {result['distinct_prompts']} distinct prompts"
    )
    for what, path in result["files"].items():
        print(f"  {what}: {path}")
    return 0


def add_commands(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train, export, run in Lava and cost a LoRSP prompter, end to end, in minutes",
        description="The whole story in one command, offline: train a small lorsp prompter (v2: "
        "prompt = V ⊙ ρ, LoR-VP's low-rank values V applied where and as strongly as its pixel "
        "neurons fire) on Fashion-MNIST through the frozen EfficientNet-Lite0 (real ImageNet "
        "weights) and LoR-VP with the same rank, budget and frozen label-mapping head, export "
        "the spiking part to NIR, co-simulate it in Lava (float) against Norse, estimate SynOps "
        "and energy (SNN vs its ANN twin on loihi and cmos45, next to the backbone's MACs), "
        "draw pictures, and print a short report with the paths of everything written to --out. "
        "About 4 minutes on 2 CPU cores. A folder written by an earlier demo is refreshed; any "
        "other non-empty folder is refused.\n\n"
        "example:\n  lorsp demo --out demo_out --json demo.json\n"
        "  lorsp demo --quick --out /tmp/demo   # tiny sizes, seconds; numbers meaningless",
        formatter_class=formatter,
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder")
    p.add_argument("--json", metavar="FILE", help="also write the report (report.json) to FILE")
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks the pipeline, not the method"
    )
    for name, (kind, metavar, help_text) in _SETTING_FLAGS.items():
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=f"{help_text} ({_setting_defaults(name)})",
        )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )
    p.set_defaults(handler=_demo)

    p = subparsers.add_parser(
        "visualize",
        help="draw prompts, firing-rate maps, spike rasters and a sparsity histogram of a run",
        description="For the first N test images of a run, one row each: the image; for lorsp "
        "the rate map ρ of its pixel neurons (one cell per neuron with a grid), their spikes at "
        "each step, the prompt V ⊙ ρ, the prompted image and the gate neurons' raster (lorsp_v1: "
        "where ON neurons fire in red, OFF in blue, and ON/OFF spikes per step; other prompters: "
        "the prompt). Also, for lorsp, the values V per channel (values.png) and, for every "
        "prompter, a histogram of the prompt sparsity over the run's test split. Writes "
        "prompts.png, values.png and sparsity.png.\n\n"
        "example:\n  lorsp visualize runs/lorsp-fmnist --images 4 --out pictures "
        "--json pictures/visualize.json",
        formatter_class=formatter,
    )
    p.add_argument(
        "run_dir", metavar="CHECKPOINT_DIR", help="a run directory written by lorsp train"
    )
    p.add_argument("--images", type=int, default=4, metavar="N", help="test images to draw")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: the run dir)")
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="which checkpoint to draw"
    )
    p.add_argument(
        "--test-size",
        type=int,
        metavar="N",
        help="test images for the histogram (default: the run's)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the numbers and paths as JSON")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="a progress bar"
    )
    p.set_defaults(handler=_visualize)
