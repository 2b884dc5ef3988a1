"""Co-simulation: the torch model and Lava on the same inputs, compared neuron step by neuron step.

Main environment (torch). The *torch side* is

* for a run directory (a trained checkpoint): the prompter's own ``spiking_core`` (Norse cells),
  in float64, its gate and pixel cells' spikes and voltages captured with forward hooks and keyed
  by the node names :func:`exporters.lorsp_export.export_lorsp` gives them (v2 ``lorsp``:
  ``gate_neurons``, ``pixel_neurons``; v1 ``lorsp_v1``: ``gate_neurons``, ``pixel_on``,
  ``pixel_off``); the graph is exported with ``export_lorsp`` for Lava;
* for a NIR file: the importer's module (:func:`exporters.importer.import_nir`, float64).

The *Lava side* runs the NIR file through the worker (:func:`hardware_sims.run_lava_images`): all
images back to back in one Lava run, Lava's one-step delay per connection already aligned. Inputs:
for a checkpoint, the first ``images`` images of the run's test split; for a LoRSP NIR file,
seeded uniform random images; both presented as the file's host says
(:meth:`LoRSPHost.host_inputs <exporters.lorsp_export.LoRSPHost>`: v2 presents descriptor, image
and the constant-1 bias once, at step 0, and zeros after; v1 at every step). For any other graph:
seeded uniform values in [0, 1) per step, or arrays the caller gives. A NIR file may be given
``dt`` (seconds; required when its metadata has none) and ``reset_mode`` (``zero`` or
``subtract``, :func:`exporters.overrides.with_reset_mode`: NIR has no field for it); Lava's LIF
has no subtractive reset, so :func:`cosimulate` refuses one, naming the node, before it starts Lava.

Per layer and in total: ``spike_agreement`` (fraction of neuron-steps whose spike is equal),
``max_abs_v_diff`` (voltage after reset), spike counts, and SynOps per image counted from each
side's spikes (:mod:`hardware_sims.synops`; equal when the spikes are). For a LoRSP graph the
prompt is rebuilt from each side's spikes by the file's host (``LoRSPHost.prompt``) and compared;
for a checkpoint the report adds the test accuracy on these images with either prompt. With
``fixed_pt`` Lava runs Loihi-style integers (:mod:`hardware_sims.quantize`): the report adds
whether Lava matches the numpy bit-accurate reference.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hardware_sims.client import run_lava_images
from hardware_sims.graph import GraphError, analyse
from hardware_sims.synops import count_synops
from lorsp_neuro.errors import LorspError
from lorsp_neuro.runs import is_run_dir

PRECISIONS = ("floating_pt", "fixed_pt")
#: Node names :func:`exporters.lorsp_export.export_lorsp` gives the prompter's populations:
#: the gates (both versions), v2's pixel neurons, v1's ON and OFF pixel neurons.
LORSP_GATE, LORSP_PIXELS = "gate_neurons", "pixel_neurons"
LORSP_ON, LORSP_OFF = "pixel_on", "pixel_off"
#: Bound of ``|x|`` per LoRSP input role, for the fixed-point payload: the descriptor is centred
#: (``|d| ≤ 0.5``), pixels are in [0, 1], the bias input is the constant 1.
LORSP_INPUT_RANGES = {"descriptor": 0.5, "image": 1.0, "bias": 1.0}


class CosimError(LorspError, ValueError):
    """A co-simulation cannot be set up; the message names the source and the problem."""


@dataclass
class LayerAgreement:
    neurons: int
    neuron_steps: int
    spike_agreement: float
    mismatched_spikes: int
    spikes_torch: int
    spikes_lava: int
    max_abs_v_diff: float | None


def compare_layer(
    torch_spikes: np.ndarray,
    lava_spikes: np.ndarray,
    torch_v: np.ndarray | None = None,
    lava_v: np.ndarray | None = None,
) -> LayerAgreement:
    """Agreement of two ``(images, steps, *shape)`` spike arrays (and voltages, if given)."""
    if torch_spikes.shape != lava_spikes.shape:
        raise CosimError(
            f"spike arrays differ in shape: {torch_spikes.shape} vs {lava_spikes.shape}"
        )
    a, b = np.asarray(torch_spikes, bool), np.asarray(lava_spikes, bool)
    mismatched = int(np.count_nonzero(a != b))
    v_diff = None
    if torch_v is not None and lava_v is not None:
        v_diff = float(np.max(np.abs(np.asarray(torch_v) - np.asarray(lava_v)), initial=0.0))
    return LayerAgreement(
        neurons=int(np.prod(a.shape[2:])),
        neuron_steps=int(a.size),
        spike_agreement=1.0 - mismatched / a.size if a.size else 1.0,
        mismatched_spikes=mismatched,
        spikes_torch=int(a.sum()),
        spikes_lava=int(b.sum()),
        max_abs_v_diff=v_diff,
    )


def total_agreement(layers: Mapping[str, LayerAgreement]) -> LayerAgreement:
    diffs = [x.max_abs_v_diff for x in layers.values() if x.max_abs_v_diff is not None]
    steps = sum(x.neuron_steps for x in layers.values())
    mismatched = sum(x.mismatched_spikes for x in layers.values())
    return LayerAgreement(
        neurons=sum(x.neurons for x in layers.values()),
        neuron_steps=steps,
        spike_agreement=1.0 - mismatched / steps if steps else 1.0,
        mismatched_spikes=mismatched,
        spikes_torch=sum(x.spikes_torch for x in layers.values()),
        spikes_lava=sum(x.spikes_lava for x in layers.values()),
        max_abs_v_diff=max(diffs) if diffs else None,
    )


@dataclass
class CosimReport:
    source: str
    precision: str
    images: int
    steps: int
    torch_side: str
    layers: dict[str, LayerAgreement]
    total: LayerAgreement
    synops_per_image: dict[str, float]
    wall_s: dict[str, float]
    lava: dict
    prompt: dict | None = None
    accuracy: dict | None = None
    fixed_point: dict | None = None
    records: dict | None = field(default=None, repr=False)  # {"torch"|"lava": {node: {kind}}}
    inputs: dict | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("records")
        out.pop("inputs")
        return out


# --------------------------------------------------------------------------------------------
# Workloads: what both simulators are given


@dataclass
class Workload:
    source: str
    graph_path: Path
    graph: object  # nir.NIRGraph
    steps: int
    inputs: dict[str, np.ndarray]  # (images, steps, *shape), float64
    input_ranges: dict[str, float]
    images: object = None  # (B, 3, H, W) float64 tensor for LoRSP
    labels: object = None
    model: object = None  # PromptedModel of a checkpoint
    host: object = None  # exporters.lorsp_export.LoRSPHost of a LoRSP graph
    dt: float | None = None  # the simulation step given for a NIR file (None: its metadata's)


def presented_inputs(host, images, steps: int | None = None) -> dict[str, np.ndarray]:
    """What a LoRSP graph's inputs receive for ``images`` ``(B, 3, H, W)``, as the host presents it.

    ``host.host_inputs`` gives ``(T, B, *shape)`` tensors over the file's ``T`` steps; here they are
    float64 numpy ``(B, steps, *shape)``. A ``steps`` other than the file's keeps the presentation:
    step 0's values, then zeros (``"once"``) or step 0's values again (``"every_step"``).
    """
    import torch

    x = torch.as_tensor(images, dtype=torch.float64)
    steps = steps or host.steps
    out = {}
    for name, value in host.host_inputs(x).items():
        value = value.detach().cpu().to(torch.float64).numpy()
        if value.shape[0] != steps:
            first = value[:1]
            later = np.zeros_like(first) if host.presentation == "once" else first
            value = np.concatenate([first, np.repeat(later, steps - 1, axis=0)])
        out[name] = np.ascontiguousarray(np.swapaxes(value, 0, 1))
    return out


def lorsp_input_ranges(host) -> dict[str, float]:
    """:data:`LORSP_INPUT_RANGES` keyed by the graph's input node names."""
    return {name: LORSP_INPUT_RANGES[role] for role, name in host.inputs.items()}


def role_populations(graph, host) -> dict[str, str]:
    """The population behind each of a LoRSP graph's outputs: ``{role: neuron node name}``."""
    sources = {}
    for role, output in host.outputs.items():
        feeding = [src for src, dst in graph.edges if dst == output]
        if len(feeding) != 1:
            raise CosimError(f"output '{output}' ({role}) must be fed by one node, got {feeding}")
        sources[role] = feeding[0]
    return sources


def prepare_workload(
    source: str | Path,
    images: int,
    steps: int | None,
    workdir: Path,
    seed: int = 0,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    dt: float | None = None,
    reset_mode: str | None = None,
) -> Workload:
    """Resolve ``source`` (run directory or NIR file) into a graph file and shared inputs.

    ``dt`` and ``reset_mode`` apply to a NIR file (module doc); the graph with ``reset_mode`` set
    is written into ``workdir`` for Lava.
    """
    import torch

    from exporters.lorsp_export import METADATA_KEY, export_lorsp, lorsp_host
    from exporters.overrides import with_reset_mode
    from exporters.validate import load_nir, write_nir

    if images < 1:
        raise CosimError(f"images must be >= 1, got {images}")
    path = Path(source)
    if is_run_dir(path) and (dt is not None or reset_mode is not None):
        raise CosimError(
            f"{path}: dt and reset_mode (--dt, --reset-mode) apply to NIR files; a run "
            "directory's prompter has its own"
        )
    if is_run_dir(path):
        from lorsp_neuro.runs import load_run, load_test_images

        model, config = load_run(path, device="cpu")
        prompter = model.prompter
        if getattr(prompter, "spiking_core", None) is None:
            raise CosimError(f"{path}: prompter '{prompter.name}' has no spiking part to simulate")
        graph_path = write_nir(export_lorsp(prompter), workdir / "prompter.nir")
        graph = load_nir(graph_path)
        host = lorsp_host(graph)
        x, labels = load_test_images(config, model, images)
        x = x.to(torch.float64)
        steps = steps or host.steps
        return Workload(
            str(path),
            graph_path,
            graph,
            steps,
            presented_inputs(host, x, steps),
            lorsp_input_ranges(host),
            images=x,
            labels=labels,
            model=model,
            host=host,
        )
    if not path.is_file():
        raise CosimError(f"{path}: neither a run directory (with config.json) nor a NIR file")
    graph, graph_path = load_nir(path), path
    if reset_mode is not None:
        graph = with_reset_mode(graph, reset_mode)
        graph_path = write_nir(graph, workdir / path.name)
    rng = np.random.default_rng(seed)
    if METADATA_KEY in (graph.metadata or {}):
        host = lorsp_host(graph)
        steps = steps or host.steps
        x = torch.as_tensor(rng.uniform(0.0, 1.0, size=(images, 3, *host.image_size)))
        return Workload(
            str(path),
            graph_path,
            graph,
            steps,
            presented_inputs(host, x, steps),
            lorsp_input_ranges(host),
            images=x,
            host=host,
            dt=dt,
        )
    model = analyse(graph, dt)
    if steps is None:
        raise CosimError(f"{path}: not a LoRSP graph, so --steps must be given")
    if inputs is None:
        inputs = {
            name: rng.uniform(0.0, 1.0, size=(images, steps, *shape))
            for name, shape in model.inputs.items()
        }
    data = {n: np.asarray(v, np.float64) for n, v in inputs.items()}
    ranges = {n: float(np.max(np.abs(v), initial=0.0)) for n, v in data.items()}
    return Workload(str(path), graph_path, graph, steps, data, ranges, dt=dt)


# --------------------------------------------------------------------------------------------
# The torch side


def norse_records(prompter, images, steps: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Spikes and voltages of a LoRSP prompter's Norse cells, keyed by the exported node names.

    The prompter is copied to float64 (``steps``, default its own T, set on the copy); forward
    hooks on ``spiking_core.gate_neurons`` and ``pixel_neurons`` catch each step's ``(z, state)``.
    v2 (``lorsp``) runs its core cell by cell (``fused = False``; the fused training path gives
    bit-identical spikes), inputs presented once or every step as configured, and gives
    ``gate_neurons`` and ``pixel_neurons``. v1 (``lorsp_v1``) presents the descriptor at every
    step, and its one pixel population is split into ``pixel_on`` (first half) and ``pixel_off``
    (``LowRankPixelSynapses.factor_weight``). Arrays are ``(images, steps, n)``.
    """
    import torch

    from lorsp_neuro.prompters import LoRSPv1Prompter

    twin = copy.deepcopy(prompter).to(torch.float64).eval()
    core = twin.spiking_core
    steps = steps or int(twin.config.steps)
    caught: dict[str, list] = {"gate": [], "pixel": []}

    def catcher(key):
        def hook(module, args, output):
            spikes, state = output
            caught[key].append((spikes.detach().clone(), state.v.detach().clone()))

        return hook

    handles = [
        core.gate_neurons.register_forward_hook(catcher("gate")),
        core.pixel_neurons.register_forward_hook(catcher("pixel")),
    ]
    v1 = isinstance(twin, LoRSPv1Prompter)
    try:
        x = torch.as_tensor(images, dtype=torch.float64)
        with torch.no_grad():
            if v1:
                descriptor = twin.descriptor(x)
                core(descriptor.unsqueeze(0).expand(steps, *descriptor.shape), x)
            else:
                core.steps = steps
                core.fused = False  # the Norse cells step by step, as the hooks see them
                twin.run_core(x)
    finally:
        for handle in handles:
            handle.remove()

    def stacked(key: str, index: int) -> np.ndarray:
        return torch.stack([item[index] for item in caught[key]], dim=1).numpy()

    pixel_spikes, pixel_v = stacked("pixel", 0), stacked("pixel", 1)
    records = {LORSP_GATE: {"spikes": stacked("gate", 0).astype(bool), "v": stacked("gate", 1)}}
    if not v1:
        records[LORSP_PIXELS] = {"spikes": pixel_spikes.astype(bool), "v": pixel_v}
        return records
    half = core.num_pixel_neurons // 2
    records[LORSP_ON] = {"spikes": pixel_spikes[..., :half].astype(bool), "v": pixel_v[..., :half]}
    records[LORSP_OFF] = {"spikes": pixel_spikes[..., half:].astype(bool), "v": pixel_v[..., half:]}
    return records


def importer_records(
    graph, inputs: Mapping[str, np.ndarray], dt: float | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Spikes and voltages of every neuron node from the NIR importer's module (float64)."""
    import torch

    from exporters.importer import import_nir

    module = import_nir(graph, dt=dt, dtype=torch.float64)
    data = {n: torch.as_tensor(np.swapaxes(v, 0, 1)) for n, v in inputs.items()}
    run = module(data, record=("spikes", "v"))
    return {
        node: {
            kind: np.swapaxes(value.numpy(), 0, 1).astype(bool if kind == "spikes" else np.float64)
            for kind, value in kinds.items()
        }
        for node, kinds in run.records.items()
        if "spikes" in kinds
    }


def torch_side(work: Workload) -> tuple[dict, str, float]:
    """Records of the torch model for ``work``, what it was, and its wall time."""
    started = time.perf_counter()
    if work.model is not None:
        records = norse_records(work.model.prompter, work.images, work.steps)
        kind = "norse spiking_core (float64)"
    else:
        records = importer_records(work.graph, work.inputs, work.dt)
        kind = "exporters.importer (float64)"
    return records, kind, time.perf_counter() - started


# --------------------------------------------------------------------------------------------


def lorsp_prompt(graph, host, records: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
    """The prompt ``(images, 3, H, W)`` the file's host builds from one side's recorded spikes."""
    import torch

    spikes = {}
    for role, node in role_populations(graph, host).items():
        value = np.asarray(records[node]["spikes"], np.float64)
        spikes[role] = torch.as_tensor(np.swapaxes(value.reshape(*value.shape[:2], -1), 0, 1))
    return host.prompt(spikes).detach().cpu().to(torch.float64).numpy()


def _prompt_and_accuracy(
    work: Workload, torch_rec: dict, lava_rec: dict
) -> tuple[dict, dict | None]:
    import torch

    p_torch = lorsp_prompt(work.graph, work.host, torch_rec)
    p_lava = lorsp_prompt(work.graph, work.host, lava_rec)
    norm = float(np.abs(p_torch).sum())
    prompt = {
        "relative_l1": float(np.abs(p_lava - p_torch).sum()) / norm if norm > 0 else None,
        "max_abs_diff": float(np.abs(p_lava - p_torch).max(initial=0.0)),
        "l1_torch": norm,
    }
    if work.model is None or work.labels is None:
        return prompt, None
    model = work.model.to(torch.float32).eval()
    x = work.images.to(torch.float32)
    labels = torch.as_tensor(work.labels)
    with torch.no_grad():
        correct = {}
        for name, p in (("torch", p_torch), ("lava", p_lava)):
            logits = model.classify(x + torch.as_tensor(p, dtype=torch.float32))
            correct[name] = int((logits.argmax(dim=1) == labels).sum())
    n = len(labels)
    accuracy = {
        "images": n,
        "torch": correct["torch"] / n,
        "lava": correct["lava"] / n,
        "change": (correct["lava"] - correct["torch"]) / n,
    }
    return prompt, accuracy


def cosimulate(
    source: str | Path,
    images: int = 2,
    steps: int | None = None,
    precision: str = "floating_pt",
    seed: int = 0,
    inputs: Mapping[str, np.ndarray] | None = None,
    timeout: float = 3600.0,
    keep_records: bool = False,
    *,
    dt: float | None = None,
    reset_mode: str | None = None,
) -> CosimReport:
    """Run ``source`` (run directory or NIR file) in torch and in Lava; compare (module doc)."""
    from hardware_sims.plan import build_plan

    if precision not in PRECISIONS:
        raise CosimError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with tempfile.TemporaryDirectory(prefix="lorsp-cosim-") as tmp:
        work = prepare_workload(
            source, images, steps, Path(tmp), seed, inputs, dt=dt, reset_mode=reset_mode
        )
        if work.model is None:  # a NIR file: what the Lava worker would refuse, refused here
            try:
                build_plan(analyse(work.graph, work.dt), work.steps)
            except GraphError as exc:
                given = f" (set by --reset-mode {reset_mode})" if reset_mode else ""
                raise CosimError(f"{source}: Lava cannot run this graph: {exc}{given}") from None
        torch_rec, torch_kind, torch_s = torch_side(work)
        started = time.perf_counter()
        result = run_lava_images(
            work.graph_path,
            work.inputs,
            work.steps,
            record=("spikes", "v"),
            precision=precision,
            input_ranges=work.input_ranges,
            timeout=timeout,
            dt=work.dt,
        )
        lava_s = time.perf_counter() - started
    lava_rec = result.records
    missing = sorted(set(lava_rec) - set(torch_rec))
    if missing:
        raise CosimError(f"{source}: the torch side recorded no neuron node named {missing}")
    layers = {
        node: compare_layer(
            torch_rec[node]["spikes"],
            lava_rec[node]["spikes"],
            torch_rec[node]["v"],
            lava_rec[node]["v"],
        )
        for node in lava_rec
    }
    model = analyse(work.graph, work.dt)
    synops = {
        "torch": count_synops(
            model, {n: r["spikes"] for n, r in torch_rec.items()}, work.inputs
        ).synops_per_image,
        "lava": count_synops(
            model, {n: r["spikes"] for n, r in lava_rec.items()}, work.inputs
        ).synops_per_image,
    }
    status = result.status
    report = CosimReport(
        source=work.source,
        precision=precision,
        images=images,
        steps=work.steps,
        torch_side=torch_kind,
        layers=layers,
        total=total_agreement(layers),
        synops_per_image=synops,
        wall_s={
            "torch": torch_s,
            "lava_worker_call": lava_s,
            "lava_run": status.get("run_s", float("nan")),
            "lava_build": status.get("build_s", float("nan")),
        },
        lava={
            k: status.get(k)
            for k in ("delays", "groups", "synapses", "lava_steps", "lava_runs", "lava_version")
        },
    )
    if work.host is not None:
        report.prompt, report.accuracy = _prompt_and_accuracy(work, torch_rec, lava_rec)
    if precision == "fixed_pt":
        report.fixed_point = _fixed_reference_check(work, lava_rec, status)
    if keep_records:
        report.records = {"torch": torch_rec, "lava": lava_rec}
        report.inputs = work.inputs
    return report


@dataclass
class Activity:
    """Recorded spikes of one simulator on a workload, for SynOps and energy."""

    graph: object  # nir.NIRGraph
    model: object  # hardware_sims.graph.NetworkModel
    spikes: dict[str, np.ndarray]  # (images, steps, *shape)
    inputs: dict[str, np.ndarray]
    simulator: str
    wall_s: float
    run_model: object = None  # the PromptedModel of a run directory source


SIMULATORS = ("torch", "lava", "reference")


def activity(
    source: str | Path,
    images: int = 4,
    steps: int | None = None,
    simulator: str = "torch",
    seed: int = 0,
    inputs: Mapping[str, np.ndarray] | None = None,
    timeout: float = 3600.0,
    *,
    dt: float | None = None,
) -> Activity:
    """Spikes of ``source`` from ``simulator``: ``torch`` (as :func:`cosimulate`'s torch side),
    ``lava`` (float, through the worker) or ``reference`` (the numpy node-by-node model).
    ``dt``: the simulation step of a NIR file without one in its metadata."""
    if simulator not in SIMULATORS:
        raise CosimError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
    with tempfile.TemporaryDirectory(prefix="lorsp-activity-") as tmp:
        work = prepare_workload(source, images, steps, Path(tmp), seed, inputs, dt=dt)
        started = time.perf_counter()
        if simulator == "torch":
            records, simulator, _ = torch_side(work)
            spikes = {n: r["spikes"] for n, r in records.items()}
        elif simulator == "lava":
            result = run_lava_images(
                work.graph_path, work.inputs, work.steps, timeout=timeout, dt=work.dt
            )
            spikes = {n: r["spikes"] for n, r in result.records.items()}
            simulator = f"lava {result.status.get('lava_version')} floating_pt"
        else:
            from hardware_sims.reference import simulate_float

            records = simulate_float(
                work.graph, work.inputs, work.steps, record=("spikes",), dt=work.dt
            )
            spikes = {n: r["spikes"] for n, r in records.items()}
            simulator = "numpy reference (float64)"
        wall = time.perf_counter() - started
    return Activity(
        work.graph, analyse(work.graph, work.dt), spikes, work.inputs, simulator, wall, work.model
    )


def _fixed_reference_check(work: Workload, lava_rec: dict, status: dict) -> dict:
    """Lava's fixed-point spikes against the numpy bit-accurate model of the same integers."""
    from hardware_sims.plan import build_plan
    from hardware_sims.quantize import quantize_plan
    from hardware_sims.reference import simulate_fixed

    plan = build_plan(analyse(work.graph, work.dt), work.steps)
    fixed = quantize_plan(plan, work.input_ranges)
    reference = simulate_fixed(plan, fixed, work.inputs, record=("spikes",))
    mismatched = sum(
        int(np.count_nonzero(reference[n]["spikes"] != lava_rec[n]["spikes"])) for n in reference
    )
    return {
        "matches_numpy_bit_accurate_model": mismatched == 0,
        "mismatched_spikes_vs_numpy_model": mismatched,
        "quantization": status.get("fixed_point"),
    }


__all__ = [
    "LORSP_GATE",
    "LORSP_OFF",
    "LORSP_ON",
    "LORSP_PIXELS",
    "Activity",
    "CosimError",
    "CosimReport",
    "GraphError",
    "LayerAgreement",
    "activity",
    "cosimulate",
    "lorsp_prompt",
    "norse_records",
    "prepare_workload",
    "presented_inputs",
    "role_populations",
]
