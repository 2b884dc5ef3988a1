"""The benchmark scripts on tiny settings: JSON schema, consistent numbers, README rendering."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import (
    accuracy_table,
    bench_common,
    energy_table,
    frontier,
    gpu_speed,
    run_all,
    speed,
    update_readme,
)
from lorsp_neuro.errors import LorspError

BENCH = Path(bench_common.__file__).resolve().parent

README_TEMPLATE = (
    "# Title\n\nIntro.\n\n"
    f"{update_readme.START_MARKER}\nplaceholder\n{update_readme.END_MARKER}\n\n## After\n"
)


# --------------------------------------------------------------------------------------------
# Pure helpers


def test_mean_std_is_the_sample_standard_deviation():
    mean, std = bench_common.mean_std([0.70, 0.72, None, 0.74])
    assert mean == pytest.approx(0.72)
    assert std == pytest.approx(0.02)
    assert bench_common.mean_std([0.5]) == (0.5, None)
    assert bench_common.mean_std([None]) == (None, None)


def test_median_and_loglog_slope():
    assert bench_common.median([3.0, 1.0, 2.0]) == 2.0
    assert bench_common.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(bench_common.BenchmarkError):
        bench_common.median([])
    sizes = [32**2, 64**2, 128**2, 224**2]
    assert bench_common.loglog_slope(sizes, [3e-6 * n**1.5 for n in sizes]) == pytest.approx(1.5)
    assert bench_common.loglog_slope([10, 10], [1.0, 2.0]) is None


def test_time_interleaved_rotates_the_order_and_keeps_peaks():
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}

    class Probe:
        level = 0.0

        def start(self):
            Probe.level += 1.0
            return Probe.level

        def stop(self):
            return Probe.level + 10.0

    times, memory = speed.time_interleaved(steps, reps=3, warmup=1, probe=Probe())
    assert calls == list("abcbcacababc")
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    # Warm-up (levels 1–3) is not kept; then "a" ran third, second, first: levels 6, 8, 10.
    assert memory["a"] == {"peak_memory_mib": 20.0, "start_memory_mib": 6.0}


def test_step_ratios():
    ratios = speed.step_ratios({"backbone": 2.0, "lor_vp": 2.5, "lorsp": 4.0, "lorsp_ann": 3.0})
    assert ratios["lorsp_over_backbone"] == 2.0
    assert ratios["lor_vp_over_backbone"] == 1.25
    assert ratios["lorsp_over_lor_vp"] == 1.6
    assert ratios["lorsp_over_lorsp_ann"] == pytest.approx(4 / 3)


def test_rss_probe_sees_an_allocation():
    probe = bench_common.RssPeakProbe()
    start = probe.start()
    block = bytearray(64 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    peak = probe.stop()
    del block
    assert peak - start >= (60 if probe.resettable else 0)


def test_run_identity_ignores_incidental_fields_only():
    settings = accuracy_table.SETTINGS["smoke"]
    config = accuracy_table.run_config(settings, settings.datasets[0], "lorsp", 0)
    same = {**config, "num_threads": 7, "device": "cuda", "progress": True}
    assert accuracy_table.config_digest(same) == accuracy_table.config_digest(config)
    changed_default = {**config["prompter_options"], "pixel_bias_init": 3.0}
    for field, value in (
        ("seed", 1),
        ("epochs", 9),
        ("head", "lp"),
        ("prompter_options", changed_default),
    ):
        assert accuracy_table.config_digest(
            {**config, field: value}
        ) != accuracy_table.config_digest(config)


def test_runs_record_every_prompter_option_resolved():
    options = accuracy_table.resolved_prompter_options("lorsp")
    assert options["rank"] == 4 and options["steps"] == 4 and options["persistent"] is True
    assert options["target_sparsity"] is None and "pixel_bias_init" in options
    assert isinstance(options["gate_rate_band"], list)  # as config.json stores a tuple
    settings = accuracy_table.SETTINGS["smoke"]
    sparse = accuracy_table.run_config(
        settings, settings.datasets[0], "lorsp", 0, {"target_sparsity": 0.9}
    )
    assert sparse["prompter_options"] == {**options, "target_sparsity": 0.9}
    assert accuracy_table.resolved_prompter_options("linear_probe") == {}


def test_aggregate_means_over_seeds_and_rejects_inconsistent_parameters():
    settings = accuracy_table.SETTINGS["smoke"]
    budget = settings.datasets[0].name

    def run(seed, acc, params=100, synops=None):
        return {
            "dataset": budget,
            "prompter": "lorsp",
            "seed": seed,
            "test_accuracy": acc,
            "val_accuracy": acc,
            "tunable_params": params,
            "prompt_params": params,
            "head_params": 0,
            "prompt_sparsity": 0.5,
            "distinct_prompts": 8,
            "train_seconds": 1.0,
            "synops_per_image": synops,
            "energy_per_image_pj": None if synops is None else 2.0 * synops,
        }

    failed = {"dataset": budget, "prompter": "lorsp", "seed": 2, "error": "boom"}
    rows = accuracy_table.aggregate(
        [run(0, 0.5, synops=10), run(1, 0.7, synops=30), failed], settings
    )
    (row,) = rows
    assert row["seeds"] == 2 and row["seed_list"] == [0, 1]
    assert row["test_accuracy_mean"] == pytest.approx(0.6)
    assert row["test_accuracy_std"] == pytest.approx(math.sqrt(0.02))
    assert row["synops_per_image"] == 20 and row["energy_per_image_pj"] == 40
    with pytest.raises(bench_common.BenchmarkError, match="tunable parameters differ"):
        accuracy_table.aggregate([run(0, 0.5), run(1, 0.7, params=101)], settings)


def test_settings_reject_bad_values():
    smoke = accuracy_table.SETTINGS["smoke"]
    with pytest.raises(bench_common.BenchmarkError, match="energy_images"):
        accuracy_table.replace(smoke, energy_images=10_000)
    with pytest.raises(bench_common.BenchmarkError, match="unknown"):
        accuracy_table.replace(smoke, prompters=("lorsp", "nope"))
    args = accuracy_table.parse_args(["--smoke", "--datasets", "cifar10"])
    with pytest.raises(bench_common.BenchmarkError, match="--datasets"):
        accuracy_table.settings_from_args(args)


def test_default_budget_is_what_the_docs_state():
    default = accuracy_table.SETTINGS["default"]
    assert [b.name for b in default.datasets] == ["fashion_mnist", "mnist5k", "textures"]
    assert [b.secondary for b in default.datasets] == [False, False, True]
    assert all(b.test_size >= 2000 for b in default.datasets if not b.secondary)
    assert len(default.seeds) >= 3 and default.prompters == bench_common.TABLE_PROMPTERS
    assert set(bench_common.PROMPTERS) - set(default.prompters) == {"lor_vp_pruned", "lorsp_v1"}
    assert [b.steps(default.batch_size) for b in default.datasets] == [500, 474, 192]
    # The paired comparison rests on at least five seeds; the other rows on three.
    fashion, _, textures = default.datasets
    assert default.row_seeds("lorsp", fashion) == default.row_seeds("lor_vp", fashion)
    assert len(default.row_seeds("lorsp", fashion)) >= 5
    assert default.row_seeds("vp_pad", fashion) == default.row_seeds("lorsp", textures) == (0, 1, 2)


def test_table_rows_may_carry_prompter_options():
    assert bench_common.split_variant("lorsp@grid=8,target_sparsity=0.9") == (
        "lorsp",
        {"grid": 8, "target_sparsity": 0.9},
    )
    assert bench_common.split_variant("lor_vp") == ("lor_vp", {})
    with pytest.raises(bench_common.BenchmarkError, match="unknown prompter 'nope'"):
        bench_common.split_variant("nope@grid=8")
    with pytest.raises(bench_common.BenchmarkError, match="key=value"):
        bench_common.split_variant("lorsp@grid")
    table = accuracy_table.SETTINGS["64px"]
    job = accuracy_table.make_job(
        table, table.datasets[0], "lorsp@grid=8", 0, accuracy_table.RUNS_DIR
    )
    assert job["labels"]["row"] == "lorsp@grid=8"
    assert job["config"]["prompter"] == "lorsp" and job["config"]["prompter_options"]["grid"] == 8
    plain = accuracy_table.make_job(table, table.datasets[0], "lorsp", 0, accuracy_table.RUNS_DIR)
    assert plain["out"] != job["out"]
    with pytest.raises(bench_common.BenchmarkError, match="comparisons"):
        accuracy_table.replace(table, comparisons=(("lorsp", "vp_pad"),))


def test_paired_comparisons_use_only_the_shared_seeds():
    settings = accuracy_table.replace(
        accuracy_table.SETTINGS["smoke"], prompters=("lor_vp", "lorsp"), paired_seeds=(2,)
    )

    def run(row, seed, accuracy, dataset="fashion_mnist"):
        return {
            "dataset": dataset,
            "prompter": row,
            "row": row,
            "seed": seed,
            "test_accuracy": accuracy,
        }

    runs = [
        run("lorsp", 0, 0.60), run("lor_vp", 0, 0.50),
        run("lorsp", 1, 0.62), run("lor_vp", 1, 0.55),
        run("lorsp", 2, 0.70), run("lor_vp", 2, 0.61),
        run("lorsp", 3, 0.99),  # no lor_vp partner: left out
        run("lorsp", 0, 0.10, dataset="textures"), run("lor_vp", 0, 0.90, dataset="textures"),
    ]  # fmt: skip
    (paired,) = accuracy_table.paired_comparisons(runs, settings)  # textures is secondary
    assert paired["seeds"] == [0, 1, 2] and paired["wins"] == 3
    assert paired["differences"] == pytest.approx([0.10, 0.07, 0.09])
    assert paired["verdict"] == "better" and paired["ci95"][0] > 0


def test_flags_override_settings_budgets_and_prompter_options():
    # The budget of docs/training.md's v1 comparison: 1,000 steps of 16 images, one seed.
    args = accuracy_table.parse_args(
        ["--datasets", "fashion_mnist", "--seeds", "0", "--head", "lp", "--batch-size", "16"]
    )
    settings = accuracy_table.settings_from_args(args)
    (budget,) = settings.datasets
    assert budget.steps(settings.batch_size) == 1000 and settings.seeds == (0,)
    assert settings.lr == 1e-3 and settings.prompter_options == {}

    overrides = ["--train-size", "12", "--epochs", "2", "--lr", "0.002", "--num-threads", "2"]
    args = accuracy_table.parse_args(
        ["--smoke", "--prompters", "lor_vp", "lorsp", "--prompter-opt", "rank=8", *overrides]
    )
    settings = accuracy_table.settings_from_args(args)
    assert [(b.train_size, b.epochs) for b in settings.datasets] == [(12, 2), (12, 2)]
    assert settings.lr == 0.002 and settings.num_threads == 2
    assert settings.prompter_options == {"rank": 8}
    dataset = settings.datasets[0]
    config = accuracy_table.run_config(settings, dataset, "lorsp", 0)
    assert config["prompter_options"]["rank"] == 8 and config["lr"] == 0.002
    # A job's own options win over the table's; the options are part of the run's identity.
    rank_two = accuracy_table.run_config(settings, dataset, "lorsp", 0, {"rank": 2})
    assert rank_two["prompter_options"]["rank"] == 2
    assert accuracy_table.config_digest(config) != accuracy_table.config_digest(rank_two)
    with pytest.raises(LorspError, match=r"linear_probe.*rank"):
        accuracy_table.run_config(settings, dataset, "linear_probe", 0)
    report = _accuracy_report()
    report["settings"] = {**report["settings"], "prompter_options": {"rank": 8}}
    assert "changed from the registry defaults: `rank=8`" in bench_common.render_accuracy(report)
    assert "registry defaults" not in bench_common.render_accuracy(_accuracy_report())


# --------------------------------------------------------------------------------------------
# Synthetic reports for the README renderer (known numbers, no training)


def _accuracy_report() -> dict:
    rows = []
    for prompter, acc, std, params, sparsity in (
        ("linear_probe", 0.5012, 0.0101, 0, None),
        ("lor_vp", 0.6123, 0.0234, 768, 0.0),
        ("lorsp", 0.6346, 0.0156, 1163, 0.8123),
    ):
        rows.append(
            {
                "dataset": "fashion_mnist",
                "prompter": prompter,
                "seeds": 3,
                "test_accuracy_mean": acc,
                "test_accuracy_std": std,
                "tunable_params": params,
                "prompt_params": params,
                "head_params": 0,
                "prompt_sparsity_mean": sparsity,
                "synops_per_image": 2_469_824.0 if prompter == "lorsp" else None,
                "energy_per_image_pj": 234_000_000.0 if prompter == "lorsp" else None,
                "ann_twin_macs_per_image": 903_552.0 if prompter == "lorsp" else None,
                "ann_twin_energy_per_image_pj": 5_540_000.0 if prompter == "lorsp" else None,
                "snn_over_ann_energy": 42.24 if prompter == "lorsp" else None,
            }
        )
    budget = {
        "train_size": 4000,
        "val_size": 500,
        "test_size": 2000,
        "image_size": 32,
        "epochs": 4,
        "batch_size": 32,
        "steps": 500,
        "steps_per_epoch": 125,
    }
    return {
        "benchmark": "accuracy",
        "schema_version": bench_common.SCHEMA_VERSION,
        "machine": {"cpu_count": 2},
        "settings": {
            "mode": "default",
            "backbone": "efficientnet_lite0",
            "pretrained": True,
            "head": "flm",
            "seeds": [0, 1, 2],
            "batch_size": 32,
            "lr": 1e-3,
            "prompt_lr": 1e-2,
            "head_lr": 1e-2,
            "energy_images": 100,
        },
        "datasets": {"fashion_mnist": {"budget": budget}},
        "runs": [],
        "rows": rows,
        "wall_seconds": 1800.0,
    }


def _gpu_report(device: str) -> dict:
    methods = {
        n: {"median_s": s, "images_per_second": 64 / s, "peak_memory_mib": 1000.0}
        for n, s in (("backbone", 0.1), ("lor_vp", 0.11), ("lorsp_ann", 0.12), ("lorsp", 0.15))
    }
    return {
        "benchmark": "gpu",
        "schema_version": bench_common.SCHEMA_VERSION,
        "settings": {
            "backbone": "vit_base_patch16_224",
            "device": device,
            "device_name": "X",
            "amp": True,
            "reps": 10,
        },
        "step_time": [{"image_size": 224, "batch_size": 64, "methods": methods, "ratios": {}}],
        "wall_seconds": 10.0,
    }


def _write_results(directory: Path, accuracy: dict, gpu: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "accuracy.json").write_text(json.dumps(accuracy))
    if gpu is not None:
        (directory / "gpu.json").write_text(json.dumps(gpu))
    return directory


def _table_cells(text: str, first_cell: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_update_readme_copies_the_json_numbers_between_the_markers(tmp_path):
    results = _write_results(tmp_path / "results", _accuracy_report(), _gpu_report("cuda"))
    readme = tmp_path / "README.md"
    readme.write_text(README_TEMPLATE)
    plot = results / "plot.png"
    assert (
        update_readme.main(
            ["--readme", str(readme), "--results-dir", str(results), "--plot", str(plot)]
        )
        == 0
    )
    text = readme.read_text()
    assert text.startswith("# Title\n\nIntro.\n\n") and text.endswith("\n## After\n")
    assert "placeholder" not in text
    assert _table_cells(text, "`lorsp`") == [
        "`lorsp`",
        "63.5 ± 1.6 (n=3)",
        "1,163 (1,163 + 0)",
        "0.812",
        "2.47 MSynOps",
        "234 µJ",
        "42.2×",
    ]
    assert _table_cells(text, "`linear_probe`")[1:4] == ["50.1 ± 1.0 (n=3)", "0 (0 + 0)", "–"]
    assert "4,000 train / 500 val / 2,000 test images at 32 px, 4 epochs × 125 steps" in text
    assert "](results/plot.png)" in text
    assert _table_cells(text, "`lorsp`") != _table_cells(text, "`lor_vp`")
    assert "### GPU" in text and "640 |" in text  # 64 images / 0.1 s
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Idempotent, and --check notices a changed JSON.
    assert (
        update_readme.main(
            ["--readme", str(readme), "--results-dir", str(results), "--no-plot", "--check"]
        )
        == 1
    )  # no plot → no image link
    assert (
        update_readme.main(
            ["--readme", str(readme), "--results-dir", str(results), "--plot", str(plot), "--check"]
        )
        == 0
    )
    changed = _accuracy_report()
    changed["rows"][2]["test_accuracy_mean"] = 0.7
    _write_results(results, changed)
    assert (
        update_readme.main(
            ["--readme", str(readme), "--results-dir", str(results), "--plot", str(plot), "--check"]
        )
        == 1
    )


def test_update_readme_leaves_out_a_cpu_dry_run_of_the_gpu_script(tmp_path):
    results = _write_results(tmp_path / "r", _accuracy_report(), _gpu_report("cpu"))
    readme = tmp_path / "README.md"
    readme.write_text(README_TEMPLATE)
    changed = update_readme.update([readme], results, None)
    assert changed == {readme: True}
    assert "### GPU" not in readme.read_text()


def test_update_readme_errors_name_the_file_and_the_problem(tmp_path, capsys):
    results = _write_results(tmp_path / "r", _accuracy_report())
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    assert (
        update_readme.main(["--readme", str(readme), "--results-dir", str(results), "--no-plot"])
        == 2
    )
    err = capsys.readouterr().err
    assert str(readme) in err and "<!-- results:start -->" in err and "not found" in err
    assert readme.read_text() == "# no markers here\n"

    readme.write_text(README_TEMPLATE)
    broken = _accuracy_report()
    del broken["rows"][1]["prompt_sparsity_mean"]
    _write_results(results, broken)
    assert update_readme.main(["--readme", str(readme), "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert "accuracy.json" in err and "rows[1]" in err and "prompt_sparsity_mean" in err

    (results / "accuracy.json").unlink()
    assert update_readme.main(["--readme", str(readme), "--results-dir", str(results)]) == 2
    assert "missing" in capsys.readouterr().err


def test_check_report_rejects_another_kind_or_schema():
    report = _accuracy_report()
    with pytest.raises(bench_common.BenchmarkError, match="expected 'speed'"):
        bench_common.check_report(report, "speed", "x.json")
    old = copy.deepcopy(report)
    old["schema_version"] = 0
    with pytest.raises(bench_common.BenchmarkError, match="schema_version"):
        bench_common.check_report(old, "accuracy", "x.json")


def test_run_all_runs_the_stages_in_order_and_stops_at_a_failure(tmp_path, monkeypatch):
    calls = []

    def fake_call(command, cwd):
        assert command[:2] == [sys.executable, "-m"] and cwd == bench_common.REPO
        calls.append(command[2])
        return 3 if command[2] == "benchmarks.speed" else 0

    monkeypatch.setattr(run_all.subprocess, "call", fake_call)
    code = run_all.main(["--smoke", "--results-dir", str(tmp_path), "--readme", "R.md"])
    assert code == 3
    assert calls == [
        "benchmarks.accuracy_table",
        "benchmarks.frontier",
        "benchmarks.energy_table",
        "benchmarks.speed",
    ]
    record = json.loads((tmp_path / "run_all.json").read_text())
    assert record["ok"] is False and record["stages"]["speed"]["exit_code"] == 3
    names = [(n, c[2]) for n, c in run_all.stages(run_all.parse_args(["--full"]))]
    assert names == [
        ("accuracy", "benchmarks.accuracy_table"),
        ("frontier", "benchmarks.frontier"),
        ("energy", "benchmarks.energy_table"),
        ("speed", "benchmarks.speed"),
        ("update_readme", "benchmarks.update_readme"),
    ]


# --------------------------------------------------------------------------------------------
# The benchmarks themselves, on tiny settings


@pytest.mark.slow
def test_accuracy_smoke_run_writes_a_consistent_report(tmp_path, capsys):
    out = tmp_path / "acc.json"
    argv = ["--smoke", "--datasets", "textures", "--json", str(out), "--runs-dir", str(tmp_path)]
    argv += ["--prompters", "linear_probe", "lor_vp", "lorsp_ann", "lorsp"]
    assert accuracy_table.main(argv) == 0
    report = bench_common.check_report(json.loads(out.read_text()), "accuracy", out)
    rows = {r["prompter"]: r for r in report["rows"]}
    assert list(rows) == ["linear_probe", "lor_vp", "lorsp_ann", "lorsp"]
    assert all(r["seeds"] == 2 and 0.0 <= r["test_accuracy_mean"] <= 1.0 for r in rows.values())
    assert report["datasets"]["textures"]["budget"]["steps"] == 2
    assert not report["failures"] and report["all_runs_trained_in_this_call"]
    # flm head: nothing but the prompt learns; linear_probe has no prompt.
    assert rows["linear_probe"]["tunable_params"] == 0
    assert rows["linear_probe"]["prompt_sparsity_mean"] is None
    assert rows["lor_vp"]["tunable_params"] == 3 * 4 * (16 + 16)
    # The ANN twin's chip MACs at 16 px, r = 4, D = 3·2·2: gate (D+1)·r, synapses 3·H·W·r,
    # image gain and pixel bias 3·H·W each (pooling and the readout run on the host).
    assert rows["lorsp_ann"]["ann_twin_macs_per_image"] == 13 * 4 + 768 * 4 + 2 * 768
    lorsp = rows["lorsp"]
    assert lorsp["synops_per_image"] > 0 and lorsp["energy_per_image_pj"] > 0
    assert lorsp["ann_twin_macs_per_image"] == rows["lorsp_ann"]["ann_twin_macs_per_image"]
    for run in (r for r in report["runs"] if r["prompter"] == "lorsp"):
        assert run["snn_over_ann_energy"] == pytest.approx(
            run["energy_per_image_pj"] / run["ann_twin_energy_per_image_pj"]
        )
    printed = capsys.readouterr().out
    assert bench_common.render_accuracy(report) in printed

    # A rerun with the same settings reuses the finished runs and finds the same numbers.
    again = tmp_path / "again.json"
    argv2 = ["--smoke", "--datasets", "textures", "--json", str(again), "--runs-dir", str(tmp_path)]
    assert accuracy_table.main([*argv2, "--prompters", "lor_vp", "lorsp_ann"]) == 0
    second = json.loads(again.read_text())
    assert all(r["reused"] for r in second["runs"])
    for row in second["rows"]:
        assert row["test_accuracy_per_seed"] == rows[row["prompter"]]["test_accuracy_per_seed"]


def test_paired_interval_and_verdict():
    mean, low, high = bench_common.t_interval([0.02, 0.03, 0.025])
    assert mean == pytest.approx(0.025)
    assert low == pytest.approx(0.025 - 4.302653 * 0.005 / math.sqrt(3), rel=1e-5)
    assert high == pytest.approx(2 * mean - low)
    assert bench_common.verdict(low, high) == "better"
    assert bench_common.verdict(-0.03, -0.01) == "worse"
    assert bench_common.verdict(-0.01, 0.02) == "no detectable difference"
    assert bench_common.verdict(*bench_common.t_interval([0.1])[1:]) == "too few seeds"


def test_frontier_pairs_each_target_with_the_pruned_baseline_on_shared_runs(tmp_path):
    settings = frontier.SETTINGS["default"]
    jobs = frontier.jobs(settings, tmp_path)
    assert len(jobs) == 2 * (1 + len(settings.targets)) * len(settings.training.seeds)
    dense = [j for j in jobs if j["labels"]["target"] is None]
    assert {j["config"]["prompter"] for j in dense} == {"lorsp", "lor_vp"}
    # The dense pair are the accuracy table's own runs (same directory, reused).
    table = accuracy_table.run_config(settings.training, settings.dataset, "lorsp", 0)
    assert str(accuracy_table.run_directory(tmp_path, table)) in {j["out"] for j in dense}
    for job in jobs:
        target = job["labels"]["target"]
        if target is not None:
            assert job["config"]["prompter_options"]["target_sparsity"] == target
            assert job["config"]["prompter"] in ("lorsp", "lor_vp_pruned")
    assert settings.targets == (0.5, 0.75, 0.9, 0.95)


def test_frontier_row_of_a_single_seed_has_no_interval():
    # One seed: the interval is NaN in memory and null in the JSON (standard JSON has no NaN).
    result = {"test_accuracy_mean": 0.5, "test_accuracy_std": None, "prompt_sparsity_mean": 0.9}
    point = {
        "target_sparsity": 0.9,
        "baseline": "lor_vp_pruned",
        "method_result": result,
        "baseline_result": result,
        "paired": {"differences": [0.01], "mean": 0.01, "ci95": [None, None], "wins": 1},
    }
    point["paired"]["verdict"] = bench_common.verdict(*bench_common.t_interval([0.01])[1:])
    (row,) = bench_common.frontier_rows({"points": [point]})
    assert row[6] == "+1.0 (– … –)" and row[8] == "too few seeds"


@pytest.mark.slow
def test_frontier_smoke_run_writes_a_consistent_report(tmp_path, capsys):
    out = tmp_path / "frontier.json"
    argv = ["--smoke", "--targets", "0.5", "0.9", "--json", str(out)]
    assert frontier.main([*argv, "--runs-dir", str(tmp_path)]) == 0
    report = bench_common.check_report(json.loads(out.read_text()), "frontier", out)
    assert [p["target_sparsity"] for p in report["points"]] == [None, 0.5, 0.9]
    for point in report["points"]:
        paired = point["paired"]
        method, baseline = point["method_result"], point["baseline_result"]
        assert paired["differences"] == pytest.approx(
            [
                m - b
                for m, b in zip(
                    method["test_accuracy_per_seed"],
                    baseline["test_accuracy_per_seed"],
                    strict=True,
                )
            ]
        )
        if point["target_sparsity"] is not None:  # the mask holds the baseline's sparsity
            assert baseline["prompt_sparsity_mean"] == pytest.approx(
                point["target_sparsity"], abs=0.01
            )
    assert [h["dataset"] for h in report["holds"]] == ["textures", "mnist5k", "fashion_mnist"]
    assert all(0.0 <= h["method_prompt_sparsity"] <= 1.0 for h in report["holds"])
    assert "lorsp − lor_vp_pruned" in capsys.readouterr().out
    assert "| 0.9 |" in bench_common.render_frontier(report)
    update_readme.plot_frontier(report, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_energy_variants_share_the_default_run_with_the_accuracy_table(tmp_path):
    settings = energy_table.SETTINGS["default"]
    assert (None, 4) in settings.variants and (8, 4) in settings.variants
    assert energy_table.variant_options(None, 4) == {}
    assert energy_table.variant_options(8, 2) == {"grid": 8, "steps": 2}
    default = next(
        j
        for j in energy_table.jobs(settings, tmp_path)
        if j["labels"]["grid"] is None and j["labels"]["steps"] == 4
    )
    table = accuracy_table.run_config(settings.training, settings.dataset, "lorsp", 0)
    assert default["out"] == str(accuracy_table.run_directory(tmp_path, table))


@pytest.mark.slow
def test_energy_smoke_run_writes_a_consistent_report(tmp_path):
    out = tmp_path / "energy.json"
    assert energy_table.main(["--smoke", "--json", str(out), "--runs-dir", str(tmp_path)]) == 0
    report = bench_common.check_report(json.loads(out.read_text()), "energy", out)
    rows = {(r["grid"], r["steps"]): r for r in report["rows"]}
    assert set(rows) == {(None, 2), (4, 2)}
    assert rows[(None, 2)]["pixel_neurons"] == 3 * 16 * 16 and rows[(4, 2)]["pixel_neurons"] == 48
    for row in rows.values():
        assert set(row["energy_per_image_pj"]) == set(row["profiles"]) >= {"loihi", "cmos45"}
        for name in row["profiles"]:
            assert row["snn_over_ann_energy"][name] == pytest.approx(
                row["energy_per_image_pj"][name] / row["ann_twin_energy_pj"][name]
            )
        assert row["backbone_macs_per_image"] > 0
    assert "grid 4, T = 2" in bench_common.render_energy(report)


@pytest.mark.slow
@pytest.mark.lava
def test_speed_smoke_run_writes_a_consistent_report(tmp_path):
    out = tmp_path / "speed.json"
    assert speed.main(["--smoke", "--json", str(out)]) == 0
    report = bench_common.check_report(json.loads(out.read_text()), "speed", out)
    (steps,) = report["step_time"]
    assert set(steps["methods"]) == set(speed.STEP_METHODS)
    medians = {n: m["median_s"] for n, m in steps["methods"].items()}
    assert all(m > 0 for m in medians.values())
    assert steps["ratios"] == pytest.approx(speed.step_ratios(medians))
    assert steps["inference_ratios"] == pytest.approx(speed.step_ratios(steps["inference_s"]))
    assert all(len(m["times_s"]) == 2 for m in steps["methods"].values())
    assert all(m["peak_memory_mib"] >= m["start_memory_mib"] > 0 for m in steps["methods"].values())
    (sim,) = report["simulation"]
    assert sim["neurons"] == 3 * 16 * 16 + 4  # one pixel neuron per channel and pixel, r gates
    assert sim["norse"]["per_image_s"] > 0 and sim["lava"]["run_n_s"] > 0
    assert sim["lava"]["peak_memory_mib"] > 0
    # Norse (float32) and Lava (float64) simulate the same network on the same images.
    assert sim["lava"]["spikes_n"] == pytest.approx(sim["norse"]["spikes_n"], rel=0.02)
    bench_common.render_speed(report)


def test_gpu_script_refuses_clearly_without_cuda(monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_speed.main(["--json", str(tmp_path / "g.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


@pytest.mark.slow
def test_gpu_sh_cpu_dry_run(tmp_path):
    out = tmp_path / "gpu_dry_run.json"
    done = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--cpu-dry-run", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PY": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = bench_common.check_report(json.loads(out.read_text()), "gpu", out)
    assert report["settings"]["dry_run"] and report["settings"]["device"] == "cpu"
    # Both backbones of the GPU run (a transformer and Lite0), each with the four methods.
    assert [e["backbone"] for e in report["step_time"]] == ["test_vit", "efficientnet_lite0"]
    for entry in report["step_time"]:
        assert set(entry["methods"]) == {"backbone", "lor_vp", "lorsp_ann", "lorsp"}
        for m in entry["methods"].values():
            assert m["images_per_second"] == pytest.approx(entry["batch_size"] / m["median_s"])
    assert "efficientnet_lite0: LoRSP / backbone" in done.stdout


def test_update_readme_renders_the_further_tables_and_their_paired_verdicts(tmp_path):
    results = _write_results(tmp_path / "results", _accuracy_report())
    wide = copy.deepcopy(_accuracy_report())
    wide["settings"]["title"] = "Resolution: 64 px"
    wide["paired"] = [
        {
            "dataset": "fashion_mnist",
            "method": "lorsp",
            "baseline": "lor_vp",
            **bench_common.paired_difference(
                {0: 0.61, 1: 0.60, 2: 0.58}, {0: 0.60, 1: 0.62, 2: 0.57}
            ),
        }
    ]
    (results / update_readme.TABLE_FILES["64px"]).write_text(json.dumps(wide))
    readme = tmp_path / "README.md"
    readme.write_text(README_TEMPLATE)
    assert (
        update_readme.main(["--readme", str(readme), "--results-dir", str(results), "--no-plot"])
        == 0
    )
    text = readme.read_text()
    assert "### Resolution: 64 px" in text and "accuracy_64px.json" in text
    assert "`lorsp` − `lor_vp`: +0.0 points (95 % CI" in text
    assert "**no detectable difference**" in text
