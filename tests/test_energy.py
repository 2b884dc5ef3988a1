"""SynOps, neuron updates, hardware profiles and energy: hand-computed values, the ANN twins, the
energy study and the CLI, for LoRSP v2 (``lorsp``) and v1 (``lorsp_v1``)."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from exporters.lorsp_export import export_lorsp, lorsp_host
from exporters.validate import write_nir
from hardware_sims.cosim import activity, norse_records, presented_inputs
from hardware_sims.energy import (
    ENERGY_FIELDS,
    HOST_LAYERS,
    PROFILES_ENV,
    HardwareProfile,
    ProfileError,
    ann_twin_macs,
    energy_report,
    get_profile,
    host_macs,
    load_profiles,
)
from hardware_sims.energy_study import backbone_macs, energy_study, variant_prompter
from hardware_sims.graph import analyse
from hardware_sims.plots import energy_bar_plot
from hardware_sims.synops import count_synops
from lorsp_app.cli import main as cli_main
from lorsp_neuro.backbones import create_backbone
from lorsp_neuro.config_checks import ConfigError
from lorsp_neuro.errors import LorspError
from lorsp_neuro.prompters import create_prompter
from lorsp_neuro.training import train

HAND_PROFILE = HardwareProfile(
    name="hand",
    description="distinct figures",
    synop_pj=2,
    graded_synop_pj=3,
    neuron_update_active_pj=5,
    neuron_update_inactive_pj=7,
    spike_pj=11,
    mac_pj=13,
    host_mac_pj=17,
)


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))


def _hand_graph() -> nir.NIRGraph:
    """``x (2) → W1 (3×2, one zero) → n1 (3) → W2 (1×3) → n2 (1)``."""
    return nir.NIRGraph(
        nodes={
            "x": nir.Input({"input": np.array([2])}),
            "w1": nir.Linear(np.array([[1.0, 0.0], [2.0, -1.0], [0.0, 0.5]])),
            "n1": _lif(3),
            "w2": nir.Linear(np.array([[1.0, 1.0, 0.0]])),
            "n2": _lif(1),
        },
        edges=[("x", "w1"), ("w1", "n1"), ("n1", "w2"), ("w2", "n2")],
        metadata={"dt": 1e-3},
    )


def test_energy_of_a_hand_built_graph_equals_the_hand_computation():
    graph = _hand_graph()
    inputs = {"x": np.array([[[1.0, 0.0], [0.0, 0.0], [0.5, 2.0]]])}  # 1 image, 3 steps
    spikes = {
        "n1": np.array([[[1, 0, 1], [0, 1, 0], [1, 1, 1]]], bool),
        "n2": np.array([[[0], [1], [1]]], bool),
    }
    report = count_synops(analyse(graph), spikes, inputs)
    # fan-out: x → (2, 2); n1 → (1, 1, 0); n2 → 0
    # graded: step 0 one non-zero input × 2, step 2 two × 2 = 6
    # binary: n1 step 0 (1 + 0), step 1 (1), step 2 (1 + 1 + 0) = 4
    assert report.graded_synops_per_image == 6 and report.binary_synops_per_image == 4
    assert report.layers["n2"].synops_per_image == 0 and report.spikes_per_image == 8
    # updates: 4 neurons × 3 steps; active: n1 3 + 1 + 3 (input or spike), n2 3 = 10
    assert report.neuron_updates_per_image == 12
    assert report.active_neuron_updates_per_image == 10
    energy = energy_report(graph, report, HAND_PROFILE)
    assert energy.energy_per_image_pj == 4 * 2 + 6 * 3 + 10 * 5 + 2 * 7 + 8 * 11  # = 178
    assert energy.ann_twin_macs_per_image == 6 + 3
    assert energy.ann_twin_energy_pj == 9 * 13
    assert energy.host_macs_per_image == 0


def test_a_held_synaptic_current_keeps_its_neuron_active():
    """A persistent current (inputs presented once) drives its neuron at every later step."""
    n = 2
    graph = nir.NIRGraph(
        nodes={
            "x": nir.Input({"input": np.array([n])}),
            "w": nir.Linear(np.eye(n)),
            "held": nir.CubaLIF(
                tau_syn=np.full(n, 1e-3 * 2.0**60),
                tau_mem=np.full(n, 2e-3),
                r=np.ones(n),
                v_leak=np.zeros(n),
                v_threshold=np.full(n, 10.0),
                w_in=np.full(n, 2.0**60),
            ),
        },
        edges=[("x", "w"), ("w", "held")],
        metadata={"dt": 1e-3},
    )
    inputs = {"x": np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])}  # step 1 only
    spikes = {"held": np.zeros((1, 4, n), bool)}
    report = count_synops(analyse(graph), spikes, inputs)
    assert report.graded_synops_per_image == 1  # presented once, counted once
    assert report.neuron_updates_per_image == 8
    assert report.active_neuron_updates_per_image == 3  # neuron 0 from step 1 on; neuron 1 never


def v2_prompter(size: int = 16, **options):
    """A ``lorsp`` prompter with non-zero values, so its gate → pixel synapses carry weight."""
    prompter = create_prompter("lorsp", size, **options)
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 2.0)
    return prompter


@pytest.mark.parametrize("grid", [None, 4])
def test_v2_ann_twin_and_host_macs_equal_the_relu_twins_own_count(grid):
    options = {"rank": 3, "descriptor_pool": 2, "grid": grid}
    graph = export_lorsp(create_prompter("lorsp", 16, **options))
    twin = create_prompter("lorsp_ann", 16, **options).mac_count()
    chip, host = ann_twin_macs(graph), host_macs(graph)
    pixels, dim, rank = 3 * 16 * 16, 3 * 2 * 2, 3
    neurons = pixels if grid is None else 3 * grid * grid
    assert chip == {
        "gate_affine": dim * rank,
        "gate_bias": rank,
        "gate_synapses": neurons * rank,
        "image_gain": neurons,
        "pixel_bias": neurons,
    }
    assert twin["gate_affine"] == chip["gate_affine"] + chip["gate_bias"]
    for layer in ("gate_synapses", "image_gain", "pixel_bias"):
        assert twin[layer] == chip[layer], layer
    assert host == (
        {"descriptor_pool": pixels, "value_readout": pixels}
        if grid is None
        else {"descriptor_pool": pixels, "image_pool": pixels, "value_readout": pixels}
    )
    assert twin["descriptor_pool"] == sum(
        host[k] for k in ("descriptor_pool", "image_pool") if k in host
    )
    assert sum(twin.values()) == sum(chip.values()) + sum(host.values())
    assert sum(twin[k] for k in HOST_LAYERS if k in twin) == sum(host.values())


def test_v1_ann_twin_macs_follow_the_formula_and_the_relu_twin():
    prompter = create_prompter("lorsp_v1", 16, factors=3)
    graph = export_lorsp(prompter)
    macs = ann_twin_macs(graph)
    pixels, dim, factors = 3 * 16 * 16, 3 * 8 * 8, 3
    assert sum(macs.values()) == dim * factors + 2 * pixels * factors + 2 * pixels
    twin = create_prompter("lorsp_v1_ann", 16, factors=3).mac_count()
    assert sum(macs.values()) == twin["gate_affine"] + twin["factor_linear"] + twin["pixel_scale"]
    assert host_macs(graph) == {
        "descriptor_pool": twin["descriptor_pool"],
        "prompt_combine": twin["prompt_combine"],
    }


def test_v2_synops_count_inputs_presented_once_and_equal_from_norse_and_the_file(tmp_path):
    torch.manual_seed(3)
    prompter = v2_prompter(8)
    path = write_nir(export_lorsp(prompter), tmp_path / "p.nir")
    acts = {sim: activity(path, images=3, simulator=sim) for sim in ("torch", "reference")}
    counts = {sim: count_synops(a.model, a.spikes, a.inputs) for sim, a in acts.items()}
    assert counts["torch"].to_dict() == counts["reference"].to_dict()
    report = counts["torch"]
    steps, pixels, rank, dim = 4, 3 * 8 * 8, 4, 12
    layers = report.layers
    # graded, step 0 only: each non-zero pixel reaches its one neuron, each descriptor value the
    # r gates, the constant 1 every gate and pixel neuron (their biases)
    assert layers["image"].synops_per_image == layers["image"].events_per_image <= pixels
    assert layers["descriptor"].synops_per_image == rank * layers["descriptor"].events_per_image
    assert layers["descriptor"].events_per_image <= dim
    assert (layers["bias"].events_per_image, layers["bias"].synops_per_image) == (1, rank + pixels)
    gate = layers["gate_neurons"]
    assert gate.fan_out == pixels * rank and gate.synops_per_image == pixels * gate.events_per_image
    assert 0 < gate.events_per_image < steps * rank
    assert layers["pixel_neurons"].synops_per_image == 0  # read out on the host
    # every neuron holds its step-0 current for the whole image: every update is active
    assert report.neuron_updates_per_image == steps * (rank + pixels)
    assert report.active_neuron_updates_per_image == report.neuron_updates_per_image


def test_energy_command_counts_v2_synops_and_plots(tmp_path, capsys):
    torch.manual_seed(3)
    prompter = v2_prompter(8, grid=4)
    path = write_nir(export_lorsp(prompter), tmp_path / "p.nir")
    out, png = tmp_path / "energy.json", tmp_path / "energy.png"
    args = ["energy", str(path), "--profile", "all", "--simulator", "reference", "--images", "2"]
    assert cli_main([*args, "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert set(report["profiles"]) >= {"cmos45", "loihi"}
    neurons, pixels, rank = 3 * 4 * 4, 3 * 8 * 8, 4
    assert report["activity"]["layers"]["bias"]["synops_per_image"] == rank + neurons
    loihi = report["profiles"]["loihi"]
    assert loihi["ann_twin_macs_per_image"] == 13 * rank + neurons * rank + 2 * neurons
    assert loihi["host_macs_per_image"] == 3 * pixels  # pooling twice (descriptor, grid), readout
    assert loihi["neuron_updates_per_image"] == 4 * (rank + neurons)
    assert png.stat().st_size > 10_000
    assert "SNN" in capsys.readouterr().out


def test_built_in_profiles_carry_the_published_figures_and_a_source_for_each():
    profiles = load_profiles()
    assert {"cmos45", "loihi"} <= set(profiles)
    cmos, loihi = profiles["cmos45"], profiles["loihi"]
    assert (cmos.mac_pj, cmos.synop_pj) == (4.6, 0.9)
    assert (loihi.synop_pj, loihi.neuron_update_active_pj) == (23.6, 81.0)
    assert (loihi.neuron_update_inactive_pj, loihi.spike_pj) == (52.0, 1.7)
    for profile in profiles.values():
        assert set(profile.sources) == set(ENERGY_FIELDS), profile.name


def test_user_profiles_come_from_the_environment_and_a_file(tmp_path, monkeypatch):
    entry = {f: 1.0 for f in ENERGY_FIELDS} | {"description": "mine"}
    env_file, arg_file = tmp_path / "env.json", tmp_path / "arg.json"
    env_file.write_text(json.dumps({"chip_a": entry, "loihi": {**entry, "synop_pj": 5.0}}))
    arg_file.write_text(json.dumps({"chip_b": {**entry, "mac_pj": 2.0}}))
    monkeypatch.setenv(PROFILES_ENV, str(env_file))
    profiles = load_profiles(arg_file)
    assert {"cmos45", "chip_a", "chip_b"} <= set(profiles)
    assert profiles["loihi"].synop_pj == 5.0  # a user file overrides a built-in
    assert get_profile("chip_b", arg_file).mac_pj == 2.0


def test_bad_profiles_are_clear_errors(tmp_path):
    entry = {f: 1.0 for f in ENERGY_FIELDS} | {"description": "x"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"p": {**entry, "spike_pj": -1.0}}))
    with pytest.raises(ProfileError, match=r"bad\.json: profile 'p': spike_pj must be >= 0"):
        load_profiles(bad)
    bad.write_text(json.dumps({"p": {k: v for k, v in entry.items() if k != "mac_pj"}}))
    with pytest.raises(ProfileError, match=r"profile 'p': missing \['mac_pj'\]"):
        load_profiles(bad)
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profiles(bad)
    with pytest.raises(ProfileError, match="unknown hardware profile 'tpu'; known: cmos45"):
        get_profile("tpu")


def test_energy_command_counts_v1_synops(tmp_path):
    torch.manual_seed(3)
    prompter = create_prompter("lorsp_v1", 8, alpha_init=0.1)
    path = write_nir(export_lorsp(prompter), tmp_path / "p.nir")
    out = tmp_path / "energy.json"
    args = ["energy", str(path), "--profile", "all", "--simulator", "reference", "--images", "2"]
    assert cli_main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    activity = report["activity"]
    steps, pixels, factors = 8, 3 * 8 * 8, 2
    # graded, every step: every non-zero pixel reaches its ON and OFF neuron; every descriptor
    # value the K gates
    image = activity["layers"]["image"]
    assert image["synops_per_image"] == 2 * image["events_per_image"]
    assert pixels < image["events_per_image"] <= steps * pixels
    descriptor = activity["layers"]["descriptor"]
    assert descriptor["synops_per_image"] == factors * descriptor["events_per_image"]
    gate = activity["layers"]["gate_neurons"]
    assert gate["fan_out"] == int(np.count_nonzero(prompter.spiking_core.factor_weight().detach()))
    loihi = report["profiles"]["loihi"]
    assert (
        loihi["ann_twin_macs_per_image"] == 3 * 8 * 8 * factors + 2 * pixels * factors + 2 * pixels
    )
    assert loihi["neuron_updates_per_image"] == steps * (factors + 2 * pixels)


def tiny_backbone() -> torch.nn.Module:
    """``Conv2d(3→8, 3×3, pad 1) → depthwise Conv2d(8, 3×3, stride 2) → pool → Linear(8→5)``."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, groups=8),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )


def test_backbone_macs_are_counted_layer_by_layer():
    macs = backbone_macs(tiny_backbone(), (16, 16))
    conv = 8 * 16 * 16 * 3 * 9 + 8 * 7 * 7 * 1 * 9  # the depthwise layer: C_in/groups = 1
    assert macs == {"conv2d": conv, "linear": 8 * 5, "total": conv + 40}


def test_efficientnet_lite0_costs_its_published_macs_at_224_pixels():
    macs = backbone_macs(create_backbone("efficientnet_lite0", image_size=224), (224, 224))
    assert macs["total"] == 385_187_552  # ~0.39 G multiply-adds, as published for Lite0


def test_a_variant_reuses_every_trained_parameter():
    prompter = v2_prompter(16)
    variant = variant_prompter(prompter, steps=2, grid=4)
    assert (variant.config.steps, variant.config.grid) == (2, 4)
    assert variant.state_dict().keys() == prompter.state_dict().keys()
    for name, value in prompter.state_dict().items():
        assert torch.equal(variant.state_dict()[name], value), name
    records = norse_records(variant, torch.rand(2, 3, 16, 16))
    assert records["pixel_neurons"]["spikes"].shape == (2, 2, 3 * 4 * 4)
    with pytest.raises(ConfigError, match="no config field"):
        variant_prompter(prompter, factors=3)
    with pytest.raises(ConfigError, match="grid=5 must divide"):
        variant_prompter(prompter, grid=5)


def test_energy_study_sweeps_steps_and_grids_with_the_trained_weights():
    torch.manual_seed(3)
    prompter = v2_prompter(16)
    images = torch.rand(3, 3, 16, 16)
    study = energy_study(
        prompter,
        images,
        steps=(2, 4),
        grids=(None, 4),
        profiles=("loihi", "cmos45"),
        backbone=tiny_backbone(),
    )
    assert [(v.steps, v.grid) for v in study.variants] == [(2, None), (4, None), (2, 4), (4, 4)]
    assert study.images == 3 and study.reused == sorted(prompter.state_dict())
    assert study.backbone_macs_per_image == backbone_macs(tiny_backbone(), (16, 16))["total"]
    assert study.backbone_energy_pj["loihi"] == study.backbone_macs_per_image * 4.6
    pixels, rank = 3 * 16 * 16, 4
    for grid in (None, 4):
        twin = create_prompter("lorsp_ann", 16, grid=grid).mac_count()
        short, long = study.variant(2, grid), study.variant(4, grid)
        for v in (short, long):
            neurons = pixels if grid is None else 3 * grid * grid
            assert v.pixel_neurons == neurons
            assert v.ann_twin_macs_per_image + v.host_macs_per_image == sum(twin.values())
            assert v.neuron_updates_per_image == v.steps * (rank + neurons)
            assert len(v.per_image["synops"]) == 3
            for name in ("loihi", "cmos45"):
                assert v.energy_per_image_pj[name] == pytest.approx(
                    np.mean(v.per_image["energy_pj"][name]), rel=1e-12
                )
                assert v.snn_over_ann_energy[name] == pytest.approx(
                    v.energy_per_image_pj[name] / v.ann_twin_energy_pj[name], rel=1e-12
                )
        # presented once: the graded input SynOps do not grow with T
        assert short.graded_synops_per_image == long.graded_synops_per_image > 0
        assert short.energy_per_image_pj["loihi"] < long.energy_per_image_pj["loihi"]
    # the prompter's own setting equals what `lorsp energy` counts on its exported file
    variant = study.variant(4, None)
    own = energy_study(prompter, images, profiles=("loihi",)).variants[0]
    assert own.synops_per_image == variant.synops_per_image
    graph = export_lorsp(prompter)
    records = norse_records(prompter, images)
    counts = count_synops(
        analyse(graph),
        {n: r["spikes"] for n, r in records.items()},
        presented_inputs(lorsp_host(graph), images),
    )
    report = energy_report(graph, counts, get_profile("loihi"))
    assert variant.synops_per_image == pytest.approx(report.synops_per_image, rel=1e-12)
    assert variant.energy_per_image_pj["loihi"] == pytest.approx(
        report.energy_per_image_pj, rel=1e-12
    )
    assert variant.ann_twin_energy_pj["loihi"] == report.ann_twin_energy_pj
    assert json.dumps(study.to_dict())


def test_energy_study_refuses_what_it_cannot_vary():
    images = torch.rand(1, 3, 8, 8)
    with pytest.raises(LorspError, match="has no grid option"):
        energy_study(create_prompter("lorsp_v1", 8), images, grids=(4,))
    with pytest.raises(LorspError, match="unknown hardware profile"):
        energy_study(v2_prompter(8), images, profiles=("tpu",))
    with pytest.raises(LorspError, match="has no spiking part"):
        energy_study(create_prompter("lor_vp", 8), images)
    with pytest.raises(LorspError, match="needs a run"):
        energy_study(v2_prompter(8), 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A ``lorsp`` (v2) and a ``lorsp_v1`` run, trained briefly at 16 px."""
    root = tmp_path_factory.mktemp("energy")
    out = {}
    for prompter in ("lorsp", "lorsp_v1"):
        out[prompter] = root / prompter
        train(
            {
                "prompter": prompter,
                "backbone": "timm:test_resnet",
                "pretrained": False,
                "dataset": "fashion_mnist",
                "train_size": 32,
                "val_size": 8,
                "test_size": 8,
                "image_size": 16,
                "epochs": 1,
                "batch_size": 16,
                "progress": False,
                "out": str(out[prompter]),
            }
        )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("prompter", ["lorsp", "lorsp_v1"])
def test_energy_command_and_study_on_a_run(runs, prompter, tmp_path):
    out = tmp_path / "energy.json"
    assert cli_main(["energy", str(runs[prompter]), "--images", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["simulator"].startswith("norse") and report["images"] == 2
    assert report["synops_per_image"] > 0 and report["ann_twin_energy_pj"] > 0
    study = energy_study(runs[prompter], 2, steps=(2, 8), profiles=("loihi",))
    assert study.backbone == "test_resnet" and study.backbone_macs_per_image > 0
    assert [v.steps for v in study.variants] == [2, 8]
    if prompter == "lorsp":  # the run's own T = 4, presented once: the same counts
        own = energy_study(runs[prompter], 2, profiles=("loihi",)).variants[0]
        assert own.synops_per_image == pytest.approx(report["synops_per_image"], rel=1e-12)
        assert own.energy_per_image_pj["loihi"] == pytest.approx(
            report["energy_per_image_pj"], rel=1e-12
        )


@pytest.mark.lava
@pytest.mark.slow
def test_v2_synops_from_lava_equal_those_from_norse(runs):
    acts = {sim: activity(runs["lorsp"], images=2, simulator=sim) for sim in ("torch", "lava")}
    counts = {sim: count_synops(a.model, a.spikes, a.inputs) for sim, a in acts.items()}
    assert counts["torch"].to_dict() == counts["lava"].to_dict()
    assert counts["torch"].synops_per_image > 0


def test_energy_bar_plot_writes_a_png(tmp_path):
    rows = [
        {"profile": "cmos45", "energy_per_image_pj": 2.0e6, "ann_twin_energy_pj": 5.0e6},
        {"profile": "loihi", "energy_per_image_pj": 4.0e7, "ann_twin_energy_pj": 5.0e6},
    ]
    path = energy_bar_plot(rows, tmp_path / "sub" / "bars.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
