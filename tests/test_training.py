"""Training: schedules, checkpoints, resume, best-on-validation, metrics, DDP equivalence."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lorsp_neuro import checkpoint as ckpt
from lorsp_neuro.checkpoint import CheckpointError
from lorsp_neuro.config_checks import ConfigError
from lorsp_neuro.data import load_dataset
from lorsp_neuro.evaluation import evaluate, evaluate_split
from lorsp_neuro.io import remove_temp_files
from lorsp_neuro.metrics import SplitMetrics, prompt_fingerprints
from lorsp_neuro.run_config import TrainConfig
from lorsp_neuro.runs import load_run
from lorsp_neuro.training import (
    TrainingError,
    cosine_lr_factor,
    epoch_order,
    global_batches,
    prepare,
    rank_share,
    train,
)

REPO = Path(__file__).resolve().parents[1]

#: A run small enough for a 2-core CI machine: 4 steps per epoch through a tiny random ResNet.
TINY = {
    "prompter": "lorsp",
    "backbone": "timm:test_resnet",
    "pretrained": False,
    "dataset": "fashion_mnist",
    "train_size": 64,
    "val_size": 32,
    "test_size": 32,
    "image_size": 16,
    "epochs": 3,
    "batch_size": 16,
    "eval_batch_size": 32,
    "lr": 1e-2,
    "progress": False,
}


class Interrupted(Exception):
    pass


def _stop_after(epoch_to_stop: int):
    def callback(epoch, record):
        if epoch == epoch_to_stop:
            raise Interrupted

    return callback


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("seconds")}


def _metrics(run_dir: Path) -> list[dict]:
    return [
        _without_timing(json.loads(line))
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


# ---------------------------------------------------------------------------------------------
# Pure pieces


def test_cosine_schedule_warms_up_then_decays_to_zero():
    assert cosine_lr_factor(0, 100) == 1.0
    assert cosine_lr_factor(50, 100) == pytest.approx(0.5)
    assert cosine_lr_factor(100, 100) == pytest.approx(0.0)
    assert [cosine_lr_factor(t, 100, warmup_steps=4) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_lr_factor(4, 100, warmup_steps=4) == 1.0
    values = [cosine_lr_factor(t, 40, 5) for t in range(5, 40)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_epoch_order_and_rank_shares_cover_each_global_batch_once():
    assert np.array_equal(epoch_order(50, 1, 2), epoch_order(50, 1, 2))
    assert not np.array_equal(epoch_order(50, 1, 2), epoch_order(50, 1, 3))
    order = epoch_order(23, 0, 1)
    batches = global_batches(order, 8, world_size=2)
    assert [len(b) for b in batches] == [8, 8, 7]
    for batch in batches:
        shares = [rank_share(batch, r, 2) for r in range(2)]
        assert sorted(np.concatenate(shares).tolist()) == sorted(batch.tolist())
    assert [len(b) for b in global_batches(np.arange(9), 8, world_size=2)] == [
        8
    ]  # a lone image is dropped


def test_prompt_metrics_count_zeros_and_distinct_prompts_exactly():
    prompt = torch.zeros(4, 3, 2, 2)
    prompt[1, 0, 0, 0] = 0.5
    prompt[2, 0, 0, 0] = 0.5
    prompt[3] = -0.0  # negative zero is a zero prompt too
    fingerprints = prompt_fingerprints(prompt)
    assert (
        fingerprints[0] == fingerprints[3] and fingerprints[1] == fingerprints[2] != fingerprints[0]
    )
    metrics = SplitMetrics(spiking=True)
    logits = torch.tensor([[1.0, 0.0]] * 4)
    metrics.update(
        logits, torch.tensor([0, 0, 1, 1]), prompt, {"gate_rate": torch.tensor(0.25)}, 4.0
    )
    metrics.update(
        logits[:2], torch.tensor([0, 0]), prompt[:2], {"gate_rate": torch.tensor(1.0)}, 2.0
    )
    result = metrics.result()
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["loss"] == pytest.approx(1.0)
    assert result["prompt_sparsity"] == pytest.approx(1 - 3 / 72)
    assert result["distinct_prompts"] == 2
    assert result["gate_firing_rate"] == pytest.approx((0.25 * 4 + 1.0 * 2) / 6)
    assert result["pixel_firing_rate"] is None
    assert SplitMetrics(spiking=False).result()["distinct_prompts"] == 0


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def test_checkpoint_round_trip_and_damaged_files_are_refused(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(7, dtype=torch.int64)}
    path = tmp_path / "x.safetensors"
    ckpt.save_checkpoint(path, tensors, {"epoch": 3, "note": [1, 2]})
    loaded, info = ckpt.load_checkpoint(path)
    assert info == {"epoch": 3, "note": [1, 2]}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left behind
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        ckpt.load_checkpoint(path)
    path.write_bytes(data[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(path)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="do not match their digest"):
        ckpt.load_checkpoint(path)
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="not a LoRSP checkpoint"):
        ckpt.load_checkpoint(path)


def test_latest_complete_checkpoint_skips_damaged_and_temporary_files(tmp_path):
    for epoch in (1, 2, 3):
        ckpt.save_checkpoint(
            ckpt.epoch_checkpoint_path(tmp_path, epoch),
            {"w": torch.full((3,), float(epoch))},
            {"epoch": epoch},
        )
    newest = ckpt.epoch_checkpoint_path(tmp_path, 3)
    newest.write_bytes(newest.read_bytes()[:-3])
    (tmp_path / ".tmp-epoch-0004.safetensors.abc").write_bytes(b"half written")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, tensors, info = ckpt.latest_complete_checkpoint(tmp_path)
    assert info["epoch"] == 2 and torch.equal(tensors["w"], torch.full((3,), 2.0))
    assert any("epoch-0003" in str(w.message) for w in caught)
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [e for e, _ in ckpt.epoch_checkpoints(tmp_path)] == [3]
    remove_temp_files(tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))


def test_optimizer_state_survives_the_tensor_round_trip():
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 2))]
    optimizer = torch.optim.AdamW(
        [
            {"params": params[:1], "lr": 0.1, "base_lr": 0.1},
            {"params": params[1:], "lr": 0.01, "base_lr": 0.01},
        ]
    )
    for _ in range(2):
        optimizer.zero_grad()
        (params[0].sum() + params[1].pow(2).sum()).backward()
        optimizer.step()
    tensors, info = ckpt.optimizer_state_to_tensors(optimizer.state_dict())
    json.dumps(info)  # the non-tensor part is plain JSON
    restored = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:]}])
    restored.load_state_dict(
        ckpt.optimizer_state_from_tensors(tensors, json.loads(json.dumps(info)))
    )
    a, b = optimizer.state_dict(), restored.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for key in a["state"][pid]:
            assert torch.equal(a["state"][pid][key], b["state"][pid][key])


# ---------------------------------------------------------------------------------------------
# Training runs


def test_config_rejects_bad_fields():
    with pytest.raises(ConfigError, match=r"TrainConfig\.epochs must be an integer >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="head must be one of"):
        TrainConfig(head="knn")
    with pytest.raises(ConfigError, match="lr must be a number > 0"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss(tmp_path):
    config = TrainConfig.from_dict({**TINY, "lr": 0.05, "out": str(tmp_path / "run")})
    torch.manual_seed(config.seed)
    _, splits, untrained = prepare(config)
    before = evaluate_split(untrained, splits.train, batch_size=64, device=torch.device("cpu"))
    train(config)
    trained, _ = load_run(tmp_path / "run")
    after = evaluate_split(trained, splits.train, batch_size=64, device=torch.device("cpu"))
    # Random backbone features: the loss falls slowly, but surely (2.30 → 2.19 measured).
    assert after["loss"] < before["loss"] - 0.05, (before["loss"], after["loss"])
    losses = [record["train_loss"] for record in _metrics(tmp_path / "run")]
    assert losses[-1] < losses[0]


#: ``lorsp`` with its θ controller: state the optimizer does not hold (θ, a buffer set by
#: ``after_optimizer_step``) must survive a checkpoint and a resume too.
CONTROLLED = {**TINY, "prompter_options": {"target_sparsity": 0.9}}


@pytest.mark.slow
def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    summary = train({**CONTROLLED, "out": str(straight)})
    with pytest.raises(Interrupted):
        train({**CONTROLLED, "out": str(broken)}, on_epoch_end=_stop_after(2))
    assert not (broken / "summary.json").exists()
    # A crash while writing epoch 2's checkpoint: a cut-short file and a temp file are left.
    second = ckpt.epoch_checkpoint_path(broken / "checkpoints", 2)
    second.write_bytes(second.read_bytes()[:-100])
    (broken / "checkpoints" / ".tmp-epoch-0003.safetensors.x").write_bytes(b"partial")
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        train({**CONTROLLED, "out": str(broken)})
    with pytest.raises(TrainingError, match=r"different config \(lr\)"):
        train({**CONTROLLED, "out": str(broken), "lr": 0.5}, resume=True)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint.*epoch-0002"):
        resumed = train({**CONTROLLED, "out": str(broken)}, resume=True)
    assert not list((broken / "checkpoints").glob(".tmp-*"))
    final = "checkpoints/epoch-0003.safetensors"
    a, b = load_file(str(straight / final)), load_file(str(broken / final))
    assert a.keys() == b.keys() and any(k.startswith("optimizer.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _metrics(straight) == _metrics(broken)
    assert [r["epoch"] for r in _metrics(broken)] == [1, 2, 3]
    assert _without_timing(summary) == _without_timing(resumed)


def test_the_loop_calls_after_optimizer_step_and_checkpoints_what_it_changes(tmp_path, monkeypatch):
    """After every optimizer step, ``after_optimizer_step(step, total_steps)``: lorsp's θ
    controller moves θ there (a buffer, outside the optimizer); at every epoch's end
    ``calibrate`` sets θ for the target on training images; the checkpoint carries θ."""
    from lorsp_neuro.prompters import LoRSPPrompter

    calls, calibrated = [], []
    real_step, real_calibrate = LoRSPPrompter.after_optimizer_step, LoRSPPrompter.calibrate

    def spy(self, step, total_steps):
        before = self.spiking_core.pixel_bias.detach().clone()
        real_step(self, step, total_steps)
        calls.append((step, total_steps, before, self.spiking_core.pixel_bias.detach().clone()))

    def spy_calibrate(self, batches):
        batches = list(batches)
        real_calibrate(self, iter(batches))
        silent = torch.cat([(self.run_core(x).pixels.amax(0) == 0).flatten(1) for x in batches])
        calibrated.append((self.spiking_core.pixel_bias.detach().clone(), silent.float().mean()))

    monkeypatch.setattr(LoRSPPrompter, "after_optimizer_step", spy)
    monkeypatch.setattr(LoRSPPrompter, "calibrate", spy_calibrate)
    run = tmp_path / "run"
    train({**CONTROLLED, "epochs": 2, "out": str(run)})
    assert [(step, total) for step, total, *_ in calls] == [(k, 8) for k in range(1, 9)]
    assert torch.equal(calls[0][2], torch.full((3,), 2.2)), "θ starts at pixel_bias_init"
    for step, _, before, after in calls[:4]:
        # Few neurons are silent at the start, far below s* = 0.9: θ falls at every step.
        assert (after < before).all(), (step, before, after)
    assert len(calibrated) == 2, "once per epoch"
    for _, silent in calibrated:  # exact on its images, up to one neuron in a channel
        assert silent == pytest.approx(0.9, abs=1.0 / (64 * 16 * 16))
    assert torch.equal(calls[4][2], calibrated[0][0]), "epoch 2 starts from the calibrated θ"
    saved = load_file(str(run / "checkpoints" / "epoch-0002.safetensors"))
    assert torch.equal(saved["prompter.spiking_core.pixel_bias"], calibrated[-1][0])
    model, _ = load_run(run, checkpoint="last")
    buffers = dict(model.prompter.named_buffers())
    assert "spiking_core.pixel_bias" in buffers, "θ is a buffer: no optimizer trains it"
    assert torch.equal(buffers["spiking_core.pixel_bias"], calibrated[-1][0]), "reloaded"


def test_summary_fields_are_present_and_sane(tmp_path):
    summary = train({**TINY, "out": str(tmp_path / "run"), "epochs": 2})
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and 0.0 <= summary["val_accuracy"] <= 1.0
    assert 0.0 <= summary["prompt_sparsity"] <= 1.0
    assert 1 <= summary["distinct_prompts"] <= 32
    assert 0.0 <= summary["gate_firing_rate"] <= 1.0 and 0.0 <= summary["pixel_firing_rate"] <= 1.0
    assert summary["tunable_params"] == summary["prompt_params"] + summary["head_params"]
    assert summary["head_params"] == 96 * 10 + 10  # test_resnet's 96 features → 10 classes
    assert summary["budget"] == {
        "steps": 8, "epochs": 2, "batch_size": 16, "train_images_seen": 128, "image_size": 16,
        "train_size": 64, "val_size": 32, "test_size": 32, "world_size": 1,
    }  # fmt: skip
    # The summary's val accuracy is the best epoch's, and the test metric is re-computed from disk.
    records = _metrics(tmp_path / "run")
    best = max(records, key=lambda r: r["val_accuracy"])
    assert (
        summary["val_accuracy"] == best["val_accuracy"] and summary["best_epoch"] == best["epoch"]
    )
    again = evaluate(tmp_path / "run", device="cpu")
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert again["distinct_prompts"] == summary["distinct_prompts"]


def test_the_kept_checkpoint_is_the_best_on_validation_not_the_last(tmp_path, monkeypatch):
    from lorsp_neuro import training

    # Pretend validation accuracy peaks at epoch 2 of 3.
    real = training.evaluate_split
    calls = {"n": 0}

    def scripted(model, images, **kwargs):
        result = real(model, images, **kwargs)
        if images is getattr(scripted, "val", None) and calls["n"] < 3:
            calls["n"] += 1
            result = {**result, "accuracy": [0.1, 0.9, 0.5][calls["n"] - 1]}
        return result

    real_prepare = training.prepare

    def prepare_and_remember(config):
        prepared = real_prepare(config)
        scripted.val = prepared[1].val
        return prepared

    monkeypatch.setattr(training, "evaluate_split", scripted)
    monkeypatch.setattr(training, "prepare", prepare_and_remember)
    summary = train({**TINY, "out": str(tmp_path / "run")})
    assert summary["best_epoch"] == 2
    best, info = ckpt.load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert info["epoch"] == 2
    epoch2 = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-0002.safetensors"))
    epoch3 = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-0003.safetensors"))
    assert all(torch.equal(best[k], epoch2[k]) for k in best)
    assert not all(torch.equal(best[k], epoch3[k]) for k in best)


def test_baselines_report_their_prompt_statistics_and_label_mapping_heads_train():
    common = {**TINY, "epochs": 1}
    probe = train({**common, "prompter": "linear_probe", "head": "flm"})  # nothing to train
    assert probe["tunable_params"] == 0 and probe["budget"]["steps"] == 4
    assert probe["prompt_sparsity"] is None and probe["distinct_prompts"] == 0
    assert probe["gate_firing_rate"] is None and probe["pixel_firing_rate"] is None
    lor_vp = train({**common, "prompter": "lor_vp", "head": "ilm"})
    assert lor_vp["distinct_prompts"] == 1  # one prompt for every image
    assert lor_vp["head_params"] == 0 and lor_vp["prompt_params"] == 3 * 4 * (16 + 16)
    assert lor_vp["gate_firing_rate"] is None and lor_vp["prompt_sparsity"] < 0.5


def test_a_diverging_run_stops_with_a_clear_error():
    with pytest.raises(TrainingError, match=r"epoch 1, optimizer step \d+: the loss is (nan|inf)"):
        train({**TINY, "prompter": "full_dense", "lr": 1e30, "epochs": 1})


def test_bad_device_and_an_empty_split_are_clear_errors():
    with pytest.raises(TrainingError, match="--device tpu"):
        train({**TINY, "device": "tpu"})
    with pytest.raises(TrainingError, match="the val split is empty"):
        train({**TINY, "dataset": "lfw", "val_size": None, "train_size": 5, "test_size": 195})


# ---------------------------------------------------------------------------------------------
# DistributedDataParallel


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    args = [
        "train", "--prompter", "lor_vp", "--backbone", "timm:test_resnet", "--no-pretrained",
        "--dataset", "fashion_mnist", "--train-size", "48", "--val-size", "16", "--test-size", "16",
        "--image-size", "16", "--epochs", "2", "--batch-size", "16", "--lr", "0.01",
        "--device", "cpu", "--no-progress", "--num-threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "lorsp_app.cli", *args, "--out", str(tmp_path / "one")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "lorsp_app.cli", *args, "--out", str(tmp_path / "two")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    a = load_file(str(tmp_path / "one" / "checkpoints" / "epoch-0002.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "epoch-0002.safetensors"))
    trained = [k for k in a if k.startswith(("prompter.", "head."))]
    assert trained and a.keys() == b.keys()
    for key in trained:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    assert not torch.equal(
        a["head.linear.weight"],
        load_file(str(tmp_path / "one" / "checkpoints" / "epoch-0001.safetensors"))[
            "head.linear.weight"
        ],
    )
    one_summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    two_summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two_summary["budget"]["world_size"] == 2 and two_summary["budget"]["steps"] == 6
    for key in ("test_accuracy", "val_accuracy", "distinct_prompts", "tunable_params"):
        assert one_summary[key] == two_summary[key], key
    assert math.isclose(one_summary["test_loss"], two_summary["test_loss"], rel_tol=1e-4)
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 only


def test_load_dataset_used_by_training_matches_the_config_split():
    config = TrainConfig.from_dict(TINY)
    _, splits, _ = prepare(config)
    direct = load_dataset(
        "fashion_mnist", train_size=64, val_size=32, test_size=32, image_size=16, seed=0
    )
    assert torch.equal(splits.train.indices, direct.train.indices)
