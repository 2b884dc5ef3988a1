"""`lorsp train`, `lorsp eval`, `lorsp list` end to end on tiny settings, and their errors."""

from __future__ import annotations

import json

import pytest

from lorsp_app.cli import build_parser
from lorsp_app.cli import main as cli_main
from lorsp_app.train_commands import config_from_args

TINY_FLAGS = [
    "--prompter", "lorsp", "--backbone", "timm:test_resnet", "--no-pretrained",
    "--dataset", "fashion_mnist", "--train-size", "32", "--val-size", "16", "--test-size", "16",
    "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--no-progress",
]  # fmt: skip


def _config(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_every_command_has_help_with_an_example(capsys):
    for command in ("train", "eval", "list"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "example:" in text and f"lorsp {command}" in text


def test_flags_override_the_yaml_file_which_overrides_the_defaults(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        "prompter: lor_vp\nepochs: 7\nlr: 0.02\nprompter_options: {rank: 3}\n"
        "dataset_options: {patch_size: 32}\n"
    )
    config = _config(
        ["--config", str(config_file), "--epochs", "2", "--prompter-opt", "a_init_std=0.5"]
    )
    assert (config.prompter, config.epochs, config.lr) == ("lor_vp", 2, 0.02)
    assert config.prompter_options == {"rank": 3, "a_init_std": 0.5}
    assert config.dataset_options == {"patch_size": 32}
    assert config.batch_size == 64  # the default
    shortcut = _config(
        [
            "--steps",
            "4",
            "--grid",
            "8",
            "--target-sparsity",
            "0.9",
            "--rank",
            "1",
            "--prompter-opt",
            "gate_rate_band=[0.1, 0.5]",
        ]
    )
    assert shortcut.prompter_options == {
        "steps": 4,
        "grid": 8,
        "target_sparsity": 0.9,
        "rank": 1,
        "gate_rate_band": [0.1, 0.5],
    }


@pytest.mark.slow
def test_train_then_eval_then_resume_end_to_end(tmp_path, capsys):
    out, summary_file, eval_file = (
        tmp_path / "run",
        tmp_path / "summary.json",
        tmp_path / "eval.json",
    )
    assert cli_main(["train", *TINY_FLAGS, "--out", str(out), "--json", str(summary_file)]) == 0
    printed = capsys.readouterr().out
    assert "lorsp on timm:test_resnet/fashion_mnist (lp)" in printed and "test accuracy" in printed
    summary = json.loads(summary_file.read_text())
    assert summary == json.loads((out / "summary.json").read_text())
    stored = json.loads((out / "config.json").read_text())
    assert stored["image_size"] == 16 and stored["backbone"] == "timm:test_resnet"
    # Every prompter option is stored resolved, so a later change of a default cannot alter it.
    assert (
        stored["prompter_options"]["rank"] == 4
        and stored["prompter_options"]["persistent"] is True
        and "gate_rate_band" in stored["prompter_options"]
    )
    assert cli_main(["eval", str(out), "--json", str(eval_file), "--device", "cpu"]) == 0
    evaluated = json.loads(eval_file.read_text())
    for key in (
        "test_accuracy",
        "prompt_sparsity",
        "distinct_prompts",
        "tunable_params",
        "gate_firing_rate",
    ):
        assert evaluated[key] == summary[key], key
    assert "on 16 images" in capsys.readouterr().out
    # --resume with only --out continues from config.json; the run is complete, so it just reports.
    assert cli_main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_list_names_every_prompter_backbone_family_and_dataset(tmp_path, capsys):
    listing_file = tmp_path / "list.json"
    assert cli_main(["list", "--json", str(listing_file)]) == 0
    text = capsys.readouterr().out
    listing = json.loads(listing_file.read_text())
    from lorsp_neuro.data import list_datasets
    from lorsp_neuro.prompters import list_prompters

    assert sorted(listing["prompters"]) == list_prompters()
    assert sorted(listing["datasets"]) == list_datasets()
    assert listing["heads"] == ["flm", "ilm", "lp"]
    assert listing["prompters"]["lorsp"]["options"]["rank"] == 4
    assert listing["prompters"]["lorsp_v1"]["options"]["factors"] == 2
    for family in (
        "resnet",
        "vit",
        "swin",
        "convnext",
        "efficientnet_b0",
        "efficientnet_lite0",
        "efficientnet_lite2",
        "timm:<name>",
    ):
        assert any(family in name for name in listing["backbones"]), family
    for name in list_prompters() + list_datasets():
        assert name in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "TrainConfig.epochs must be an integer >= 1, got 0"),
        (["--head", "knn"], "TrainConfig.head must be one of"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--prompter", "magic"], "magic"),
        (["--prompter-opt", "nosuch=1"], "nosuch"),
        (["--prompter-opt", "rank=0"], "rank"),
        (["--prompter-opt", "target_sparsity=1.5"], "target_sparsity"),
        (["--prompter", "lorsp_v1", "--factors", "0"], "factors"),
        (["--dataset", "cifar10"], "needs a path"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_settings_give_one_line_errors(argv, message, capsys):
    assert cli_main(["train", *TINY_FLAGS, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorsp train: error:") and message in err
    assert len(err.splitlines()) == 1, err


def test_bad_files_and_directories_give_one_line_errors(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: [1,\n")
    unknown_key = tmp_path / "typo.yaml"
    unknown_key.write_text("epoch: 3\n")
    cases = [
        (["train", "--config", str(bad_yaml)], "bad.yaml: not valid YAML/JSON"),
        (["train", "--config", str(unknown_key)], "unknown config field(s) ['epoch']"),
        (
            ["train", "--config", str(tmp_path / "missing.yaml")],
            "missing.yaml: cannot read config file",
        ),
        (["eval", str(tmp_path)], "not a run directory (no config.json)"),
        (["train", *TINY_FLAGS, "--resume"], "--resume needs --out DIR"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_malformed_option_flags_are_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--prompter-opt", "no-equals-sign"])
    assert exit_info.value.code == 2
    assert "expected key=value, got 'no-equals-sign'" in capsys.readouterr().err
