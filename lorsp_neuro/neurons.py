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
