r"""A LoRSP graph that other NIR tools load: snnTorch, Norse's ``from_nir`` and rockpool.

The exact ``lorsp-nir/2`` graph (:func:`exporters.lorsp_export.export_lorsp`) uses a ``Scale``
node, three ``Input`` and two ``Output`` nodes. No other tool maps ``Scale`` (snnTorch 1.0:
``Unknown node type``; Norse 1.1.0 drops it; rockpool 3.1: ``NotImplementedError``), and all three
load through ``nirtorch``, whose executors feed the data to one node only and return one node's
output (nirtorch 2.6's ``nir_to_torch`` returns every edge into an ``Output`` separately). :func:`export_portable` writes the
same network with node types every one of them maps, ``Linear`` and ``CubaLIF`` only::

    input (P = D + N + 1) ─▶ inputs (P×P, I)
    inputs ─▶ descriptor_select (D×P, 0/1) ─▶ gate_affine (r×D) ─┐
    inputs ─▶ gate_bias (r×P: b_g in the bias column) ───────────┴▶ gate_neurons (r)
    inputs ─▶ image_gain (N×P: γ on the image's diagonal) ─▶ pixel_neurons (N) ◀─ pixel_bias (N×P)
    gate_neurons ─▶ gate_synapses (N×r) ─▶ pixel_neurons
    gate_neurons ─▶ gate_spikes ((r+N)×r, [I; 0]) ─┬▶ spikes ((r+N)×(r+N), I) ─▶ output
    pixel_neurons ─▶ pixel_spikes ((r+N)×N, [0; I]) ┘

The one input packs ``[descriptor, image (C order), bias]``, the one output packs ``[gates,
pixels]``; ``metadata["lorsp_portable"]`` records both layouts and the exact file's host section,
so :func:`portable_prompt` rebuilds the prompt from the file alone. Every added node is exact in
floating point (identities, 0/1 selectors, one non-zero product per row), so the project's
importer gives the exact file's spike trains bit for bit (:func:`verify_portable`). The dense
matrices (``N×P``, ``P×P``) limit the size: :data:`MAX_DENSE_VALUES` (use a grid for large images).

Neuron parameters are written in the convention each target reads (:data:`TARGETS`), chosen so that
:func:`exporters.semantics.discretize` at the file's ``metadata["dt"]`` gives the exact graph's
``d_u``, ``d_v`` and input gain bit for bit:

* ``norse``: the exact graph's ``CubaLIF`` (Norse 1.1.0 ``from_nir`` steps it with our Euler form
  at its ``dt`` argument: pass the file's ``metadata["dt"]``, default 1 ms).
* ``snntorch``: snnTorch 1.0 ``import_from_nir`` assumes ``dt = 1e-4`` s, ``r = tau_mem/dt`` and
  divides the threshold by ``w_in·dt/tau_syn``. The file's time base is 1e-4 s (``metadata["dt"]``):
  ``tau' = 1e-4/d``, ``r = 1/d_v``, ``w_in`` carries the input gain.
* ``rockpool``: rockpool 3.1 ``from_nir`` builds ``LIFTorch`` with ``dt = tau_mem/(1 + r)`` and
  exponential decays, ignores ``w_in`` and adds its input to the current unscaled: ``r`` is chosen
  so ``exp(-dt/tau_mem) = 1 − d_v``, the input gain is folded into the incoming weights (it must
  be a power of two, so folding is exact) and the current must be persistent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch

from exporters.export import NIRExportError, export_graph
from exporters.importer import NIRImportError, import_nir
from exporters.lorsp_export import (
    BIAS,
    DESCRIPTOR,
    FORMAT_V2,
    GATES,
    IMAGE,
    METADATA_KEY,
    PIXELS,
    LoRSPRun,
    export_lorsp,
    lorsp_host,
    reference_spikes,
)
from exporters.semantics import PERSISTENT_SYN_STEPS, RESET_KEY, discretize
from exporters.validate import load_nir

#: Graph metadata key of a portable file (``metadata["lorsp"]`` is the exact file's).
PORTABLE_KEY = "lorsp_portable"
INPUT, OUTPUT = "input", "output"
#: snnTorch 1.0's ``import_from_nir`` steps every neuron at this dt (seconds), whatever the file says.
SNNTORCH_DT = 1e-4
#: Most values one dense row block (image or bias into the pixels) may hold.
MAX_DENSE_VALUES = 2**24
#: Ulps a derived parameter may be moved so that the importer's product is exact.
MAX_NUDGE = 64


@dataclass(frozen=True)
class Neuron:
    """What a target writes for one population: the node, its time base, a weight factor."""

    node: nir.CubaLIF
    fold: np.ndarray  # per neuron: incoming weights are multiplied by it (1: unchanged)


def _nudge(value: float, exact: Callable[[float], bool], what: str) -> float:
    """``value`` moved by the fewest ulps (at most :data:`MAX_NUDGE`) for which ``exact`` holds."""
    up = down = float(value)
    for _ in range(MAX_NUDGE + 1):
        for candidate in (up, down):
            if exact(candidate):
                return candidate
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
    raise NIRExportError(f"{what}: no float64 value within {MAX_NUDGE} ulps makes it exact")


def _uniform(values: np.ndarray, field: str, name: str, target: str) -> float:
    flat = np.unique(np.asarray(values, np.float64))
    if flat.size != 1:
        raise NIRExportError(
            f"node '{name}': {target} needs one {field} per population, got {flat.size} values"
        )
    return float(flat[0])


def _time_constant(dt: float, decay: float, name: str, field: str) -> float:
    """``tau`` with ``dt / tau == decay`` exactly (a persistent current: ``dt·2^60``)."""
    if decay == 2.0**-60:
        return dt * PERSISTENT_SYN_STEPS
    return _nudge(dt / decay, lambda tau: dt / tau == decay, f"node '{name}' {field}")


def _check_portable(node: nir.CubaLIF, name: str, target: str) -> None:
    mode = (node.metadata or {}).get(RESET_KEY, "value")
    if np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.v_reset) != 0):
        raise NIRExportError(
            f"node '{name}': {target} reads v_leak = v_reset = 0 only (snnTorch asserts v_leak = 0, "
            "Norse's synapse uses v_leak, rockpool resets by subtraction)"
        )
    if mode != "value":
        raise NIRExportError(f"node '{name}': reset_mode {mode!r}; portable files reset to 0")


def _rewritten(node: nir.CubaLIF, name: str, dt: float, target: str, dt_file: float, r_of, fold):
    """A CubaLIF with the exact node's ``d_u``, ``d_v`` (at ``dt``) at ``dt_file``; ``r`` from
    ``r_of(d_v, tau_mem)`` and ``w_in`` nudged so the importer's gain ``d_v·r·d_u·w_in`` equals
    ``gain / fold(gain)`` exactly."""
    coeffs = discretize(node, dt, f"node '{name}'")
    du = _uniform(coeffs.du, "synaptic decay", name, target)
    dv = _uniform(coeffs.dv, "membrane decay", name, target)
    gain = _uniform(coeffs.input_gain, "input gain", name, target)
    tau_syn = _time_constant(dt_file, du, name, "tau_syn")
    tau_mem = _time_constant(dt_file, dv, name, "tau_mem")
    folded = fold(gain)
    wanted = gain / folded
    r = r_of(dv, tau_mem)
    dv_file, du_file = dt_file / tau_mem, dt_file / tau_syn
    w_in = _nudge(
        wanted / (dv_file * r * du_file),
        lambda w: dv_file * r * du_file * w == wanted,
        f"node '{name}' w_in",
    )
    shape = coeffs.shape
    portable = nir.CubaLIF(
        tau_syn=np.full(shape, tau_syn),
        tau_mem=np.full(shape, tau_mem),
        r=np.full(shape, r),
        v_leak=np.zeros(shape),
        v_threshold=np.asarray(node.v_threshold, np.float64).copy(),
        v_reset=np.zeros(shape),
        w_in=np.full(shape, w_in),
        metadata={**(node.metadata or {}), "portable_target": target},
    )
    return Neuron(portable, np.full(shape, folded))


def _norse(node, name, dt):
    return Neuron(node, np.ones(np.shape(node.v_threshold)))


def _snntorch(node, name, dt):
    return _rewritten(
        node, name, dt, "snntorch", SNNTORCH_DT, lambda dv, tau: 1.0 / dv, lambda g: 1.0
    )


def _rockpool_r(dv: float, tau_mem: float) -> float:
    """``r`` for which rockpool's ``dt = tau_mem/(1 + r)`` decays by ``exp(-dt/tau_mem) = 1 − d_v``."""
    return -1.0 / math.log1p(-dv) - 1.0


def _rockpool_fold(gain: float) -> float:
    mantissa, _ = math.frexp(gain)
    if mantissa != 0.5:
        raise NIRExportError(
            f"rockpool has no input gain, so the gain {gain!r} is folded into the weights; it is "
            "not a power of two, so folding would round (use dt·tau_mem_inv = 2^-k, e.g. 0.5)"
        )
    return gain


def _rockpool(node, name, dt):
    if np.any(np.asarray(node.tau_syn) != dt * PERSISTENT_SYN_STEPS):
        raise NIRExportError(
            f"node '{name}': rockpool decays its current after adding the input; only a persistent "
            "current (presentation 'once', the lorsp default) steps the same"
        )
    return _rewritten(node, name, dt, "rockpool", dt, _rockpool_r, _rockpool_fold)


@dataclass(frozen=True)
class Target:
    """A tool the portable file is written for: its time base and neuron convention."""

    name: str
    tool: str
    dt: Callable[[float], float]
    neuron: Callable[[nir.CubaLIF, str, float], Neuron]
    convention: str


#: ``--target`` name → how its file is written; ``nir`` is the exact graph.
TARGETS: dict[str, Target | None] = {
    "nir": None,
    "norse": Target(
        "norse",
        "norse.torch.from_nir(graph, dt=metadata['dt'])",
        lambda dt: dt,
        _norse,
        "CubaLIF as exported (Euler at metadata dt)",
    ),
    "snntorch": Target(
        "snntorch",
        "snntorch.import_nir.import_from_nir(graph)",
        lambda dt: SNNTORCH_DT,
        _snntorch,
        "time base 1e-4 s; tau = 1e-4/decay, r = tau_mem/1e-4, w_in carries the gain",
    ),
    "rockpool": Target(
        "rockpool",
        "rockpool.nn.modules.torch.nir.from_nir(graph)",
        lambda dt: dt,
        _rockpool,
        "r = -1/ln(1 - dt/tau_mem) - 1; gain folded into the weights; persistent current only",
    ),
}


def _linear(weight: np.ndarray) -> nir.Linear:
    return nir.Linear(weight=np.ascontiguousarray(weight, np.float64))


def export_portable(prompter, target: str) -> nir.NIRGraph:
    """The ``lorsp`` (v2) prompter as a graph ``target``'s NIR importer loads (module doc)."""
    if target not in TARGETS:
        raise NIRExportError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    exact = export_lorsp(prompter)
    spec = TARGETS[target]
    if spec is None:
        return exact
    return portable_graph(exact, target)


def portable_graph(exact: nir.NIRGraph, target: str) -> nir.NIRGraph:
    """Rewrite an exact ``lorsp-nir/2`` graph for ``target`` (a key of :data:`TARGETS`)."""
    spec = TARGETS.get(target)
    if spec is None:
        raise NIRExportError(
            f"target {target!r} has no portable form; choose from "
            f"{sorted(k for k, v in TARGETS.items() if v)}"
        )
    host = lorsp_host(exact)
    if host.format != FORMAT_V2:
        raise NIRExportError(
            f"only {FORMAT_V2} (lorsp) graphs have a portable form, not {host.format}"
        )
    nodes = exact.nodes
    dt = float(exact.metadata["dt"])
    gate_w = np.asarray(nodes["gate_affine"].weight, np.float64)
    rank, width = gate_w.shape
    pixels = int(np.asarray(nodes["image_gain"].scale).size)
    packed = width + pixels + 1
    if packed * packed > MAX_DENSE_VALUES:
        raise NIRExportError(
            f"{pixels} pixel neurons need dense {packed}×{packed} matrices "
            f"(> {MAX_DENSE_VALUES} values); export a prompter with a grid (e.g. grid 8)"
        )
    for name in ("gate_neurons", "pixel_neurons"):
        _check_portable(nodes[name], name, target)
    gates = spec.neuron(nodes["gate_neurons"], "gate_neurons", dt)
    pixel = spec.neuron(nodes["pixel_neurons"], "pixel_neurons", dt)
    g_fold, p_fold = gates.fold[:, None], pixel.fold[:, None]
    image_cols = slice(width, width + pixels)
    bias_col = width + pixels
    select = np.zeros((width, packed))
    select[np.arange(width), np.arange(width)] = 1.0
    gate_bias = np.zeros((rank, packed))
    gate_bias[:, bias_col] = np.asarray(nodes["gate_bias"].weight, np.float64)[:, 0]
    image_gain = np.zeros((pixels, packed))
    image_gain[:, image_cols] = np.diag(np.asarray(nodes["image_gain"].scale, np.float64))
    pixel_bias = np.zeros((pixels, packed))
    pixel_bias[:, bias_col] = np.asarray(nodes["pixel_bias"].weight, np.float64)[:, 0]
    gate_out = np.zeros((rank + pixels, rank))
    gate_out[np.arange(rank), np.arange(rank)] = 1.0
    pixel_out = np.zeros((rank + pixels, pixels))
    pixel_out[rank + np.arange(pixels), np.arange(pixels)] = 1.0
    portable_nodes = {
        "inputs": _linear(np.eye(packed)),
        "descriptor_select": _linear(select),
        "gate_affine": _linear(gate_w * g_fold),
        "gate_bias": _linear(gate_bias * g_fold),
        "gate_neurons": gates.node,
        "image_gain": _linear(image_gain * p_fold),
        "pixel_bias": _linear(pixel_bias * p_fold),
        "gate_synapses": _linear(np.asarray(nodes["gate_synapses"].weight, np.float64) * p_fold),
        "pixel_neurons": pixel.node,
        "gate_spikes": _linear(gate_out),
        "pixel_spikes": _linear(pixel_out),
        "spikes": _linear(np.eye(rank + pixels)),
    }
    # Edge order is summation order, as in the exact graph (image, bias, then the gates).
    edges = [
        (INPUT, "inputs"),
        ("inputs", "descriptor_select"),
        ("descriptor_select", "gate_affine"),
        ("inputs", "gate_bias"),
        ("gate_affine", "gate_neurons"),
        ("gate_bias", "gate_neurons"),
        ("inputs", "image_gain"),
        ("image_gain", "pixel_neurons"),
        ("inputs", "pixel_bias"),
        ("pixel_bias", "pixel_neurons"),
        ("gate_neurons", "gate_synapses"),
        ("gate_synapses", "pixel_neurons"),
        ("gate_neurons", "gate_spikes"),
        ("pixel_neurons", "pixel_spikes"),
        ("gate_spikes", "spikes"),
        ("pixel_spikes", "spikes"),
        ("spikes", OUTPUT),
    ]
    layout = {
        "target": target,
        "tool": spec.tool,
        "convention": spec.convention,
        "exact_dt": dt,
        "input": INPUT,
        "output": OUTPUT,
        "input_layout": {
            DESCRIPTOR: [0, width],
            IMAGE: [width, width + pixels],
            BIAS: [bias_col, packed],
        },
        "output_layout": {GATES: [0, rank], PIXELS: [rank, rank + pixels]},
        METADATA_KEY: dict(exact.metadata[METADATA_KEY]),
    }
    return export_graph(
        portable_nodes,
        edges,
        {INPUT: (packed,)},
        (OUTPUT,),
        dt=spec.dt(dt),
        metadata={PORTABLE_KEY: layout},
    )


# --------------------------------------------------------------------------------------------
# Reading a portable file back.


@dataclass(frozen=True, eq=False)
class PortableHost:
    """The host of a portable file: packs the exact host's inputs, unpacks the output by role."""

    target: str
    lorsp: object  # exporters.lorsp_export.LoRSPv2Host of the exact graph
    input: str
    output: str
    input_layout: dict[str, tuple[int, int]]
    output_layout: dict[str, tuple[int, int]]

    def packed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, P)``: the one input for images ``x`` ``(B, 3, H, W)``, presented as the host says."""
        by_name = self.lorsp.host_inputs(x)
        parts = []
        for role in sorted(self.input_layout, key=lambda r: self.input_layout[r][0]):
            value = by_name[self.lorsp.inputs[role]]
            parts.append(value.reshape(*value.shape[:2], -1))
        return torch.cat(parts, dim=-1)

    def role_spikes(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{role: (T, B, n)}`` from the packed output ``(T, B, r + N)``."""
        output = torch.as_tensor(output)
        return {role: output[..., a:b] for role, (a, b) in self.output_layout.items()}

    def prompt(self, output: torch.Tensor) -> torch.Tensor:
        return self.lorsp.prompt(self.role_spikes(output))


def portable_host(graph: nir.NIRGraph) -> PortableHost:
    """Read ``metadata["lorsp_portable"]``; :class:`NIRImportError` if absent or inconsistent."""
    layout = (graph.metadata or {}).get(PORTABLE_KEY)
    if not isinstance(layout, dict):
        raise NIRImportError(f"not a portable LoRSP graph: no metadata['{PORTABLE_KEY}']")
    stub = {
        layout[METADATA_KEY][f"{role}_input"]: nir.Input(input_type={"input": np.array(shape)})
        for role, shape in _role_shapes(layout).items()
    }
    for role in (GATES, PIXELS):
        stub[layout[METADATA_KEY][f"{'gate' if role == GATES else 'pixel'}_output"]] = nir.Output(
            output_type={"output": np.array([1])}
        )
    lorsp = lorsp_host(
        nir.NIRGraph(
            nodes=stub, edges=[], metadata={METADATA_KEY: layout[METADATA_KEY]}, type_check=False
        )
    )
    packed = int(np.ravel(graph.nodes[layout["input"]].input_type["input"])[0])
    spans = {r: (int(a), int(b)) for r, (a, b) in layout["input_layout"].items()}
    if (
        sorted(b - a for a, b in spans.values())
        != sorted(math.prod(s) for s in _role_shapes(layout).values())
        or max(b for _, b in spans.values()) != packed
    ):
        raise NIRImportError(f"metadata['{PORTABLE_KEY}']['input_layout'] does not fit the input")
    outs = {r: (int(a), int(b)) for r, (a, b) in layout["output_layout"].items()}
    return PortableHost(
        str(layout["target"]), lorsp, str(layout["input"]), str(layout["output"]), spans, outs
    )


def _role_shapes(layout: Mapping) -> dict[str, tuple[int, ...]]:
    spans = layout["input_layout"]
    host = layout[METADATA_KEY]
    grid = int(np.asarray(host["grid"]))
    height, width = int(np.asarray(host["image_height"])), int(np.asarray(host["image_width"]))
    neurons = (3, grid, grid) if grid else (3, height, width)
    pool = int(np.asarray(host["descriptor_pool"]))
    shapes = {DESCRIPTOR: (3 * pool * pool,), IMAGE: neurons, BIAS: (1,)}
    return {role: shapes[role] for role in spans}


def portable_prompt(source: nir.NIRGraph | str | Path, image: torch.Tensor) -> LoRSPRun:
    """The prompt of ``image`` from a portable file alone, run in the project's importer."""
    graph = load_nir(source) if isinstance(source, (str, Path)) else source
    host = portable_host(graph)
    model = import_nir(graph)
    x = torch.as_tensor(image).to(model.dtype)
    run = model({host.input: host.packed_inputs(x)}, record=("spikes",))
    output = run.outputs[host.output]
    return LoRSPRun(host.prompt(output), host.role_spikes(output), run)


def verify_portable(prompter, source: nir.NIRGraph | str | Path, image: torch.Tensor) -> dict:
    """The portable file's spikes and prompt against the prompter's (as ``verify_lorsp_export``)."""
    spikes, prompt = reference_spikes(prompter, image)
    rebuilt = portable_prompt(source, image)
    mismatched = {
        role: int((rebuilt.spikes[role].reshape(expected.shape) != expected).sum())
        for role, expected in spikes.items()
    }
    return {
        "images": int(image.shape[0]),
        "spikes": {role: int(value.sum()) for role, value in spikes.items()},
        "mismatched_spikes": mismatched,
        "max_prompt_difference": float((rebuilt.prompt - prompt).abs().max()),
        "matches": not any(mismatched.values()) and torch.equal(rebuilt.prompt, prompt),
    }
