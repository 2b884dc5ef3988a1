"""`lorsp demo`: its settings, its output folder, and the whole pipeline end to end on --quick."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from lorsp_app.cli import main as cli_main
from lorsp_app.demo import (
    MARKER_FILE,
    OUTPUTS,
    PROMPTERS,
    QUICK,
    REPORT_FORMAT,
    STEPS,
    DemoError,
    DemoSettings,
    _Steps,
    prepare_output,
    train_config,
)
from lorsp_neuro.config_checks import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"head": "softmax"}, "head"),
        ({"image_size": 4}, "image_size"),
        ({"lr": -1.0}, "lr"),
        ({"seed": -1}, "seed"),
        ({"cosim_images": DemoSettings().test_size + 1}, "cosim_images"),
        ({"profiles": ()}, "profiles"),
        ({"train_size": 1.5}, "train_size"),
        ({"rank": 0}, "rank"),
    ],
)
def test_bad_settings_name_the_field(change, field):
    with pytest.raises(ConfigError, match=f"DemoSettings.{field}"):
        DemoSettings().replace(**change)


def test_both_prompters_get_the_same_budget_and_rank(tmp_path):
    configs = {p: train_config(DemoSettings(), p, tmp_path / p, False).to_dict() for p in PROMPTERS}
    differing = {k for k in configs["lorsp"] if configs["lorsp"][k] != configs["lor_vp"][k]}
    assert differing == {"prompter", "out"}, "only the prompter differs, not even its rank"
    assert configs["lorsp"]["pretrained"] and configs["lorsp"]["backbone"] == "efficientnet_lite0"
    # v2 at its defaults (T = 4, inputs once, no grid); a frozen label-mapping head, so that the
    # accuracies compare the prompts (a trainable probe does most of the work at this budget).
    assert configs["lorsp"]["prompter_options"] == {"rank": 4}
    assert configs["lorsp"]["head"] == "flm"


def test_output_folder_new_foreign_and_previous(tmp_path):
    fresh = tmp_path / "new" / "demo"
    prepare_output(fresh)
    assert (fresh / MARKER_FILE).is_file()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(DemoError, match="not written by `lorsp demo`"):
        prepare_output(foreign)
    assert (foreign / "thesis.tex").read_text() == "keep me"

    (fresh / OUTPUTS["runs"] / "lorsp").mkdir(parents=True)
    (fresh / OUTPUTS["report_json"]).write_text("{}")
    (fresh / "my-notes.txt").write_text("not the demo's")
    prepare_output(fresh)
    assert not (fresh / OUTPUTS["runs"]).exists() and not (fresh / OUTPUTS["report_json"]).exists()
    assert (fresh / "my-notes.txt").exists(), "only the demo's own outputs are replaced"

    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(DemoError, match="not a folder"):
        prepare_output(a_file)


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


def profile_mac_pj(name: str) -> float:
    from hardware_sims.energy import get_profile

    return get_profile(name).mac_pj


@pytest.mark.slow
@pytest.mark.lava
def test_quick_demo_end_to_end(tmp_path, capsys):
    """Train both, export, Lava, energy, pictures on tiny sizes; check every number's source."""
    from exporters.lorsp_export import lorsp_host
    from exporters.validate import load_nir

    out, copy = tmp_path / "demo", tmp_path / "elsewhere" / "report.json"
    status = cli_main(["demo", "--quick", "--out", str(out), "--json", str(copy), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = json.loads((out / OUTPUTS["report_json"]).read_text())
    assert json.loads(copy.read_text()) == report
    assert report["format"] == REPORT_FORMAT
    assert report["settings"] == QUICK.to_dict()

    # Headline numbers are the runs' own summaries, not recomputed or invented.
    for prompter in PROMPTERS:
        summary = json.loads((out / "runs" / prompter / "summary.json").read_text())
        assert report["accuracy"][prompter] == summary["test_accuracy"]
        assert 0.0 <= summary["test_accuracy"] <= 1.0
        assert report["tunable_params"][prompter] == summary["tunable_params"]
        assert report["prompt_sparsity"][prompter] == summary["prompt_sparsity"]
        assert summary["prompter"] == prompter and summary["budget"]["image_size"] == 16
    assert report["distinct_prompts"]["lor_vp"] == 1, "LoR-VP's prompt is the same for every image"
    assert report["prompt_params"]["lor_vp"] == 3 * 4 * (16 + 16)
    # v2: LoR-VP's values, the gate Affine (D + 1)·r with D = 3·2², λ (r), θ and γ (3 + 3).
    assert report["prompt_params"]["lorsp"] == 3 * 4 * (16 + 16) + (3 * 4 + 1) * 4 + 4 + 6
    assert report["tunable_params"] == report["prompt_params"], "a frozen label-mapping head"
    assert 0.0 <= report["prompt_sparsity"]["lorsp"] <= 1.0

    # NIR file (read through its host), export check and Lava co-simulation.
    host = lorsp_host(load_nir(out / OUTPUTS["nir"]))
    assert (host.format, host.image_size, host.presentation) == ("lorsp-nir/2", (16, 16), "once")
    export = json.loads((out / OUTPUTS["export"]).read_text())
    assert export["outputs"] == host.outputs and set(host.outputs) == {"gates", "pixels"}
    check = export["verify"]
    assert check["mismatched_spikes"] == {"gates": 0, "pixels": 0} and check["matches"] is True
    assert report["export_matches"] is True
    assert report["spike_agreement"] == 1.0 and report["mismatched_spikes"] == 0
    synops = report["synops_per_image"]
    assert synops["torch"] == synops["lava"] > 0
    cosim = json.loads((out / OUTPUTS["cosim"]).read_text())
    assert set(cosim["layers"]) == {"gate_neurons", "pixel_neurons"}
    assert cosim["images"] == QUICK.cosim_images and cosim["precision"] == "floating_pt"
    assert report["lava_prompt_max_abs_diff"] == cosim["prompt"]["max_abs_diff"] == 0.0

    # Energy on both profiles, SNN against the ANN twin.
    energy = json.loads((out / OUTPUTS["energy"]).read_text())
    assert set(energy["profiles"]) == set(report["energy_per_image_nj"]) == {"loihi", "cmos45"}
    for name, value in report["energy_per_image_nj"].items():
        profile = energy["profiles"][name]
        assert value["snn"] == pytest.approx(profile["energy_per_image_pj"] / 1e3)
        assert value["ann_twin"] == pytest.approx(profile["ann_twin_energy_pj"] / 1e3)
        assert value["snn_over_ann"] == pytest.approx(value["snn"] / value["ann_twin"])
        assert value["backbone"] == pytest.approx(
            energy["backbone"]["macs_per_image"] * profile_mac_pj(name) / 1e3
        )
    assert energy["images"] == QUICK.energy_images
    assert energy["backbone"]["macs_per_image"] > 1e6, "EfficientNet-Lite0 at 16 px"

    # Every file listed exists; pictures are PNGs; the pictures' numbers match the run's.
    for key, path in report["files"].items():
        assert Path(path).exists(), key
    for key in ("cosim_raster", "energy_plot", "prompts", "values", "sparsity"):
        assert _png(Path(report["files"][key])), key
    assert report["pictures"]["distinct_prompts"] == report["distinct_prompts"]["lorsp"]
    assert set(report["wall_s"]) == {*STEPS, "total"}
    assert report["wall_s"]["total"] >= sum(v for k, v in report["wall_s"].items() if k != "total")

    # The printed report: both accuracies, agreement, both profiles, every path.
    printed = captured.out
    for prompter in PROMPTERS:
        assert f"{report['accuracy'][prompter]:.4f}" in printed
    assert "spike agreement 1.000000" in printed
    assert "loihi" in printed and "cmos45" in printed
    assert "V ⊙ ρ" in printed and "ANN twin" in printed and "distinct prompts" in printed
    for v1_word in ("alpha", " ON", " OFF", "factors"):
        assert v1_word not in printed, f"the report describes v1: {v1_word!r}"
    for path in report["files"].values():
        assert path in printed
    assert printed.strip() in (out / OUTPUTS["report_md"]).read_text()
    for number, title in enumerate(STEPS.values(), start=1):
        assert f"[{number}/{len(STEPS)}] {title}" in captured.err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_steps_are_announced_timed_and_ticked_only_on_a_terminal(terminal):
    stream = _Terminal() if terminal else io.StringIO()
    steps = _Steps(stream, progress=True)
    with steps.step("cosim", "2 test images", ticker=True):
        time.sleep(1.2)  # long enough for the ticker to redraw at least twice
    text = stream.getvalue()
    assert text.startswith(f"[4/{len(STEPS)}] {STEPS['cosim']}: 2 test images\n")
    assert steps.seconds["cosim"] >= 1.2
    assert f"done in {steps.seconds['cosim']:.1f} s" in text
    assert (f"{STEPS['cosim']}: 00:01" in text) == terminal
