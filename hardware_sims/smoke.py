"""A small Dense → LIF network run in Lava and checked against Lava's equations by hand.

Used by ``lorsp lava-check`` and the tests: it proves the Lava environment, the worker boundary and
the NIR → Lava mapping work end to end on this machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nir
import numpy as np

from hardware_sims.client import lava_python, run_lava

DT = 1e-3
WEIGHT = np.array([[1.0, -0.5], [0.3, 0.8], [2.0, 0.1]])
BIAS = np.array([0.1, 0.0, -0.2])


def dense_lif_graph() -> nir.NIRGraph:
    """``Input(2) → Affine(3×2) → CubaLIF(3)``: τ_syn = 5 ms, τ_mem = 10 ms, w_in = 5, θ = 1."""
    n = WEIGHT.shape[0]
    return nir.NIRGraph(
        nodes={
            "input": nir.Input({"input": np.array([WEIGHT.shape[1]])}),
            "fc": nir.Affine(WEIGHT, BIAS),
            "lif": nir.CubaLIF(
                tau_syn=np.full(n, 5e-3),
                tau_mem=np.full(n, 1e-2),
                r=np.ones(n),
                v_leak=np.zeros(n),
                v_threshold=np.ones(n),
                w_in=np.full(n, 5.0),
            ),
            "output": nir.Output({"output": np.array([n])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
        metadata={"dt": DT},
    )


def expected_lava_spikes(x: np.ndarray) -> np.ndarray:
    """Lava's LIF equations stepped by hand (``lava.proc.lif`` docstring), Dense delayed one step.

    ``u[t] = u[t-1](1-du) + a_in[t]``, ``v[t] = v[t-1](1-dv) + u[t] + bias``, spike when
    ``v > vth``, then ``v = 0``; ``a_in[t] = W' x[t-1] + b'`` with ``W' = W·g``, ``b' = b·g`` and
    ``g = dv·r·du·w_in`` for a CubaLIF (DESIGN.md §2).
    """
    du, dv = DT / 5e-3, DT / 1e-2
    gain = dv * 1.0 * du * 5.0
    u = np.zeros(3)
    v = np.zeros(3)
    out = np.zeros((len(x), 3))
    for t in range(len(x)):
        a_in = (WEIGHT @ x[t - 1] + BIAS) * gain if t > 0 else np.zeros(3)
        u = u * (1 - du) + a_in
        v = v * (1 - dv) + u
        out[t] = v > 1.0
        v[out[t] > 0] = 0.0
    return out


def dense_lif_smoke(steps: int = 20, seed: int = 0, timeout: float = 300.0) -> dict:
    """Run the graph in Lava; return a report with ``matches`` and the spike counts."""
    x = np.random.default_rng(seed).uniform(0.0, 3.0, size=(steps, WEIGHT.shape[1]))
    with tempfile.TemporaryDirectory(prefix="lorsp-smoke-") as tmp:
        path = Path(tmp) / "dense_lif.nir"
        nir.write(str(path), dense_lif_graph())
        result = run_lava(path, {"input": x}, steps, record=("spikes", "v"), timeout=timeout)
    spikes = result.spikes("lif")
    expected = expected_lava_spikes(x)
    return {
        "steps": steps,
        "python": str(lava_python()),
        "lava_version": result.status.get("lava_version"),
        "wall_s": result.status.get("wall_s"),
        "spikes": int(spikes.sum()),
        "expected_spikes": int(expected.sum()),
        "matches": bool(np.array_equal(spikes, expected)),
    }
