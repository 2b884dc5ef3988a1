"""Co-simulation: trained LoRSP prompters (v2 and v1) in Norse and in Lava, float and fixed point."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exporters.lorsp_export import export_lorsp, lorsp_host, reference_spikes
from exporters.validate import write_nir
from hardware_sims.cosim import (
    LORSP_GATE,
    LORSP_OFF,
    LORSP_ON,
    LORSP_PIXELS,
    CosimError,
    compare_layer,
    cosimulate,
    lorsp_prompt,
    norse_records,
    presented_inputs,
)
from lorsp_app.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter
from lorsp_neuro.training import train

#: Fixed point against the float Norse model on the tiny trained prompters: lowest accepted
#: spike agreement over all neuron-steps (measured: v2 0.9990, v1 0.9989) and prompt relative L1
#: change (v2 0.0012, v1 0.011).
FIXED_BOUNDS = {"agreement": 0.99, "prompt_relative_l1": 0.05}
#: Node names per version: what the exporter calls the populations, the roles of the host.
POPULATIONS = {"lorsp": {LORSP_GATE, LORSP_PIXELS}, "lorsp_v1": {LORSP_GATE, LORSP_ON, LORSP_OFF}}
ROLES = {LORSP_GATE: "gates", LORSP_PIXELS: "pixels", LORSP_ON: "on", LORSP_OFF: "off"}


def train_tiny(out, prompter: str, image_size: int = 16, **options):
    """A prompter trained briefly (one epoch, 2 steps) on Fashion-MNIST."""
    train(
        {
            "prompter": prompter,
            "prompter_options": options,
            "backbone": "timm:test_resnet",
            "pretrained": False,
            "dataset": "fashion_mnist",
            "train_size": 32 if image_size < 64 else 16,
            "val_size": 8 if image_size < 64 else 4,
            "test_size": 8 if image_size < 64 else 4,
            "image_size": image_size,
            "epochs": 1,
            "batch_size": 16 if image_size < 64 else 8,
            "eval_batch_size": 32 if image_size < 64 else 8,
            "lr": 1e-2,
            "progress": False,
            "out": str(out),
        }
    )
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("cosim") / "run", "lorsp")


@pytest.fixture(scope="module")
def tiny_run_v1(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("cosim") / "run_v1", "lorsp_v1")


def firing_v2(size: int = 8, **options):
    """A ``lorsp`` prompter whose values (and so gate → pixel synapses) are not zero."""
    prompter = create_prompter("lorsp", size, **options)
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 2.0)
    return prompter


PROMPTERS = {
    "v2": lambda: firing_v2(),
    "v2-grid": lambda: firing_v2(grid=4),
    "v2-every-step": lambda: firing_v2(persistent=False),
    "v1": lambda: create_prompter("lorsp_v1", 8, alpha_init=0.1),
}


@pytest.mark.parametrize("kind", sorted(PROMPTERS))
def test_norse_hooks_record_the_prompters_own_spikes_and_prompt(kind):
    prompter = PROMPTERS[kind]()
    images = torch.rand(2, 3, 8, 8)
    spikes, prompt = reference_spikes(prompter, images)
    records = norse_records(prompter, images)
    assert set(records) == POPULATIONS[prompter.name]
    for node, record in records.items():
        expected = spikes[ROLES[node]].numpy().swapaxes(0, 1).reshape(record["spikes"].shape)
        np.testing.assert_array_equal(record["spikes"], expected)
        assert record["v"].shape == record["spikes"].shape
    graph = export_lorsp(prompter)
    np.testing.assert_array_equal(lorsp_prompt(graph, lorsp_host(graph), records), prompt.numpy())
    assert next(prompter.parameters()).dtype == torch.float32  # the caller's prompter is untouched


def test_norse_hooks_run_the_prompter_at_other_steps():
    prompter = firing_v2()
    images = torch.rand(2, 3, 8, 8)
    records = norse_records(prompter, images, steps=7)
    assert records[LORSP_PIXELS]["spikes"].shape == (2, 7, 3 * 8 * 8)
    assert prompter.spiking_core.steps == 4


@pytest.mark.parametrize("persistent", [True, False])
def test_inputs_are_presented_as_the_host_says(persistent):
    prompter = firing_v2(grid=4, persistent=persistent)
    host = lorsp_host(export_lorsp(prompter))
    images = torch.rand(3, 3, 8, 8)
    for steps in (None, 2, 6):
        inputs = presented_inputs(host, images, steps)
        t = steps or prompter.config.steps
        assert {n: v.shape for n, v in inputs.items()} == {
            "descriptor": (3, t, 12),
            "image": (3, t, 3, 4, 4),
            "bias": (3, t, 1),
        }
        for value in inputs.values():
            later = value[:, 1:]
            if persistent:
                assert not later.any()  # presented once: zeros after step 0
            else:
                np.testing.assert_array_equal(later, np.broadcast_to(value[:, :1], later.shape))
        np.testing.assert_array_equal(inputs["bias"][:, 0], np.ones((3, 1)))
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.double(), 4).numpy()
        np.testing.assert_array_equal(inputs["image"][:, 0], pooled)


def test_layer_comparison_counts_every_mismatch():
    a = np.zeros((2, 3, 4), bool)
    b = a.copy()
    b[1, 2, 3] = b[0, 0, 0] = True
    layer = compare_layer(a, b, np.zeros(a.shape), np.full(a.shape, 0.5))
    assert layer.mismatched_spikes == 2 and layer.spike_agreement == 1 - 2 / 24
    assert (layer.spikes_torch, layer.spikes_lava, layer.max_abs_v_diff) == (0, 2, 0.5)


@pytest.mark.lava
@pytest.mark.slow
def test_trained_prompter_agrees_exactly_in_float_with_equal_synops(tiny_run):
    report = cosimulate(tiny_run, images=3, precision="floating_pt")
    assert report.torch_side.startswith("norse")
    assert set(report.layers) == POPULATIONS["lorsp"]
    for name, layer in report.layers.items():
        assert layer.spike_agreement == 1.0, name
        assert 0 < layer.spikes_torch < layer.neuron_steps, name  # the test has spikes to compare
        assert layer.max_abs_v_diff < 1e-12, name  # the file's weights are the float64 twin's
    assert report.total.spike_agreement == 1.0
    assert report.synops_per_image["torch"] == report.synops_per_image["lava"] > 0
    assert report.prompt["max_abs_diff"] == 0.0 and report.prompt["l1_torch"] > 0
    assert report.accuracy["change"] == 0.0 and report.accuracy["images"] == 3
    assert report.lava["delays"] == {LORSP_GATE: 1, LORSP_PIXELS: 2}
    assert json.dumps(report.to_dict())


@pytest.mark.lava
@pytest.mark.slow
def test_trained_prompter_in_fixed_point_is_close_and_bit_exact_with_the_integer_model(tiny_run):
    report = cosimulate(tiny_run, images=3, precision="fixed_pt")
    assert report.fixed_point["matches_numpy_bit_accurate_model"]
    assert report.total.spike_agreement >= FIXED_BOUNDS["agreement"]
    assert report.total.spike_agreement < 1.0 or report.total.max_abs_v_diff > 0
    assert report.prompt["relative_l1"] <= FIXED_BOUNDS["prompt_relative_l1"]
    assert set(report.accuracy) == {"images", "torch", "lava", "change"}
    quant = report.fixed_point["quantization"]
    assert quant["groups"][LORSP_GATE]["dv"] == 2048  # dt·tau_mem_inv = 0.5 in 12 bits
    assert quant["groups"][LORSP_PIXELS]["du"] == 0  # the persistent current's slowest decay


@pytest.mark.lava
@pytest.mark.slow
def test_a_224_pixel_run_agrees_exactly_in_float(tmp_path):
    """DESIGN.md's image size: 150,528 pixel neurons, 2 test images (~20 s)."""
    run = train_tiny(tmp_path / "run224", "lorsp", image_size=224)
    report = cosimulate(run, images=2, precision="floating_pt")
    assert report.layers[LORSP_PIXELS].neurons == 3 * 224 * 224
    assert report.total.spike_agreement == 1.0 and report.total.spikes_torch > 0
    assert report.synops_per_image["torch"] == report.synops_per_image["lava"]
    assert report.prompt["max_abs_diff"] == 0.0 and report.accuracy["change"] == 0.0
    fixed = cosimulate(run, images=2, precision="fixed_pt")
    assert fixed.fixed_point["matches_numpy_bit_accurate_model"]
    assert fixed.total.spike_agreement >= FIXED_BOUNDS["agreement"]


@pytest.mark.lava
@pytest.mark.slow
def test_a_v1_run_still_cosimulates_exactly(tiny_run_v1):
    report = cosimulate(tiny_run_v1, images=2, precision="floating_pt")
    assert set(report.layers) == POPULATIONS["lorsp_v1"]
    assert report.total.spike_agreement == 1.0 and report.total.spikes_torch > 0
    assert report.synops_per_image["torch"] == report.synops_per_image["lava"] > 0
    assert report.prompt["max_abs_diff"] == 0.0 and report.accuracy["change"] == 0.0
    assert report.lava["delays"] == {LORSP_GATE: 1, LORSP_ON: 2, LORSP_OFF: 2}


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["v2-grid", "v1"])
def test_cosim_command_on_a_nir_file_writes_json_and_a_raster(tmp_path, capsys, kind):
    path = write_nir(export_lorsp(PROMPTERS[kind]()), tmp_path / "p.nir")
    out, png = tmp_path / "cosim.json", tmp_path / "raster.png"
    code = cli_main(
        [
            "cosim",
            str(path),
            "--images",
            "2",
            "--steps",
            "6",
            "--json",
            str(out),
            "--raster",
            str(png),
        ]
    )
    assert code == 0, capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["torch_side"].startswith("exporters.importer")
    assert report["steps"] == 6 and report["total"]["spike_agreement"] == 1.0
    assert report["total"]["spikes_torch"] > 0
    assert report["prompt"]["max_abs_diff"] == 0.0 and report["accuracy"] is None
    assert png.stat().st_size > 10_000
    assert "spike_agreement 1.000000" in capsys.readouterr().out


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(CosimError, match="neither a run directory"):
        cosimulate(tmp_path / "missing", images=1)
    with pytest.raises(CosimError, match="images must be >= 1"):
        cosimulate(tmp_path, images=0)
    assert cli_main(["cosim", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorsp cosim: error:") and "\n" not in err
