"""Recurrent NIR graphs: analysis, numpy reference and Lava against the torch importer.

An edge out of a neuron on a cycle carries the previous step (exporters.graph_rules); Lava's
one-step Dense delay is that step when the loop's populations share a depth, and the window gap
(hardware_sims.plan) keeps a window's last spikes out of the next image.
"""

from __future__ import annotations

from pathlib import Path

import lava_graphs as graphs  # tests/ is on pytest's pythonpath
import nir
import numpy as np
import pytest
import torch

from hardware_sims import run_lava_images
from hardware_sims.graph import GraphError, analyse
from hardware_sims.plan import build_plan, source_data
from hardware_sims.quantize import quantize_plan
from hardware_sims.reference import simulate_float

STEPS, IMAGES = 10, 3


def _graph(nodes: dict, edges: list) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": graphs.DT}, type_check=False)


def self_recurrent_cuba(seed: int = 0) -> nir.NIRGraph:
    """``x → fc → a: CubaLIF (v_leak, v_reset) ⟲ w_rec (Affine, bias)``, then ``a → fc_b → b``."""
    rng = np.random.default_rng(seed)
    return _graph(
        {
            "x": nir.Input({"input": np.array([4])}),
            "fc": nir.Linear(rng.normal(size=(6, 4)) * 4.0),
            "a": graphs.cuba((6,), rng, v_leak=0.2, v_reset=-0.1, threshold=0.8),
            "w_rec": nir.Affine(rng.normal(size=(6, 6)) * 3.0, rng.normal(size=6) * 0.3),
            "fc_b": nir.Linear(rng.normal(size=(3, 6)) * 4.0),
            "b": graphs.lif((3,), rng, threshold=0.6),
            "out": nir.Output({"output": np.array([3])}),
        },
        [
            ("x", "fc"),
            ("fc", "a"),
            ("a", "w_rec"),
            ("w_rec", "a"),
            ("a", "fc_b"),
            ("fc_b", "b"),
            ("b", "out"),
        ],
    )


def recurrent_leaky(seed: int = 1) -> nir.NIRGraph:
    """snnTorch's ``RLeaky`` as exported, flattened: ``lif1.lif ⟲ lif1.w_rec`` (Linear)."""
    rng = np.random.default_rng(seed)
    return _graph(
        {
            "x": nir.Input({"input": np.array([4])}),
            "fc1": nir.Affine(rng.normal(size=(5, 4)) * 8.0, rng.normal(size=5)),
            "lif1.lif": graphs.lif((5,), rng, threshold=0.7),
            "lif1.w_rec": nir.Linear(rng.normal(size=(5, 5)) * 4.0),
            "out": nir.Output({"output": np.array([5])}),
        },
        [
            ("x", "fc1"),
            ("fc1", "lif1.lif"),
            ("lif1.lif", "lif1.w_rec"),
            ("lif1.w_rec", "lif1.lif"),
            ("lif1.lif", "out"),
        ],
    )


def two_population_loop(seed: int = 2) -> nir.NIRGraph:
    """``x → a → fc_ab → b → fc_ba → a``: both edges out of the loop's neurons are recurrent;
    ``y → fc_y → b`` enters the loop at ``b``."""
    rng = np.random.default_rng(seed)
    return _graph(
        {
            "x": nir.Input({"input": np.array([4])}),
            "y": nir.Input({"input": np.array([2])}),
            "fc": nir.Linear(rng.normal(size=(5, 4)) * 4.0),
            "a": graphs.lif((5,), rng, v_leak=0.1, threshold=0.7),
            "fc_ab": nir.Linear(rng.normal(size=(4, 5)) * 4.0),
            "b": graphs.cuba((4,), rng, threshold=0.7),
            "fc_ba": nir.Affine(rng.normal(size=(5, 4)) * 3.0, rng.normal(size=5) * 0.2),
            "fc_y": nir.Linear(rng.normal(size=(4, 2)) * 4.0),
        },
        [
            ("x", "fc"),
            ("fc", "a"),
            ("a", "fc_ab"),
            ("fc_ab", "b"),
            ("b", "fc_ba"),
            ("fc_ba", "a"),
            ("y", "fc_y"),
            ("fc_y", "b"),
        ],
    )


def loop_read_from_outside(seed: int = 3) -> nir.NIRGraph:
    """``x → fc → a ⟲ w_rec``, and ``w_rec → fc_b → b``: ``b`` hangs off the loop's synapse, so it
    reads ``a``'s previous step (the edge ``a → w_rec`` is recurrent) though ``b`` is not on it."""
    rng = np.random.default_rng(seed)
    return _graph(
        {
            "x": nir.Input({"input": np.array([4])}),
            "fc": nir.Linear(rng.normal(size=(5, 4)) * 4.0),
            "a": graphs.lif((5,), rng, threshold=0.7),
            "w_rec": nir.Affine(rng.normal(size=(5, 5)) * 3.0, rng.normal(size=5) * 0.2),
            "fc_b": nir.Linear(rng.normal(size=(3, 5)) * 3.0),
            "b": graphs.cuba((3,), rng, threshold=0.5),
        },
        [
            ("x", "fc"),
            ("fc", "a"),
            ("a", "w_rec"),
            ("w_rec", "a"),
            ("w_rec", "fc_b"),
            ("fc_b", "b"),
        ],
    )


GRAPHS = {
    "cuba": self_recurrent_cuba,
    "rleaky": recurrent_leaky,
    "two": two_population_loop,
    "outside": loop_read_from_outside,
}


def _inputs(graph: nir.NIRGraph, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(-0.5, 1.0, size=(IMAGES, STEPS, *node.input_type["input"]))
        for name, node in graph.nodes.items()
        if isinstance(node, nir.Input)
    }


def _importer(graph: nir.NIRGraph, inputs: dict) -> dict[str, dict[str, np.ndarray]]:
    from exporters.importer import import_nir

    run = import_nir(graph)(
        {k: torch.as_tensor(np.swapaxes(v, 0, 1)) for k, v in inputs.items()},
        record=("spikes", "v"),
    )
    return {
        name: {k: np.swapaxes(r.numpy(), 0, 1) for k, r in kinds.items()}
        for name, kinds in run.records.items()
    }


# --------------------------------------------------------------------------------------------
# No Lava


def test_analysis_marks_the_loop_and_gives_its_populations_one_depth():
    model = analyse(two_population_loop())
    assert model.loops == ["a → fc_ab → b → fc_ba → a"]
    recurrent = {(c.source, c.target): c.recurrent for c in model.connections}
    assert recurrent == {("x", "a"): False, ("y", "b"): False, ("a", "b"): True, ("b", "a"): True}
    assert model.depth["a"] == model.depth["b"] == 2  # one hop, plus the lead step of the gap
    assert all(c.extra_delay == (1 if c.source in model.inputs else 0) for c in model.connections)
    model = analyse(recurrent_leaky())
    assert model.loops == ["lif1.lif → lif1.w_rec → lif1.lif"]
    model = analyse(loop_read_from_outside())
    recurrent = {(c.source, c.target): c.recurrent for c in model.connections}
    assert recurrent == {("x", "a"): False, ("a", "a"): True, ("a", "b"): True}
    assert model.depth["a"] == model.depth["b"] == 2


def test_plan_opens_a_window_gap_before_each_window_of_a_looped_group():
    plan = build_plan(analyse(recurrent_leaky()), 4)
    assert plan.window == 5 and plan.total_steps(2) == 2 * 5 + 2
    gap = [s for s in plan.synapses if s.source.startswith("gap:")]
    assert [s.target for s in gap] == ["lif1.lif"] and np.all(gap[0].weight < -1e20)
    # depth 2: windows start at Lava steps 2 and 7; the spare steps 1 and 6 get the pulse,
    # played one step earlier (the Dense delay)
    data = source_data(plan, gap[0].source, {}, 2, plan.total_steps(2))
    np.testing.assert_array_equal(np.flatnonzero(data[0]), [0, 5, 10])
    plain = build_plan(analyse(graphs.zoo_graph(6)), 4)
    assert plain.window == 4 and not plain.loops


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_reference_matches_the_importer_on_recurrent_graphs(name):
    graph = GRAPHS[name]()
    inputs = _inputs(graph)
    ours = simulate_float(graph, inputs, STEPS)
    theirs = _importer(graph, inputs)
    for pop, rec in ours.items():
        spikes = theirs[pop]["spikes"].reshape(rec["spikes"].shape).astype(bool)
        np.testing.assert_array_equal(rec["spikes"], spikes, err_msg=pop)
        np.testing.assert_allclose(
            rec["v"], theirs[pop]["v"].reshape(rec["v"].shape), atol=1e-9, err_msg=pop
        )
        assert 0 < rec["spikes"].mean() < 1, pop


def test_a_loop_without_a_neuron_is_refused_naming_the_loop():
    rng = np.random.default_rng(3)
    graph = _graph(
        {
            "x": nir.Input({"input": np.array([3])}),
            "p": nir.Linear(np.eye(3)),
            "q": nir.Linear(np.eye(3)),
            "n": graphs.lif((3,), rng),
            "m": graphs.lif((3,), rng),
        },
        [("x", "p"), ("p", "q"), ("q", "p"), ("q", "n"), ("n", "m")],
    )
    with pytest.raises(GraphError, match=r"^the loop p → q → p has no neuron") as info:
        analyse(graph)
    assert "'n'" not in str(info.value) and "m" not in str(info.value)  # not what lies downstream
    # a neuron-free loop inside a loop that has a neuron: p → q → p, and q → n → p
    graph.edges.append(("n", "p"))
    with pytest.raises(GraphError, match=r"^the loop p → q → p has no neuron"):
        analyse(graph)


def test_fixed_point_refuses_a_loop_naming_it():
    plan = build_plan(analyse(recurrent_leaky()), STEPS)
    with pytest.raises(GraphError, match=r"loop lif1\.lif → lif1\.w_rec → lif1\.lif runs in float"):
        quantize_plan(plan, {"x": 1.0})


# --------------------------------------------------------------------------------------------
# Lava through the worker


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_lava_float_equals_the_importer_on_recurrent_graphs(name, tmp_path: Path):
    graph = GRAPHS[name]()
    path = tmp_path / f"{name}.nir"
    nir.write(str(path), graph)
    inputs = _inputs(graph)
    reference = simulate_float(graph, inputs, STEPS, record=("spikes", "v", "u"))
    theirs = _importer(graph, inputs)
    result = run_lava_images(path, inputs, STEPS, record=("spikes", "v", "u"))
    last_step_spikes = 0
    for pop, rec in reference.items():
        lava = result.records[pop]
        np.testing.assert_array_equal(lava["spikes"], rec["spikes"], err_msg=pop)
        torch_spikes = theirs[pop]["spikes"].reshape(rec["spikes"].shape).astype(bool)
        np.testing.assert_array_equal(lava["spikes"], torch_spikes, err_msg=pop)
        np.testing.assert_allclose(lava["v"], rec["v"], atol=1e-9, err_msg=pop)
        np.testing.assert_allclose(lava["u"], rec["u"], atol=1e-9, err_msg=pop)
        last_step_spikes += int(rec["spikes"][:-1, -1].sum())
    assert last_step_spikes > 0  # the window gap was needed: a window's last step spiked
    assert result.status["lava_runs"] == 1


@pytest.mark.lava
@pytest.mark.slow
def test_cosimulate_agrees_exactly_on_a_recurrent_leaky_graph(tmp_path: Path):
    from hardware_sims.cosim import cosimulate

    graph = recurrent_leaky()
    path = tmp_path / "rleaky.nir"
    nir.write(str(path), graph)
    report = cosimulate(path, images=IMAGES, steps=STEPS, inputs=_inputs(graph))
    assert report.total.spike_agreement == 1.0 and report.total.spikes_lava > 0
    assert report.total.max_abs_v_diff < 1e-9
