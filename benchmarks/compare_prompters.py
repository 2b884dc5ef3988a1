"""All six prompters on Fashion-MNIST through frozen EfficientNet-Lite0, under one budget.

Every prompter is trained with a linear-probe head (``lp``) and with a frozen label-mapping head
(``flm``: the prompt is the only thing that learns), with the same data, steps, batch, image size,
learning rates and seed. The accuracy reported is the test accuracy of the checkpoint chosen on
the validation split. Results go to ``benchmarks/results/compare_prompters.json`` after every
run, so a long sweep can be watched and, if stopped, re-run: finished runs are read back from
their ``summary.json`` and an unfinished one resumes from its last checkpoint. The JSON is
rebuilt from every finished run directory with this budget, so two processes (say one per head,
``--heads lp`` and ``--heads flm``) can share the work and the file.

    .venv/bin/python benchmarks/compare_prompters.py                 # the full sweep
    .venv/bin/python benchmarks/compare_prompters.py --prompters lorsp lor_vp --heads flm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lorsp_neuro.checkpoint import atomic_write_json  # noqa: E402
from lorsp_neuro.errors import LorspError  # noqa: E402
from lorsp_neuro.run_config import HEADLINE_FIELDS  # noqa: E402
from lorsp_neuro.train_commands import parse_option  # noqa: E402
from lorsp_neuro.training import SUMMARY_FILE, train  # noqa: E402

PROMPTERS = ("linear_probe", "vp_pad", "full_dense", "lor_vp", "lorsp_ann", "lorsp")
REPORTED = HEADLINE_FIELDS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--prompters", nargs="+", default=list(PROMPTERS), choices=PROMPTERS)
    p.add_argument("--heads", nargs="+", default=["lp", "flm"], choices=["lp", "flm", "ilm"])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="base learning rate")
    p.add_argument("--prompt-lr", type=float, default=1e-2, help="prompter learning rate")
    p.add_argument("--head-lr", type=float, default=1e-2, help="linear-probe head learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prompter-opt",
        action="append",
        default=[],
        type=parse_option,
        metavar="KEY=VALUE",
        help="a prompter option for this invocation's prompters (needs --tag)",
    )
    p.add_argument(
        "--note",
        action="append",
        default=[],
        help="a remark kept in the JSON's 'notes' (earlier notes in the file are kept)",
    )
    p.add_argument(
        "--tag",
        help="name of a variant (other learning rates or options): its runs go to "
        "PROMPTER-HEAD-TAG and are reported under 'variants', apart from the main table",
    )
    p.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch threads (1 avoids OpenMP spinning on a shared machine)",
    )
    p.add_argument("--min-steps", type=int, default=1000, help="refuse fewer training steps")
    p.add_argument("--min-test", type=int, default=2000, help="refuse fewer test images")
    p.add_argument(
        "--runs-dir", type=Path, default=REPO / "benchmarks" / "runs" / "compare_prompters"
    )
    p.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "compare_prompters.json"
    )
    args = p.parse_args(argv)
    if args.prompter_opt and not args.tag:
        p.error("--prompter-opt changes the method: give the variant a --tag")
    return args


def run_config(args: argparse.Namespace, prompter: str, head: str) -> dict:
    return {
        "prompter": prompter,
        "backbone": args.backbone,
        "pretrained": True,
        "head": head,
        "dataset": "fashion_mnist",
        "train_size": args.train_size,
        "val_size": args.val_size,
        "test_size": args.test_size,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "eval_batch_size": 250,
        "lr": args.lr,
        "prompt_lr": args.prompt_lr,
        "head_lr": args.head_lr,
        "seed": args.seed,
        "device": "cpu",
        "num_threads": args.num_threads,
        "progress": False,
        "prompter_options": dict(args.prompter_opt),
        "out": str(args.runs_dir / "-".join(filter(None, (prompter, head, args.tag)))),
    }


def markdown_table(rows: list[dict]) -> str:
    def cell(value, digits=4):
        if value is None:
            return "–"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = [
        "| prompter | head | test acc (best val) | val acc | tunable params (prompt + head) | prompt sparsity | distinct prompts | gate rate | pixel rate | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['prompter']} | {r['head']} | {cell(r['test_accuracy'])} | {cell(r['val_accuracy'])} "
            f"| {r['tunable_params']} ({r['prompt_params']} + {r['head_params']}) "
            f"| {cell(r['prompt_sparsity'])} | {r['distinct_prompts']} | {cell(r['gate_firing_rate'], 3)} "
            f"| {cell(r['pixel_firing_rate'], 3)} | {cell(r['train_seconds'], 0)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = math.ceil(args.train_size / args.batch_size) * args.epochs
    if steps < args.min_steps or args.test_size < args.min_test:
        print(
            f"budget too small for the comparison: {steps} steps (need {args.min_steps}), "
            f"{args.test_size} test images (need {args.min_test}); lower --min-steps/--min-test "
            "for a smoke run",
            file=sys.stderr,
        )
        return 2
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    common = {
        k: v for k, v in run_config(args, "-", "-").items() if k not in ("prompter", "head", "out")
    }
    report = {
        "what": "six prompters on fashion_mnist through frozen EfficientNet-Lite0 (ImageNet weights), "
        "test accuracy of the checkpoint best on validation",
        "budget": {
            "steps": steps,
            "train_images_seen": steps * args.batch_size,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "train_size": args.train_size,
            "val_size": args.val_size,
            "test_size": args.test_size,
        },
        "config": common,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "results": [],
        "notes": _previous_notes(args.json)
        + [n for n in args.note if n not in _previous_notes(args.json)],
    }
    started = time.perf_counter()
    # LoRSP and its closest rival first: the runs that matter most finish first.
    order = sorted(
        args.prompters,
        key=lambda name: ("lorsp", "lor_vp").index(name) if name in ("lorsp", "lor_vp") else 2,
    )
    for head in args.heads:
        for prompter in order:
            config = run_config(args, prompter, head)
            run_started = time.perf_counter()
            if not (Path(config["out"]) / SUMMARY_FILE).is_file():
                try:
                    train(config, resume=True)
                except LorspError as exc:
                    print(f"{prompter}/{head}: failed: {exc}", file=sys.stderr, flush=True)
                    continue
            report["results"], report["variants"] = collect_rows(args)
            report["sweep_seconds_this_process"] = time.perf_counter() - started
            report["table_markdown"] = markdown_table(report["results"])
            atomic_write_json(args.json, report)
            summary = json.loads((Path(config["out"]) / SUMMARY_FILE).read_text())
            row = {k: summary.get(k) for k in REPORTED}
            print(
                f"{prompter:12s} {head:3s} test {row['test_accuracy']:.4f} val {row['val_accuracy']:.4f} "
                f"params {row['tunable_params']} sparsity {row['prompt_sparsity']} distinct "
                f"{row['distinct_prompts']} ({time.perf_counter() - run_started:.0f} s)",
                flush=True,
            )
    report["results"], report["variants"] = collect_rows(args)
    report["table_markdown"] = markdown_table(report["results"])
    atomic_write_json(args.json, report)
    print(report["table_markdown"])
    for variant in report["variants"]:
        print(
            f"variant {variant['variant']}: test {variant['test_accuracy']:.4f}, "
            f"{variant['tunable_params']} params (prompt_lr {variant['prompt_lr']}, options "
            f"differing from today's defaults {non_default_options(variant)})"
        )
    return 0


def _previous_notes(path: Path) -> list[str]:
    try:
        return list(json.loads(path.read_text()).get("notes", []))
    except (OSError, ValueError):
        return []


def non_default_options(row: dict) -> dict:
    """The prompter options of a run that differ from the prompter's current defaults."""
    import dataclasses

    from lorsp_neuro.prompters import prompter_class

    defaults = json.loads(json.dumps(dataclasses.asdict(prompter_class(row["prompter"]).Config())))
    return {k: v for k, v in row["prompter_options"].items() if defaults.get(k) != v}


#: Config fields that make the budget: a run is comparable when all of them match.
BUDGET_FIELDS = (
    "backbone", "pretrained", "dataset", "train_size", "val_size", "test_size", "image_size",
    "epochs", "batch_size", "eval_batch_size", "seed",
)  # fmt: skip


def collect_rows(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Every finished run in ``args.runs_dir`` with this budget: (main rows, variant rows).

    Main rows are the untagged runs; a tagged run is a variant, reported with its settings.
    """
    expected = run_config(args, "-", "-")
    main_rows, variants = [], []
    for run_dir in sorted(args.runs_dir.iterdir()):
        if not (run_dir / SUMMARY_FILE).is_file() or not (run_dir / "config.json").is_file():
            continue
        stored = json.loads((run_dir / "config.json").read_text())
        if any(stored.get(k) != expected[k] for k in BUDGET_FIELDS):
            continue
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        row = {
            "prompter": stored["prompter"],
            "head": stored["head"],
            **{k: summary.get(k) for k in REPORTED},
        }
        settings = {k: stored[k] for k in ("lr", "prompt_lr", "head_lr", "prompter_options")}
        # Untagged runs are the sweep itself (an untagged invocation takes no --prompter-opt).
        is_main = run_dir.name == f"{stored['prompter']}-{stored['head']}"
        if is_main:
            main_rows.append({**row, "prompter_options": stored["prompter_options"]})
        else:
            variants.append({"variant": run_dir.name, **settings, **row})
    table_order = {
        (p, h): i
        for i, (h, p) in enumerate((h, p) for h in ("lp", "flm", "ilm") for p in PROMPTERS)
    }
    main_rows.sort(key=lambda r: table_order[(r["prompter"], r["head"])])
    return main_rows, variants


if __name__ == "__main__":
    sys.exit(main())
