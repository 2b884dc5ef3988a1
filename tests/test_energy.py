"""SynOps, neuron updates, hardware profiles and energy: hand-computed values and the CLI."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from exporters.lorsp_export import export_lorsp
from exporters.validate import write_nir
from hardware_sims.energy import (
    ENERGY_FIELDS,
    PROFILES_ENV,
    HardwareProfile,
    ProfileError,
    ann_twin_macs,
    energy_report,
    get_profile,
    host_macs,
    load_profiles,
)
from hardware_sims.graph import analyse
from hardware_sims.plots import energy_bar_plot
from hardware_sims.synops import count_synops
from lorsp_neuro.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter


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
    profile = HardwareProfile(
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
    energy = energy_report(graph, report, profile)
    assert energy.energy_per_image_pj == 4 * 2 + 6 * 3 + 10 * 5 + 2 * 7 + 8 * 11  # = 178
    assert energy.ann_twin_macs_per_image == 6 + 3
    assert energy.ann_twin_energy_pj == 9 * 13
    assert energy.host_macs_per_image == 0


def test_lorsp_ann_twin_macs_follow_the_formula_and_the_relu_twin():
    prompter = create_prompter("lorsp", 16, factors=3)
    graph = export_lorsp(prompter)
    macs = ann_twin_macs(graph)
    pixels, dim, factors = 3 * 16 * 16, 3 * 8 * 8, 3
    assert sum(macs.values()) == dim * factors + 2 * pixels * factors + 2 * pixels
    twin = create_prompter("lorsp_ann", 16, factors=3).mac_count()
    assert sum(macs.values()) == twin["gate_affine"] + twin["factor_linear"] + twin["pixel_scale"]
    assert host_macs(graph) == {
        "descriptor_pool": twin["descriptor_pool"],
        "prompt_combine": twin["prompt_combine"],
    }


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


def test_energy_command_counts_lorsp_synops_and_plots(tmp_path, capsys):
    torch.manual_seed(3)
    prompter = create_prompter("lorsp", 8, alpha_init=0.1)
    path = write_nir(export_lorsp(prompter), tmp_path / "p.nir")
    out, png = tmp_path / "energy.json", tmp_path / "energy.png"
    args = ["energy", str(path), "--profile", "all", "--simulator", "reference", "--images", "2"]
    assert cli_main([*args, "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert set(report["profiles"]) >= {"cmos45", "loihi"}
    activity = report["activity"]
    steps, pixels, factors = 8, 3 * 8 * 8, 2
    # graded: every non-zero pixel reaches its ON and OFF neuron; every descriptor value the K gates
    image = activity["layers"]["image"]
    assert image["synops_per_image"] == 2 * image["events_per_image"]
    assert image["events_per_image"] <= steps * pixels
    descriptor = activity["layers"]["descriptor"]
    assert descriptor["synops_per_image"] == factors * descriptor["events_per_image"]
    gate = activity["layers"]["gate_neurons"]
    assert gate["fan_out"] == int(np.count_nonzero(prompter.spiking_core.factor_weight().detach()))
    loihi = report["profiles"]["loihi"]
    assert (
        loihi["ann_twin_macs_per_image"] == 3 * 8 * 8 * factors + 2 * pixels * factors + 2 * pixels
    )
    assert loihi["neuron_updates_per_image"] == steps * (factors + 2 * pixels)
    assert png.stat().st_size > 10_000
    assert "SNN" in capsys.readouterr().out


def test_energy_bar_plot_writes_a_png(tmp_path):
    rows = [
        {"profile": "cmos45", "energy_per_image_pj": 2.0e6, "ann_twin_energy_pj": 5.0e6},
        {"profile": "loihi", "energy_per_image_pj": 4.0e7, "ann_twin_energy_pj": 5.0e6},
    ]
    path = energy_bar_plot(rows, tmp_path / "sub" / "bars.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
