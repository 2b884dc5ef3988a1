"""Subcommands ``lorsp export`` and ``lorsp nir-info``: parse, call the library, print."""

from __future__ import annotations

from pathlib import Path

from lorsp_neuro.cli import integer_at_least


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        from lorsp_neuro.checkpoint import atomic_write_json

        atomic_write_json(Path(path), payload)


def _export(args) -> int:
    import torch

    from exporters.lorsp_export import export_lorsp, lorsp_host, verify_lorsp_export
    from exporters.summary import summarize_graph
    from exporters.validate import load_nir, write_nir
    from lorsp_neuro.training import load_run

    model, _ = load_run(args.run_dir, checkpoint=args.checkpoint, device="cpu")
    prompter = model.prompter
    path = write_nir(export_lorsp(prompter), args.output)
    graph = load_nir(path)
    summary = summarize_graph(graph)
    host = lorsp_host(graph)
    report = {
        "run_dir": str(args.run_dir),
        "checkpoint": args.checkpoint,
        "output": str(path),
        "bytes": path.stat().st_size,
        "format": host.format,
        "totals": summary["totals"],
        "dt": summary["metadata"]["dt"],
        "steps": host.steps,
        "presentation": host.presentation,
        "cell": summary["metadata"]["lorsp"]["cell"],
    }
    totals = report["totals"]
    shown = "once" if host.presentation == "once" else "at every step"
    print(
        f"wrote {path} ({report['bytes']} bytes, {host.format}): {totals['nodes']} nodes, "
        f"{totals['spiking_neurons']} spiking neurons, {totals['parameters']} parameters, "
        f"dt={report['dt']:g} s, T={report['steps']}, inputs presented {shown}, {report['cell']}"
    )
    status = 0
    if args.verify:
        generator = torch.Generator().manual_seed(args.seed)
        images = torch.rand(args.verify, 3, *prompter.image_size, generator=generator)
        report["verify"] = verify_lorsp_export(prompter, path, images)
        check = report["verify"]
        print(
            f"verify on {check['images']} random images: spike trains and prompt "
            f"{'match' if check['matches'] else 'DIFFER'} (mismatched spikes "
            f"{check['mismatched_spikes']}, max prompt difference {check['max_prompt_difference']:g})"
        )
        status = 0 if check["matches"] else 1
    _write_json(args.json, report)
    return status


def _nir_info(args) -> int:
    from exporters.summary import format_summary, summarize_graph
    from exporters.validate import load_nir

    summary = summarize_graph(load_nir(args.file))
    print(format_summary(summary, str(args.file)))
    _write_json(args.json, summary)
    return 0


def add_commands(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained lorsp prompter's spiking part to a NIR file",
        description="Write the spiking part of the LoRSP prompter of a training run as a NIR "
        "graph. lorsp (v2, format lorsp-nir/2): descriptor and bias → gate neurons → rank-1 "
        "gate synapses → pixel neurons, plus the image's one-to-one Scale and the pixel bias, "
        "with dt, T, the input presentation, the descriptor pooling, the grid and the values "
        "V = value_left @ value_right of the readout in its metadata; lorsp_v1 (lorsp-nir/1): "
        "ON/OFF pixel neurons and alpha. The prompt can be rebuilt from the file alone. "
        "--verify N re-reads the file and checks its spike trains and prompt against the "
        "prompter on N random images.\n\n"
        "example:\n  lorsp export runs/lorsp-fmnist -o prompter.nir --verify 4 --json export.json",
        formatter_class=formatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by lorsp train")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="NIR file to write")
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="which checkpoint to export"
    )
    p.add_argument(
        "--verify",
        type=integer_at_least(0),
        default=2,
        metavar="N",
        help="random images to verify on (0: skip)",
    )
    p.add_argument(
        "--seed", type=integer_at_least(0), default=0, help="seed of the verification images"
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(handler=_export)

    p = subparsers.add_parser(
        "nir-info",
        help="show the nodes, edges, shapes, parameters and metadata of a NIR file",
        description="Read and validate a NIR file (from this project or any other tool) and "
        "print its nodes with input/output shapes, parameter and neuron counts, its edges and "
        "its metadata. A malformed file is reported in one line.\n\n"
        "example:\n  lorsp nir-info prompter.nir --json prompter-info.json",
        formatter_class=formatter,
    )
    p.add_argument("file", metavar="FILE", help="NIR (HDF5) file")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(handler=_nir_info)
