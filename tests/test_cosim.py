"""Co-simulation: a trained lorsp prompter in Norse and in Lava, float and fixed point."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exporters.lorsp_export import export_lorsp, reference_spikes
from exporters.validate import write_nir
from hardware_sims.cosim import (
    LORSP_GATE,
    LORSP_OFF,
    LORSP_ON,
    CosimError,
    compare_layer,
    cosimulate,
    norse_records,
)
from lorsp_neuro.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter
from lorsp_neuro.training import train

#: Fixed point against the float Norse model on the tiny trained prompter: lowest accepted
#: spike agreement over all neuron-steps (measured 0.997) and prompt relative L1 change (0.011).
FIXED_BOUNDS = {"agreement": 0.99, "prompt_relative_l1": 0.05}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A lorsp prompter trained briefly (one epoch, 2 steps) on Fashion-MNIST at 16 px."""
    out = tmp_path_factory.mktemp("cosim") / "run"
    train(
        {
            "prompter": "lorsp",
            "backbone": "timm:test_resnet",
            "pretrained": False,
            "dataset": "fashion_mnist",
            "train_size": 32,
            "val_size": 8,
            "test_size": 8,
            "image_size": 16,
            "epochs": 1,
            "batch_size": 16,
            "eval_batch_size": 32,
            "lr": 1e-2,
            "progress": False,
            "out": str(out),
        }
    )
    return out


def test_norse_hooks_record_the_prompters_own_spikes():
    prompter = create_prompter("lorsp", 8, alpha_init=0.1)
    images = torch.rand(2, 3, 8, 8)
    gates, on, off, _ = reference_spikes(prompter, images)
    records = norse_records(prompter, images, prompter.config.steps)
    np.testing.assert_array_equal(records[LORSP_GATE]["spikes"], gates.numpy().swapaxes(0, 1))
    np.testing.assert_array_equal(
        records[LORSP_ON]["spikes"], on.numpy().swapaxes(0, 1).reshape(2, 8, -1)
    )
    np.testing.assert_array_equal(
        records[LORSP_OFF]["spikes"], off.numpy().swapaxes(0, 1).reshape(2, 8, -1)
    )
    assert records[LORSP_ON]["v"].shape == (2, 8, 3 * 8 * 8)
    assert prompter.alpha.dtype == torch.float32  # the caller's prompter is untouched


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
    assert set(report.layers) == {LORSP_GATE, LORSP_ON, LORSP_OFF}
    for name, layer in report.layers.items():
        assert layer.spike_agreement == 1.0, name
        assert 0 < layer.spikes_torch < layer.neuron_steps, name  # the test has spikes to compare
        # the NIR file holds F = B·A computed in float32; the float64 twin recomputes it
        assert layer.max_abs_v_diff < 1e-5, name
    assert report.total.spike_agreement == 1.0
    assert report.synops_per_image["torch"] == report.synops_per_image["lava"] > 0
    assert report.prompt["max_abs_diff"] == 0.0
    assert report.accuracy["change"] == 0.0 and report.accuracy["images"] == 3
    assert report.lava["delays"] == {LORSP_GATE: 1, LORSP_ON: 2, LORSP_OFF: 2}
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


@pytest.mark.lava
@pytest.mark.slow
def test_cosim_command_on_a_nir_file_writes_json_and_a_raster(tmp_path, capsys):
    prompter = create_prompter("lorsp", 12, alpha_init=0.2)
    path = write_nir(export_lorsp(prompter), tmp_path / "p.nir")
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
