"""The importer against independent references, its errors, file validation and ``nir-info``."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from norse.torch import LIFParameters, LIFRecurrentCell

from exporters.graph_rules import SHAPE_RULES
from exporters.importer import SUPPORTED_TYPES, NIRImportError, import_nir
from exporters.semantics import NEURON_TYPES, RESET_KEY, STATEFUL_TYPES, discretize, step
from exporters.validate import NIRFileError, NIRLimits, load_nir
from lorsp_app.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DT = 1e-3


def chain_graph(shape, *nodes, dt: float | None = DT, type_check: bool = True) -> nir.NIRGraph:
    """``Input(shape) → nodes… → Output`` with nodes named n0, n1, …"""
    names = ["input", *(f"n{i}" for i in range(len(nodes))), "output"]
    graph_nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    graph_nodes.update({f"n{i}": node for i, node in enumerate(nodes)})
    out_shape = None
    for node in reversed(nodes):
        declared = (node.output_type or {}).get("output")
        if declared is not None:
            out_shape = np.array(declared)
            break
    graph_nodes["output"] = nir.Output(
        output_type={"output": out_shape if out_shape is not None else np.array(shape)}
    )
    metadata = {} if dt is None else {"dt": dt}
    return nir.NIRGraph(
        graph_nodes, list(itertools.pairwise(names)), metadata, type_check=type_check
    )


# --------------------------------------------------------------------------------------------
# Neurons: the importer equals exporters.semantics.step, the reference of every backend.


def random_neuron(kind: str, rng, n: int, dt: float):
    def u(low, high):
        return rng.uniform(low, high, n)

    tau = u(dt, 8 * dt)
    common = {"r": u(0.5, 2.0)}
    metadata = {RESET_KEY: str(rng.choice(["value", "subtract"]))}
    if kind == "LIF":
        return nir.LIF(
            tau=tau,
            v_leak=u(-0.2, 0.2),
            v_threshold=u(0.5, 1.5),
            v_reset=u(-0.3, 0.2),
            metadata=metadata,
            **common,
        )
    if kind == "CubaLIF":
        return nir.CubaLIF(
            tau_syn=u(dt, 10 * dt), tau_mem=tau, v_leak=u(-0.2, 0.2), v_threshold=u(0.5, 1.5),
            v_reset=u(-0.3, 0.2), w_in=u(0.5, 3.0), metadata=metadata, **common,
        )  # fmt: skip
    if kind == "IF":  # v' = r·I: r ~ 1/dt moves v by about the input per step, as Norse's IAF
        return nir.IF(
            r=u(0.5, 2.0) / dt, v_threshold=u(1.0, 3.0), v_reset=u(-0.3, 0.2), metadata=metadata
        )
    if kind == "LI":
        return nir.LI(tau=tau, v_leak=u(-0.2, 0.2), **common)
    if kind == "CubaLI":
        return nir.CubaLI(
            tau_syn=u(dt, 10 * dt), tau_mem=tau, v_leak=u(-0.2, 0.2), w_in=u(0.5, 3.0), **common
        )
    return nir.I(r=u(0.05, 0.2) / dt)


def random_synapse(kind: str, rng, n: int):
    if kind == "Affine":
        out = int(rng.integers(2, 6))
        return nir.Affine(weight=rng.normal(0, 1.5, (out, n)), bias=rng.normal(0.5, 0.5, out)), out
    if kind == "Linear":
        out = int(rng.integers(2, 6))
        return nir.Linear(weight=rng.normal(0, 1.5, (out, n))), out
    return nir.Scale(scale=rng.uniform(0.5, 2.0, n)), n


def reference_chain(nodes, x: np.ndarray, dt: float) -> list[dict[str, np.ndarray]]:
    """Numpy: graded nodes by their NIR equations, neurons by ``semantics.step``."""
    states = [
        discretize(node, dt).initial_state((x.shape[1],))
        if type(node).__name__ in STATEFUL_TYPES
        else None
        for node in nodes
    ]
    records = [{"output": [], "v": [], "spikes": []} for _ in nodes]
    for frame in x:
        h = frame
        for i, node in enumerate(nodes):
            kind = type(node).__name__
            if kind == "Affine":
                h = h @ node.weight.T + node.bias
            elif kind == "Linear":
                h = h @ node.weight.T
            elif kind == "Scale":
                h = h * node.scale
            else:
                spikes, u, v = step(discretize(node, dt), *states[i], h)
                states[i] = (u, v)
                h = spikes if kind in NEURON_TYPES else v
                records[i]["v"].append(v)
                records[i]["spikes"].append(spikes)
            records[i]["output"].append(h)
    return [{k: np.stack(v) for k, v in rec.items() if v} for rec in records]


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(
        st.sampled_from(("Affine", "Linear", "Scale", *STATEFUL_TYPES)), min_size=1, max_size=6
    ),
    seed=st.integers(0, 2**31 - 1),
    dt=st.sampled_from([1e-4, 1e-3, 5e-3]),
)
def test_random_nir_chains_match_the_semantics_reference(tmp_path, kinds, seed, dt):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(2, 6))
    nodes, n = [], width
    for kind in ("Affine", *kinds):
        if kind in STATEFUL_TYPES:
            nodes.append(random_neuron(kind, rng, n, dt))
        else:
            node, n = random_synapse(kind, rng, n)
            nodes.append(node)
    path = tmp_path / "random.nir"
    nir.write(str(path), chain_graph((width,), *nodes, dt=dt))
    x = rng.uniform(0.0, 2.0, (16, 3, width))
    expected = reference_chain(nodes, x, dt)
    run = import_nir(path)({"input": torch.as_tensor(x)}, record=("spikes", "v", "output"))
    for i, node in enumerate(nodes):
        got = run.records[f"n{i}"]
        if type(node).__name__ in NEURON_TYPES:
            np.testing.assert_array_equal(
                got["spikes"].numpy(), expected[i]["spikes"], err_msg=f"n{i}"
            )
        np.testing.assert_allclose(
            got["output"].numpy(), expected[i]["output"], rtol=1e-12, atol=1e-12
        )
        if "v" in expected[i]:
            np.testing.assert_allclose(got["v"].numpy(), expected[i]["v"], rtol=1e-12, atol=1e-12)


def test_reset_modes_and_initial_state_follow_the_contract():
    n = 3
    base = {
        "tau": np.full(n, 0.01),
        "r": np.full(n, 2.0),
        "v_leak": np.full(n, 0.3),
        "v_threshold": np.ones(n),
        "v_reset": np.full(n, -0.5),
    }
    x = torch.full((6, 1, n), 8.0, dtype=torch.float64)
    voltages = {}
    for mode in ("value", "subtract"):
        graph = chain_graph(
            (n,), nir.Linear(weight=np.eye(n)), nir.LIF(**base, metadata={RESET_KEY: mode})
        )
        v = import_nir(graph)({"input": x}, record=("v", "spikes")).records["n1"]
        voltages[mode] = v["v"][:, 0, 0].numpy()
        assert v["spikes"].sum() > 0
    # step 1 from v = v_leak: v = 0.9·0.3 + 2·0.1·8 + 0.1·0.3 = 1.9 > 1 → reset
    assert voltages["value"][0] == -0.5
    assert voltages["subtract"][0] == pytest.approx(1.9 - 1.5)


def test_dt_is_explicit_or_from_metadata():
    lif = nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    graph = chain_graph((2,), nir.Linear(weight=np.eye(2)), lif, dt=None)
    with pytest.raises(NIRImportError, match=r"no metadata\['dt'\].*pass dt"):
        import_nir(graph)
    assert import_nir(graph, dt=2e-3).layer("n1").decay_v[0] == 1 - 2e-3 / 0.01
    graph.metadata["dt"] = 5e-4
    assert import_nir(graph).layer("n1").decay_v[0] == 1 - 5e-4 / 0.01
    assert import_nir(graph, dt=1e-3).layer("n1").decay_v[0] == 1 - 1e-3 / 0.01
    with pytest.raises(NIRImportError, match="dt must be"):
        import_nir(graph, dt=-1.0)


def test_recurrent_edge_carries_the_previous_step_like_norse():
    torch.manual_seed(0)
    n_in, n, dt = 3, 4, 1e-3
    p = LIFParameters(
        tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.5)
    )
    cell = LIFRecurrentCell(n_in, n, p, dt=dt).double()
    with torch.no_grad():
        cell.recurrent_weights.mul_(3.0)
    w_in, w_rec = (cell.input_weights.detach().numpy(), cell.recurrent_weights.detach().numpy())
    neurons = nir.CubaLIF(
        tau_syn=np.full(n, 1 / 200), tau_mem=np.full(n, 1 / 100), r=np.ones(n), v_leak=np.zeros(n),
        v_threshold=np.full(n, 0.5), w_in=np.full(n, 1 / (dt * 200)),
    )  # fmt: skip
    graph = nir.NIRGraph(
        {
            "input": nir.Input(input_type={"input": np.array([n_in])}),
            "w_in": nir.Linear(weight=w_in),
            "lif": neurons,
            "w_rec": nir.Linear(weight=w_rec),
            "output": nir.Output(output_type={"output": np.array([n])}),
        },
        [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
        {"dt": dt},
        type_check=False,
    )
    imported = import_nir(graph)
    assert imported.order.recurrent == {("lif", "w_rec")}
    x = torch.rand(30, 2, n_in, dtype=torch.float64) * 6
    state, expected = None, []
    with torch.no_grad():
        for frame in x:
            z, state = cell(frame, state)
            expected.append(z)
    expected = torch.stack(expected)
    assert 0 < expected.sum() < expected.numel()
    assert torch.equal(imported({"input": x}).outputs["output"], expected)


# --------------------------------------------------------------------------------------------
# Graded nodes against direct numpy computations.


def numpy_conv2d(x, weight, bias, stride, padding, dilation, groups):
    batch, _, height, width = x.shape
    c_out, c_group, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    oh = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((batch, c_out, oh, ow))
    per_group = c_out // groups
    for o in range(c_out):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                rows = i * stride[0] + dilation[0] * np.arange(kh)
                cols = j * stride[1] + dilation[1] * np.arange(kw)
                patch = xp[:, g * c_group : (g + 1) * c_group][:, :, rows][:, :, :, cols]
                out[:, o, i, j] = (patch * weight[o]).sum(axis=(1, 2, 3)) + bias[o]
    return out


def run_once(graph, x):
    return import_nir(graph)({"input": torch.as_tensor(x)[None]}).outputs["output"][0].numpy()


def test_conv2d_with_stride_padding_dilation_groups_and_rectangular_kernel():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(4, 1, 3, 2)), rng.normal(size=4)
    conv = nir.Conv2d(
        input_shape=None,
        weight=weight,
        stride=(2, 1),
        padding=(1, 2),
        dilation=(1, 2),
        groups=2,
        bias=bias,
    )
    x = rng.normal(size=(2, 2, 7, 6))
    graph = chain_graph((2, 7, 6), conv, type_check=False)
    graph.nodes["output"] = nir.Output(output_type={"output": np.array([4, 4, 8])})
    expected = numpy_conv2d(x, weight, bias, (2, 1), (1, 2), (1, 2), 2)
    assert expected.shape == (2, 4, 4, 8)
    np.testing.assert_allclose(run_once(graph, x), expected, rtol=1e-12, atol=1e-12)


def test_pooling_flatten_scale_threshold():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 6))
    sum_pool = nir.SumPool2d(
        kernel_size=np.array([2, 3]), stride=np.array([2, 3]), padding=np.array([0, 0])
    )
    graph = chain_graph((3, 4, 6), sum_pool, type_check=False)
    graph.nodes["output"] = nir.Output(output_type={"output": np.array([3, 2, 2])})
    expected = x.reshape(2, 3, 2, 2, 2, 3).sum(axis=(3, 5))
    np.testing.assert_allclose(run_once(graph, x), expected, rtol=1e-12)

    avg_pool = nir.AvgPool2d(
        kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
    )
    graph = chain_graph((3, 4, 6), avg_pool, type_check=False)
    graph.nodes["output"] = nir.Output(output_type={"output": np.array([3, 2, 3])})
    np.testing.assert_allclose(
        run_once(graph, x), x.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5)), rtol=1e-12
    )

    scale = rng.normal(size=(3, 4, 6))
    flatten = nir.Flatten(input_type={"input": np.array([3, 4, 6])}, start_dim=1, end_dim=2)
    threshold = nir.Threshold(threshold=np.full((3, 24), 0.1))
    graph = chain_graph((3, 4, 6), nir.Scale(scale=scale), flatten, threshold)
    np.testing.assert_array_equal(
        run_once(graph, x), ((x * scale).reshape(2, 3, 24) > 0.1).astype(float)
    )


def test_every_shape_rule_type_is_imported_or_rejected_by_name():
    imported = set(SUPPORTED_TYPES)
    for node_type in SHAPE_RULES:
        if node_type.__name__ in imported:
            continue
        assert node_type is nir.Delay  # the one type validated but not run
    node = nir.Delay(delay=np.ones(2))
    with pytest.raises(NIRImportError, match=r"node 'n0' \(Delay\): not supported by the importer"):
        import_nir(chain_graph((2,), node))


# --------------------------------------------------------------------------------------------
# Malformed graphs and inputs: errors name the node, the input or the file.


def lif(n=2, **overrides):
    fields = {
        "tau": np.full(n, 0.01),
        "r": np.ones(n),
        "v_leak": np.zeros(n),
        "v_threshold": np.ones(n),
    }
    fields.update(overrides)
    return nir.LIF(**fields)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            lambda: chain_graph((2,), lif(tau=np.array([0.01, -1.0]))),
            r"node 'n0'.*tau must be finite and > 0",
        ),
        (
            lambda: chain_graph((2,), lif(tau=np.array([0.01, np.nan]))),
            r"node 'n0' \(LIF\): tau contains NaN",
        ),
        (
            lambda: chain_graph(
                (5,), nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)), type_check=False
            ),
            r"node 'n0' \(Affine\): expects input of shape \(4,\), but its input has shape \(5,\)",
        ),
        (
            lambda: chain_graph((3,), lif(3, metadata={RESET_KEY: "bounce"})),
            r"node 'n0'.*reset_mode='bounce'",
        ),
        (
            lambda: chain_graph(
                (2,), lif(), nir.Affine(weight=np.ones((2, 2)), bias=np.zeros(3)), type_check=False
            ),
            r"node 'n1' \(Affine\): bias has shape \(3,\)",
        ),
        (
            lambda: chain_graph((2,), lif(3), type_check=False),
            r"node 'n0' \(LIF\): expects input of shape \(3,\)",
        ),
    ],
)
def test_malformed_parameters_name_the_node(graph, message):
    with pytest.raises(NIRImportError, match=message):
        import_nir(graph())


def test_structural_errors():
    def build(edges, **extra):
        nodes = {
            "input": nir.Input(input_type={"input": np.array([2])}),
            "a": nir.Scale(scale=np.ones(2)),
            "b": nir.Scale(scale=np.ones(2)),
            "output": nir.Output(output_type={"output": np.array([2])}),
            **extra,
        }
        return nir.NIRGraph(nodes, edges, {"dt": DT}, type_check=False)

    with pytest.raises(NIRImportError, match=r"nodes \['a', 'b'\] form a cycle without a neuron"):
        import_nir(build([("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")]))
    with pytest.raises(NIRImportError, match="names unknown node 'c'"):
        import_nir(build([("input", "a"), ("a", "c"), ("a", "output")]))
    with pytest.raises(NIRImportError, match=r"node 'output' \(Output\): an Output cannot feed"):
        import_nir(build([("input", "a"), ("a", "output"), ("output", "b")]))
    with pytest.raises(NIRImportError, match=r"node 'b' \(Scale\): has no incoming edge"):
        import_nir(build([("input", "a"), ("a", "output"), ("b", "output")]))
    inner = chain_graph((2,), nir.Scale(scale=np.ones(2)))
    with pytest.raises(NIRImportError, match=r"node 'sub' \(NIRGraph\): nested graphs"):
        import_nir(build([("input", "sub"), ("sub", "output")], sub=inner))


def test_input_errors_name_the_input():
    model = import_nir(chain_graph((2,), nir.Linear(weight=np.ones((3, 2))), lif(3)))
    with pytest.raises(NIRImportError, match=r"no Input node named \['image'\]"):
        model({"input": torch.zeros(4, 1, 2), "image": torch.zeros(4, 1, 2)})
    with pytest.raises(NIRImportError, match=r"no data given for Input node\(s\) \['input'\]"):
        model({})
    with pytest.raises(
        NIRImportError, match=r"input 'input' has shape \(4, 1, 3\); expected \(T, B, 2\)"
    ):
        model({"input": torch.zeros(4, 1, 3)})
    with pytest.raises(NIRImportError, match="cannot record"):
        model({"input": torch.zeros(4, 1, 2)}, record=("current",))


# --------------------------------------------------------------------------------------------
# Files from strangers: load_nir.


def test_load_nir_rejects_bad_files_with_the_file_name(tmp_path):
    with pytest.raises(NIRFileError, match=r"missing.nir: no such file"):
        load_nir(tmp_path / "missing.nir")
    text = tmp_path / "text.nir"
    text.write_text("not hdf5")
    with pytest.raises(NIRFileError, match=r"text.nir: not a NIR file \(not HDF5\)"):
        load_nir(text)
    empty = tmp_path / "empty.nir"
    with h5py.File(empty, "w") as handle:
        handle.create_dataset("x", data=1)
    with pytest.raises(NIRFileError, match=r"empty.nir: not a NIR file .no 'node' group"):
        load_nir(empty)
    broken = tmp_path / "broken.nir"
    with h5py.File(broken, "w") as handle:
        handle.create_group("node").create_dataset("type", data="NoSuchNode")
    with pytest.raises(NIRFileError, match=r"broken.nir: not a readable NIR graph"):
        load_nir(broken)
    nan = tmp_path / "nan.nir"
    nir.write(str(nan), chain_graph((2,), lif(tau=np.array([0.01, np.nan]))))
    with pytest.raises(NIRFileError, match=r"nan.nir: node 'n0' \(LIF\): tau contains NaN"):
        load_nir(nan)
    good = tmp_path / "good.nir"
    nir.write(str(good), chain_graph((2,), lif()))
    assert set(load_nir(good).nodes) == {"input", "n0", "output"}
    with pytest.raises(NIRFileError, match=r"good.nir: 3 nodes exceed the limit of 2"):
        load_nir(good, NIRLimits(max_nodes=2))
    with pytest.raises(NIRFileError, match=r"good.nir: .* bytes exceed the limit of 10"):
        load_nir(good, NIRLimits(max_file_bytes=10))
    with pytest.raises(
        NIRFileError, match=r"node 'input' \(Input\): 2 elements exceed the limit of 1"
    ):
        load_nir(good, NIRLimits(max_population=1))


def test_validation_needs_no_torch_and_runs_in_the_lava_environment(tmp_path):
    path = tmp_path / "g.nir"
    nir.write(str(path), chain_graph((2,), nir.Linear(weight=np.ones((3, 2))), lif(3)))
    code = (
        "import sys; from exporters.validate import load_nir; from exporters.summary import "
        f"summarize_graph; s = summarize_graph(load_nir({str(path)!r})); "
        "print(s['totals']['neurons'], 'torch' in sys.modules)"
    )
    lava_python = ROOT / ".venv-lava" / "bin" / "python"
    out = subprocess.run(
        [str(lava_python), "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.split() == ["3", "False"]


# --------------------------------------------------------------------------------------------
# lorsp nir-info


def test_nir_info_prints_nodes_shapes_counts_and_metadata(tmp_path, capsys):
    path = tmp_path / "g.nir"
    graph = chain_graph((2,), nir.Affine(weight=np.ones((3, 2)), bias=np.zeros(3)), lif(3))
    graph.metadata["producer"] = "someone-else"
    nir.write(str(path), graph)
    report = tmp_path / "info.json"
    assert cli_main(["nir-info", str(path), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"n0\s+Affine\s+2\s+3\s+9\s*\n", out)
    assert re.search(r"n1\s+LIF\s+3\s+3\s+15\s+3\s*\n", out)
    assert "input → n0" in out and "producer = someone-else" in out and "dt = 0.001" in out
    summary = json.loads(report.read_text())
    assert summary["totals"] == {
        "nodes": 4,
        "edges": 3,
        "parameters": 9 + 15,
        "neurons": 3,
        "spiking_neurons": 3,
    }


def test_nir_info_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"\x89HDF garbage")
    assert cli_main(["nir-info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.nir: not a NIR file" in err
