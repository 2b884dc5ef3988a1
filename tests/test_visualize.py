"""`lorsp_neuro.visualize` and `lorsp visualize`: the pure functions, the traced spikes, the PNGs,
and a tiny training run whose pictures must agree with its own evaluation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lorsp_app.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter
from lorsp_neuro.visualize import (
    DENSE,
    LAYOUTS,
    MAX_IMAGES,
    ON_OFF,
    PROMPTS_FILE,
    SPARSITY_FILE,
    VALUE_READOUT,
    VALUES_FILE,
    VisualizeError,
    channel_mean,
    on_off_balance,
    per_image_sparsity,
    prompt_figure,
    rate_map,
    sparsity_histogram,
    sparsity_over,
    spike_strip,
    spikes_per_step,
    trace_prompter,
    values_as_colour,
    values_figure,
    visualize_run,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_on_off_balance_is_the_mean_rate_difference_over_time_and_channels():
    on = np.zeros((2, 3, 2, 2), bool)
    off = np.zeros((2, 3, 2, 2), bool)
    on[:, :, 0, 0] = True  # every ON neuron of pixel (0, 0) fires at every step
    off[:, :, 1, 1] = True
    on[0, 0, 0, 1] = True  # one ON spike of 6 at pixel (0, 1)
    off[:, 0, 0, 1] = True  # two OFF spikes of 6 there
    balance = on_off_balance(on, off)
    assert balance.shape == (2, 2)
    np.testing.assert_allclose(balance, [[1.0, 1 / 6 - 2 / 6], [0.0, -1.0]])


def test_per_image_sparsity_channel_mean_and_spike_counts():
    prompt = torch.zeros(2, 3, 2, 2)
    prompt[0, 0, 0, 0] = 0.5
    prompt[1] = 1.0
    np.testing.assert_allclose(per_image_sparsity(prompt), [11 / 12, 0.0])
    np.testing.assert_allclose(channel_mean(prompt[0].numpy()), [[0.5 / 3, 0], [0, 0]])
    spikes = np.zeros((3, 2, 4), bool)
    spikes[1] = True
    spikes[2, 0, 0] = True
    np.testing.assert_array_equal(spikes_per_step(spikes), [0, 8, 1])


def test_rate_map_strip_and_values_colour():
    spikes = np.zeros((2, 3, 2, 2), bool)  # (T, C, h, w)
    spikes[:, :, 0, 0] = True  # every neuron of pixel (0, 0) at every step
    spikes[1, 2, 1, 1] = True  # one spike of 6 at pixel (1, 1)
    np.testing.assert_allclose(rate_map(spikes), [[1.0, 0.0], [0.0, 1 / 6]])
    strip = spike_strip(spikes)
    assert strip.shape == (2, 2 * 3 - 1)
    assert np.isnan(strip[:, 2]).all(), "one empty column between the steps"
    np.testing.assert_array_equal(strip[:, :2], [[3, 0], [0, 0]])  # step 0: counts over channels
    np.testing.assert_array_equal(strip[:, 3:], [[3, 0], [0, 1]])
    values = np.zeros((3, 2, 2))
    values[0, 0, 0], values[1, 1, 1] = 2.0, -1.0
    colour = values_as_colour(values)
    assert colour.shape == values.shape and colour.min() >= 0 and colour.max() <= 1
    assert colour[0, 0, 0] == 1.0 and colour[1, 1, 1] == 0.25 and colour[2, 0, 1] == 0.5
    np.testing.assert_array_equal(values_as_colour(np.zeros((3, 2, 2))), 0.5)


def _lorsp(**options):
    """A ``lorsp`` prompter with non-zero values (B = 0 at init would make every prompt 0)."""
    prompter = create_prompter("lorsp", 8, **options)
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 1.0)
    return prompter


@pytest.mark.parametrize("grid", [None, 4])
def test_trace_of_a_lorsp_prompter_is_its_own_prompt_spikes_and_values(grid):
    prompter = _lorsp(grid=grid).train()
    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    trace = trace_prompter(prompter, images, labels)
    assert prompter.training, "the prompter's mode is restored"
    with torch.no_grad():
        expected = prompter.eval()(images).prompt.numpy()
        values = prompter.spiking_core.values().numpy()
    np.testing.assert_array_equal(trace.prompt, expected)
    assert trace.spiking and trace.layout == VALUE_READOUT and trace.grid == grid
    neurons = grid or 8
    assert trace.gates.shape == (3, 4, 4) and trace.gates.dtype == bool
    assert set(trace.spikes) == {"pixels"}
    assert trace.spikes["pixels"].shape == (3, 4, 3, neurons, neurons)
    np.testing.assert_array_equal(trace.values, values)
    np.testing.assert_array_equal(trace.prompted, images.numpy() + expected)
    # The prompt is V ⊙ ρ, each neuron's rate repeated over its cell.
    rates = trace.spikes["pixels"].mean(axis=1)
    cell = 8 // neurons
    rates = rates.repeat(cell, axis=2).repeat(cell, axis=3)
    np.testing.assert_allclose(trace.prompt, values * rates, rtol=1e-6, atol=1e-7)
    assert 0 < rates.mean() < 1, "some neurons fire, some do not: a real test of the readout"


def test_trace_of_a_v1_prompter_keeps_its_on_and_off_populations():
    prompter = create_prompter("lorsp_v1", 8, steps=4, descriptor_pool=2, alpha_init=0.3)
    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    trace = trace_prompter(prompter, images, labels)
    with torch.no_grad():
        expected = prompter.eval()(images).prompt.numpy()
    np.testing.assert_array_equal(trace.prompt, expected)
    assert trace.layout == ON_OFF and trace.values is None
    assert trace.gates.shape == (3, 4, 2)
    assert trace.spikes["on"].shape == trace.spikes["off"].shape == (3, 4, 3, 8, 8)
    # The prompt is alpha ⊙ (rate_on − rate_off): zero exactly where ON and OFF rates are equal.
    rate_difference = trace.spikes["on"].mean(axis=1) - trace.spikes["off"].mean(axis=1)
    np.testing.assert_array_equal(trace.prompt == 0, rate_difference == 0)


def test_trace_of_a_dense_prompter_has_no_spikes_and_a_probe_has_nothing_to_draw():
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    trace = trace_prompter(create_prompter("lor_vp", 8), images, labels)
    assert not trace.spiking and trace.prompt.shape == (2, 3, 8, 8) and trace.layout == DENSE
    with pytest.raises(VisualizeError, match="linear_probe"):
        trace_prompter(create_prompter("linear_probe", 8), images, labels)


def test_sparsity_over_batches_counts_every_image_and_distinct_prompts():
    prompter = _lorsp()
    images = torch.rand(5, 3, 8, 8)
    batches = [(images[:2], None), (images[2:], None)]
    sparsity, distinct = sparsity_over(prompter, batches)
    with torch.no_grad():
        prompt = prompter.eval()(images).prompt
    np.testing.assert_allclose(sparsity, per_image_sparsity(prompt))
    assert distinct == len({p.numpy().tobytes() for p in prompt})


@pytest.mark.slow  # seven matplotlib figures
def test_figures_are_pngs_with_one_row_per_image_and_a_column_per_view(tmp_path):
    prompter = _lorsp()
    trace = trace_prompter(prompter, torch.rand(2, 3, 8, 8), torch.tensor([0, 9]))
    two_rows = prompt_figure(trace, tmp_path / "two.png", ["a"] * 10, title="two")
    one = trace_prompter(prompter, torch.rand(1, 3, 8, 8), torch.tensor([3]))
    one_row = prompt_figure(one, tmp_path / "one.png")
    (_, h2), (w1, h1) = png_size(two_rows), png_size(one_row)
    assert h2 > 1.5 * h1, "a row per image"
    widths = {}
    for layout, prompter in (
        (ON_OFF, create_prompter("lorsp_v1", 8, steps=4, descriptor_pool=2)),
        (DENSE, create_prompter("lor_vp", 8)),
    ):
        other = trace_prompter(prompter, torch.rand(1, 3, 8, 8), torch.tensor([0]))
        widths[layout] = png_size(prompt_figure(other, tmp_path / f"{layout}.png"))[0]
    widths[VALUE_READOUT] = w1
    # Wider with more views: v2 has 6 (image, ρ, spikes per step, prompt, prompted, gates).
    assert [len(LAYOUTS[k]) for k in (DENSE, ON_OFF, VALUE_READOUT)] == [3, 5, 6]
    assert widths[DENSE] < 0.8 * widths[ON_OFF] < 0.8 * widths[VALUE_READOUT]
    grid = trace_prompter(_lorsp(grid=4), torch.rand(1, 3, 8, 8), torch.tensor([0]))
    assert png_size(prompt_figure(grid, tmp_path / "grid.png"))[0] == pytest.approx(w1, rel=0.05)
    values = values_figure(trace.values, tmp_path / "values.png")
    assert png_size(values)[0] > 600
    hist = sparsity_histogram(np.array([0.1, 0.5, 0.5, 1.0]), tmp_path / "h.png", 3)
    assert png_size(hist)[0] > 300
    assert not list(tmp_path.glob(".tmp-*")), "atomic writes leave no temporary files"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from lorsp_neuro.run_config import TrainConfig
    from lorsp_neuro.training import train

    out = tmp_path_factory.mktemp("visualize") / "run"
    config = TrainConfig(
        prompter="lorsp",
        backbone="timm:test_resnet",
        pretrained=False,
        dataset="digits",
        train_size=24,
        val_size=8,
        test_size=20,
        image_size=16,
        epochs=1,
        batch_size=8,
        prompt_lr=0.05,
        device="cpu",
        progress=False,
        out=str(out),
    )
    summary = train(config)
    return out, summary


@pytest.mark.slow
def test_visualize_run_agrees_with_the_runs_own_evaluation(tiny_run, tmp_path):
    run_dir, summary = tiny_run
    result = visualize_run(run_dir, tmp_path, images=3)
    assert result["test_images"] == summary["budget"]["test_size"] == 20
    # Every image has the same number of prompt entries, so the mean of the per-image sparsities
    # is the split's sparsity that training reported for the same checkpoint and test split.
    assert result["mean_prompt_sparsity"] == pytest.approx(summary["prompt_sparsity"], abs=1e-12)
    assert result["distinct_prompts"] == summary["distinct_prompts"]
    assert result["min_prompt_sparsity"] <= result["mean_prompt_sparsity"]
    assert result["mean_prompt_sparsity"] <= result["max_prompt_sparsity"]
    assert result["layout"] == VALUE_READOUT
    assert result["files"] == {
        "prompts": str(tmp_path / PROMPTS_FILE),
        "values": str(tmp_path / VALUES_FILE),
        "sparsity": str(tmp_path / SPARSITY_FILE),
    }
    three = png_size(tmp_path / PROMPTS_FILE)
    visualize_run(run_dir, tmp_path / "one", images=1)
    assert three[1] > 2 * png_size(tmp_path / "one" / PROMPTS_FILE)[1]


@pytest.mark.slow
def test_visualize_command_writes_pictures_json_and_prints_the_paths(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    out, report = tmp_path / "pictures", tmp_path / "json" / "visualize.json"
    status = cli_main(
        ["visualize", str(run_dir), "--images", "2", "--out", str(out), "--json", str(report)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["images_drawn"] == 2
    for path in result["files"].values():
        assert path in printed
        png_size(Path(path))
    assert f"{result['distinct_prompts']} distinct prompts" in printed


@pytest.mark.parametrize("images", [0, MAX_IMAGES + 1, 2.5, True])
def test_bad_image_counts_are_refused_before_anything_is_read(images, tmp_path):
    with pytest.raises(VisualizeError, match=f"from 1 to {MAX_IMAGES}"):
        visualize_run(tmp_path / "no-run", images=images)


@pytest.mark.slow
def test_more_images_than_the_test_split_is_an_error(tiny_run, tmp_path):
    with pytest.raises(VisualizeError, match="test split has 20 images, 21 requested"):
        visualize_run(tiny_run[0], tmp_path, images=21)
