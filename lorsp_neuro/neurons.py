r"""Neuron populations of the spiking prompter and the firing-rate regulariser that keeps them alive.

Two Norse 1.1.0 cells are supported (DESIGN.md §2), both with the SuperSpike surrogate gradient
(``method="super"``; Norse ignores its ``alpha``, the surrogate is :math:`1/(|v - v_{th}| + 1)^2`):

- ``LIFCell`` (current-based, NIR ``CubaLIF``):
  :math:`i' = i + x;\ v \leftarrow v + dt\,\tau_m^{-1}(v_{leak} - v + i');\ i \leftarrow (1 - dt\,\tau_s^{-1})\,i'`
- ``LIFBoxCell`` (no synaptic current, NIR ``LIF``):
  :math:`v \leftarrow v + dt\,\tau_m^{-1}(v_{leak} - v + x)`

then :math:`z = [v > v_{th}]` and :math:`v \leftarrow v_{reset}` where :math:`z = 1`.
Time constants are inverse seconds, ``dt`` is seconds, voltages and currents are unitless.
``tau_syn_inv = 0`` makes a ``LIFCell``'s current **persistent**: it holds everything that entered
it, so an input presented once, at step 0, drives the neuron for the whole image (exported as a
finite ``CubaLIF`` that every backend steps exactly, :mod:`exporters.semantics`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from norse.torch import LIFBoxCell, LIFCell, LIFParameters
from norse.torch.module.lif_box import LIFBoxParameters

SURROGATE = "super"


def _lif_cell(dt, tau_mem_inv, tau_syn_inv, v_th) -> LIFCell:
    params = LIFParameters(
        tau_syn_inv=torch.as_tensor(float(tau_syn_inv)),
        tau_mem_inv=torch.as_tensor(float(tau_mem_inv)),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(float(v_th)),
        v_reset=torch.as_tensor(0.0),
        method=SURROGATE,
    )
    return LIFCell(params, dt=dt)


def _lif_box_cell(dt, tau_mem_inv, tau_syn_inv, v_th) -> LIFBoxCell:
    del tau_syn_inv  # a box cell has no synaptic current
    params = LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(float(tau_mem_inv)),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(float(v_th)),
        v_reset=torch.as_tensor(0.0),
        method=SURROGATE,
    )
    return LIFBoxCell(params, dt=dt)


#: Cell type name (as in a config) → factory ``(dt, tau_mem_inv, tau_syn_inv, v_th) -> cell``.
CELL_FACTORIES: dict[str, Callable[..., torch.nn.Module]] = {
    "LIFCell": _lif_cell,
    "LIFBoxCell": _lif_box_cell,
}


def make_cell(
    kind: str, *, dt: float, tau_mem_inv: float, tau_syn_inv: float, v_th: float
) -> torch.nn.Module:
    """A Norse feed-forward cell of type ``kind`` (a key of :data:`CELL_FACTORIES`).

    ``tau_syn_inv = 0`` gives a ``LIFCell`` a persistent current; a ``LIFBoxCell`` has none.
    """
    return CELL_FACTORIES[kind](dt, tau_mem_inv, tau_syn_inv, v_th)


def rate_band_penalty(rates: torch.Tensor, low: float, high: float) -> torch.Tensor:
    r"""Squared distance of each firing rate to the band ``[low, high]``, averaged.

    .. math::
        R = \frac{1}{N}\sum_n \big(\max(0, \ell - r_n)^2 + \max(0, r_n - h)^2\big)

    ``rates`` are fractions of steps with a spike, one per neuron (or one for a population); the
    penalty is zero inside the band, so it only acts on neurons that die (``r < ℓ``) or saturate.
    """
    return (torch.relu(low - rates).square() + torch.relu(rates - high).square()).mean()


class LIFSequence(NamedTuple):
    """A population's run over T steps: spikes, the voltage after reset, the current ``i'``."""

    spikes: torch.Tensor  # (T, ...)
    voltages: torch.Tensor  # (T, ...)
    currents: torch.Tensor  # (T, ...), the current after the step's input, before its decay


class _FusedLIF(torch.autograd.Function):
    """T steps of Norse 1.1.0's ``LIFCell`` (``v_leak = v_reset = 0``, SuperSpike) in one node.

    Hand-written because Norse's cell, called once per step, builds ~25 autograd nodes per step
    over the whole pixel population: at 224 px that graph, not the arithmetic, was the cost of a
    training step (2× LoR-VP's). The forward performs Norse's floating-point operations in Norse's
    order (spikes and voltages bit-identical); the backward is the gradient of Norse's graph,
    the reset's dependence on the spike included.
    """

    @staticmethod
    def forward(ctx, inputs, v_th: float, decay_mem: float, decay_syn: float):
        # Written into preallocated outputs with in-place operations: at 224 px every temporary
        # is a 1.2-million-element allocation. Each operation is Norse's, in Norse's order
        # (``i + x``; ``v + c·((−v) + i')`` as ``(i' − v)·c + v``, equal in IEEE arithmetic).
        # No boolean masks: masked_fill/where on a bool mask cost ~10× a float multiply here.
        steps = inputs.shape[0]
        spikes = torch.empty_like(inputs)
        voltages = torch.empty_like(inputs)
        currents = torch.empty_like(inputs)
        before = torch.empty_like(inputs)  # v before reset (Norse's v_decayed)
        v = torch.zeros_like(inputs[0])
        i = torch.zeros_like(inputs[0])
        c = torch.tensor(decay_mem, dtype=inputs.dtype, device=inputs.device)
        for t in range(steps):
            i_new = torch.add(i, inputs[t], out=currents[t])
            u = torch.sub(i_new, v, out=before[t]).mul_(c).add_(v)
            z = torch.gt(u, v_th, out=spikes[t])
            v = torch.addcmul(u, u, z, value=-1.0, out=voltages[t])  # (1 − z)·u, reset to 0
            i = i_new if decay_syn == 0 else i_new + decay_syn * i_new
        ctx.save_for_backward(spikes, before)
        ctx.constants = (v_th, decay_mem, decay_syn)
        ctx.mark_non_differentiable(voltages, currents)
        ctx.set_materialize_grads(False)
        return spikes, voltages, currents

    @staticmethod
    def backward(ctx, grad_spikes, grad_voltages, grad_currents):
        del grad_voltages, grad_currents  # marked non-differentiable
        spikes, before = ctx.saved_tensors
        v_th, decay_mem, decay_syn = ctx.constants
        grad_inputs = torch.empty_like(before)
        if grad_spikes is None:
            return grad_inputs.zero_(), None, None, None
        grad_v = torch.zeros_like(before[0])  # dL/dv_t, from step t+1
        grad_i = None  # dL/di_t (decayed), from step t+1
        for t in range(before.shape[0] - 1, -1, -1):
            u = before[t]
            # v_t = (1 − z)·u + z·v_reset: through u, and through z (∂/∂z = v_reset − u);
            # z = SuperSpike(u − v_th), whose derivative is 1/(|u − v_th| + 1)².
            surrogate = (u - v_th).abs_().add_(1.0).square_()
            g_u = torch.addcmul(grad_spikes[t], grad_v, u, value=-1.0).div_(surrogate)
            g_u.add_(grad_v).addcmul_(grad_v, spikes[t], value=-1.0)  # + (1 − z)·dL/dv
            # u = v_{t−1} + c·(−v_{t−1} + i'_t);  i_t = (1 + decay_syn)·i'_t.
            g_inew = torch.mul(g_u, decay_mem, out=grad_inputs[t])
            if grad_i is not None:
                g_inew.add_(grad_i if decay_syn == 0 else grad_i * (1.0 + decay_syn))
            grad_i = g_inew
            grad_v = g_u.mul_(1.0 - decay_mem)
        return grad_inputs, None, None, None


def lif_sequence(inputs: torch.Tensor, cell: torch.nn.Module) -> LIFSequence:
    r"""Run a Norse ``LIFCell`` (``v_leak = v_reset = 0``) over ``inputs`` ``(T, ...)`` from rest.

    Same spikes and voltages as calling ``cell`` T times, bit for bit, and the gradient of that
    unrolled graph (:class:`_FusedLIF`); the cell only supplies its parameters.
    """
    p = cell.p
    if float(p.v_leak) != 0.0 or float(p.v_reset) != 0.0:
        raise ValueError("lif_sequence: only v_leak = v_reset = 0 cells are fused")
    decay_mem = float(cell.dt * p.tau_mem_inv)
    decay_syn = float(-cell.dt * p.tau_syn_inv)
    return LIFSequence(*_FusedLIF.apply(inputs, float(p.v_th), decay_mem, decay_syn))
