r"""Discrete-time semantics of NIR neurons: the one contract shared by Norse, NIR and Lava.

NIR describes neurons as ODEs and stores no time step. This project steps them with forward
Euler at a step ``dt`` (recorded in the graph's ``metadata["dt"]`` by the exporter), the input
current held constant over the step (the convention snnTorch and Norse's importers use). Every
neuron is brought to one canonical form, which is also Lava's ``LIF`` process model:

.. math::
    u[t] &= (1 - d_u)\, u[t-1] + g\, I_{in}[t] \\
    v[t] &= (1 - d_v)\, v[t-1] + u[t] + b \\
    z[t] &= [v[t] > v_{th}], \qquad v[t] \leftarrow v_{reset} \text{ where } z[t]

=========  ==========================  ==========================================
node       NIR ODE                      canonical coefficients
=========  ==========================  ==========================================
LIF        τ v' = v_leak − v + r I      d_u = 1, d_v = dt/τ, g = r·dt/τ, b = d_v·v_leak
CubaLIF    τ_s I' = −I + w_in S,        d_u = dt/τ_s, d_v = dt/τ_m,
           τ_m v' = v_leak − v + r I    g = (dt/τ_m)·r·(dt/τ_s)·w_in, b = d_v·v_leak
IF         v' = r I                     d_u = 1, d_v = 0, g = r·dt, b = 0
=========  ==========================  ==========================================

(For CubaLIF, ``u`` is the synaptic current already scaled into the voltage equation,
``u = (dt/τ_m)·r·I``; the voltage uses the current of the same step, as Norse's ``LIFCell`` does.)

So a Norse ``LIFCell`` (``dt``, ``tau_syn_inv``, ``tau_mem_inv``) is ``CubaLIF(tau_syn=1/tau_syn_inv,
tau_mem=1/tau_mem_inv, r=1, w_in=1/(dt·tau_syn_inv))`` and a ``LIFBoxCell`` is
``LIF(tau=1/tau_mem_inv, r=1)``. Units: times in seconds, voltages and currents in the network's
arbitrary units.

**Persistent currents.** A synaptic current that does not decay (Norse ``tau_syn_inv = 0``: an
input presented once, at step 0, stays in the current for the whole image, and later spikes add
to it) has no finite time constant, and NIR readers know no infinite one. It is written as a
finite ``CubaLIF`` whose arithmetic is exact: ``tau_syn = dt·N`` and ``w_in = N`` with
``N =`` :data:`PERSISTENT_SYN_STEPS` ``= 2**60``. Powers of two scale without rounding, so
``d_u = dt/tau_syn = 2**-60`` exactly, ``1 − d_u == 1`` in float64 and float32 (the current is
held bit for bit), ``d_u·w_in == 1`` and ``g = d_v·r·d_u·w_in == d_v·r`` bit for bit: every backend
steps it with the formulas above and no special case. Lava's fixed point cannot hold a current
exactly; see :mod:`hardware_sims.quantize`.

Non-spiking integrators step the same way and never fire (their threshold is +inf); their output
is the voltage ``v``:

=========  ==========================  ==========================================
LI         τ v' = v_leak − v + r I      as LIF
CubaLI     as CubaLIF, no threshold     as CubaLIF
I          v' = r I                     as IF
=========  ==========================  ==========================================

Decisions NIR leaves open (recorded here so every backend makes the same ones):

* **Reset.** NIR resets to ``v_reset``. A node whose ``metadata["reset_mode"]`` is ``"subtract"``
  instead subtracts the threshold distance, ``v ← v − (v_threshold − v_reset)`` (Norse's
  ``reset_subtract`` and snnTorch's ``"subtract"`` when ``v_reset = 0``). No key means ``"value"``.
* **Initial state.** ``u = 0``; ``v = v_leak`` for leaky neurons (their rest), ``v = v_reset`` for
  ``IF`` and ``v = 0`` for ``I``, which is what Norse's cells start from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorsp_neuro.errors import LorspError

#: Metadata key under which the exporter records the time step it assumed (seconds).
DT_KEY = "dt"
#: A persistent (non-decaying) synaptic current is a CubaLIF with ``tau_syn = dt·N``, ``w_in = N``
#: for this ``N``: a power of two large enough that ``1 − dt/tau_syn`` rounds to 1 (module doc).
PERSISTENT_SYN_STEPS = 2**60
#: Spiking neuron node types (the ones a neuromorphic backend maps to its LIF process).
NEURON_TYPES = ("LIF", "CubaLIF", "IF")
#: Non-spiking integrators: stepped like the neurons above, output is their voltage.
INTEGRATOR_TYPES = ("LI", "CubaLI", "I")
#: Every node type with state; a cycle in a graph must pass through one of them.
STATEFUL_TYPES = NEURON_TYPES + INTEGRATOR_TYPES
#: Node metadata key that selects the reset; values in :data:`RESET_MODES`.
RESET_KEY = "reset_mode"
RESET_MODES = ("value", "subtract")

#: NIR fields of each stateful node type, in the order NIR declares them.
PARAMETERS = {
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "IF": ("r", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    "I": ("r",),
}


class SemanticsError(LorspError, ValueError):
    """A NIR neuron cannot be stepped: a non-positive time constant or dt, or a NaN parameter."""


@dataclass(frozen=True)
class DiscreteNeuron:
    """Per-neuron coefficients of the canonical discrete form (arrays of the population shape).

    ``v_initial`` is the voltage before the first step (None: zero); ``reset_mode`` is one of
    :data:`RESET_MODES`.
    """

    du: np.ndarray
    dv: np.ndarray
    input_gain: np.ndarray
    bias: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray
    v_initial: np.ndarray | None = None
    reset_mode: str = "value"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.v_threshold.shape

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` before the first step, with leading ``batch_shape``."""
        shape = (*batch_shape, *self.shape)
        v0 = np.zeros(self.shape) if self.v_initial is None else self.v_initial
        return np.zeros(shape), np.broadcast_to(v0, shape).copy()


def _arr(value, shape=None) -> np.ndarray:
    out = np.asarray(value, dtype=np.float64)
    return np.broadcast_to(out, shape).copy() if shape is not None else out


def _positive(name: str, value: np.ndarray, node: str) -> None:
    if not np.all(np.isfinite(value)) or np.any(value <= 0):
        raise SemanticsError(f"{node}: {name} must be finite and > 0, got {value.ravel()[:4]}...")


def population_shape(node, name: str = "neuron") -> tuple[int, ...]:
    """Shape of a stateful node's population: its parameters' shapes broadcast together."""
    kind = type(node).__name__
    if kind not in PARAMETERS:
        raise SemanticsError(f"{name}: {kind} is not a neuron; expected one of {STATEFUL_TYPES}")
    shapes = []
    for field_name in PARAMETERS[kind]:
        value = getattr(node, field_name, None)
        if value is not None:
            shapes.append(np.shape(value))
    try:
        return tuple(int(n) for n in np.broadcast_shapes(*shapes))
    except ValueError:
        listed = ", ".join(
            f"{f}{np.shape(getattr(node, f))}"
            for f in PARAMETERS[kind]
            if getattr(node, f, None) is not None
        )
        raise SemanticsError(f"{name}: parameter shapes do not broadcast: {listed}") from None


def _reset_mode(node, name: str) -> str:
    metadata = getattr(node, "metadata", None) or {}
    mode = metadata.get(RESET_KEY, "value")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in RESET_MODES:
        raise SemanticsError(
            f"{name}: metadata {RESET_KEY}={mode!r} is not one of {', '.join(RESET_MODES)}"
        )
    return mode


def discretize(node, dt: float, name: str = "neuron", shape=None) -> DiscreteNeuron:
    """Canonical discrete coefficients of a NIR neuron or integrator node at step ``dt``.

    ``shape`` is the population shape to broadcast the parameters to (default: the shape of the
    parameters themselves, broadcast together).
    """
    if not np.isfinite(dt) or dt <= 0:
        raise SemanticsError(f"{name}: dt must be finite and > 0, got {dt}")
    kind = type(node).__name__
    if kind not in PARAMETERS:
        raise SemanticsError(
            f"{name}: {kind} is not a spiking neuron; expected one of {NEURON_TYPES}"
            f" or an integrator {INTEGRATOR_TYPES}"
        )
    if shape is None:
        shape = population_shape(node, name)
    try:
        params = {
            f: _arr(getattr(node, f), shape)
            for f in PARAMETERS[kind]
            if getattr(node, f, None) is not None
        }
    except ValueError:
        raise SemanticsError(f"{name}: parameters do not broadcast to shape {shape}") from None
    zeros = np.zeros(shape)
    if kind in ("LIF", "LI"):
        _positive("tau", params["tau"], name)
        dv = dt / params["tau"]
        du = np.ones(shape)
        gain = params["r"] * dv
        bias = dv * params["v_leak"]
        v_initial = params["v_leak"]
    elif kind in ("CubaLIF", "CubaLI"):
        tau_syn, tau_mem = params["tau_syn"], params["tau_mem"]
        _positive("tau_syn", tau_syn, name)
        _positive("tau_mem", tau_mem, name)
        du, dv = dt / tau_syn, dt / tau_mem
        w_in = params.get("w_in", np.ones(shape))
        gain = dv * params["r"] * du * w_in
        bias = dv * params["v_leak"]
        v_initial = params["v_leak"]
    else:  # IF, I
        du, dv = np.ones(shape), zeros
        gain = params["r"] * dt
        bias = zeros
        v_initial = params.get("v_reset", zeros)
    if kind in NEURON_TYPES:
        threshold = params["v_threshold"]
        reset = params.get("v_reset", zeros)
    else:  # never fires: v > +inf is false for every finite v
        threshold, reset = np.full(shape, np.inf), zeros
    coeffs = DiscreteNeuron(
        du,
        dv,
        gain,
        bias,
        threshold,
        reset,
        v_initial=v_initial,
        reset_mode=_reset_mode(node, name),
    )
    checked = ("du", "dv", "input_gain", "bias", "v_reset", "v_initial")
    for field_name in (*checked, "v_threshold") if kind in NEURON_TYPES else checked:
        if not np.all(np.isfinite(getattr(coeffs, field_name))):
            raise SemanticsError(f"{name}: {field_name} is not finite")
    return coeffs


def step(coeffs: DiscreteNeuron, u: np.ndarray, v: np.ndarray, current: np.ndarray):
    """One step of the canonical form; returns ``(spikes, u, v)``. The reference for every backend.

    Reset ``"value"``: ``v ← v_reset`` where ``z``; ``"subtract"``: ``v ← v − (v_th − v_reset)``.
    """
    u = (1.0 - coeffs.du) * u + coeffs.input_gain * current
    v = (1.0 - coeffs.dv) * v + u + coeffs.bias
    spikes = v > coeffs.v_threshold
    if coeffs.reset_mode == "subtract":
        v = np.where(spikes, v - (coeffs.v_threshold - coeffs.v_reset), v)
    else:
        v = np.where(spikes, coeffs.v_reset, v)
    return spikes.astype(np.float64), u, v
