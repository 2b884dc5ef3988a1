"""Subcommands ``lorsp export`` and ``lorsp nir-info``: parse, call the library, print."""

from __future__ import annotations

from pathlib import Path

from lorsp_app.arguments import integer_at_least


def _export(args) -> int:
    from exporters.run_export import export_run
    from lorsp_neuro.io import write_json

    if args.format == "netx":
        return _export_netx(args)
    result = export_run(
        args.run_dir,
        args.output,
        checkpoint=args.checkpoint,
        verify=args.verify,
        verify_on=args.verify_on,
        seed=args.seed,
        target=args.target,
    )
    totals = result.totals
    shown = "once" if result.presentation == "once" else "at every step"
    print(
        f"wrote {result.path} ({result.bytes} bytes, {result.format}): {totals['nodes']} nodes, "
        f"{totals['spiking_neurons']} spiking neurons, {totals['parameters']} parameters, "
        f"dt={result.dt:g} s, T={result.steps}, inputs presented {shown}, {result.cell}"
        + ("" if result.target == "nir" else f", portable for {result.target}")
    )
    if result.verify is not None:
        check = result.verify
        print(
            f"verify on {check['images']} {args.verify_on} images: spike trains and prompt "
            f"{'match' if check['matches'] else 'DIFFER'} (mismatched spikes "
            f"{check['mismatched_spikes']}, max prompt difference {check['max_prompt_difference']:g})"
        )
    write_json(args.json, result.to_dict())
    return 1 if result.matches is False else 0


def _export_netx(args) -> int:
    from hardware_sims.netx_cosim import export_netx
    from lorsp_neuro.io import write_json

    result = export_netx(args.run_dir, args.output, checkpoint=args.checkpoint)
    blocks = " → ".join(f"{b['name']} ({b['netx_type']}, {b['neurons']})" for b in result.blocks)
    held = ", ".join(result.held) or "none"
    print(
        f"wrote {result.path} ({result.bytes} bytes, lava-dl netx): {blocks}; T={result.steps}, "
        f"dt={result.dt:g} s; inputs folded into per-image biases: {held}. Check it with "
        "`lorsp cosim RUN --backend netx`"
    )
    write_json(args.json, result.to_dict())
    return 0


def _nir_info(args) -> int:
    from exporters.summary import format_summary, summarize_graph
    from exporters.validate import load_nir
    from lorsp_neuro.errors import LorspError
    from lorsp_neuro.io import write_json

    if Path(args.file).is_dir():
        raise LorspError(f"{args.file}: is a directory; give a NIR (HDF5) file")
    summary = summarize_graph(load_nir(args.file))
    print(format_summary(summary, str(args.file)))
    write_json(args.json, summary)
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
        "prompter on N images: seeded random ones, or the run's first test images with "
        "--verify-on test. --target snntorch|norse|rockpool writes a portable graph those "
        "tools load (one packed input and output, Linear and CubaLIF only, parameters in the "
        "tool's conventions; docs/nir.md); the default, nir, is the exact graph. --format netx "
        "writes the spiking core as a lava-dl netx network (HDF5, netx.hdf5.Network), its inputs "
        "folded into per-image neuron biases, in Loihi integers; a design netx cannot express is "
        "refused naming the node (docs/nir.md).\n\n"
        "example:\n  lorsp export runs/lorsp-fmnist -o prompter.nir --verify 4 --json export.json"
        "\n  lorsp export runs/lorsp-fmnist -o prompter-snntorch.nir --target snntorch"
        "\n  lorsp export runs/lorsp-fmnist -o prompter.net --format netx",
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
        help="images to verify on (0: skip)",
    )
    p.add_argument(
        "--verify-on",
        choices=("random", "test"),
        default="random",
        help="verify on seeded uniform random images or on the run's first test images",
    )
    p.add_argument(
        "--seed", type=integer_at_least(0), default=0, help="seed of the random verification images"
    )
    p.add_argument(
        "--target",
        choices=("nir", "snntorch", "norse", "rockpool"),
        default="nir",
        help="nir: the exact graph; a tool name: the portable graph that tool's NIR import loads",
    )
    p.add_argument(
        "--format",
        choices=("nir", "netx"),
        default="nir",
        help="nir: a NIR graph (see --target); netx: a lava-dl netx network (--verify, --target "
        "do not apply; check it with lorsp cosim --backend netx)",
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
