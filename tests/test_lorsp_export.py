"""The LoRSP NIR formats: the v2 graph and its metadata, the host API, and a stranger's metadata.

Exactness through a file (spikes and prompt bit for bit, every v2 variant, 224 px, v1, ``lorsp
export``) is tested in ``tests/test_nir_roundtrip.py``.
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from exporters.importer import NIRImportError
from exporters.lorsp_export import (
    BIAS,
    DESCRIPTOR,
    FORMAT_V1,
    FORMAT_V2,
    GATES,
    IMAGE,
    METADATA_KEY,
    OFF,
    ON,
    PIXELS,
    LoRSPHost,
    export_lorsp,
    lorsp_host,
    prompt_from_nir,
    reference_spikes,
)
from exporters.validate import DEFAULT_LIMITS, load_nir, write_nir
from lorsp_app.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter, value_readout

SIZE = 8


def v2_prompter(size: int = SIZE, **options):
    torch.manual_seed(1)
    prompter = create_prompter("lorsp", size, **{"pixel_bias_init": 1.0, **options})
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 0.3)
    return prompter


@pytest.fixture(scope="module")
def v2_file(tmp_path_factory):
    return write_nir(export_lorsp(v2_prompter()), tmp_path_factory.mktemp("v2") / "v2.nir")


# --------------------------------------------------------------------------------------------
# The v2 graph


def test_v2_graph_is_the_core_node_for_node_in_summation_order():
    prompter = v2_prompter(rank=3, descriptor_pool=2)
    core = prompter.spiking_core
    graph = export_lorsp(prompter)
    types = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert types == {
        "descriptor": "Input",
        "image": "Input",
        "bias": "Input",
        "gate_affine": "Linear",
        "gate_bias": "Linear",
        "gate_neurons": "CubaLIF",
        "gate_synapses": "Linear",
        "image_flat": "Flatten",
        "image_gain": "Scale",
        "pixel_bias": "Linear",
        "pixel_neurons": "CubaLIF",
        "gates": "Output",
        "pixels": "Output",
    }
    into = {}
    for src, dst in graph.edges:
        into.setdefault(dst, []).append(src)
    assert into == {
        "gate_affine": ["descriptor"],
        "gate_bias": ["bias"],
        "gate_neurons": ["gate_affine", "gate_bias"],
        "gate_synapses": ["gate_neurons"],
        "image_flat": ["image"],
        "image_gain": ["image_flat"],
        "pixel_bias": ["bias"],
        # the core sums gate + (image + bias); (image + bias) + gate is the same float
        "pixel_neurons": ["image_gain", "pixel_bias", "gate_synapses"],
        "gates": ["gate_neurons"],
        "pixels": ["pixel_neurons"],
    }
    n = 3 * SIZE * SIZE
    twin = copy.deepcopy(core).double()
    with torch.no_grad():
        expected = {
            "gate_affine": twin.gate_affine.weight,
            "gate_bias": twin.gate_bias_weight(),
            "gate_synapses": twin.gate_weight(),
            "pixel_bias": twin.pixel_bias_weight(),
        }
        for name, weight in expected.items():
            np.testing.assert_array_equal(graph.nodes[name].weight, weight.numpy(), name)
        np.testing.assert_array_equal(graph.nodes["image_gain"].scale, twin.image_scale().numpy())
    assert graph.nodes["gate_synapses"].weight.shape == (n, 3)
    assert graph.nodes["pixel_neurons"].tau_syn.shape == (n,)
    np.testing.assert_array_equal(graph.nodes["pixel_neurons"].w_in, 2.0**60)  # persistent
    shapes = {k: tuple(graph.nodes[k].input_type["input"]) for k in ("descriptor", "image", "bias")}
    assert shapes == {"descriptor": (12,), "image": (3, SIZE, SIZE), "bias": (1,)}


def test_v2_metadata_holds_the_host_parts():
    prompter = v2_prompter(rank=2, grid=4, persistent=False)
    graph = export_lorsp(prompter)
    host = graph.metadata[METADATA_KEY]
    assert host["format"] == FORMAT_V2 and host["prompter"] == "lorsp"
    assert (host["image_height"], host["image_width"], host["channels"]) == (SIZE, SIZE, 3)
    assert (host["steps"], host["presentation"], host["grid"]) == (4, "every_step", 4)
    assert host["descriptor_kind"] == "adaptive_avg_pool2d" and host["descriptor_pool"] == 2
    core = prompter.spiking_core
    for name in ("value_left", "value_right"):
        assert host[name].dtype == np.float64
        np.testing.assert_array_equal(host[name], getattr(core, name).detach().double().numpy())
    assert host["value_left"].shape == (3, SIZE, 2) and host["value_right"].shape == (3, 2, SIZE)
    assert json.loads(host["config_json"])["grid"] == 4
    assert tuple(graph.nodes["image"].input_type["input"]) == (3, 4, 4)
    default = export_lorsp(v2_prompter()).metadata[METADATA_KEY]
    assert (default["presentation"], default["grid"]) == ("once", 0)


def test_a_224_px_rank_4_file_is_within_the_metadata_limit(tmp_path):
    path = write_nir(export_lorsp(create_prompter("lorsp", 224, rank=4)), tmp_path / "big.nir")
    graph = load_nir(path)  # the default limits, max_metadata_bytes among them
    host = graph.metadata[METADATA_KEY]
    metadata_bytes = host["value_left"].nbytes + host["value_right"].nbytes
    assert metadata_bytes < DEFAULT_LIMITS.max_metadata_bytes / 20
    assert lorsp_host(graph).image_size == (224, 224)


@pytest.mark.parametrize("name", ["lorsp_ann", "lorsp_v1_ann"])  # lor_vp: test_export.py
def test_prompters_without_a_spiking_part_do_not_export(name):
    from exporters.export import NIRExportError

    with pytest.raises(NIRExportError, match=f"prompter '{name}' has no spiking_core"):
        export_lorsp(create_prompter(name, SIZE))


# --------------------------------------------------------------------------------------------
# The host API, the same for both formats


def test_v2_host_roles_presentation_and_inputs(v2_file):
    host = lorsp_host(load_nir(v2_file))
    assert isinstance(host, LoRSPHost)
    assert (host.format, host.image_size, host.steps, host.presentation) == (
        FORMAT_V2,
        (SIZE, SIZE),
        4,
        "once",
    )
    assert host.inputs == {DESCRIPTOR: "descriptor", IMAGE: "image", BIAS: "bias"}
    assert host.outputs == {GATES: "gates", PIXELS: "pixels"}
    x = torch.rand(2, 3, SIZE, SIZE, dtype=torch.float32)
    inputs = host.host_inputs(x)
    assert {k: tuple(v.shape) for k, v in inputs.items()} == {
        "descriptor": (4, 2, 12),
        "image": (4, 2, 3, SIZE, SIZE),
        "bias": (4, 2, 1),
    }
    assert all(v.dtype == torch.float32 for v in inputs.values())
    assert torch.equal(inputs["image"][0], x) and torch.all(inputs["bias"][0] == 1)
    for value in inputs.values():  # presented once: zeros after step 0
        assert torch.all(value[1:] == 0)
    with pytest.raises(NIRImportError, match=r"image has shape \(2, 3, 4, 4\)"):
        host.host_inputs(torch.rand(2, 3, 4, 4))


def test_every_step_and_grid_presentation():
    host = lorsp_host(export_lorsp(v2_prompter(grid=2, persistent=False)))
    assert host.presentation == "every_step"
    x = torch.rand(3, 3, SIZE, SIZE, dtype=torch.float64)
    inputs = host.host_inputs(x)
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, 2)
    assert inputs["image"].shape == (4, 3, 3, 2, 2)
    for step in range(4):
        assert torch.equal(inputs["image"][step], pooled)
        assert torch.equal(inputs["descriptor"][step], host.descriptor(x))


def test_v2_prompt_is_values_times_mean_rate_repeated_over_grid_cells():
    host = lorsp_host(export_lorsp(v2_prompter(grid=4)))
    spikes = torch.randint(0, 2, (4, 2, 3 * 4 * 4)).bool()  # (T, B, n), any dtype
    prompt = host.prompt({GATES: torch.zeros(4, 2, 4), PIXELS: spikes})
    rates = spikes.double().mean(0).view(2, 3, 4, 4)
    assert prompt.shape == (2, 3, SIZE, SIZE) and prompt.dtype == torch.float64
    assert torch.equal(prompt, value_readout(host.values(), rates, 4))
    cell = host.values()[:, :2, :2] * rates[..., :1, :1]  # rate (0, 0) covers pixels [0:2, 0:2]
    assert torch.equal(prompt[:, :, :2, :2], cell)


def test_v1_has_the_same_host_api(tmp_path):
    torch.manual_seed(0)
    prompter = create_prompter("lorsp_v1", SIZE, factors=2, alpha_init=0.3)
    path = write_nir(export_lorsp(prompter), tmp_path / "v1.nir")
    graph = load_nir(path)
    assert graph.metadata[METADATA_KEY]["format"] == FORMAT_V1
    host = lorsp_host(graph)
    assert (host.format, host.presentation) == (FORMAT_V1, "every_step")
    assert host.inputs == {DESCRIPTOR: "descriptor", IMAGE: "image"}
    assert host.outputs == {GATES: "gates", ON: "on", OFF: "off"}
    x = torch.rand(2, 3, SIZE, SIZE)
    inputs = host.host_inputs(x)
    assert torch.equal(inputs["image"][3], x.to(inputs["image"].dtype))
    spikes, prompt = reference_spikes(prompter, x)
    assert set(spikes) == {GATES, ON, OFF}
    rebuilt = prompt_from_nir(path, x)
    assert torch.equal(rebuilt.prompt, prompt)
    assert torch.equal(host.prompt(rebuilt.spikes), prompt)
    assert torch.equal(host.prompt({k: v.flatten(2) for k, v in rebuilt.spikes.items()}), prompt)


def test_run_spikes_are_keyed_by_role_and_shaped_as_populations(v2_file):
    run = prompt_from_nir(v2_file, torch.rand(2, 3, SIZE, SIZE), record=("spikes", "v"))
    assert set(run.spikes) == {GATES, PIXELS}
    assert run.spikes[GATES].shape == (4, 2, 4)
    assert run.spikes[PIXELS].shape == (4, 2, 3, SIZE, SIZE)
    assert set(run.run.records["pixel_neurons"]) == {"spikes", "v"}


# --------------------------------------------------------------------------------------------
# A stranger's v2 metadata: each bad field is one NIRImportError naming it


def _drop(name):
    return lambda host: host.pop(name)


def _set(name, value):
    return lambda host: host.__setitem__(name, value)


def _nan_at(name):
    def damage(host):
        host[name] = np.array(host[name], dtype=np.float64)
        host[name][0, 0, 0] = np.nan

    return damage


BAD_METADATA = {
    "missing presentation": (_drop("presentation"), "presentation"),
    "missing value_left": (_drop("value_left"), "value_left"),
    "missing grid": (_drop("grid"), "grid"),
    "missing bias_input": (_drop("bias_input"), "bias_input"),
    "missing pixel_output": (_drop("pixel_output"), "pixel_output"),
    "value_left height": (_set("value_left", np.zeros((3, SIZE + 1, 4))), "value_left"),
    "value_left 2-D": (_set("value_left", np.zeros((3, SIZE))), "value_left"),
    "value_right rank": (_set("value_right", np.zeros((3, 2, SIZE))), "value_right"),
    "value_right text": (_set("value_right", "abc"), "value_right"),
    "value_right NaN": (_nan_at("value_right"), "value_right"),
    "value_left Inf": (_set("value_left", np.full((3, SIZE, 4), np.inf)), "value_left"),
    "presentation": (_set("presentation", "twice"), "presentation"),
    "presentation number": (_set("presentation", 1), "presentation"),
    "grid does not divide": (_set("grid", np.int64(3)), "grid"),
    "grid negative": (_set("grid", np.int64(-2)), "grid"),
    "grid float": (_set("grid", 2.0), "grid"),
    "grid vs image input": (_set("grid", np.int64(4)), "Input 'image'"),
    "channels": (_set("channels", np.int64(1)), "channels"),
    "bias_input not an input": (_set("bias_input", "gate_bias"), "bias_input"),
    "format": (_set("format", "lorsp-nir/3"), "format"),
    "steps": (_set("steps", np.int64(0)), "steps"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_v2_metadata_is_one_line_naming_the_field(v2_file, case):
    damage, field = BAD_METADATA[case]
    graph = load_nir(v2_file)
    damage(graph.metadata[METADATA_KEY])
    with pytest.raises(NIRImportError) as caught:
        lorsp_host(graph)
    message = str(caught.value)
    assert "\n" not in message and field in message, message
    with pytest.raises(NIRImportError):
        prompt_from_nir(graph, torch.rand(1, 3, SIZE, SIZE))


def test_bad_metadata_read_back_from_a_file_is_refused(tmp_path):
    graph = export_lorsp(v2_prompter())
    graph.metadata[METADATA_KEY]["value_right"] = np.full((3, 4, SIZE), np.nan)
    path = write_nir(graph, tmp_path / "nan.nir")
    with pytest.raises(NIRImportError, match=re.escape("['value_right'] must be finite")):
        prompt_from_nir(path, torch.rand(1, 3, SIZE, SIZE))


# --------------------------------------------------------------------------------------------
# lorsp nir-info


def test_nir_info_summarises_the_v2_host_metadata(v2_file, tmp_path, capsys):
    report = tmp_path / "info.json"
    assert cli_main(["nir-info", str(v2_file), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "lorsp.format = lorsp-nir/2" in out and "lorsp.presentation = once" in out
    assert re.search(r"lorsp\.value_left = 3×8×4 array in \[-?[\d.]+, [\d.]+\]\n", out)
    assert "pixel_bias → pixel_neurons" in out
    summary = json.loads(report.read_text())
    assert np.array(summary["metadata"]["lorsp"]["value_right"]).shape == (3, 4, SIZE)
