"""`lorsp demo`: its settings, its output folder, and the whole pipeline end to end on --quick."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from lorsp_neuro.cli import main as cli_main
from lorsp_neuro.configs import ConfigError
from lorsp_neuro.demo import (
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

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"head": "softmax"}, "head"),
        ({"image_size": 4}, "image_size"),
        ({"lr": -1.0}, "lr"),
        ({"seed": -1}, "seed"),
        ({"cosim_images": 2000}, "cosim_images"),
        ({"profiles": ()}, "profiles"),
        ({"train_size": 1.5}, "train_size"),
    ],
)
def test_bad_settings_name_the_field(change, field):
    with pytest.raises(ConfigError, match=f"DemoSettings.{field}"):
        DemoSettings().replace(**change)


def test_both_prompters_get_the_same_budget(tmp_path):
    configs = {p: train_config(DemoSettings(), p, tmp_path / p, False).to_dict() for p in PROMPTERS}
    differing = {k for k in configs["lorsp"] if configs["lorsp"][k] != configs["lor_vp"][k]}
    assert differing == {"prompter", "prompter_options", "out"}
    assert configs["lorsp"]["pretrained"] and configs["lorsp"]["backbone"] == "efficientnet_lite0"
    assert configs["lorsp"]["prompter_options"] == {"steps": 8, "factors": 2, "rank": 2}
    assert configs["lor_vp"]["prompter_options"] == {"rank": 4}


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
    assert 0.0 <= report["prompt_sparsity"]["lorsp"] <= 1.0

    # NIR file, export check and Lava co-simulation.
    graph = load_nir(out / OUTPUTS["nir"])
    assert lorsp_host(graph).image_size == (16, 16)
    assert report["export_matches"] is True
    assert report["spike_agreement"] == 1.0 and report["mismatched_spikes"] == 0
    synops = report["synops_per_image"]
    assert synops["torch"] == synops["lava"] > 0
    cosim = json.loads((out / OUTPUTS["cosim"]).read_text())
    assert set(cosim["layers"]) == {"gate_neurons", "pixel_on", "pixel_off"}
    assert cosim["images"] == QUICK.cosim_images and cosim["precision"] == "floating_pt"

    # Energy on both profiles, SNN against the ANN twin.
    energy = json.loads((out / OUTPUTS["energy"]).read_text())
    assert set(energy["profiles"]) == set(report["energy_per_image_nj"]) == {"loihi", "cmos45"}
    for name, value in report["energy_per_image_nj"].items():
        profile = energy["profiles"][name]
        assert value["snn"] == pytest.approx(profile["energy_per_image_pj"] / 1e3)
        assert value["ann_twin"] == pytest.approx(profile["ann_twin_energy_pj"] / 1e3)
        assert value["snn_over_ann"] == pytest.approx(value["snn"] / value["ann_twin"])
    assert energy["images"] == QUICK.energy_images

    # Every file listed exists; pictures are PNGs; the pictures' numbers match the run's.
    for key, path in report["files"].items():
        assert Path(path).exists(), key
    for key in ("cosim_raster", "energy_plot", "prompts", "sparsity"):
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
