r"""Loihi-style fixed-point parameters for a :class:`~hardware_sims.plan.LavaPlan` (numpy only).

The integer model is Lava's bit-accurate ``LIF``/``LIFReset`` (``PyLifModelBitAcc``) fed by
``Dense``/``Sparse`` (``PyDenseModelBitAcc``), lava-nc 0.10.0:

.. math::
    A &= \Big(\textstyle\sum_j W^{int}_{ij}\, x_j\Big) \cdot 2^{e_w}
        \quad (\text{arithmetic shift; } x_j \text{ a spike or an integer payload}) \\
    U &\leftarrow \operatorname{sgn}\!\big(U (4096 - d_u^{int} - 1)\big)
        \big\lfloor |U (4096 - d_u^{int} - 1)| / 2^{12} \big\rfloor + 2^6 A
        \quad (\text{24-bit wrap}) \\
    V &\leftarrow \operatorname{sgn}\!\big(V (4096 - d_v^{int})\big)
        \big\lfloor |V (4096 - d_v^{int})| / 2^{12} \big\rfloor + U + m_b 2^{e_b}
        \quad (\text{clipped to } \pm(2^{23} - 1)) \\
    z &= [V > 2^6 \vartheta^{int}], \qquad V \leftarrow 0 \text{ where } z

Mapping from the float plan of a group with voltage scale :math:`S` (integer units per float
unit, a power of two): :math:`V ≈ S v'`, :math:`U ≈ S u`, so

* decays: :math:`d_u^{int} = \operatorname{round}(4096 d_u) - 1`, :math:`d_v^{int} =
  \operatorname{round}(4096 d_v)`, both clipped to 12 bits ``[0, 4095]``;
* threshold: :math:`\vartheta^{int} = \operatorname{round}(S\, v_{th}' / 2^6)` (17 bits);
* bias: :math:`m_b 2^{e_b} ≈ S b'` with a 13-bit signed mantissa and :math:`e_b ∈ [0, 7]`;
* weights: :math:`W^{int} 2^{e_w} ≈ S W / (2^6 s_x)` with one shared exponent per synapse and an
  8-bit mantissa (``[0, 255]`` or ``[-255, 0]`` for one sign; even values in ``[-256, 254]`` for
  mixed signs, as Lava truncates the lowest bit there);
* graded inputs: payload :math:`x^{int} = \operatorname{round}(s_x x)`, :math:`s_x = 255 / r_x`
  for an input of range :math:`|x| ≤ r_x` (8-bit magnitude); spikes have :math:`s_x = 1`.

:math:`S` is the largest power of two that keeps the worst case in range with one bit of
headroom: :math:`S \max(v_{th}', u_{max} + |b'|_{max} + v_{th}') ≤ 2^{22}` with
:math:`u_{max} = a_{max} \sum_{k<T} \kappa^k`, :math:`a_{max}` the largest input a neuron can
receive in one step (all sources at their bounds) and :math:`\kappa` the larger of the float and
the integer current decay, :math:`1 - d_u` and :math:`(4095 - d_u^{int}) / 4096`: the most a
current gathers in one window of :math:`T` steps, as it is reset at the window's start (at most
:math:`a_{max} / d_u`, and :math:`T a_{max}` for a current that does not decay); and
:math:`S |b'|_{max} ≤ 4095 · 2^7`.

**Persistent currents** (``d_u = 2**-60``, :mod:`exporters.semantics`) get :math:`d_u^{int} = 0`,
the slowest decay Lava's bit-accurate model has: its ``ds_offset = 1`` makes the current keep
:math:`(4095 - d_u^{int}) / 4096 ≤ 4095/4096` of itself per step (rounded towards zero), never all
of it. So in fixed point a current the float model holds exactly loses about 1/4096 per step
(0.07 % by the last step of a ``T = 4`` window); that is part of the fixed/float disagreement
:mod:`hardware_sims.cosim` measures, and the numpy integer model (:mod:`hardware_sims.reference`)
reproduces it bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from hardware_sims.graph import GraphError, Matrix
from hardware_sims.plan import LavaPlan

DECAY_UNITY = 4096  # 12-bit decays
STATE_LIMIT = 2**23  # 24-bit signed u, v
VTH_SHIFT = 6
ACT_SHIFT = 6
VTH_MAX = 2**17 - 1
BIAS_MANT_MAX = 4095
BIAS_EXP_MAX = 7
PAYLOAD_MAX = 255
HEADROOM_BITS = 1


@dataclass
class FixedGroup:
    scale: float  # S: integer voltage units per float unit
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: np.ndarray


@dataclass
class FixedSynapse:
    weight: Matrix  # integer values (int32 dtype)
    weight_exp: int


@dataclass
class FixedPlan:
    groups: dict[str, FixedGroup]
    synapses: list[FixedSynapse]  # aligned with plan.synapses
    source_scales: dict[str, float]  # graded source key → payload scale s_x

    def payload(self, key: str, values: np.ndarray) -> np.ndarray:
        """Integer payload ``round(s_x · x)`` clipped to ``±255`` (8-bit magnitude)."""
        scaled = np.rint(np.asarray(values, np.float64) * self.source_scales[key])
        return np.clip(scaled, -PAYLOAD_MAX, PAYLOAD_MAX).astype(np.int32)


def quantize_decay_u(du: float) -> int:
    """``d_u^int`` with Lava's ``ds_offset = 1``: effective decay ``(4096 − d_u^int − 1) / 4096``."""
    return int(np.clip(round(du * DECAY_UNITY) - 1, 0, DECAY_UNITY - 1))


def quantize_decay_v(dv: float) -> int:
    """``d_v^int`` (``dm_offset = 0``): effective decay ``(4096 − d_v^int) / 4096``."""
    return int(np.clip(round(dv * DECAY_UNITY), 0, DECAY_UNITY - 1))


def window_current_gain(keep: float, steps: int) -> float:
    r""":math:`\sum_{k<T} \kappa^k`: the most a current that keeps :math:`\kappa` of itself per step
    holds, in units of the largest per-step input, within ``steps`` steps of a reset."""
    if keep >= 1.0:
        return float(steps)
    return (1.0 - keep**steps) / (1.0 - keep)


def quantize_bias(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mantissa (13-bit signed) and exponent (``[0, 7]``) with ``m·2^e ≈ values`` per neuron."""
    values = np.asarray(values, np.float64)
    magnitude = np.abs(values)
    exp = np.zeros(values.shape, dtype=np.int64)
    big = magnitude > BIAS_MANT_MAX
    exp[big] = np.ceil(np.log2(magnitude[big] / BIAS_MANT_MAX)).astype(np.int64)
    exp = np.clip(exp, 0, BIAS_EXP_MAX)
    mant = np.clip(np.rint(values / 2.0**exp), -BIAS_MANT_MAX - 1, BIAS_MANT_MAX)
    return mant.astype(np.int32), exp.astype(np.int32)


def quantize_weights(weight: Matrix, scale: float) -> FixedSynapse:
    """Integer mantissas and one shared exponent with ``W_int · 2^e ≈ scale · weight``."""
    if scipy.sparse.issparse(weight):
        weight = weight.tocsr()
    dense_values = weight.data if scipy.sparse.issparse(weight) else np.asarray(weight)
    target = np.asarray(dense_values, np.float64) * scale
    peak = float(np.max(np.abs(target))) if target.size else 0.0
    mixed = bool(target.size and target.min() < 0 < target.max())
    limit = 254 if mixed else 255
    if peak == 0:
        exp, ints = 0, np.zeros(target.shape)
    else:
        exp = math.ceil(math.log2(peak / limit))
        # Lava drops the lowest bit of mixed-sign weights: use even mantissas there
        step = 2.0 ** (exp + 1) if mixed else 2.0**exp
        ints = np.rint(target / step) * (2 if mixed else 1)
        ints = np.clip(ints, -256 if mixed else -255, limit)
    ints = ints.astype(np.int32)
    if scipy.sparse.issparse(weight):
        out = weight.copy()
        out.data = ints
        out = out.astype(np.int32)
        out.eliminate_zeros()
    else:
        out = ints.reshape(np.shape(weight))
    return FixedSynapse(out, exp)


def _abs_row_sums(weight: Matrix, bound: float) -> np.ndarray:
    if scipy.sparse.issparse(weight):
        return np.asarray(abs(weight).sum(axis=1)).ravel() * bound
    return np.abs(np.asarray(weight)).sum(axis=1) * bound


def quantize_plan(plan: LavaPlan, input_ranges: dict[str, float]) -> FixedPlan:
    """Fixed-point parameters for every group and synapse of ``plan`` (see module doc).

    ``input_ranges[name]`` bounds ``|x|`` of each Input node; values beyond it are clipped.
    """
    if plan.loops:
        raise GraphError(
            f"the recurrent loop {plan.loops[0]} runs in floating point only: its window gap "
            "(hardware_sims.plan) has no fixed-point counterpart yet; use precision floating_pt"
        )
    source_ranges = {}
    for key, src in plan.sources.items():
        if src.kind == "input":
            if src.name not in input_ranges:
                raise GraphError(f"no value range given for input '{src.name}'")
            value = float(input_ranges[src.name])
            if not np.isfinite(value) or value < 0:
                raise GraphError(
                    f"input range of '{src.name}' must be finite and >= 0, got {value}"
                )
            source_ranges[key] = value if value > 0 else 1.0
        else:
            source_ranges[key] = 1.0
    source_scales = {key: PAYLOAD_MAX / r for key, r in source_ranges.items()}

    groups = {}
    for name, g in plan.groups.items():
        if g.vth <= 0:
            raise GraphError(
                f"node '{g.population}': fixed point needs v_threshold > v_reset, got "
                f"v_threshold − v_reset = {g.vth:g}"
            )
        drive = np.zeros(g.size)
        for syn in plan.synapses:
            if syn.target == name:
                bound = source_ranges[syn.source] if syn.graded else 1.0
                drive += _abs_row_sums(syn.weight, bound)
        du = quantize_decay_u(g.du)
        keep = max(1.0 - g.du, (DECAY_UNITY - du - 1) / DECAY_UNITY)
        u_max = float(drive.max(initial=0.0)) * window_current_gain(keep, plan.steps)
        bias_max = float(np.max(np.abs(g.bias), initial=0.0))
        v_range = max(g.vth, u_max + bias_max + g.vth)
        limit = STATE_LIMIT / 2**HEADROOM_BITS / v_range
        if bias_max > 0:
            limit = min(limit, BIAS_MANT_MAX * 2**BIAS_EXP_MAX / bias_max)
        scale = 2.0 ** math.floor(math.log2(limit))
        mant, exp = quantize_bias(scale * g.bias)
        groups[name] = FixedGroup(
            scale=scale,
            du=du,
            dv=quantize_decay_v(g.dv),
            vth=int(min(round(scale * g.vth / 2**VTH_SHIFT), VTH_MAX)),
            bias_mant=mant,
            bias_exp=exp,
        )

    synapses = []
    for syn in plan.synapses:
        payload_scale = source_scales[syn.source] if syn.graded else 1.0
        factor = groups[syn.target].scale / (2**ACT_SHIFT * payload_scale)
        synapses.append(quantize_weights(syn.weight, factor))
    return FixedPlan(groups, synapses, source_scales)


def reset_pulse_current(plan: LavaPlan, fixed: FixedPlan | None, group: str) -> np.ndarray:
    """What the first reset pulse (``v_reset ≠ 0``) adds to ``u`` at window step 0, float units.

    Records report ``u`` without it, as the discrete model has no such pulse.
    """
    if fixed is None:
        return plan.pulse_weights[group][:, 0]
    for index, syn in enumerate(plan.synapses):
        if syn.target == group and syn.graded and plan.sources[syn.source].kind == "pulse":
            q = fixed.synapses[index]
            column = (
                q.weight[:, [0]].toarray() if scipy.sparse.issparse(q.weight) else q.weight[:, [0]]
            )
            payload = int(fixed.payload(syn.source, np.ones(1))[0])
            accum = np.asarray(column, np.int64).ravel() * payload
            shifted = accum << q.weight_exp if q.weight_exp > 0 else accum >> -q.weight_exp
            return (shifted << ACT_SHIFT) / fixed.groups[group].scale
    raise GraphError(f"group '{group}' has no reset pulse")
