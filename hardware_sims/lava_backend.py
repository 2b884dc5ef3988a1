"""NIR → Lava mapping and simulation (Lava environment only: imports lava, never torch).

Each NIR node type has a mapper in :data:`SYNAPSE_MAPPERS` (graded connections: a weight matrix
and a bias) or is a neuron (``LIF``, ``CubaLIF``, ``IF``) stepped with the coefficients of
:func:`exporters.semantics.discretize`, which are exactly the state equations of Lava's ``LIF``
process. Every population is flattened to 1-D in C order; records are reshaped back.

Mapping decisions (each one exact for floating point):

* A connection ``source → [Flatten/Affine/Linear/Scale …] → neuron`` becomes one Lava ``Dense``
  (``Sparse`` for the one-to-one ``Scale``) whose weights are the composed matrix times the
  neuron's input gain. Lava delays every ``Dense`` by one step, so a neuron ``k`` connections deep
  runs ``k`` steps behind the discrete NIR model; :func:`simulate` returns the raw Lava records and
  reports each node's ``delay`` so the caller can align them.
* An ``Affine`` bias is a constant source feeding its own ``Dense`` (delayed like the weights), not
  the neuron's ``bias_mant`` (which would skip the synaptic current and the delay).
* A non-zero ``v_reset`` is handled by shifting the voltage: Lava resets to 0.
* Lava holds ``du``, ``dv`` and ``vth`` once per population: a node whose values differ across
  neurons is rejected with :class:`LavaMappingError` naming the node and the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import scipy.sparse

from exporters.semantics import DT_KEY, NEURON_TYPES, discretize
from lorsp_neuro.errors import LorspError

SUPPORTED_PRECISIONS = ("floating_pt",)


class LavaMappingError(LorspError, ValueError):
    """A NIR graph cannot be mapped to Lava; the message names the node and the reason."""


@dataclass
class Synapse:
    """A graded connection from a spike source (input or neuron) to a neuron, flattened."""

    weight: np.ndarray | scipy.sparse.spmatrix  # (n_out, n_in)
    bias: np.ndarray | None  # (n_out,)


def _dense(weight: np.ndarray) -> Synapse:
    return Synapse(np.asarray(weight, dtype=np.float64), None)


def _affine(node: nir.Affine) -> Synapse:
    return Synapse(np.asarray(node.weight, np.float64), np.asarray(node.bias, np.float64).ravel())


def _linear(node: nir.Linear) -> Synapse:
    return _dense(node.weight)


def _scale(node: nir.Scale) -> Synapse:
    scale = np.asarray(node.scale, np.float64).ravel()
    return Synapse(scipy.sparse.diags(scale, format="csr"), None)


#: NIR synapse type → mapper returning the (flattened) weight matrix and bias.
SYNAPSE_MAPPERS = {nir.Affine: _affine, nir.Linear: _linear, nir.Scale: _scale}
PASS_THROUGH = (nir.Flatten,)


def _compose(outer: Synapse, inner: Synapse) -> Synapse:
    weight = outer.weight @ inner.weight
    bias = outer.bias
    if inner.bias is not None:
        carried = outer.weight @ inner.bias
        bias = carried if bias is None else bias + carried
    return Synapse(weight, bias)


def _numel(shape) -> int:
    return int(np.prod(np.asarray(shape, dtype=np.int64))) if len(np.atleast_1d(shape)) else 1


def _input_shape(node: nir.Input) -> tuple[int, ...]:
    (shape,) = node.input_type.values()
    return tuple(int(s) for s in np.atleast_1d(shape))


def _uniform(node_name: str, param: str, values: np.ndarray) -> float:
    flat = np.asarray(values, np.float64).ravel()
    if flat.size and not np.all(flat == flat[0]):
        raise LavaMappingError(
            f"node '{node_name}': Lava's LIF holds one {param} per population, but the values "
            f"differ across neurons (min {flat.min():g}, max {flat.max():g}); split the node"
        )
    return float(flat[0])


class _Graph:
    def __init__(self, graph: nir.NIRGraph):
        self.nodes = graph.nodes
        self.preds: dict[str, list[str]] = {name: [] for name in graph.nodes}
        for src, dst in graph.edges:
            for end in (src, dst):
                if end not in graph.nodes:
                    raise LavaMappingError(f"edge ({src} → {dst}) names unknown node '{end}'")
            self.preds[dst].append(src)
        for name, node in graph.nodes.items():
            if isinstance(node, nir.NIRGraph):
                raise LavaMappingError(
                    f"node '{name}': nested NIR graphs are not supported; flatten it"
                )
            known = (nir.Input, nir.Output, *SYNAPSE_MAPPERS, *PASS_THROUGH)
            if not isinstance(node, known) and type(node).__name__ not in NEURON_TYPES:
                raise LavaMappingError(
                    f"node '{name}': NIR type {type(node).__name__} has no Lava mapping "
                    f"(supported: Input, Output, {', '.join(t.__name__ for t in SYNAPSE_MAPPERS)}, "
                    f"Flatten, {', '.join(NEURON_TYPES)})"
                )

    def is_source(self, name: str) -> bool:
        node = self.nodes[name]
        return isinstance(node, nir.Input) or type(node).__name__ in NEURON_TYPES

    def incoming(
        self, name: str, seen: frozenset = frozenset()
    ) -> list[tuple[str, Synapse | None]]:
        """Spike sources reaching ``name`` and the composed synapse on the way (None: identity)."""
        result = []
        for pred in self.preds[name]:
            if pred in seen:
                raise LavaMappingError(f"node '{pred}': a cycle without a neuron cannot be mapped")
            node = self.nodes[pred]
            if self.is_source(pred):
                result.append((pred, None))
                continue
            if isinstance(node, nir.Output):
                raise LavaMappingError(f"node '{pred}': an Output node cannot feed another node")
            upstream = self.incoming(pred, seen | {pred})
            mapper = SYNAPSE_MAPPERS.get(type(node))
            for source, syn in upstream:
                if mapper is None:  # pass-through (Flatten): C-order flattening is the identity
                    result.append((source, syn))
                else:
                    own = mapper(node)
                    result.append((source, own if syn is None else _compose(own, syn)))
        return result


def _delays(g: _Graph, neurons: list[str]) -> dict[str, int]:
    """Steps by which Lava runs behind the discrete NIR model, per neuron node."""
    delays: dict[str, int] = {}

    def delay(name: str, stack: frozenset) -> int:
        if isinstance(g.nodes[name], nir.Input):
            return 0
        if name in delays:
            return delays[name]
        if name in stack:  # recurrent loop: its delay is that of its feed-forward path
            return 0
        values = {delay(src, stack | {name}) + 1 for src, _ in g.incoming(name)}
        if len(values) > 1:
            raise LavaMappingError(
                f"node '{name}': its inputs arrive through paths of different depth {sorted(values)}; "
                "Lava's per-Dense delay would misalign them"
            )
        delays[name] = values.pop() if values else 0
        return delays[name]

    for name in neurons:
        delay(name, frozenset())
    return delays


def simulate(
    graph_file: str | Path,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    record: tuple[str, ...] = ("spikes",),
    dt: float | None = None,
    precision: str = "floating_pt",
):
    """Run ``graph_file`` in Lava; return ``(records, info)``.

    ``records[node][kind]`` has shape ``(steps, *node_shape)`` for every neuron node, in Lava's own
    time base (see ``info["delays"]``).
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor
    from lava.proc.sparse.process import Sparse

    if precision not in SUPPORTED_PRECISIONS:
        raise LavaMappingError(
            f"precision '{precision}' is not supported; use {SUPPORTED_PRECISIONS}"
        )
    graph = nir.read(str(graph_file))
    if dt is None:
        if DT_KEY not in graph.metadata:
            raise LavaMappingError("the graph's metadata has no 'dt'; pass dt explicitly")
        dt = float(np.asarray(graph.metadata[DT_KEY]))
    g = _Graph(graph)

    sources = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.Input):
            continue
        if name not in inputs:
            raise LavaMappingError(f"no input array given for Input node '{name}'")
        data = np.asarray(inputs[name], dtype=np.float64)
        shape = _input_shape(node)
        if data.shape[0] != steps or _numel(data.shape[1:]) != _numel(shape):
            raise LavaMappingError(
                f"input '{name}' has shape {data.shape}; expected ({steps}, {', '.join(map(str, shape))})"
            )
        if not np.all(np.isfinite(data)):
            raise LavaMappingError(f"input '{name}' contains NaN or Inf")
        sources[name] = RingBuffer(data=data.reshape(steps, -1).T.copy())

    neurons = [n for n, node in graph.nodes.items() if type(node).__name__ in NEURON_TYPES]
    if not neurons:
        raise LavaMappingError("the graph has no spiking neuron node (LIF, CubaLIF, IF)")
    coeffs, shapes, lif, shifts = {}, {}, {}, {}
    for name in neurons:
        c = discretize(graph.nodes[name], dt, name)
        coeffs[name], shapes[name] = c, c.shape
        du, dv = _uniform(name, "du", c.du), _uniform(name, "dv", c.dv)
        vth = _uniform(name, "v_threshold", c.v_threshold)
        reset = _uniform(name, "v_reset", c.v_reset)
        shifts[name] = reset
        n = _numel(c.shape)
        lif[name] = LIF(
            shape=(n,),
            du=du,
            dv=dv,
            vth=vth - reset,
            v=-reset,
            bias_mant=(c.bias - dv * reset).ravel(),
            name=name,
        )

    keep_alive = []  # Lava processes must outlive the run
    constant = None
    for name in neurons:
        gain = coeffs[name].input_gain.ravel()
        n_out = gain.size
        for source, syn in g.incoming(name):
            src_port = sources[source].s_out if source in sources else lif[source].s_out
            n_in = (
                _numel(_input_shape(graph.nodes[source]))
                if source in sources
                else _numel(shapes[source])
            )
            syn = syn or Synapse(scipy.sparse.identity(n_in, format="csr"), None)
            if syn.weight.shape != (n_out, n_in):
                raise LavaMappingError(
                    f"node '{name}': weights from '{source}' have shape {syn.weight.shape}, "
                    f"expected ({n_out}, {n_in})"
                )
            if scipy.sparse.issparse(syn.weight):
                conn = Sparse(
                    weights=scipy.sparse.diags(gain) @ syn.weight.tocsr(), num_message_bits=24
                )
            else:
                conn = Dense(weights=syn.weight * gain[:, None], num_message_bits=24)
            src_port.connect(conn.s_in)
            conn.a_out.connect(lif[name].a_in)
            keep_alive.append(conn)
            if syn.bias is not None and np.any(syn.bias != 0):
                if constant is None:
                    constant = RingBuffer(data=np.ones((1, steps)))
                bias_conn = Dense(weights=(syn.bias * gain)[:, None], num_message_bits=24)
                constant.s_out.connect(bias_conn.s_in)
                bias_conn.a_out.connect(lif[name].a_in)
                keep_alive.append(bias_conn)

    monitors = {}
    for name in neurons:
        for kind in record:
            mon = Monitor()
            target = lif[name].s_out if kind == "spikes" else getattr(lif[name], kind)
            mon.probe(target=target, num_steps=steps)
            monitors[(name, kind)] = mon

    anchor = lif[neurons[0]]
    anchor.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag=precision))
    try:
        records: dict[str, dict[str, np.ndarray]] = {}
        for (name, kind), mon in monitors.items():
            data = mon.get_data()[lif[name].name]
            key = "s_out" if kind == "spikes" else kind
            values = np.asarray(data[key], dtype=np.float64).reshape(steps, *shapes[name])
            if kind == "v":
                values = values + shifts[name]
            records.setdefault(name, {})[kind] = values
    finally:
        anchor.stop()
    info = {
        "dt": dt,
        "precision": precision,
        "delays": _delays(g, neurons),
        "neurons": {n: list(shapes[n]) for n in neurons},
        "lava_version": _lava_version(),
    }
    return records, info


def _lava_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lava-nc")
    except PackageNotFoundError:
        return "unknown"
