"""lava-dl netx: NIR graphs and trained LoRSP prompters as netx networks, run by netx.hdf5.Network.

The Lava tests run the real lava-dl 0.6.0 in the Lava environment (through the worker): netx must
equal our own Lava fixed-point run and the numpy integer model bit for bit (spikes and integer
voltages), on hand-built chains (a streamed graded input; a held input folded into a bias) and on
LoRSP prompters (a trained run through the CLI; grid and every-step designs from files).
"""

from __future__ import annotations

import json

import h5py
import nir
import numpy as np
import pytest
import torch
from lava_graphs import DT, cuba, lif
from test_cosim import firing_v2, train_tiny

from exporters.lorsp_export import export_lorsp
from exporters.semantics import PERSISTENT_SYN_STEPS
from exporters.validate import write_nir
from hardware_sims.client import run_netx
from hardware_sims.netx import (
    NetxError,
    build_chain,
    read_netx,
    simulate_chain,
    write_netx,
)
from hardware_sims.netx_backend import BIAS_PREFIX, PAYLOAD
from hardware_sims.netx_cosim import export_netx, netx_cosimulate
from hardware_sims.reference import simulate_float
from lorsp_app.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter

STEPS = 10
#: Spike agreement of the integer model with the float discrete model on the hand-built chains
#: per block (measured: streamed 0.972 / 0.950, the graded input's weights have ~6 bits; held
#: 1.0 / 0.986); netx's fixed point must stay close to the maths.
FLOAT_AGREEMENT = 0.9


def _graph(nodes: dict, edges: list) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT})


def streamed_chain(seed: int = 0) -> nir.NIRGraph:
    """``x (5) → fc1 → a (6) → fc2 → b (4)``: a graded input at every step, mixed-sign weights."""
    rng = np.random.default_rng(seed)
    nodes = {
        "x": nir.Input({"input": np.array([5])}),
        "fc1": nir.Linear(rng.normal(size=(6, 5)) * 40.0),
        "a": cuba((6,), rng),
        "fc2": nir.Linear(rng.normal(size=(4, 6)) * 40.0),
        "b": cuba((4,), rng),
        "out": nir.Output({"output": np.array([4])}),
    }
    edges = [("x", "fc1"), ("fc1", "a"), ("a", "fc2"), ("fc2", "b"), ("b", "out")]
    return _graph(nodes, edges)


def persistent_cuba(shape, tau_mem: float = 4e-3) -> nir.CubaLIF:
    """A CubaLIF whose current holds an input presented once (``exporters.semantics``)."""
    full = lambda value: np.full(shape, float(value))  # noqa: E731
    return nir.CubaLIF(
        tau_syn=full(DT * PERSISTENT_SYN_STEPS),
        tau_mem=full(tau_mem),
        r=full(1.0),
        v_leak=full(0.0),
        v_threshold=full(1.0),
        v_reset=full(0.0),
        w_in=full(PERSISTENT_SYN_STEPS),
    )


def held_chain(seed: int = 1) -> nir.NIRGraph:
    """``y (3) → fc_y → g (5, persistent)`` presented once, ``g → fc_p → p (7, persistent)``
    plus a second held input ``z (7) → scale_z → p``: both inputs fold into biases."""
    rng = np.random.default_rng(seed)
    nodes = {
        "y": nir.Input({"input": np.array([3])}),
        "z": nir.Input({"input": np.array([7])}),
        "fc_y": nir.Linear(rng.uniform(0.5, 2.0, size=(5, 3)) * 4.0),
        "g": persistent_cuba((5,)),
        "fc_p": nir.Linear(rng.normal(size=(7, 5)) * 3.0),
        "scale_z": nir.Scale(rng.uniform(1.0, 3.0, size=7)),
        "p": persistent_cuba((7,), 6e-3),
        "out": nir.Output({"output": np.array([7])}),
    }
    edges = [
        ("y", "fc_y"),
        ("fc_y", "g"),
        ("g", "fc_p"),
        ("z", "scale_z"),
        ("scale_z", "p"),
        ("fc_p", "p"),
        ("p", "out"),
    ]
    return _graph(nodes, edges)


def chain_inputs(kind: str, images: int = 3, seed: int = 2):
    """``(graph, chain, float inputs (images, T, n) by Input, held values, biases, payload)``."""
    rng = np.random.default_rng(seed)
    if kind == "streamed":
        graph = streamed_chain()
        chain = build_chain(graph, STEPS)
        inputs = {"x": rng.uniform(-1.0, 1.0, size=(images, STEPS, 5))}
        payload = chain.payload(inputs["x"])
        held = {}
    else:
        graph = held_chain()
        chain = build_chain(graph, STEPS, held={"y": "once", "z": "once"})
        held = {"y": rng.uniform(0.0, 1.0, size=(images, 3)), "z": rng.uniform(-1, 1, (images, 7))}
        inputs = {}
        for name, value in held.items():
            inputs[name] = np.zeros((images, STEPS, value.shape[1]))
            inputs[name][:, 0] = value  # presented once, at step 0
        payload = None
    return graph, chain, inputs, held, chain.bias_integers(held, images), payload


# --------------------------------------------------------------------------------------------
# The chain, its integers and its file (no Lava)


@pytest.mark.parametrize("kind", ["streamed", "held"])
def test_chain_integers_fit_netx_and_the_file_reads_back(tmp_path, kind):
    _, chain, _, _, biases, _ = chain_inputs(kind)
    path = write_netx(chain, tmp_path / "chain.net")
    back = read_netx(path)
    assert [layer.name for layer in back.layers] == [layer.name for layer in chain.layers]
    assert (back.streamed, back.held, back.steps) == (chain.streamed, chain.held, chain.steps)
    for layer, again in zip(chain.layers, back.layers, strict=True):
        assert 0 <= layer.i_decay <= 4096 and 0 <= layer.v_decay <= 4095
        assert 0 < layer.v_th_mant < 2**17
        assert (layer.i_decay, layer.v_decay, layer.v_th_mant, layer.scale) == (
            again.i_decay,
            again.v_decay,
            again.v_th_mant,
            again.scale,
        )
        assert np.all(np.abs(biases[layer.name]) <= 4096)
        np.testing.assert_array_equal(
            again.bias_integers(dict(chain_inputs(kind)[3]), 3), biases[layer.name]
        )
        if layer.weight is None:
            assert again.weight is None
            continue
        np.testing.assert_array_equal(again.weight, layer.weight)
        w = layer.weight
        if w.min() < 0 < w.max():  # mixed signs: even mantissas, Lava drops the lowest bit
            assert w.min() >= -256 and w.max() <= 254 and not np.any(w % 2)
        else:
            assert np.abs(w).max() <= 255
        # 8 bits for weights fed spikes; a graded input shares its bits with the payload
        assert np.abs(w).max() >= (16 if layer is chain.layers[0] and chain.streamed else 128)
    with h5py.File(path) as f:  # what netx.hdf5.Network reads
        first = f["layer/0"]
        assert first["type"][0] == b"input"
        if kind == "held":  # an input block driven by its bias
            assert first["neuron/type"][()] == b"CUBA"
            assert int(first["neuron/iDecay"][()]) == 0  # a persistent current held exactly
        else:
            assert "neuron" not in first and list(first["shape"][()]) == [5]
        last = f[f"layer/{len(f['layer']) - 1}"]
        assert last["type"][0] == b"dense" and last["weight"].shape == (
            len(last["bias"]),
            5 if kind == "held" else 6,
        )


@pytest.mark.parametrize("kind", ["streamed", "held"])
def test_integer_model_stays_close_to_the_float_model(kind):
    graph, chain, inputs, _, biases, payload = chain_inputs(kind)
    integer = simulate_chain(chain, biases, payload)
    exact = simulate_float(graph, inputs, STEPS, record=("spikes",))
    for layer in chain.layers:
        got, want = integer[layer.name]["spikes"], exact[layer.name]["spikes"]
        assert 0 < want.sum() < want.size  # the chain is neither silent nor saturated
        assert np.mean(got == want) >= FLOAT_AGREEMENT, layer.name


def test_a_changed_integer_changes_the_integer_model():
    _, chain, _, _, biases, payload = chain_inputs("streamed")
    before = simulate_chain(chain, biases, payload)["b"]["spikes"]
    chain.layers[-1].v_th_mant //= 2
    after = simulate_chain(chain, biases, payload)["b"]["spikes"]
    assert after.sum() > before.sum()


def affine_chain(neuron) -> nir.NIRGraph:
    """``x (4) → fc (Affine, with a bias) → a (5) → fc2 → b (3)``, ``neuron(shape, rng)`` each."""
    rng = np.random.default_rng(4)
    nodes = {
        "x": nir.Input({"input": np.array([4])}),
        "fc": nir.Affine(rng.normal(size=(5, 4)) * 10.0, rng.uniform(2.0, 6.0, size=5)),
        "a": neuron((5,), rng),
        "fc2": nir.Linear(rng.uniform(0.0, 1.0, size=(3, 5)) * 20.0),
        "b": neuron((3,), rng),
    }
    return _graph(nodes, [("x", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "b")])


def test_an_affine_bias_into_a_one_step_current_becomes_the_static_bias():
    graph = affine_chain(lif)  # LIF: the current lasts one step (du = 1)
    chain = build_chain(graph, STEPS)
    first = chain.layers[0]
    assert not first.terms and np.all(first.bias_static > 0)
    biases = chain.bias_integers({}, 2)
    assert np.all(biases["a"] > 0) and not np.any(biases["b"])
    x = np.random.default_rng(5).uniform(-1.0, 1.0, size=(2, STEPS, 4))
    integer = simulate_chain(chain, biases, chain.payload(x))
    exact = simulate_float(graph, {"x": x}, STEPS, record=("spikes",))
    for name in ("a", "b"):
        assert exact[name]["spikes"].any()
        assert np.mean(integer[name]["spikes"] == exact[name]["spikes"]) >= FLOAT_AGREEMENT


def _two_inputs_into_one_block():
    rng = np.random.default_rng(0)
    nodes = {
        "x": nir.Input({"input": np.array([3])}),
        "y": nir.Input({"input": np.array([3])}),
        "fx": nir.Linear(rng.normal(size=(4, 3))),
        "fy": nir.Linear(rng.normal(size=(4, 3))),
        "a": cuba((4,), rng),
    }
    return _graph(nodes, [("x", "fx"), ("y", "fy"), ("fx", "a"), ("fy", "a")]), {}


def _branch():
    rng = np.random.default_rng(0)
    nodes = {
        "x": nir.Input({"input": np.array([3])}),
        "fx": nir.Linear(rng.normal(size=(4, 3))),
        "a": cuba((4,), rng),
        "f1": nir.Linear(rng.normal(size=(2, 4))),
        "f2": nir.Linear(rng.normal(size=(2, 4))),
        "b": cuba((2,), rng),
        "c": cuba((2,), rng),
    }
    edges = [("x", "fx"), ("fx", "a"), ("a", "f1"), ("a", "f2"), ("f1", "b"), ("f2", "c")]
    return _graph(nodes, edges), {}


def _with(node_name: str, **changes):
    graph = streamed_chain()
    node = graph.nodes[node_name]
    fields = {
        f: getattr(node, f)
        for f in ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")
    }
    fields.update(changes)
    graph.nodes[node_name] = nir.CubaLIF(**fields)
    return graph, {}


def _held_into_decaying_current():
    graph = streamed_chain()
    return graph, {"x": "once"}


REFUSED = {
    "two inputs into one block": (_two_inputs_into_one_block, "node 'fy'"),
    "a branch": (_branch, "node 'c'"),
    "per-neuron thresholds": (
        lambda: _with("b", v_threshold=np.array([1.0, 1.0, 0.5, 1.0])),
        "node 'b'",
    ),
    "a resting voltage": (lambda: _with("a", v_leak=np.full(6, 0.1)), "node 'a'"),
    "a held input whose current decays": (_held_into_decaying_current, "node 'fc1'"),
    "an Affine bias into a decaying current": (
        lambda: (affine_chain(cuba), {}),
        "node 'a': a synaptic bias",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_graphs_netx_cannot_express_are_refused_naming_the_node(case):
    make, named = REFUSED[case]
    graph, held = make()
    with pytest.raises(NetxError, match=named):
        build_chain(graph, STEPS, held=held)


def test_lorsp_v1_is_refused_in_one_line_by_the_cli(tmp_path, capsys):
    v1 = write_nir(export_lorsp(create_prompter("lorsp_v1", 8)), tmp_path / "v1.nir")
    with pytest.raises(
        NetxError, match=r"node 'pixel_o(n|ff)': a second block fed by 'gate_neurons'"
    ):
        export_netx(v1, tmp_path / "v1.net")
    assert cli_main(["export", str(v1), "-o", str(tmp_path / "v1.net"), "--format", "netx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorsp export: error:") and "\n" not in err and "netx" in err
    assert not (tmp_path / "v1.net").exists()


@pytest.mark.parametrize("options", [{}, {"grid": 4}, {"persistent": False}])
def test_every_lorsp_v2_design_exports(tmp_path, options):
    graph_file = write_nir(export_lorsp(firing_v2(**options)), tmp_path / "v2.nir")
    result = export_netx(graph_file, tmp_path / "v2.net")
    assert [b["name"] for b in result.blocks] == ["gate_neurons", "pixel_neurons"]
    assert [b["netx_type"] for b in result.blocks] == ["input", "dense"]
    assert result.streamed is None and set(result.held) == {"descriptor", "image", "bias"}
    assert result.blocks[1]["neurons"] == 3 * 4 * 4 if options.get("grid") else 3 * 8 * 8
    with h5py.File(result.path) as f:  # the host's metadata travels with the file
        assert f["lorsp/metadata/lorsp"].attrs["format"] == "lorsp-nir/2"
        assert f["lorsp/layer/1"].attrs["name"] == "pixel_neurons"


# --------------------------------------------------------------------------------------------
# lava-dl runs (the Lava environment, through the worker)


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["streamed", "held"])
def test_a_hand_built_chain_runs_in_netx_bit_for_bit_as_our_integer_model(tmp_path, kind):
    _, chain, _, _, biases, payload = chain_inputs(kind)
    path = write_netx(chain, tmp_path / "chain.net")
    request = {BIAS_PREFIX + name: value for name, value in biases.items()}
    if payload is not None:
        request[PAYLOAD] = payload
    result = run_netx(path, request, STEPS, record=("spikes", "v", "u"), timeout=900)
    integer = simulate_chain(chain, biases, payload, record=("spikes", "v", "u"))
    assert result.status["lava_dl_version"] == "0.6.0"
    assert "Dense" in result.status["netx"]["netx_table"]
    for layer in chain.layers:
        want = integer[layer.name]
        assert 0 < want["spikes"].sum() < want["spikes"].size
        for side in ("netx", "lava"):
            got = result.records[f"{side}/{layer.name}"]
            for kind_ in ("spikes", "v", "u"):
                np.testing.assert_array_equal(got[kind_], want[kind_], err_msg=f"{side} {kind_}")


@pytest.mark.lava
@pytest.mark.slow
def test_a_trained_prompter_round_trips_through_netx(tmp_path, capsys):
    run = train_tiny(tmp_path / "run", "lorsp")
    assert cli_main(["export", str(run), "-o", str(tmp_path / "p.net"), "--format", "netx"]) == 0
    chain = read_netx(tmp_path / "p.net")
    assert [layer.name for layer in chain.layers] == ["gate_neurons", "pixel_neurons"]
    capsys.readouterr()
    report_file = tmp_path / "netx.json"
    code = cli_main(
        ["cosim", str(run), "--backend", "netx", "--images", "3", "--json", str(report_file)]
    )
    out = capsys.readouterr().out
    assert code == 0 and "bit-exact with our fixed point and the integer model: True" in out
    report = json.loads(report_file.read_text())
    for side in ("lava_fixed", "integer_model"):
        assert report["totals"][side]["mismatched_spikes"] == 0
        assert report["totals"][side]["max_abs_v_diff"] == 0
    assert report["totals"]["float"]["spike_agreement"] >= 0.99
    synops = report["synops_per_image"]
    assert synops["netx"] == synops["lava_fixed"] == synops["integer_model"] > 0
    assert synops["netx"] == pytest.approx(synops["float"], rel=0.02)
    assert report["prompt"]["relative_l1"] < 0.05
    assert set(report["accuracy"]) == {"images", "float", "netx", "change"}


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("options", [{"grid": 4}, {"persistent": False}])
def test_lorsp_designs_from_files_are_bit_exact_in_netx(tmp_path, options):
    torch.manual_seed(3)
    graph_file = write_nir(export_lorsp(firing_v2(**options)), tmp_path / "v2.nir")
    report = netx_cosimulate(graph_file, images=3)
    assert report.bit_exact
    assert report.totals["float"].spike_agreement >= 0.99
    assert report.synops_per_image["netx"] == report.synops_per_image["lava_fixed"]
    assert report.totals["integer_model"].spikes_torch > 0
    assert report.blocks[0]["bias_inputs"] == ["bias", "descriptor"] or set(
        report.blocks[0]["bias_inputs"]
    ) == {"bias", "descriptor"}
