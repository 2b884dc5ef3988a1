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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorsp_neuro.errors import LorspError

#: Metadata key under which the exporter records the time step it assumed (seconds).
DT_KEY = "dt"
NEURON_TYPES = ("LIF", "CubaLIF", "IF")


class SemanticsError(LorspError, ValueError):
    """A NIR neuron cannot be stepped: a non-positive time constant or dt, or a NaN parameter."""


@dataclass(frozen=True)
class DiscreteNeuron:
    """Per-neuron coefficients of the canonical discrete form (arrays of the population shape)."""

    du: np.ndarray
    dv: np.ndarray
    input_gain: np.ndarray
    bias: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.v_threshold.shape


def _arr(value, shape=None) -> np.ndarray:
    out = np.asarray(value, dtype=np.float64)
    return np.broadcast_to(out, shape).copy() if shape is not None else out


def _positive(name: str, value: np.ndarray, node: str) -> None:
    if not np.all(np.isfinite(value)) or np.any(value <= 0):
        raise SemanticsError(f"{node}: {name} must be finite and > 0, got {value.ravel()[:4]}...")


def discretize(node, dt: float, name: str = "neuron") -> DiscreteNeuron:
    """Canonical discrete coefficients of a NIR ``LIF``, ``CubaLIF`` or ``IF`` node at step ``dt``."""
    if not np.isfinite(dt) or dt <= 0:
        raise SemanticsError(f"{name}: dt must be finite and > 0, got {dt}")
    kind = type(node).__name__
    threshold = _arr(node.v_threshold)
    shape = threshold.shape
    reset = _arr(node.v_reset if node.v_reset is not None else 0.0, shape)
    if kind == "LIF":
        tau = _arr(node.tau, shape)
        _positive("tau", tau, name)
        dv = dt / tau
        du = np.ones(shape)
        gain = _arr(node.r, shape) * dv
        bias = dv * _arr(node.v_leak, shape)
    elif kind == "CubaLIF":
        tau_syn, tau_mem = _arr(node.tau_syn, shape), _arr(node.tau_mem, shape)
        _positive("tau_syn", tau_syn, name)
        _positive("tau_mem", tau_mem, name)
        du, dv = dt / tau_syn, dt / tau_mem
        gain = dv * _arr(node.r, shape) * du * _arr(node.w_in, shape)
        bias = dv * _arr(node.v_leak, shape)
    elif kind == "IF":
        du, dv = np.ones(shape), np.zeros(shape)
        gain = _arr(node.r, shape) * dt
        bias = np.zeros(shape)
    else:
        raise SemanticsError(
            f"{name}: {kind} is not a spiking neuron; expected one of {NEURON_TYPES}"
        )
    coeffs = DiscreteNeuron(du, dv, gain, bias, threshold, reset)
    for field_name in ("du", "dv", "input_gain", "bias", "v_threshold", "v_reset"):
        if not np.all(np.isfinite(getattr(coeffs, field_name))):
            raise SemanticsError(f"{name}: {field_name} is not finite")
    return coeffs


def step(coeffs: DiscreteNeuron, u: np.ndarray, v: np.ndarray, current: np.ndarray):
    """One step of the canonical form; returns ``(spikes, u, v)``. The reference for every backend."""
    u = (1.0 - coeffs.du) * u + coeffs.input_gain * current
    v = (1.0 - coeffs.dv) * v + u + coeffs.bias
    spikes = v > coeffs.v_threshold
    v = np.where(spikes, coeffs.v_reset, v)
    return spikes.astype(np.float64), u, v
