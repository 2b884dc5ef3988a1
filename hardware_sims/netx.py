r"""A NIR graph as a lava-dl ``netx`` network: the chain, its integers, the file, the integer model.

numpy, scipy, h5py and nir only: imported in both environments (the Lava worker reads the file
and the host biases with it; the main side writes it and steps the integer model).

**What netx runs.** ``lava.lib.dl.netx.hdf5.Network`` (lava-dl 0.6.0) reads ``layer/0 … layer/k``
of an HDF5 file and builds a *chain* of blocks, each block a synapse and a Loihi ``CUBA`` neuron
population fed by the block before it: ``input`` (neurons driven by their bias alone, or only a
shape when the input is streamed into the next block), ``dense`` and ``conv`` (``pool``,
``concat`` and several inputs are not implemented). Its integers are fixed by the file and by
netx's own conventions:

* neuron: ``iDecay`` (12 bits; Lava's ``du = iDecay − 1``, so ``iDecay = 0`` holds a current
  exactly), ``vDecay`` (Lava's ``dv``), ``vThMant`` (Lava's ``vth``), bias mantissas with the
  exponent fixed at 6 (``bias_exp = 6``: the neuron adds ``bias·2^6`` to ``v`` every step);
* ``dense`` weight: the effective integer weights, exponent 0 (netx only shifts them left and back
  by its own exponent to fill 8 bits): ``[0, 255]`` or ``[−255, 0]`` for one sign, even values in
  ``[−256, 254]`` for mixed signs (Lava drops their lowest bit);
* a streamed input is graded: ``round(s_x·x)`` in 8 bits, delivered as 24-bit messages.

**The chain of a NIR graph** (:func:`build_chain`): the neuron nodes must form a chain ``p0 → p1 →
… → pk`` (each fed by the one before it only, each feeding the next only), every population
``CUBA``-like with one ``du``, ``dv``, ``v_threshold`` per node (netx holds them per block) and
``v_leak = v_reset = 0`` (netx neurons rest and reset at 0), reset to a value. Inputs reach it in
one of two ways:

* *streamed*: one ``Input`` feeding ``p0`` only, graded, through ``p0``'s dense weights;
* *held as a bias* (``held`` names them with their presentation): an input constant over an image
  whose current the target holds exactly — presented once into a persistent current
  (``d_u = 2^-60``) or at every step into a current that lasts one step (``d_u = 1``) — adds the
  same to ``v`` at every step as a bias does. It is folded into the target's bias **per image**:
  ``b(x) = b_0 + Σ_k M_k x_k``, written by the host before each image, as lava-dl's own input
  layers are driven (``net.in_layer.neuron.bias_mant``). A synaptic bias reaching a current that
  lasts one step is folded into ``b_0``. The host computes the bias integers
  (:meth:`NetxChain.bias_integers`); the file holds ``b_0`` and every ``M_k``.

Anything else is refused with :class:`NetxError` naming the node and the reason.

**Quantization** (:func:`build_chain`), per block, in the units of :mod:`hardware_sims.quantize`
(voltage scale :math:`S`, a power of two): ``iDecay = round(4096·d_u)``, ``vDecay =
round(4096·d_v)``, ``vThMant = round(S·v_th/2^6)``, weights ``round(S·W/(2^6·s_x))`` (exponent 0),
bias ``round(S·b/2^6)`` (exponent 6, 13-bit mantissa). :math:`S` is the largest power of two with
``S·(u_max + |b|_max + v_th) ≤ 2^22`` (``u_max`` as in :mod:`hardware_sims.quantize`, ``|b|_max``
over every image the input ranges allow), ``S·|b|_max/2^6 ≤ 4095`` and every weight in its 8 bits.

**The integer model** (:func:`simulate_chain`) steps the same integers with Lava's bit-accurate
LIF (:func:`hardware_sims.reference.lif_fixed_step`) and ``Dense`` (exponent 0), without Lava's
one-step delay per block: netx's run, aligned, must equal it bit for bit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nir
import numpy as np
import scipy.sparse

from hardware_sims.graph import GraphError, analyse, nonzero_per_column
from hardware_sims.quantize import (
    ACT_SHIFT,
    BIAS_MANT_MAX,
    DECAY_UNITY,
    HEADROOM_BITS,
    PAYLOAD_MAX,
    STATE_LIMIT,
    VTH_MAX,
    VTH_SHIFT,
    quantize_decay_v,
    window_current_gain,
)
from hardware_sims.reference import lif_fixed_step
from lorsp_neuro.errors import LorspError
from lorsp_neuro.io import atomic_write_bytes

#: netx's bias exponent for ``CUBA`` neurons (``hdf5.Network.get_neuron_params``).
BIAS_EXP = 6
#: Message bits of a streamed graded input (Lava ``Dense``'s ``num_message_bits``).
INPUT_MESSAGE_BITS = 24
#: The group this project adds to a netx file (netx reads only ``layer``): names, scales, terms.
HOST_GROUP = "lorsp"
FORMAT = "lorsp-netx/1"
PRESENTATIONS = ("once", "every_step")


class NetxError(LorspError, ValueError):
    """A graph netx cannot express, or a netx file this project cannot read; names the node."""


@dataclass
class BiasTerm:
    """``M x`` of one held input ``input`` (values ``(n_in,)`` per image) in a block's bias, float."""

    input: str
    matrix: scipy.sparse.csr_matrix  # (n, n_in), the target's input gain folded in


@dataclass
class NetxLayer:
    """One netx block: a ``CUBA`` population and the dense synapses from the block before it.

    ``weight`` is ``None`` for the first block when nothing is streamed into it (a netx ``input``
    layer with neurons). Integers are netx's (module doc); ``scale`` is :math:`S`.
    """

    name: str  # the NIR neuron node
    size: int
    i_decay: int
    v_decay: int
    v_th_mant: int
    scale: float
    weight: np.ndarray | None  # (size, n_in) int32
    bias_static: np.ndarray  # (size,) float: b_0
    terms: list[BiasTerm] = field(default_factory=list)

    @property
    def lava_du(self) -> int:
        """Lava's ``du`` (its bit-accurate LIF adds ``ds_offset = 1``)."""
        return self.i_decay - 1

    def bias_mantissas(self, value: np.ndarray) -> np.ndarray:
        """Bias mantissas (exponent 6, 13 bits) of float biases ``value``."""
        mant = np.rint(np.asarray(value, np.float64) * self.scale / 2**BIAS_EXP)
        return np.clip(mant, -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int32)

    def bias_integers(self, held: Mapping[str, np.ndarray], images: int) -> np.ndarray:
        """``(images, size)`` bias mantissas for held input values ``{input: (images, n_in)}``."""
        value = np.broadcast_to(self.bias_static, (images, self.size)).copy()
        for term in self.terms:
            x = np.asarray(held[term.input], np.float64).reshape(images, -1)
            value += np.asarray((term.matrix @ x.T).T)
        return self.bias_mantissas(value)


@dataclass
class NetxChain:
    """A NIR graph as a netx chain of blocks (module doc): what the file holds."""

    steps: int
    dt: float
    layers: list[NetxLayer]
    streamed: str | None  # the Input node streamed into the first block, if any
    payload_scale: float  # s_x of the streamed input
    held: dict[str, str]  # held Input node → presentation
    input_shapes: dict[str, tuple[int, ...]]

    @property
    def depths(self) -> list[int]:
        """Lava steps each block runs behind the discrete model (one per dense synapse)."""
        first = 1 if self.streamed is not None else 0
        return [first + k for k in range(len(self.layers))]

    @property
    def window(self) -> int:
        """Lava steps per image: ``T`` plus the deepest block's delay."""
        return self.steps + self.depths[-1]

    def payload(self, values: np.ndarray) -> np.ndarray:
        """The streamed input's integer payload ``round(s_x·x)``, clipped to 8 bits."""
        scaled = np.rint(np.asarray(values, np.float64) * self.payload_scale)
        return np.clip(scaled, -PAYLOAD_MAX, PAYLOAD_MAX).astype(np.int32)

    def bias_integers(self, held: Mapping[str, np.ndarray], images: int) -> dict[str, np.ndarray]:
        """``{block: (images, size)}`` bias mantissas the host writes before each image.

        ``held[input]`` is ``(images, *shape)``: the value each held input presents.
        """
        return {layer.name: layer.bias_integers(held, images) for layer in self.layers}

    def synops_per_image(self, spikes: Mapping[str, np.ndarray], payload=None) -> float:
        """SynOps of the netx network per image: spikes × fan-out (and non-zero payloads × fan-out).

        A bias costs none. ``spikes[block]`` and ``payload`` are ``(images, T, …)``.
        """
        events = []
        if self.streamed is not None:
            events.append((np.asarray(payload) != 0, self.layers[0].weight))
        for layer, after in zip(self.layers, self.layers[1:], strict=False):
            events.append((np.asarray(spikes[layer.name], bool), after.weight))
        images = np.shape(spikes[self.layers[0].name])[0]
        total = sum(
            float((e.reshape(*e.shape[:2], -1) * nonzero_per_column(w)).sum()) for e, w in events
        )
        return total / images


# --------------------------------------------------------------------------------------------
# NIR graph → chain


def _uniform(name: str, coeffs) -> dict[str, float]:
    values = {}
    for field_name in ("du", "dv", "v_threshold", "v_reset"):
        array = np.ravel(getattr(coeffs, field_name))
        if np.ptp(array) != 0:
            raise NetxError(
                f"node '{name}': its neurons differ in {field_name}; a netx block holds one "
                "(du, dv, v_threshold) per population"
            )
        values[field_name] = float(array[0])
    if coeffs.reset_mode != "value":
        raise NetxError(
            f"node '{name}': reset_mode '{coeffs.reset_mode}'; netx CUBA neurons reset to 0"
        )
    v_start = coeffs.initial_state()[1]
    if values["v_reset"] != 0 or np.any(v_start != 0) or np.any(coeffs.bias != 0):
        raise NetxError(
            f"node '{name}': v_leak or v_reset is not 0; netx CUBA neurons rest and reset at 0"
        )
    if values["v_threshold"] <= 0:
        raise NetxError(
            f"node '{name}': v_threshold must be > 0 for netx, got {values['v_threshold']}"
        )
    return values


def _holds(du: float, presentation: str) -> bool:
    """Whether a current with decay ``du`` turns an input so presented into a constant drive."""
    if presentation == "once":
        return 1.0 - du == 1.0
    return du == 1.0


def _first_node(conn) -> str:
    return conn.nodes[0] if conn.nodes else conn.target


def build_chain(
    graph: nir.NIRGraph,
    steps: int,
    held: Mapping[str, str] | None = None,
    input_ranges: Mapping[str, float] | None = None,
    dt: float | None = None,
) -> NetxChain:
    """The netx chain of ``graph`` for images of ``steps`` steps, quantized (module doc).

    ``held`` maps the Input nodes that are constant over an image to their presentation
    (``"once"`` or ``"every_step"``); every other Input is streamed. ``input_ranges`` bounds
    ``|x|`` per Input (default 1). Raises :class:`NetxError` naming the node netx cannot express.
    """
    if steps < 1:
        raise NetxError(f"steps must be >= 1, got {steps}")
    held = dict(held or {})
    for name, presentation in held.items():
        if presentation not in PRESENTATIONS:
            raise NetxError(
                f"input '{name}': presentation {presentation!r} is not one of {PRESENTATIONS}"
            )
    ranges = {n: 1.0 for n in graph.nodes}
    ranges.update(input_ranges or {})
    try:
        model = analyse(graph, dt)
    except GraphError as exc:
        raise NetxError(str(exc)) from None
    params = {name: _uniform(name, model.populations[name].coeffs) for name in model.order}

    incoming: dict[str, list] = {name: [] for name in model.order}
    terms: dict[str, list[BiasTerm]] = {name: [] for name in model.order}
    streamed = None
    for conn in model.connections:
        target = conn.target
        gain = np.ravel(model.populations[target].coeffs.input_gain)
        weight = scipy.sparse.csr_matrix(
            scipy.sparse.diags(gain) @ scipy.sparse.csr_matrix(conn.weight)
        )
        if conn.source in model.inputs and conn.source in held:
            if not _holds(params[target]["du"], held[conn.source]):
                raise NetxError(
                    f"node '{_first_node(conn)}': input '{conn.source}' (presented "
                    f"{held[conn.source]}) reaches '{target}' through a current that does not hold "
                    "it over the image (du = "
                    f"{params[target]['du']:g}), so it cannot be folded into a netx bias; netx "
                    "blocks have one input"
                )
            terms[target].append(BiasTerm(conn.source, weight))
            continue
        if conn.source in model.inputs:
            if streamed not in (None, conn.source):
                raise NetxError(
                    f"node '{_first_node(conn)}': a second streamed input '{conn.source}' (after "
                    f"'{streamed}') into '{target}'; a netx network has one input"
                )
            streamed = conn.source
        incoming[target].append((conn, weight))

    static = {name: np.zeros(model.populations[name].size) for name in model.order}
    for target, bias in model.biases.items():
        if params[target]["du"] != 1.0:
            raise NetxError(
                f"node '{target}': a synaptic bias reaches it through a current that outlives its "
                "step; netx has no constant source (fold it into an input or use du = 1)"
            )
        static[target] += np.ravel(model.populations[target].coeffs.input_gain) * bias

    order = _chain_order(model, incoming, streamed)
    layers, payload_scale = [], 1.0
    for k, name in enumerate(order):
        first_streamed = k == 0 and streamed is not None
        layer, scale = _quantize_layer(
            name,
            model.populations[name].size,
            params[name],
            incoming[name][0][1] if incoming[name] else None,
            ranges[streamed] if first_streamed else None,
            static[name],
            terms[name],
            ranges,
            steps,
        )
        layers.append(layer)
        payload_scale = scale if first_streamed else payload_scale
    return NetxChain(
        steps=steps,
        dt=model.dt,
        layers=layers,
        streamed=streamed,
        payload_scale=payload_scale,
        held={n: p for n, p in held.items() if n in model.inputs},
        input_shapes=dict(model.inputs),
    )


def _chain_order(model, incoming: dict[str, list], streamed: str | None) -> list[str]:
    """The populations from first to last; refuses a branch, a merge or a second start."""
    feeds: dict[str, list[str]] = {name: [] for name in model.order}
    for target, conns in incoming.items():
        sources = [c.source for c, _ in conns]
        spiking = [s for s in sources if s not in model.inputs]
        if len(sources) > 1:
            raise NetxError(
                f"node '{target}': fed by {', '.join(repr(s) for s in sources)}; a netx dense "
                "block has one input (the block before it)"
            )
        for source in spiking:
            feeds[source].append(target)
        if streamed in sources and spiking:
            raise NetxError(f"node '{target}': fed by the input and by spikes")
    for source, targets in feeds.items():
        if len(targets) > 1:
            raise NetxError(
                f"node '{targets[1]}': a second block fed by '{source}' (with '{targets[0]}'); netx "
                "networks are chains of blocks"
            )
    starts = [p for p in model.order if not any(c.source in feeds for c, _ in incoming[p])]
    if len(starts) != 1:
        raise NetxError(
            f"node '{starts[1]}': a second population not fed by another ('{starts[0]}' is the "
            "first); netx networks are one chain of blocks"
        )
    if streamed is not None and not incoming[starts[0]]:
        target = next(p for p in model.order if any(c.source == streamed for c, _ in incoming[p]))
        raise NetxError(
            f"node '{target}': the streamed input '{streamed}' must feed the first block"
        )
    order = [starts[0]]
    while feeds[order[-1]]:
        order.append(feeds[order[-1]][0])
    return order


def _quantize_layer(
    name, size, params, weight, input_range, static, terms, ranges, steps
) -> tuple[NetxLayer, float]:
    """Integers of one block (module doc) and the payload scale ``s_x`` of its input.

    ``input_range`` bounds a streamed graded input (``None``: the block is fed spikes, ``s_x = 1``).
    A graded input's weights and payload share the bits the voltage scale leaves for their
    product: ``s_x`` gives each about half (at most 8 bits to the payload).
    """
    bound = 1.0 if input_range is None else input_range
    dense = None if weight is None else weight.toarray()
    a_max = 0.0 if dense is None else float(np.abs(dense).sum(axis=1).max(initial=0.0)) * bound
    b_bound = np.zeros(size)
    for term in terms:
        b_bound += np.ravel(abs(term.matrix).sum(axis=1)) * ranges[term.input]
    b_max = float((np.abs(static) + b_bound).max(initial=0.0))
    i_decay = int(np.clip(round(params["du"] * DECAY_UNITY), 0, DECAY_UNITY))
    keep = max(1.0 - params["du"], (DECAY_UNITY - i_decay) / DECAY_UNITY)
    u_max = a_max * window_current_gain(keep, steps)
    vth = params["v_threshold"]
    limit = STATE_LIMIT / 2**HEADROOM_BITS / max(vth, u_max + b_max + vth)
    if b_max > 0:
        limit = min(limit, BIAS_MANT_MAX * 2**BIAS_EXP / b_max)
    mixed = dense is not None and dense.min() < 0 < dense.max()
    peak = 0.0 if dense is None else float(np.abs(dense).max(initial=0.0))
    payload_scale = 1.0
    if input_range is not None and peak > 0:
        levels = math.sqrt(limit * peak * bound / 2**ACT_SHIFT)
        payload_scale = float(np.clip(levels, 1.0, PAYLOAD_MAX)) / bound
    if peak > 0:
        limit = min(limit, (254 if mixed else 255) * 2**ACT_SHIFT * payload_scale / peak)
    scale = 2.0 ** math.floor(math.log2(limit))
    ints = None
    if dense is not None:
        target = dense * scale / (2**ACT_SHIFT * payload_scale)
        ints = 2 * np.rint(target / 2) if mixed else np.rint(target)
        ints = np.clip(ints, -256 if mixed else -255, 254 if mixed else 255).astype(np.int32)
    layer = NetxLayer(
        name=name,
        size=size,
        i_decay=i_decay,
        v_decay=quantize_decay_v(params["dv"]),
        v_th_mant=int(min(round(scale * vth / 2**VTH_SHIFT), VTH_MAX)),
        scale=scale,
        weight=ints,
        bias_static=static,
        terms=terms,
    )
    return layer, payload_scale


# --------------------------------------------------------------------------------------------
# The file


def _write_sparse(group: h5py.Group, name: str, matrix: scipy.sparse.csr_matrix) -> None:
    sub = group.create_group(name)
    sub.create_dataset("data", data=matrix.data.astype(np.float64))
    sub.create_dataset("indices", data=matrix.indices.astype(np.int64))
    sub.create_dataset("indptr", data=matrix.indptr.astype(np.int64))
    sub.create_dataset("shape", data=np.asarray(matrix.shape, np.int64))


def _read_sparse(group: h5py.Group) -> scipy.sparse.csr_matrix:
    shape = tuple(int(s) for s in group["shape"][()])
    return scipy.sparse.csr_matrix(
        (group["data"][()], group["indices"][()], group["indptr"][()]), shape=shape
    )


def _write_metadata(group: h5py.Group, metadata: Mapping) -> None:
    """Scalars and text as attributes, arrays as datasets, mappings as sub-groups."""
    for key, value in metadata.items():
        if isinstance(value, Mapping):
            _write_metadata(group.create_group(key), value)
        elif isinstance(value, np.ndarray) and value.ndim:
            group.create_dataset(key, data=value)
        else:
            group.attrs[key] = value.item() if isinstance(value, np.generic) else value


def write_netx(chain: NetxChain, path: str | Path, metadata: Mapping | None = None) -> Path:
    """Write ``chain`` in netx's HDF5 layout (atomically); ``metadata`` goes to ``lorsp/metadata``.

    ``layer/k`` holds what ``netx.hdf5.Network`` reads; ``simulation`` holds ``Ts`` (1) and
    ``tSample`` (T) as slayer writes them; ``lorsp`` holds the NIR node name, :math:`S` and the
    held-input bias terms of each block, the streamed input and its payload scale, ``dt``.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        layers = f.create_group("layer")
        host = f.create_group(HOST_GROUP)
        host.attrs.update(
            format=FORMAT,
            steps=chain.steps,
            dt=chain.dt,
            streamed=chain.streamed or "",
            payload_scale=chain.payload_scale,
            bias_exp=BIAS_EXP,
            input_message_bits=INPUT_MESSAGE_BITS,
        )
        held = host.create_group("held")
        held.attrs.update(chain.held)
        shapes = host.create_group("input_shapes")
        for name, shape in chain.input_shapes.items():
            shapes.create_dataset(name, data=np.asarray(shape, np.int64))
        index = 0
        if chain.streamed is not None:
            first = layers.create_group("0")
            first.create_dataset("type", (1,), "S10", [b"input"])
            first.create_dataset("shape", data=np.asarray([chain.layers[0].weight.shape[1]]))
            index = 1
        for k, layer in enumerate(chain.layers):
            group = layers.create_group(str(index + k))
            kind = b"input" if layer.weight is None else b"dense"
            group.create_dataset("type", (1,), "S10", [kind])
            group.create_dataset("shape", data=np.asarray([layer.size]))
            if layer.weight is not None:
                group.create_dataset("inFeatures", data=layer.weight.shape[1])
                group.create_dataset("outFeatures", data=layer.size)
                group.create_dataset("weight", data=layer.weight)
                group.create_dataset("bias", data=layer.bias_mantissas(layer.bias_static))
            neuron = group.create_group("neuron")
            neuron.create_dataset("type", data="CUBA")
            neuron.create_dataset("iDecay", data=layer.i_decay)
            neuron.create_dataset("vDecay", data=layer.v_decay)
            neuron.create_dataset("vThMant", data=layer.v_th_mant)
            neuron.create_dataset("refDelay", data=1)
            neuron.create_dataset("gradedSpike", data=False)
            block = host.create_group(f"layer/{index + k}")
            block.attrs.update(name=layer.name, scale=layer.scale)
            block.create_dataset("bias_static", data=layer.bias_static)
            for t, term in enumerate(layer.terms):
                _write_sparse(block, f"term{t}", term.matrix)
                block[f"term{t}"].attrs["input"] = term.input
        simulation = f.create_group("simulation")
        simulation.create_dataset("Ts", data=1)
        simulation.create_dataset("tSample", data=chain.steps)
        if metadata:
            _write_metadata(host.create_group("metadata"), metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _text(value) -> str:
    value = value[0] if np.ndim(value) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def read_netx(path: str | Path) -> NetxChain:
    """The chain of a netx file written by :func:`write_netx`; :class:`NetxError` if it is not."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NetxError(f"{path}: not an HDF5 file ({exc})") from None
    with f:
        if HOST_GROUP not in f or _text(f[HOST_GROUP].attrs.get("format", "")) != FORMAT:
            raise NetxError(f"{path}: not a netx file written by this project (no {FORMAT} group)")
        host = f[HOST_GROUP]
        streamed = _text(host.attrs["streamed"]) or None
        layers = []
        for key in sorted(f["layer"], key=int):
            group = f["layer"][key]
            if "neuron" not in group:
                continue
            block = host["layer"][key]
            neuron = group["neuron"]
            terms = [
                BiasTerm(_text(block[t].attrs["input"]), _read_sparse(block[t]))
                for t in sorted(k for k in block if k.startswith("term"))
            ]
            weight = group["weight"][()].astype(np.int32) if "weight" in group else None
            layers.append(
                NetxLayer(
                    name=_text(block.attrs["name"]),
                    size=int(np.ravel(group["shape"][()]).prod()),
                    i_decay=int(neuron["iDecay"][()]),
                    v_decay=int(neuron["vDecay"][()]),
                    v_th_mant=int(neuron["vThMant"][()]),
                    scale=float(block.attrs["scale"]),
                    weight=weight,
                    bias_static=block["bias_static"][()],
                    terms=terms,
                )
            )
        return NetxChain(
            steps=int(host.attrs["steps"]),
            dt=float(host.attrs["dt"]),
            layers=layers,
            streamed=streamed,
            payload_scale=float(host.attrs["payload_scale"]),
            held={k: _text(v) for k, v in host["held"].attrs.items()},
            input_shapes={k: tuple(int(s) for s in v[()]) for k, v in host["input_shapes"].items()},
        )


# --------------------------------------------------------------------------------------------
# The integer model


def simulate_chain(
    chain: NetxChain,
    biases: Mapping[str, np.ndarray],
    payload: np.ndarray | None = None,
    record: tuple[str, ...] = ("spikes", "v"),
) -> dict[str, dict[str, np.ndarray]]:
    """Step the chain's integers as Lava's bit-accurate LIF and Dense do, without delays.

    ``biases[block]`` are ``(images, size)`` mantissas (:meth:`NetxChain.bias_integers`),
    ``payload`` the streamed input's integers ``(images, T, n_in)``. Returns
    ``{block: {kind: (images, T, size)}}``, ``v`` and ``u`` as Lava's integers.
    """
    images = next(iter(biases.values())).shape[0]
    state = {layer.name: (np.zeros((images, layer.size), np.int64),) * 2 for layer in chain.layers}
    out = {
        layer.name: {k: np.zeros((images, chain.steps, layer.size), np.int64) for k in record}
        for layer in chain.layers
    }
    effective = {
        name: np.left_shift(np.asarray(b, np.int64), BIAS_EXP) for name, b in biases.items()
    }
    for t in range(chain.steps):
        x = None if payload is None else np.asarray(payload[:, t], np.int64).reshape(images, -1)
        for layer in chain.layers:
            if x is None:
                activation = np.zeros((images, layer.size), np.int64)
            else:
                activation = x @ layer.weight.T.astype(np.int64)
            u, v = state[layer.name]
            spikes, u, v = lif_fixed_step(
                u,
                v,
                activation,
                layer.lava_du,
                layer.v_decay,
                layer.v_th_mant,
                effective[layer.name],
            )
            state[layer.name] = (u, v)
            for kind, value in (("spikes", spikes), ("v", v), ("u", u)):
                if kind in record:
                    out[layer.name][kind][:, t] = value
            x = spikes.astype(np.int64)
    for kinds in out.values():
        if "spikes" in kinds:
            kinds["spikes"] = kinds["spikes"].astype(bool)
    return out


__all__ = [
    "BiasTerm",
    "NetxChain",
    "NetxError",
    "NetxLayer",
    "build_chain",
    "read_netx",
    "simulate_chain",
    "write_netx",
]
