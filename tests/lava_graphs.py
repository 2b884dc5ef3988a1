"""Random NIR graphs for the hardware_sims tests (imported by path from the test modules)."""

from __future__ import annotations

import nir
import numpy as np

DT = 1e-3


def _full(shape, value) -> np.ndarray:
    return np.full(shape, float(value))


def cuba(shape, rng, v_leak=0.0, v_reset=0.0, threshold=1.0) -> nir.CubaLIF:
    """A CubaLIF with random time constants (one per node: Lava holds them per population)."""
    return nir.CubaLIF(
        tau_syn=_full(shape, rng.uniform(2e-3, 8e-3)),
        tau_mem=_full(shape, rng.uniform(4e-3, 2e-2)),
        r=_full(shape, 1.0),
        v_leak=_full(shape, v_leak),
        v_threshold=_full(shape, threshold),
        v_reset=_full(shape, v_reset),
        w_in=_full(shape, rng.uniform(1.0, 3.0)),
    )


def lif(shape, rng, v_leak=0.0, v_reset=0.0, threshold=1.0) -> nir.LIF:
    return nir.LIF(
        tau=_full(shape, rng.uniform(3e-3, 2e-2)),
        r=_full(shape, 1.0),
        v_leak=_full(shape, v_leak),
        v_threshold=np.broadcast_to(np.asarray(threshold, float), shape).copy(),
        v_reset=_full(shape, v_reset),
    )


def zoo_graph(seed: int) -> nir.NIRGraph:
    """One connected graph that exercises every mapping decision at once.

    ``x (2,6,5) → conv_a (Lava Conv, stride/padding differ per axis) → a: CubaLIF with v_leak,
    a non-zero v_reset and a conv bias``; ``a → flatten → fc_b (Affine) → b: LIF whose threshold
    takes two values (two Lava groups)``; ``y (4) → fc_y (Linear) → b`` (a graded input one
    connection shallower than ``a``: held back a step); ``x → conv_c ('same', even kernel:
    asymmetric padding, so a Sparse matrix) → c: IF``; ``a → conv_d (grouped, stride 2) → d:
    LIF``; and two chains from ``y``: ``fc_l1 (Affine) → l1: LIF (v_leak, v_reset) → fc_l2 →
    l2: LIF`` and ``fc_k1 (Affine) → k1: CubaLIF (v_leak, v_reset)``. Weights are scaled so that
    every population fires, but not on every step.
    """
    rng = np.random.default_rng(seed)
    thresholds_b = np.where(np.arange(6) % 2 == 0, 1.0, 0.6)
    nodes = {
        "x": nir.Input({"input": np.array([2, 6, 5])}),
        "y": nir.Input({"input": np.array([4])}),
        "conv_a": nir.Conv2d(
            input_shape=(6, 5),
            weight=rng.normal(size=(3, 2, 3, 3)) * 3.0,
            stride=(1, 2),
            padding=(1, 0),
            dilation=1,
            groups=1,
            bias=rng.normal(size=3) * 0.5,
        ),
        "a": cuba((3, 6, 2), rng, v_leak=0.2, v_reset=-0.3),
        "flat": nir.Flatten({"input": np.array([3, 6, 2])}, start_dim=0),
        "fc_b": nir.Affine(rng.normal(size=(6, 36)) * 2.0, rng.normal(size=6) * 0.5),
        "fc_y": nir.Linear(rng.normal(size=(6, 4)) * 2.0),
        "b": lif((6,), rng, threshold=thresholds_b),
        "conv_c": nir.Conv2d(
            input_shape=(6, 5),
            weight=rng.normal(size=(2, 2, 2, 2)) * 600.0,
            stride=1,
            padding="same",
            dilation=1,
            groups=1,
            bias=np.zeros(2),
        ),
        "c": nir.IF(
            r=_full((2, 6, 5), 1.0),
            v_threshold=_full((2, 6, 5), 1.0),
            v_reset=_full((2, 6, 5), 0.0),
        ),
        "conv_d": nir.Conv2d(
            input_shape=(6, 2),
            weight=rng.normal(size=(3, 1, 2, 2)) * 6.0,
            stride=2,
            padding=0,
            dilation=1,
            groups=3,
            bias=np.zeros(3),
        ),
        "d": lif((3, 3, 1), rng, threshold=0.3),
        "out_b": nir.Output({"output": np.array([6])}),
        "fc_l1": nir.Affine(rng.normal(size=(5, 4)) * 4.0, rng.normal(size=5)),
        "l1": lif((5,), rng, v_leak=0.3, v_reset=-0.2, threshold=0.8),
        "fc_l2": nir.Linear(rng.normal(size=(3, 5)) * 6.0),
        "l2": lif((3,), rng, threshold=0.8),
        "fc_k1": nir.Affine(rng.normal(size=(4, 4)) * 4.0, rng.normal(size=4)),
        "k1": cuba((4,), rng, v_leak=0.3, v_reset=0.1, threshold=0.8),
    }
    edges = [
        ("x", "conv_a"),
        ("conv_a", "a"),
        ("a", "flat"),
        ("flat", "fc_b"),
        ("fc_b", "b"),
        ("y", "fc_y"),
        ("fc_y", "b"),
        ("b", "out_b"),
        ("x", "conv_c"),
        ("conv_c", "c"),
        ("a", "conv_d"),
        ("conv_d", "d"),
        ("y", "fc_l1"),
        ("fc_l1", "l1"),
        ("l1", "fc_l2"),
        ("fc_l2", "l2"),
        ("y", "fc_k1"),
        ("fc_k1", "k1"),
    ]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)


def zoo_inputs(seed: int, images: int, steps: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1000)
    return {
        "x": rng.uniform(0.0, 1.0, size=(images, steps, 2, 6, 5)),
        "y": rng.uniform(-1.0, 1.0, size=(images, steps, 4)),
    }
