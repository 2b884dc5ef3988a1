"""A trained prompter (or a NIR graph) as a lava-dl netx file, and netx's run of it compared.

Main environment (torch, loaded lazily). Two library functions, each returning a dataclass:

* :func:`export_netx` ``(source, output) -> NetxExportResult``: the spiking core of a run
  directory's prompter (exported with :func:`exporters.lorsp_export.export_lorsp`) or a NIR file,
  as the netx chain of :mod:`hardware_sims.netx`, written in netx's HDF5 layout. For a LoRSP
  graph every input is constant over an image (``descriptor``, ``image``, the constant-1
  ``bias``, presented once or at every step as the file's host says), so each is folded into the
  per-image bias of the block it drives: lorsp v2 becomes ``gate_neurons`` (a netx ``input``
  block, driven by its bias) → ``gate_synapses`` → ``pixel_neurons`` (a ``dense`` block whose
  bias carries ``θ + γ·(x − 0.5)``). lorsp_v1 and any graph netx cannot express are refused with
  :class:`~hardware_sims.netx.NetxError` naming the node.
* :func:`netx_cosimulate` ``(source, images) -> NetxCosimReport``: the same images as
  :func:`hardware_sims.cosim.cosimulate` (a run's first test images, as its host presents them),
  run by lava-dl's ``netx.hdf5.Network`` from the file alone and by our own Lava processes on the
  same integers (one worker call, :func:`hardware_sims.client.run_netx`), stepped by the numpy
  integer model (:func:`hardware_sims.netx.simulate_chain`), and by the torch side (Norse, float64).
  Reports spike agreement per block of netx against each; the target against our fixed point
  and the integer model is bit for bit (spikes and integer voltages). The prompt is rebuilt from
  netx's pixel spikes by the host and, for a run directory, classified: the accuracy change
  against the float prompt. SynOps are counted from each side's spikes on the NIR graph
  (:func:`hardware_sims.synops.count_synops`) and on the netx network (biases cost none).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hardware_sims.client import run_netx
from hardware_sims.cosim import (
    LayerAgreement,
    _prompt_and_accuracy,
    compare_layer,
    lorsp_input_ranges,
    prepare_workload,
    torch_side,
    total_agreement,
)
from hardware_sims.graph import analyse
from hardware_sims.netx import NetxChain, NetxError, build_chain, simulate_chain, write_netx
from hardware_sims.netx_backend import BIAS_PREFIX, PAYLOAD
from hardware_sims.synops import count_synops
from lorsp_neuro.runs import is_run_dir


def lorsp_held_inputs(host) -> dict[str, str]:
    """Every input of a LoRSP graph is constant over an image: ``{Input node: presentation}``."""
    return {name: host.presentation for name in host.inputs.values()}


def chain_of(graph, host=None, steps: int | None = None, dt: float | None = None) -> NetxChain:
    """The netx chain of a NIR graph; a LoRSP graph's inputs are folded into biases."""
    if host is not None:
        held, ranges = lorsp_held_inputs(host), lorsp_input_ranges(host)
        return build_chain(graph, steps or host.steps, held, ranges, dt)
    if steps is None:
        raise NetxError("not a LoRSP graph, so the number of steps must be given")
    return build_chain(graph, steps, dt=dt)


def _source_graph(source, checkpoint: str):
    """``(graph, host or None)`` of a run directory's prompter or of a NIR file."""
    from exporters.lorsp_export import METADATA_KEY, export_lorsp, lorsp_host
    from exporters.validate import load_nir

    path = Path(source)
    if is_run_dir(path):
        from lorsp_neuro.runs import load_run

        model, _ = load_run(path, checkpoint=checkpoint, device="cpu")
        graph = export_lorsp(model.prompter)
    elif path.is_file():
        graph = load_nir(path)
    else:
        raise NetxError(f"{path}: neither a run directory (with config.json) nor a NIR file")
    host = lorsp_host(graph) if METADATA_KEY in (graph.metadata or {}) else None
    return graph, host


def block_summary(chain: NetxChain) -> list[dict]:
    """Per block: netx layer type, size, the neuron integers, :math:`S`, weights, held inputs."""
    out = []
    for k, layer in enumerate(chain.layers):
        weight = layer.weight
        out.append(
            {
                "name": layer.name,
                "netx_type": "input" if weight is None else "dense",
                "neurons": layer.size,
                "iDecay": layer.i_decay,
                "vDecay": layer.v_decay,
                "vThMant": layer.v_th_mant,
                "scale": layer.scale,
                "weight_shape": None if weight is None else list(weight.shape),
                "weight_range": None if weight is None else [int(weight.min()), int(weight.max())],
                "fed_by": chain.streamed if k == 0 else chain.layers[k - 1].name,
                "bias_inputs": [t.input for t in layer.terms],
            }
        )
    return out


@dataclass
class NetxExportResult:
    """What :func:`export_netx` wrote."""

    source: str
    path: str
    bytes: int
    steps: int
    dt: float
    streamed: str | None
    held: dict[str, str]
    blocks: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def export_netx(
    source: str | Path,
    output: str | Path,
    *,
    checkpoint: str = "best",
    steps: int | None = None,
) -> NetxExportResult:
    """Write the netx file of ``source`` (a run directory or a NIR file) to ``output``."""
    graph, host = _source_graph(source, checkpoint)
    chain = chain_of(graph, host, steps)
    metadata = {"lorsp": (graph.metadata or {}).get("lorsp")} if host is not None else None
    path = write_netx(chain, output, metadata)
    return NetxExportResult(
        source=str(source),
        path=str(path),
        bytes=path.stat().st_size,
        steps=chain.steps,
        dt=chain.dt,
        streamed=chain.streamed,
        held=chain.held,
        blocks=block_summary(chain),
    )


@dataclass
class NetxCosimReport:
    """netx's run of a source against our fixed point, the integer model and the float model.

    ``netx_vs_lava_fixed`` and ``netx_vs_integer_model`` compare spikes and integer voltages
    (``max_abs_v_diff`` in Lava's integer units); ``netx_vs_float`` spikes only.
    ``synops_per_image``: counted on the NIR graph from each side's spikes;
    ``netx_synops_per_image``: on the netx network (spikes × fan-out; biases cost none).
    """

    source: str
    images: int
    steps: int
    blocks: list[dict]
    netx_vs_lava_fixed: dict[str, LayerAgreement]
    netx_vs_integer_model: dict[str, LayerAgreement]
    netx_vs_float: dict[str, LayerAgreement]
    totals: dict[str, LayerAgreement]
    bit_exact: bool
    torch_side: str
    synops_per_image: dict[str, float]
    netx_synops_per_image: dict[str, float]
    wall_s: dict[str, float]
    versions: dict[str, str]
    netx_table: str
    prompt: dict | None = None
    accuracy: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def netx_cosimulate(
    source: str | Path,
    images: int = 2,
    steps: int | None = None,
    seed: int = 0,
    timeout: float = 3600.0,
    dt: float | None = None,
    reset_mode: str | None = None,
) -> NetxCosimReport:
    """Export ``source`` to netx, run it in lava-dl and compare (module doc).

    ``dt`` and ``reset_mode`` apply to a NIR file, as in :func:`hardware_sims.cosim.cosimulate`.
    """
    with tempfile.TemporaryDirectory(prefix="lorsp-netx-") as tmp:
        work = prepare_workload(
            source, images, steps, Path(tmp), seed, dt=dt, reset_mode=reset_mode
        )
        chain = chain_of(work.graph, work.host, work.steps, work.dt)
        metadata = {"lorsp": work.graph.metadata.get("lorsp")} if work.host is not None else None
        path = write_netx(chain, Path(tmp) / "prompter.net", metadata)
        held = {name: work.inputs[name][:, 0] for name in chain.held}
        biases = chain.bias_integers(held, images)
        payload = None if chain.streamed is None else chain.payload(work.inputs[chain.streamed])
        request = {BIAS_PREFIX + name: value for name, value in biases.items()}
        if payload is not None:
            request[PAYLOAD] = payload
        started = time.perf_counter()
        result = run_netx(path, request, chain.steps, timeout=timeout)
        worker_s = time.perf_counter() - started
    started = time.perf_counter()
    integer = simulate_chain(chain, biases, payload)
    integer_s = time.perf_counter() - started
    torch_rec, torch_kind, torch_s = torch_side(work)
    netx_rec = {layer.name: result.records[f"netx/{layer.name}"] for layer in chain.layers}
    lava_rec = {layer.name: result.records[f"lava/{layer.name}"] for layer in chain.layers}

    def against(other: dict, voltages: bool) -> dict[str, LayerAgreement]:
        return {
            name: compare_layer(
                other[name]["spikes"],
                netx_rec[name]["spikes"],
                other[name]["v"] if voltages else None,
                netx_rec[name]["v"] if voltages else None,
            )
            for name in netx_rec
        }

    vs_lava, vs_integer = against(lava_rec, True), against(integer, True)
    vs_float = {
        name: compare_layer(
            torch_rec[name]["spikes"].reshape(netx_rec[name]["spikes"].shape),
            netx_rec[name]["spikes"],
        )
        for name in netx_rec
    }
    totals = {
        "lava_fixed": total_agreement(vs_lava),
        "integer_model": total_agreement(vs_integer),
        "float": total_agreement(vs_float),
    }
    bit_exact = all(
        t.mismatched_spikes == 0 and t.max_abs_v_diff == 0
        for t in (totals["lava_fixed"], totals["integer_model"])
    )
    model = analyse(work.graph)
    sides = {"float": torch_rec, "netx": netx_rec, "lava_fixed": lava_rec, "integer_model": integer}
    synops = {
        side: count_synops(
            model, {n: np.asarray(r["spikes"]) for n, r in records.items()}, work.inputs
        ).synops_per_image
        for side, records in sides.items()
    }
    netx_synops = {
        side: chain.synops_per_image(
            {layer.name: np.asarray(records[layer.name]["spikes"]) for layer in chain.layers},
            payload,
        )
        for side, records in (("float", torch_rec), ("netx", netx_rec))
    }
    status = result.status
    report = NetxCosimReport(
        source=work.source,
        images=images,
        steps=chain.steps,
        blocks=block_summary(chain),
        netx_vs_lava_fixed=vs_lava,
        netx_vs_integer_model=vs_integer,
        netx_vs_float=vs_float,
        totals=totals,
        bit_exact=bit_exact,
        torch_side=torch_kind,
        synops_per_image=synops,
        netx_synops_per_image=netx_synops,
        wall_s={
            "torch": torch_s,
            "integer_model": integer_s,
            "worker_call": worker_s,
            "netx_build": status["netx"]["build_s"],
            "netx_run": status["netx"]["run_s"],
            "lava_fixed_run": status["lava"]["run_s"],
        },
        versions={"lava-dl": status["lava_dl_version"], "lava-nc": status["lava_version"]},
        netx_table=status["netx"]["netx_table"],
    )
    if work.host is not None:
        prompt, accuracy = _prompt_and_accuracy(work, torch_rec, netx_rec)
        report.prompt = prompt
        if accuracy is not None:
            report.accuracy = {
                "images": accuracy["images"],
                "float": accuracy["torch"],
                "netx": accuracy["lava"],
                "change": accuracy["change"],
            }
    return report


__all__ = [
    "NetxCosimReport",
    "NetxExportResult",
    "block_summary",
    "chain_of",
    "export_netx",
    "lorsp_held_inputs",
    "netx_cosimulate",
]
