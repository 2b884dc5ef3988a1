"""Norse → NIR file → plain ``nir.read`` → importer gives the Norse model's spike trains exactly.

Every reference runs in float64 (Norse promotes its float32 parameters), so "identical" means
bit-identical spikes, not "close". Each test also asserts that its neurons fire, but not always:
a spike train of all zeros or all ones would agree by accident.
"""

from __future__ import annotations

import json
import warnings

import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from norse.torch import (
    IAFCell,
    IAFParameters,
    LIBoxCell,
    LIBoxParameters,
    LICell,
    LIFBoxCell,
    LIFCell,
    LIFParameters,
    LIParameters,
    SequentialState,
    reset_subtract,
)
from norse.torch.module.lif_box import LIFBoxParameters
from norse.torch.module.snn import SNNCell
from norse.torch.utils.export_nir import to_nir as norse_to_nir

from exporters.export import export_sequential
from exporters.importer import import_nir
from exporters.layers import Scale
from exporters.lorsp_export import (
    export_lorsp,
    prompt_from_nir,
    prompter_format,
    reference_spikes,
    verify_lorsp_export,
)
from exporters.semantics import NEURON_TYPES
from exporters.validate import write_nir
from lorsp_app.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter

TAU_SYN_INV, TAU_MEM_INV = 150.0, 80.0


def write_and_read(graph: nir.NIRGraph, tmp_path, name: str = "model.nir") -> nir.NIRGraph:
    """Through a file with plain ``nir`` only, type-checked, with any warning an error."""
    path = tmp_path / name
    nir.write(str(path), graph)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = nir.read(str(path), type_check=True)
    assert set(read.nodes) == set(graph.nodes), (
        "nir.read had to add nodes: the types were incomplete"
    )
    return read


def run_norse(model: SequentialState, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every child's output at every step ``(T, B, …)``, stepping Norse cells with their state."""
    states: dict[str, object] = {}
    outputs: dict[str, list] = {}
    with torch.no_grad():
        for frame in x:
            hidden = frame
            for name, module in model.named_children():
                if isinstance(module, SNNCell):
                    hidden, states[name] = module(hidden, states.get(name))
                else:
                    hidden = module(hidden)
                outputs.setdefault(name, []).append(hidden)
    return {name: torch.stack(seq) for name, seq in outputs.items()}


def lif_cell(kind: str, dt: float, **overrides) -> torch.nn.Module:
    if kind == "LIFCell":
        params = {"tau_syn_inv": TAU_SYN_INV, "tau_mem_inv": TAU_MEM_INV, "v_th": 0.8, **overrides}
        return LIFCell(LIFParameters(**{k: torch.as_tensor(v) for k, v in params.items()}), dt=dt)
    params = {"tau_mem_inv": TAU_MEM_INV, "v_th": 0.8, **overrides}
    return LIFBoxCell(LIFBoxParameters(**{k: torch.as_tensor(v) for k, v in params.items()}), dt=dt)


def network(cell: str, layers: int, kind: str, dt: float = 1e-3):
    """One or two spiking layers, fully connected or convolutional; returns (model, input shape)."""
    torch.manual_seed(1)
    if kind == "linear":
        modules = [torch.nn.Linear(5, 7), lif_cell(cell, dt, v_leak=0.1, v_reset=-0.2)]
        if layers == 2:
            modules += [torch.nn.Linear(7, 4, bias=False), lif_cell(cell, dt)]
        shape = (5,)
    else:
        modules = [torch.nn.Conv2d(2, 3, 3, stride=1, padding=1), lif_cell(cell, dt)]
        modules += [torch.nn.Flatten()]
        if layers == 2:
            modules += [torch.nn.Linear(3 * 6 * 6, 4), lif_cell(cell, dt, v_reset=0.1)]
        shape = (2, 6, 6)
    model = SequentialState(*modules).double()
    # A LIFCell amplifies a steady input 1/(dt·τs⁻¹)-fold in its current; give a LIFBoxCell the
    # same drive, and the second layer more, so that every layer fires.
    gain = 1.0 if cell == "LIFCell" else 1.0 / (dt * TAU_SYN_INV)
    with torch.no_grad():
        for index, module in enumerate(model):
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                for param in module.parameters():
                    param.mul_(gain if index == 0 else 4.0 * gain)
    return model, shape


def assert_fires_sometimes(spikes: torch.Tensor, what: str) -> None:
    assert 0 < spikes.sum() < spikes.numel(), f"{what}: {int(spikes.sum())} of {spikes.numel()}"


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["LIFCell", "LIFBoxCell"])
def test_export_file_import_gives_identical_spike_trains(tmp_path, cell, layers, kind):
    model, shape = network(cell, layers, kind)
    x = torch.rand(25, 3, *shape, dtype=torch.float64) * 3.0
    expected = run_norse(model, x)
    graph = write_and_read(export_sequential(model, shape), tmp_path)
    imported = import_nir(graph)
    run = imported({"input": x}, record=("spikes", "output"))
    neurons = [n for n, node in graph.nodes.items() if type(node).__name__ in NEURON_TYPES]
    assert len(neurons) == layers
    for name in neurons:
        assert_fires_sometimes(expected[name], name)
        assert torch.equal(run.records[name]["spikes"], expected[name]), name
    last = list(expected)[-1]
    assert torch.equal(run.outputs["output"], expected[last])


def norse_to_nir_with_arrays(model, shape, dt):
    """Norse 1.1.0's own exporter (it needs per-neuron arrays for every parameter to run)."""
    return norse_to_nir(model, torch.zeros(shape, dtype=torch.float64), dt=dt)


@pytest.mark.parametrize("dt", [1e-4, 1e-3, 5e-3])
def test_time_constants_survive_the_round_trip(tmp_path, dt):
    n = 6
    cell = LIFBoxCell(
        LIFBoxParameters(
            tau_mem_inv=torch.full((n,), TAU_MEM_INV),
            v_leak=torch.zeros(n),
            v_th=torch.ones(n),
            v_reset=torch.zeros(n),
        ),
        dt=dt,
    )
    model = SequentialState(torch.nn.Linear(4, n), cell).double()
    steps = 30
    # Scale the drive so the voltage reaches threshold within the run at every dt.
    x = torch.rand(steps, 2, 4, dtype=torch.float64) * 3.0 / min(1.0, steps * dt * TAU_MEM_INV)
    expected = run_norse(model, x)["1"]
    assert_fires_sometimes(expected, f"dt={dt}")

    graph = write_and_read(export_sequential(model, (4,)), tmp_path)
    assert float(graph.metadata["dt"]) == dt
    np.testing.assert_array_equal(graph.nodes["1"].tau, np.full(n, 1.0 / TAU_MEM_INV))
    spikes = import_nir(graph)({"input": x}).outputs["output"]
    assert torch.equal(spikes, expected)

    # The same check on Norse's own exporter finds its bug: tau = dt/tau_mem_inv.
    norse_graph = write_and_read(norse_to_nir_with_arrays(model, (4,), dt), tmp_path, "norse.nir")
    norse_tau = np.asarray(norse_graph.nodes["1"].tau)
    assert not np.allclose(norse_tau, 1.0 / TAU_MEM_INV)
    wrong = import_nir(norse_graph, dt=dt)({"input": x}).outputs["output"]
    assert not torch.equal(wrong, expected)


def test_cuba_time_constants_and_input_weight_follow_dt(tmp_path):
    for dt in (1e-4, 1e-3, 5e-3):
        model = SequentialState(torch.nn.Linear(3, 4), lif_cell("LIFCell", dt))
        node = write_and_read(export_sequential(model, (3,)), tmp_path).nodes["1"]
        np.testing.assert_allclose(node.tau_syn, 1 / TAU_SYN_INV, rtol=1e-15)
        np.testing.assert_allclose(node.tau_mem, 1 / TAU_MEM_INV, rtol=1e-15)
        np.testing.assert_allclose(node.w_in, 1 / (dt * TAU_SYN_INV), rtol=1e-15)
        np.testing.assert_array_equal(node.r, np.ones(4))


# --------------------------------------------------------------------------------------------
# Property tests: random chains of supported modules.

CHAIN_LAYERS = ("Linear", "Affine", "Scale", "LIFCell", "LIFBoxCell", "IAFCell", "LICell", "LIBox")


def _value(rng, low, high, size, per_neuron):
    return torch.as_tensor(rng.uniform(low, high, size if per_neuron else ()))


def random_module(kind: str, rng, width: int, dt: float, per_neuron: bool):
    """A module of ``kind`` acting on ``width`` features; returns (module, new width)."""
    if kind in ("Linear", "Affine"):
        out = int(rng.integers(2, 7))
        layer = torch.nn.Linear(width, out, bias=kind == "Affine")
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(rng.normal(0.0, 1.5, (out, width))))
            if layer.bias is not None:
                layer.bias.copy_(torch.as_tensor(rng.normal(0.3, 0.5, out)))
        return layer, out
    if kind == "Scale":
        return Scale(torch.as_tensor(rng.uniform(0.5, 2.0, width))), width
    tau_mem_inv = _value(rng, 0.2 / dt, 1.0 / dt, width, per_neuron)
    tau_syn_inv = _value(rng, 0.2 / dt, 1.0 / dt, width, per_neuron)
    v_leak = _value(rng, -0.2, 0.2, width, per_neuron)
    v_th = _value(rng, 0.5, 1.5, width, per_neuron)
    v_reset = _value(rng, -0.3, 0.2, width, per_neuron)
    if kind == "LIFCell":
        p = LIFParameters(tau_syn_inv, tau_mem_inv, v_leak, v_th, v_reset)
        return LIFCell(p, dt=dt), width
    if kind == "LIFBoxCell":
        reset = {"reset_method": reset_subtract} if rng.random() < 0.5 else {}
        return LIFBoxCell(
            LIFBoxParameters(tau_mem_inv, v_leak, v_th, v_reset, **reset), dt=dt
        ), width
    if kind == "IAFCell":
        return IAFCell(IAFParameters(v_th=v_th, v_reset=v_reset), dt=dt), width
    if kind == "LICell":
        return LICell(LIParameters(tau_syn_inv, tau_mem_inv, v_leak), dt=dt), width
    return LIBoxCell(LIBoxParameters(tau_mem_inv, v_leak), dt=dt), width


@pytest.mark.slow
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(st.sampled_from(CHAIN_LAYERS), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
    dt=st.sampled_from([1e-4, 1e-3, 5e-3]),
    per_neuron=st.booleans(),
)
def test_random_chains_round_trip_exactly(tmp_path, kinds, seed, dt, per_neuron):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(2, 6))
    modules = []
    features = width
    # Every chain starts with a synapse so that the input reaches neurons as a current.
    for kind in ("Affine", *kinds):
        module, features = random_module(kind, rng, features, dt, per_neuron)
        modules.append(module)
    model = SequentialState(*modules).double()
    x = torch.as_tensor(rng.uniform(0.0, 2.0, (12, 2, width)))
    expected = run_norse(model, x)
    graph = write_and_read(export_sequential(model, (width,)), tmp_path)
    run = import_nir(graph)({"input": x}, record=("output",))
    for name, module in model.named_children():
        got = run.records[name]["output"]
        if isinstance(module, SNNCell) and type(module).__name__ in (
            "LIFCell",
            "LIFBoxCell",
            "IAFCell",
        ):
            assert torch.equal(got, expected[name]), f"{name} ({type(module).__name__}) spikes"
        else:
            torch.testing.assert_close(got, expected[name], rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# LoRSP: a prompter, through the file, gives its own spike trains and prompt bit for bit.


def trained_looking(name: str, size: int, seed: int = 3, **options) -> torch.nn.Module:
    """A LoRSP prompter after a few Adam steps; v2's B ~ N(0, 0.3²) first (LoR-VP starts B at 0),
    so V and the gate synapses are not zero. ``after_optimizer_step`` runs any θ controller."""
    torch.manual_seed(seed)
    prompter = create_prompter(name, size, **options)
    if name == "lorsp":
        with torch.no_grad():
            prompter.spiking_core.value_left.normal_(0.0, 0.3)
    optimizer = torch.optim.Adam(prompter.parameters(), lr=0.05)
    target = torch.rand(1, 3, size, size) - 0.5
    for step in range(1, 4):
        output = prompter(torch.rand(4, 3, size, size))
        loss = (output.prompt - target).square().mean() + output.stats["reg_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        prompter.after_optimizer_step(step, 3)
    return prompter.eval()


def assert_file_gives_the_prompters_spikes_and_prompt(prompter, tmp_path, images) -> None:
    """nir.write → plain nir.read (type-checked) and the project's load_nir → importer: equal."""
    write_and_read(export_lorsp(prompter), tmp_path)
    path = write_nir(export_lorsp(prompter), tmp_path / "prompter.nir")
    spikes, prompt = reference_spikes(prompter, images)
    for role, value in spikes.items():
        assert_fires_sometimes(value, role)
    rebuilt = prompt_from_nir(path, images)
    assert rebuilt.spikes.keys() == spikes.keys()
    for role, value in spikes.items():
        assert torch.equal(rebuilt.spikes[role], value), role
    assert torch.equal(rebuilt.prompt, prompt)
    assert rebuilt.prompt.abs().sum() > 0
    report = verify_lorsp_export(prompter, path, images)
    assert report["matches"] and set(report["mismatched_spikes"].values()) == {0}
    assert report["max_prompt_difference"] == 0.0


@pytest.mark.parametrize(
    "options",
    [
        {"pixel_bias_init": 1.0},
        {"grid": 4, "pixel_bias_init": 1.5},
        {"persistent": False, "pixel_bias_init": 1.0},
        {"target_sparsity": 0.6, "pixel_bias_init": 1.0},
    ],
    ids=["per_pixel", "grid4", "every_step", "target_sparsity"],
)
def test_lorsp_v2_round_trip_gives_its_spikes_and_prompt_exactly(tmp_path, options):
    prompter = trained_looking("lorsp", 16, **options)
    if "target_sparsity" in options:  # θ is a buffer the controller has moved
        theta = dict(prompter.spiking_core.named_buffers())["pixel_bias"]
        assert not torch.equal(theta, torch.full_like(theta, options["pixel_bias_init"]))
    assert_file_gives_the_prompters_spikes_and_prompt(prompter, tmp_path, torch.rand(3, 3, 16, 16))


def test_lorsp_v2_round_trip_at_224_px(tmp_path):
    torch.manual_seed(5)
    prompter = create_prompter("lorsp", 224, pixel_bias_init=1.0)
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 0.3)
    assert_file_gives_the_prompters_spikes_and_prompt(
        prompter, tmp_path, torch.rand(2, 3, 224, 224)
    )


@pytest.mark.parametrize("cell", ["LIFCell", "LIFBoxCell"])
def test_lorsp_v1_round_trip_gives_its_prompt(tmp_path, cell):
    prompter = trained_looking(
        "lorsp_v1", 8, factors=2, rank=2, descriptor_pool=2, steps=8, cell=cell, alpha_init=0.2
    )
    images = torch.rand(3, 3, 8, 8)
    assert_file_gives_the_prompters_spikes_and_prompt(prompter, tmp_path, images)
    # and the float32 prompter agrees up to float32 rounding of alpha and the mean
    with torch.no_grad():
        torch.testing.assert_close(
            prompter(images).prompt.double(),
            prompt_from_nir(export_lorsp(prompter), images).prompt,
            atol=1e-6,
            rtol=0,
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options", "pixel_neurons"),
    [
        ("lorsp", {"steps": 4, "descriptor_pool": 2}, 3 * 8 * 8),
        ("lorsp_v1", {"steps": 4, "descriptor_pool": 2, "alpha_init": 0.2}, 2 * 3 * 8 * 8),
    ],
)
def test_cli_exports_a_trained_run_that_rebuilds_its_prompt(
    tmp_path, capsys, name, options, pixel_neurons
):
    from lorsp_neuro.runs import load_run
    from lorsp_neuro.training import train

    run_dir = tmp_path / "run"
    train(
        {
            "prompter": name,
            "prompter_options": options,
            "backbone": "timm:test_resnet",
            "pretrained": False,
            "dataset": "digits",
            "train_size": 32,
            "val_size": 16,
            "test_size": 16,
            "image_size": 8,
            "epochs": 1,
            "batch_size": 16,
            "progress": False,
            "out": str(run_dir),
        }
    )
    path, report_path = tmp_path / "prompter.nir", tmp_path / "export.json"
    argv = ["export", str(run_dir), "-o", str(path), "--verify", "2", "--json", str(report_path)]
    assert cli_main(argv) == 0
    assert "spike trains and prompt match" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    model, _ = load_run(run_dir)
    assert report["format"] == prompter_format(model.prompter).format
    assert report["verify"]["matches"] and sum(report["verify"]["spikes"].values()) > 0
    gates = model.prompter.spiking_core.gate_affine.out_features
    assert report["totals"]["spiking_neurons"] == gates + pixel_neurons

    images = torch.rand(2, 3, 8, 8)
    _, prompt = reference_spikes(model.prompter, images)
    assert torch.equal(prompt_from_nir(path, images).prompt, prompt)


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "no-run"), "-o", str(tmp_path / "x.nir")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-run" in err
    assert not (tmp_path / "x.nir").exists()
