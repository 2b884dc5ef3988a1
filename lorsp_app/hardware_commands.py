"""Subcommands ``lorsp cosim``, ``energy``, ``hw-profiles`` and ``lava-check``: parse, call, print."""

from __future__ import annotations

from pathlib import Path

from exporters.overrides import RESET_OPTIONS
from lorsp_app.arguments import integer_at_least, positive_float
from lorsp_neuro.io import write_json

PROFILES_HELP = "hardware profile name, or 'all' (see `lorsp hw-profiles`)"


def _cosim(args) -> int:
    from hardware_sims.cosim import cosimulate

    if args.backend == "netx":
        return _cosim_netx(args)
    report = cosimulate(
        args.source,
        images=args.images,
        steps=args.steps,
        precision="fixed_pt" if args.fixed_point else "floating_pt",
        seed=args.seed,
        timeout=args.timeout,
        keep_records=bool(args.raster),
        dt=args.dt,
        reset_mode=args.reset_mode,
    )
    if args.raster:
        from hardware_sims.plots import spike_raster_plot

        spike_raster_plot(
            report.records["torch"],
            report.records["lava"],
            args.raster,
            labels=("torch", f"Lava {report.precision}"),
            title=f"{Path(report.source).name}: the most active of {report.images} image(s), "
            f"T = {report.steps}",
        )
    payload = report.to_dict()
    write_json(args.json, payload)
    total = report.total
    print(
        f"{report.source}: {report.images} image(s) × {report.steps} steps, torch "
        f"({report.torch_side}) vs Lava {report.precision}"
    )
    for name, layer in {**report.layers, "total": total}.items():
        v = "n/a" if layer.max_abs_v_diff is None else f"{layer.max_abs_v_diff:.3g}"
        print(
            f"  {name:>14}: spike_agreement {layer.spike_agreement:.6f} "
            f"({layer.mismatched_spikes} of {layer.neuron_steps} differ), spikes "
            f"{layer.spikes_torch} / {layer.spikes_lava}, max |Δv| {v}"
        )
    print(
        f"  SynOps per image: torch {report.synops_per_image['torch']:.6g}, "
        f"Lava {report.synops_per_image['lava']:.6g}; wall time torch {report.wall_s['torch']:.2f} s, "
        f"Lava run {report.wall_s['lava_run']:.2f} s (worker call {report.wall_s['lava_worker_call']:.2f} s)"
    )
    if report.prompt:
        print(f"  prompt relative L1 difference: {report.prompt['relative_l1']}")
    if report.accuracy:
        acc = report.accuracy
        print(
            f"  accuracy on these {acc['images']} test images: torch {acc['torch']:.4f}, "
            f"Lava {acc['lava']:.4f} (change {acc['change']:+.4f})"
        )
    if report.fixed_point:
        print(
            "  Lava fixed point matches the numpy bit-accurate model: "
            f"{report.fixed_point['matches_numpy_bit_accurate_model']}"
        )
    if args.raster:
        print(f"  raster: {args.raster}")
    exact = report.precision == "fixed_pt" or total.spike_agreement == 1.0
    return 0 if exact else 1


def _cosim_netx(args) -> int:
    from hardware_sims.netx_cosim import netx_cosimulate

    if args.fixed_point or args.raster:
        from lorsp_neuro.errors import LorspError

        raise LorspError("--backend netx runs netx's fixed point already and draws no raster")
    report = netx_cosimulate(
        args.source,
        images=args.images,
        steps=args.steps,
        seed=args.seed,
        timeout=args.timeout,
        dt=args.dt,
        reset_mode=args.reset_mode,
    )
    write_json(args.json, report.to_dict())
    chain = " → ".join(f"{b['name']} ({b['netx_type']}, {b['neurons']})" for b in report.blocks)
    print(
        f"{report.source}: {report.images} image(s) × {report.steps} steps, lava-dl "
        f"{report.versions['lava-dl']} netx.hdf5.Network ({chain})"
    )
    sides = (
        ("our Lava fixed point", report.netx_vs_lava_fixed),
        ("integer model", report.netx_vs_integer_model),
        (f"float ({report.torch_side})", report.netx_vs_float),
    )
    for label, layers in sides:
        for name, layer in layers.items():
            v = "" if layer.max_abs_v_diff is None else f", max |Δv| {layer.max_abs_v_diff:.3g}"
            print(
                f"  netx vs {label:>22} {name:>14}: spike_agreement {layer.spike_agreement:.6f} "
                f"({layer.mismatched_spikes} of {layer.neuron_steps} differ){v}"
            )
    synops = ", ".join(f"{side} {value:.6g}" for side, value in report.synops_per_image.items())
    print(f"  SynOps per image (NIR graph): {synops}")
    print(
        f"  SynOps per image on the netx network (biases are free): netx "
        f"{report.netx_synops_per_image['netx']:.6g}, float {report.netx_synops_per_image['float']:.6g}"
    )
    if report.prompt:
        print(f"  prompt relative L1 difference, netx vs float: {report.prompt['relative_l1']}")
    if report.accuracy:
        acc = report.accuracy
        print(
            f"  accuracy on these {acc['images']} test images: float {acc['float']:.4f}, "
            f"netx {acc['netx']:.4f} (change {acc['change']:+.4f})"
        )
    print(f"  netx bit-exact with our fixed point and the integer model: {report.bit_exact}")
    return 0 if report.bit_exact else 1


def _energy(args) -> int:
    from hardware_sims.estimate import estimate_energy

    estimate = estimate_energy(
        args.source,
        images=args.images,
        profiles=args.profile,
        steps=args.steps,
        simulator=args.simulator,
        seed=args.seed,
        profiles_file=args.profiles_file,
        dt=args.dt,
    )
    if args.plot:
        from hardware_sims.plots import energy_bar_plot

        energy_bar_plot(
            list(estimate.reports.values()),
            args.plot,
            title=f"{Path(str(args.source)).name}: energy per image",
        )
    write_json(args.json, estimate.to_dict())
    counts, reports = estimate.counts, list(estimate.reports.values())
    print(
        f"{args.source}: {counts.images} image(s) × {counts.steps} steps ({estimate.simulator}): "
        f"{counts.synops_per_image:.6g} SynOps/image ({counts.binary_synops_per_image:.6g} binary, "
        f"{counts.graded_synops_per_image:.6g} graded), {counts.neuron_updates_per_image:.6g} "
        f"neuron updates/image ({counts.active_neuron_updates_per_image:.6g} active), "
        f"{counts.spikes_per_image:.6g} spikes/image, {reports[0].host_macs_per_image:.6g} host "
        "operations/image"
    )
    for r in reports:
        print(
            f"  {r.profile:>8}: SNN {r.energy_per_image_pj / 1e3:.6g} nJ/image, ANN twin "
            f"{r.ann_twin_energy_pj / 1e3:.6g} nJ ({r.ann_twin_macs_per_image:.6g} MACs); "
            f"SNN/ANN = {r.snn_over_ann_energy:.3g}"
        )
    if estimate.backbone_macs_per_image is not None:
        energies = ", ".join(
            f"{name} {pj / 1e3:.6g} nJ" for name, pj in estimate.backbone_energy_pj().items()
        )
        print(f"  frozen backbone: {estimate.backbone_macs_per_image:.6g} MACs/image ({energies})")
    if args.plot:
        print(f"  plot: {args.plot}")
    return 0


def _lava_check(args) -> int:
    from hardware_sims.smoke import dense_lif_smoke

    report = dense_lif_smoke(steps=args.steps)
    write_json(args.json, report)
    print(
        f"Lava {report['lava_version']} at {report['python']}: Dense → LIF ran {report['steps']} "
        f"steps in {report['wall_s']:.2f} s, {report['spikes']} spikes, "
        f"matches the hand-computed Lava equations: {report['matches']}"
    )
    return 0 if report["matches"] else 1


def _hw_profiles(args) -> int:
    from hardware_sims.energy import ENERGY_FIELDS, load_profiles

    profiles = load_profiles(args.profiles_file)
    write_json(args.json, {n: p.__dict__ for n, p in profiles.items()})
    for name, p in profiles.items():
        figures = ", ".join(f"{f[:-3]} {getattr(p, f):g}" for f in ENERGY_FIELDS)
        print(f"{name}: {p.description}\n    pJ: {figures}")
    return 0


def add_commands(subparsers, formatter) -> None:
    _add_cosim(subparsers, formatter)
    _add_energy(subparsers, formatter)
    _add_hw_profiles(subparsers, formatter)
    _add_lava_check(subparsers, formatter)


def _add_cosim(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "cosim",
        help="run a prompter (or NIR file) in torch and in Lava and compare spike by spike",
        description="Feed the same inputs to the torch model (a run directory's Norse "
        "spiking_core, or the NIR importer for a .nir file) and to Lava through the worker; report "
        "per layer and in total the fraction of neuron-steps with equal spikes, the largest "
        "voltage difference, spike counts, SynOps from both sides and wall times. Lava's one-step "
        "delay per connection is aligned. Exit status 1 when float spikes are not all equal.\n\n"
        "example:\n  lorsp cosim runs/lorsp-fmnist --images 4 --steps 8 --json cosim.json "
        "--raster raster.png\n  lorsp cosim runs/lorsp-fmnist --images 8 --backend netx --json "
        "netx.json",
        formatter_class=formatter,
    )
    p.add_argument("source", help="run directory (with config.json) or NIR file")
    p.add_argument("--images", type=integer_at_least(1), default=2, help="images to simulate")
    p.add_argument(
        "--steps", type=integer_at_least(1), help="time steps per image (default: the prompter's T)"
    )
    p.add_argument(
        "--fixed-point",
        action="store_true",
        help="run Lava's bit-accurate fixed_pt models on Loihi-style integers",
    )
    p.add_argument(
        "--seed", type=integer_at_least(0), default=0, help="seed of the random inputs (NIR files)"
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="Lava worker time limit (s)")
    _add_dt(p)
    p.add_argument(
        "--reset-mode",
        choices=tuple(RESET_OPTIONS),
        help="NIR files: how every spiking neuron resets, for a producer that resets by "
        "subtraction (NIR has no field for it; default: each node's metadata, else zero). "
        "Lava has no subtractive reset and refuses it",
    )
    p.add_argument(
        "--backend",
        choices=("lava", "netx"),
        default="lava",
        help="lava: the NIR file mapped by hardware_sims; netx: the prompter exported as a lava-dl "
        "netx network, run by netx.hdf5.Network and compared with our fixed point, the integer "
        "model and the float model (exit 1 unless bit-exact with our fixed point)",
    )
    p.add_argument(
        "--raster", metavar="PNG", help="also draw both spike rasters of the most active image"
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(handler=_cosim)


def _add_dt(p) -> None:
    p.add_argument(
        "--dt",
        type=positive_float,
        metavar="SECONDS",
        help="NIR files: the simulation step, for a graph without metadata['dt']",
    )


def _add_energy(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "energy",
        help="SynOps, neuron updates and energy per image, SNN vs its ANN twin",
        description="Count synaptic operations and neuron updates per image from recorded "
        "spikes (graded inputs where they are non-zero: LoRSP v2 presents them once), and turn "
        "them into energy under a hardware profile (hardware_sims/profiles.json or your own "
        "file); the ANN twin (ReLU units, MACs) and the host's pooling and readout are costed "
        "under the same profile.\n\n"
        "example:\n  lorsp energy runs/lorsp-fmnist --profile all --images 8 --json energy.json "
        "--plot energy.png",
        formatter_class=formatter,
    )
    p.add_argument("source", help="run directory (with config.json) or NIR file")
    p.add_argument("--profile", default="loihi", help=PROFILES_HELP)
    p.add_argument("--profiles-file", metavar="JSON", help="extra profiles (same layout)")
    p.add_argument("--images", type=integer_at_least(1), default=4, help="images to average over")
    p.add_argument(
        "--steps", type=integer_at_least(1), help="time steps per image (default: the prompter's T)"
    )
    p.add_argument(
        "--simulator",
        choices=("torch", "lava", "reference"),
        default="torch",
        help="whose spikes to count: the torch model, Lava (float), or the numpy reference",
    )
    p.add_argument(
        "--seed", type=integer_at_least(0), default=0, help="seed of the random inputs (NIR files)"
    )
    _add_dt(p)
    p.add_argument("--plot", metavar="PNG", help="bar plot of SNN vs ANN-twin energy per profile")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(handler=_energy)


def _add_hw_profiles(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "hw-profiles",
        help="list the hardware energy profiles and their figures",
        description="List the energy profiles (built in, from $LORSP_HARDWARE_PROFILES and from "
        "--profiles-file), with their energy per operation in pJ.\n\n"
        "example:\n  lorsp hw-profiles --profiles-file my_chip.json",
        formatter_class=formatter,
    )
    p.add_argument("--profiles-file", metavar="JSON", help="extra profiles (same layout)")
    p.add_argument("--json", metavar="FILE", help="also write the profiles as JSON")
    p.set_defaults(handler=_hw_profiles)


def _add_lava_check(subparsers, formatter) -> None:
    p = subparsers.add_parser(
        "lava-check",
        help="check the Lava environment with a small Dense → LIF run",
        description="Run a Dense → LIF network in the Lava environment through the worker and "
        "compare its spikes with the LIF equations computed here.\n\n"
        "example:\n  lorsp lava-check --steps 20 --json lava.json",
        formatter_class=formatter,
    )
    p.add_argument("--steps", type=integer_at_least(1), default=20, help="number of time steps")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(handler=_lava_check)
