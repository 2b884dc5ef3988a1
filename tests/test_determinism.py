"""Determinism: on the CPU, the same seed gives the same numbers, bit for bit.

Two tiny training runs with the same seed, one in this process and one in a fresh process with
another hash seed, must write identical metrics and summaries (every float exactly equal, timings
aside), identical checkpoints (every tensor's bytes, optimizer and RNG state included) and
identical ``lorsp eval`` results; a different seed must change the weights, or the comparison
would prove nothing.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lorsp_app.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]

TRAIN_ARGS = [
    "train", "--prompter", "lorsp", "--backbone", "timm:test_resnet", "--no-pretrained",
    "--dataset", "fashion_mnist", "--train-size", "48", "--val-size", "16", "--test-size", "16",
    "--image-size", "16", "--epochs", "2", "--batch-size", "16", "--eval-batch-size", "16",
    "--lr", "0.01", "--device", "cpu", "--num-threads", "2", "--no-progress",
]  # fmt: skip


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("seconds")}


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [_without_timing(json.loads(line)) for line in lines]


def _summary(run: Path) -> dict:
    return _without_timing(json.loads((run / "summary.json").read_text()))


def safetensors_content(path: Path) -> tuple[dict, bytes]:
    """(header, tensor bytes): the file bytes also hold safetensors' metadata map, which it
    writes in a per-process random order."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _weights(run: Path) -> dict[str, tuple[dict, bytes]]:
    """Every checkpoint: its header (with the epoch's timing taken out of best's metrics) and
    its tensor bytes."""
    found = {}
    for path in [run / "best.safetensors", *sorted((run / "checkpoints").glob("*.safetensors"))]:
        header, tensors = safetensors_content(path)
        info = json.loads(header["__metadata__"]["info"])
        if "metrics" in info:
            info["metrics"] = _without_timing(info["metrics"])
        header["__metadata__"]["info"] = info
        found[path.name] = (header, tensors)
    return found


def _eval(run: Path, out: Path) -> dict:
    assert cli_main(["eval", str(run), "--device", "cpu", "--json", str(out)]) == 0
    return {k: v for k, v in json.loads(out.read_text()).items() if k != "run_dir"}


@pytest.mark.slow
def test_the_same_seed_gives_identical_numbers_and_weights_in_another_process(tmp_path):
    here, there, other_seed = tmp_path / "here", tmp_path / "there", tmp_path / "seed1"
    assert cli_main([*TRAIN_ARGS, "--out", str(here)]) == 0
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "2"}
    process = subprocess.run(
        [sys.executable, "-m", "lorsp_app.cli", *TRAIN_ARGS, "--out", str(there)],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr

    assert _metrics(here) == _metrics(there)
    assert len(_metrics(here)) == 2
    assert _summary(here) == _summary(there)
    weights = _weights(here)
    assert sorted(weights) == [
        "best.safetensors",
        "epoch-0001.safetensors",
        "epoch-0002.safetensors",
    ]
    assert weights == _weights(there)
    assert _eval(here, tmp_path / "a.json") == _eval(there, tmp_path / "b.json")

    assert cli_main([*TRAIN_ARGS, "--seed", "1", "--out", str(other_seed)]) == 0
    final = "epoch-0002.safetensors"
    assert _weights(other_seed)[final][1] != weights[final][1], "the seed changed nothing"
