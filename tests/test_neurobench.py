"""NeuroBench 2.3 counts what we count: ``SynapticOperations`` and ``ActivationSparsity`` on a
trained ``lorsp`` prompter through :mod:`hardware_sims.neurobench`, against
:func:`hardware_sims.estimate.estimate_energy` on the same held-out images (docs/hardware.md)."""

from __future__ import annotations

import json

import pytest
import torch

from exporters.lorsp_export import export_lorsp, lorsp_host
from hardware_sims.cosim import norse_records, presented_inputs
from hardware_sims.graph import analyse
from hardware_sims.neurobench import (
    NeuroBenchCore,
    NeuroBenchError,
    compare_with_neurobench,
    neurobench_metrics,
)
from hardware_sims.synops import count_synops
from lorsp_neuro.prompters import create_prompter
from lorsp_neuro.runs import load_run, load_test_images
from lorsp_neuro.training import train

SIZE, RANK, POOL, STEPS = 16, 4, 2, 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("neurobench") / "run"
    train(
        {
            "prompter": "lorsp",
            "prompter_options": {"steps": STEPS, "rank": RANK, "descriptor_pool": POOL},
            "backbone": "timm:test_resnet",
            "pretrained": False,
            "dataset": "digits",
            "train_size": 32,
            "val_size": 8,
            "test_size": 8,
            "image_size": SIZE,
            "epochs": 1,
            "batch_size": 16,
            "progress": False,
            "out": str(out),
        }
    )
    return out


@pytest.fixture(scope="module")
def test_images(run_dir):
    """The run's prompter and its first 4 held-out test images (what estimate_energy reads)."""
    model, config = load_run(run_dir)
    return model.prompter, load_test_images(config, model, 4)[0]


def dense_synops(neurons: int, dim: int, rank: int, steps: int, persistent: bool) -> int:
    """Every synapse at every call: the inputs' layers once (or every step), the gate synapses
    every step."""
    inputs = dim * rank + rank + neurons + neurons  # gate_affine, gate_bias, image_gain, pixel_bias
    gates = neurons * rank
    return inputs + steps * gates if persistent else steps * (inputs + gates)


@pytest.mark.slow
def test_neurobench_counts_our_synops_and_sparsity_on_a_trained_run(run_dir, test_images, capsys):
    comparison = compare_with_neurobench(run_dir, images=4)
    nb, ours = comparison.neurobench, comparison.ours
    with capsys.disabled():
        print("\nNeuroBench vs ours:", json.dumps(comparison.to_dict(), indent=1))
    assert ours.images == nb.images == 4 and ours.steps == nb.steps == STEPS
    # something to count: graded inputs, gate spikes, and both spiking and silent neuron-steps
    assert ours.graded_synops_per_image > 0 and ours.binary_synops_per_image > 0
    assert 0 < ours.activation_sparsity < 1
    assert nb.effective_macs + nb.effective_acs == ours.synops_per_image
    # NeuroBench calls the constant 1 of the biases a spike (all its values are in {-1, 0, 1})
    bias = comparison.constant_input_synops
    assert bias == ours.layers["bias"].fan_out > 0  # one value, at step 0, through every synapse
    assert nb.effective_macs == ours.graded_synops_per_image - bias
    assert nb.effective_acs == ours.binary_synops_per_image + bias
    assert nb.activation_sparsity == ours.activation_sparsity
    neurons = 3 * SIZE * SIZE
    assert nb.dense == dense_synops(neurons, 3 * POOL * POOL, RANK, STEPS, persistent=True)
    assert comparison.to_dict()["agree"] is True
    # batches are accumulated: two batches of two give the same figures
    prompter, x = test_images
    halves = neurobench_metrics(prompter, x, batch_size=2)
    assert halves.effective_synops == nb.effective_synops
    assert halves.activation_sparsity == pytest.approx(nb.activation_sparsity, rel=1e-12)


@pytest.mark.slow
def test_neurobench_on_the_bare_prompter_sees_only_the_gate_affine(run_dir, test_images):
    """Why the adapter: NeuroBench hooks nn.Linear/nn.Conv modules and ReLU/Sigmoid/snnTorch
    neurons; the trained core shows it one ``nn.Linear`` and no activation layer it can read."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel
    from torch.utils.data import DataLoader, TensorDataset

    prompter, x = test_images
    loader = DataLoader(TensorDataset(x, torch.zeros(4, dtype=torch.long)), batch_size=4)
    model = TorchModel(prompter)
    assert model.connection_layers() == [prompter.spiking_core.gate_affine]
    bench = Benchmark(model, loader, [], [], [[], [SynapticOperations, ActivationSparsity]])
    with torch.no_grad():
        bare = bench.run(quiet=True)
    ours = compare_with_neurobench(run_dir, images=4).ours
    descriptor = ours.layers["descriptor"].synops_per_image
    assert bare["SynapticOperations"]["Effective_MACs"] == descriptor < ours.synops_per_image
    assert bare["SynapticOperations"]["Effective_ACs"] == 0
    assert bare["ActivationSparsity"] == 0.0  # no activation layer hooked


@pytest.mark.parametrize("options", [{}, {"grid": 4}, {"persistent": False}])
def test_adapter_spikes_and_counts_equal_the_norse_core_and_ours(options):
    torch.manual_seed(3)
    prompter = create_prompter("lorsp", 8, rank=3, **options)
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 2.0)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    records = norse_records(prompter, x)
    with torch.no_grad():
        pixels = NeuroBenchCore(prompter)(x)
    assert torch.equal(pixels.bool(), torch.as_tensor(records["pixel_neurons"]["spikes"]))
    graph = export_lorsp(prompter)
    spikes = {node: r["spikes"] for node, r in records.items()}
    ours = count_synops(analyse(graph), spikes, presented_inputs(lorsp_host(graph), x))
    nb = neurobench_metrics(prompter, x)
    assert ours.binary_synops_per_image > 0
    assert nb.effective_synops == ours.synops_per_image
    assert nb.effective_acs == ours.binary_synops_per_image + ours.layers["bias"].synops_per_image
    assert nb.activation_sparsity == ours.activation_sparsity
    neurons = 3 * (options.get("grid") or 8) ** 2
    persistent = options.get("persistent", True)
    assert nb.dense == dense_synops(neurons, 3 * POOL * POOL, 3, STEPS, persistent)


@pytest.mark.parametrize("name", ["lorsp_v1", "lor_vp"])
def test_only_a_lorsp_v2_prompter_is_shown_to_neurobench(name):
    with pytest.raises(NeuroBenchError, match=f"prompter '{name}' is not a lorsp"):
        NeuroBenchCore(create_prompter(name, 8))
