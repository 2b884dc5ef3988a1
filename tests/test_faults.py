"""Faults: killed training runs, damaged checkpoints, a killed Lava worker, NaN/Inf.

* A ``lorsp train`` process is killed with SIGKILL at five points (mid-epoch, while writing a
  checkpoint, between an epoch's metrics line and its checkpoint, after a checkpoint, and from
  outside once a checkpoint exists); ``--resume`` then finishes with the same bytes in the final checkpoint, the same best
  weights and the same metrics as a run never killed.
* Cut-short, altered, pickled and NaN-holding checkpoints are never loaded, and no code in them
  runs.
* The Lava worker killed with SIGKILL, or timed out, leaves no process and no temporary files
  behind and is reported in one clear error.
* NaN/Inf in a dataset's images, or in a prompt parameter, stops the run with an error that says
  so; nothing is trained on it.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lorsp_app.cli import main as cli_main
from lorsp_neuro import checkpoint as ckpt
from lorsp_neuro import data
from lorsp_neuro.checkpoint import CheckpointError
from lorsp_neuro.data import DatasetError, DatasetSource, RawDataset, load_dataset
from lorsp_neuro.errors import LorspError
from lorsp_neuro.training import train

REPO = Path(__file__).resolve().parents[1]

#: A 3-epoch run of 4 optimizer steps each: a random 96-feature ResNet on 16 px Fashion-MNIST.
TRAIN_ARGS = [
    "train", "--prompter", "lorsp", "--backbone", "timm:test_resnet", "--no-pretrained",
    "--dataset", "fashion_mnist", "--train-size", "64", "--val-size", "32", "--test-size", "32",
    "--image-size", "16", "--epochs", "3", "--batch-size", "16", "--eval-batch-size", "32",
    "--lr", "0.01", "--device", "cpu", "--num-threads", "1", "--no-progress",
]  # fmt: skip
FINAL = "checkpoints/epoch-0003.safetensors"

#: Code run in the training process before ``lorsp train``: each kills the process (SIGKILL, as
#: the kernel's OOM killer or ``kill -9`` would) at one moment of epoch 2.
KILL_POINTS = {
    "mid-epoch (optimizer step 6 of 12)": """
import torch
real_step = torch.optim.AdamW.step
steps = [0]
def step(self, *args, **kwargs):
    steps[0] += 1
    if steps[0] == 6:
        die()
    return real_step(self, *args, **kwargs)
torch.optim.AdamW.step = step
""",
    "half-way through writing epoch 2's checkpoint": """
import tempfile
from lorsp_neuro import checkpoint
from lorsp_neuro.io import TEMP_PREFIX
real_write = checkpoint.atomic_write_bytes
def write(path, data):
    if path.name == "epoch-0002.safetensors":
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        die()
    real_write(path, data)
checkpoint.atomic_write_bytes = write
""",
    "after epoch 2's metrics line, before its checkpoint": """
from lorsp_neuro import checkpoint
real_write = checkpoint.atomic_write_bytes
def write(path, data):
    if path.name == "epoch-0002.safetensors":
        die()
    real_write(path, data)
checkpoint.atomic_write_bytes = write
""",
    "after epoch 2's checkpoint": """
from lorsp_neuro import checkpoint
real_prune = checkpoint.prune_checkpoints
def prune(directory, keep):
    real_prune(directory, keep)
    if (directory / "epoch-0002.safetensors").exists():
        die()
checkpoint.prune_checkpoints = prune
""",
}
RUNNER = """
import json, os, signal, sys
def die():
    os.kill(os.getpid(), signal.SIGKILL)
{hook}
from lorsp_app.cli import main
sys.exit(main(json.loads(sys.argv[1])))
"""


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("seconds")}


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [_without_timing(json.loads(line)) for line in lines]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """The reference: the same run, never interrupted (in-process, as the resumes are)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert cli_main([*TRAIN_ARGS, "--out", str(run)]) == 0
    return run


def safetensors_content(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (header, tensor bytes).

    The file bytes themselves can differ between two identical saves: safetensors writes its
    metadata map in a per-process random order. Header and tensor bytes are what must be equal.
    """
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def assert_same_run(resumed: Path, straight: Path) -> None:
    """Bit-identical final checkpoint (every tensor, optimizer and RNG state included) and best
    weights, identical metrics and summary, no temporary file left."""
    assert safetensors_content(resumed / FINAL) == safetensors_content(straight / FINAL)
    best_resumed, best_straight = (
        load_file(str(run / "best.safetensors")) for run in (resumed, straight)
    )
    assert best_resumed.keys() == best_straight.keys()
    for key in best_straight:
        assert torch.equal(best_resumed[key], best_straight[key]), key
    assert _metrics(resumed) == _metrics(straight)
    assert [r["epoch"] for r in _metrics(resumed)] == [1, 2, 3]
    summaries = [json.loads((run / "summary.json").read_text()) for run in (resumed, straight)]
    assert _without_timing(summaries[0]) == _without_timing(summaries[1])
    leftovers = [*resumed.glob(".tmp-*"), *(resumed / "checkpoints").glob(".tmp-*")]
    assert not leftovers, leftovers


def _resume(run: Path, capsys) -> None:
    capsys.readouterr()
    assert cli_main([*TRAIN_ARGS, "--out", str(run), "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# --------------------------------------------------------------------------------------------
# Training killed with SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_run_killed_at_any_point_resumes_to_the_same_weights(
    point, straight_run, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = [*TRAIN_ARGS, "--out", str(run)]
    killed = subprocess.run(
        [sys.executable, "-c", RUNNER.format(hook=KILL_POINTS[point]), json.dumps(argv)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "summary.json").exists()
    assert (run / "checkpoints" / "epoch-0001.safetensors").exists()
    _resume(run, capsys)
    assert_same_run(run, straight_run)


@pytest.mark.slow
def test_a_run_killed_from_outside_once_a_checkpoint_exists_resumes_to_the_same_weights(
    straight_run, tmp_path, capsys
):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lorsp_app.cli", *TRAIN_ARGS, "--out", str(run)],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    first = run / "checkpoints" / "epoch-0001.safetensors"
    deadline = time.monotonic() + 600
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "summary.json").exists()
    _resume(run, capsys)
    assert_same_run(run, straight_run)


# --------------------------------------------------------------------------------------------
# Damaged and hostile checkpoints


def _copy_run(source: Path, target: Path) -> Path:
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


def _cli_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err, err
    return err


class _Exploit:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_damaged_or_hostile_checkpoints_are_refused_and_run_no_code(straight_run, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Exploit(control)))
    assert control.exists(), "the exploit does not run code under plain pickle"
    run = _copy_run(straight_run, tmp_path / "run")
    best = run / "best.safetensors"
    intact = best.read_bytes()

    best.write_bytes(intact[: len(intact) // 2])  # a copy cut short
    assert "incomplete or corrupt" in _cli_error(["eval", str(run)], capsys)
    flipped = bytearray(intact)
    flipped[-5] ^= 0x01  # one bit in a weight
    best.write_bytes(bytes(flipped))
    assert "do not match their digest" in _cli_error(["eval", str(run)], capsys)
    with open(best, "wb") as fh:  # a pickle that runs code when unpickled, under the same name
        pickle.dump({"w": _Exploit(marker)}, fh)
    _cli_error(["eval", str(run)], capsys)
    _cli_error(["export", str(run), "-o", str(tmp_path / "p.nir")], capsys)
    torch.save({"state_dict": _Exploit(marker)}, tmp_path / "weights.pth")
    with pytest.raises(LorspError, match=r"weights\.pth"):
        from lorsp_neuro.backbones import create_backbone

        create_backbone("test_resnet", weights_path=tmp_path / "weights.pth")
    assert not marker.exists(), "a checkpoint's pickle ran code"

    # A temp file of an interrupted write is never read, and --resume skips a cut-short newest
    # checkpoint for the previous complete one, and still ends identical.
    best.write_bytes(intact)
    resumed = _copy_run(straight_run, tmp_path / "resumed")
    (resumed / "summary.json").unlink()
    newest = resumed / "checkpoints" / "epoch-0003.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    (resumed / "checkpoints" / ".tmp-epoch-0004.safetensors.x").write_bytes(intact[:100])
    with pytest.warns(UserWarning, match="skipping damaged checkpoint.*epoch-0003"):
        _resume(resumed, capsys)
    assert_same_run(resumed, straight_run)


@pytest.mark.slow
def test_a_checkpoint_holding_nan_is_refused(straight_run, tmp_path, capsys):
    run = _copy_run(straight_run, tmp_path / "run")
    tensors, info = ckpt.load_checkpoint(run / "best.safetensors")
    name = next(k for k in sorted(tensors) if k.startswith("prompter.") and "value_" in k)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    ckpt.save_checkpoint(run / "best.safetensors", tensors, info)  # a valid file, digest and all
    with pytest.raises(CheckpointError, match=f"NaN or Inf.*{name}"):
        ckpt.load_checkpoint(run / "best.safetensors")
    assert name in _cli_error(["eval", str(run)], capsys)


# --------------------------------------------------------------------------------------------
# NaN/Inf in the data or in a prompt


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels_stop_the_run_before_training(poison, monkeypatch):
    images = np.random.default_rng(0).uniform(0, 1, size=(40, 1, 8, 8))
    images[7, 0, 3, 3] = poison

    def poisoned(path, image_size):
        return RawDataset(images, np.arange(40) % 2, ("a", "b"))

    source = DatasetSource("poisoned", poisoned, "float images, one bad pixel", False, False)
    monkeypatch.setitem(data._SOURCES, "poisoned", source)
    with pytest.raises(DatasetError, match=r"poisoned/train image 7 has NaN or Inf pixels"):
        load_dataset("poisoned", train_size=40, val_size=0, test_size=0, image_size=8)
    with pytest.raises(DatasetError, match="image 7 has NaN or Inf pixels"):
        train({
            "prompter": "lor_vp", "backbone": "timm:test_resnet", "pretrained": False,
            "dataset": "poisoned", "train_size": 24, "val_size": 8, "test_size": 8,
            "image_size": 8, "epochs": 1, "batch_size": 8, "progress": False,
        })  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "parameter",
    [
        # V = B A feeds the prompt directly: a NaN makes the prompt and the loss NaN at once.
        pytest.param("value_right", id="a factor of the values V"),
        # A NaN gate drive never crosses threshold: the loss stays finite, so the loop's
        # check of the trainable tensors after each step is what stops it.
        pytest.param("gate_affine.weight", id="a gate weight"),
    ],
)
def test_a_nan_prompt_parameter_stops_training(parameter, monkeypatch, tmp_path):
    from lorsp_neuro import training

    build = training.build_model

    def poisoned_model(config, num_classes, backbone=None):
        model = build(config, num_classes, backbone)
        with torch.no_grad():
            model.prompter.spiking_core.get_parameter(parameter).view(-1)[0] = float("nan")
        return model

    monkeypatch.setattr(training, "build_model", poisoned_model)
    with pytest.raises(LorspError, match=r"(?i)nan") as raised:
        train({
            "prompter": "lorsp", "backbone": "timm:test_resnet", "pretrained": False,
            "dataset": "fashion_mnist", "train_size": 32, "val_size": 16, "test_size": 16,
            "image_size": 16, "epochs": 1, "batch_size": 16, "progress": False,
            "out": str(tmp_path / "run"),
        })  # fmt: skip
    if parameter == "gate_affine.weight":  # the loss stayed finite: the tensor is named
        assert "prompter.spiking_core.gate_affine.weight" in str(raised.value)


# --------------------------------------------------------------------------------------------
# The Lava worker killed or timed out


def _group_members(pgid: int) -> list[int]:
    """Processes (not zombies) in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _mapped_shared_memory(pids: list[int]) -> set[str]:
    """The /dev/shm files these processes map: Lava's shared-memory channels."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/dev/shm/"):
                found.add(parts[5].removesuffix(" (deleted)"))
    return found


@pytest.fixture
def lava_call(monkeypatch, tmp_path):
    """Start run_lava on a Dense → LIF graph in a thread; give access to its worker process."""
    from hardware_sims import client, run_lava
    from hardware_sims.smoke import dense_lif_graph

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(client.subprocess, "Popen", popen)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # run_lava's work folder goes here
    graph = tmp_path / "dense_lif.nir"
    nir.write(str(graph), dense_lif_graph())

    class Call:
        def __init__(self, steps: int, timeout: float):
            self.outcome: dict = {}
            self.temp, self.started = temp, started
            self.thread = threading.Thread(target=self._run, args=(steps, timeout))
            self.thread.start()

        def _run(self, steps, timeout):
            try:
                run_lava(graph, {"input": np.ones((steps, 2))}, steps, timeout=timeout)
            except BaseException as exc:  # checked by the test
                self.outcome["error"] = exc

        def wait_until_lava_runs(self) -> list[int]:
            """Members of the worker's process group once Lava's runtime processes exist."""
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and self.thread.is_alive():
                members = _group_members(started[0].pid) if started else []
                if len(members) >= 5 and _mapped_shared_memory(members):
                    return members
                time.sleep(0.05)
            raise AssertionError(f"Lava's runtime never started: {self.outcome}")

        def error(self, within: float) -> BaseException | None:
            self.thread.join(timeout=within)
            assert not self.thread.is_alive(), f"run_lava still running {within} s after the kill"
            return self.outcome.get("error")

        def assert_nothing_left(self) -> None:
            assert len(started) == 1
            deadline = time.monotonic() + 10
            while _group_members(started[0].pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _group_members(started[0].pid), "worker processes were left running"
            assert not list(temp.iterdir()), f"temporary files were left: {list(temp.iterdir())}"

    return Call


@pytest.mark.lava
@pytest.mark.slow
def test_a_timed_out_lava_worker_is_reported_and_leaves_nothing_behind(lava_call):
    # Enough steps that no machine finishes them within the 1 s limit (20 steps take ~0.7 s).
    call = lava_call(steps=100_000, timeout=1.0)
    error = call.error(within=120)
    assert isinstance(error, LorspError), error
    assert str(error) == "Lava worker timed out after 1 s (100000 steps of dense_lif.nir)"
    call.assert_nothing_left()


@pytest.mark.lava
@pytest.mark.slow
def test_a_killed_lava_worker_group_is_reported_and_leaves_no_process_or_folder(lava_call):
    """SIGKILL to the worker's whole process group while Lava runs (as the OOM killer might)."""
    call = lava_call(steps=5000, timeout=600)
    call.wait_until_lava_runs()
    os.killpg(call.started[0].pid, signal.SIGKILL)
    error = call.error(within=60)
    assert isinstance(error, LorspError), error
    assert str(error).startswith("Lava worker exited with code -9"), error
    call.assert_nothing_left()


@pytest.mark.lava
@pytest.mark.slow
def test_a_killed_lava_worker_leaves_no_shared_memory(lava_call):
    """The client unlinks Lava's /dev/shm segments although the kill left no process to do it."""
    call = lava_call(steps=5000, timeout=600)
    segments = _mapped_shared_memory(call.wait_until_lava_runs())
    assert any("/psm_" in path for path in segments), segments
    os.killpg(call.started[0].pid, signal.SIGKILL)
    assert isinstance(call.error(within=60), LorspError)
    leaked = sorted(path for path in segments if Path(path).exists())
    for path in leaked:  # not the test's to keep, even when the test fails
        Path(path).unlink(missing_ok=True)
    assert not leaked, f"{len(leaked)} of {len(segments)} shared-memory segments leaked"


@pytest.mark.lava
@pytest.mark.slow
def test_a_killed_lava_worker_main_process_is_noticed_at_once(lava_call):
    call = lava_call(steps=5000, timeout=30)
    segments = _mapped_shared_memory(call.wait_until_lava_runs())
    os.kill(call.started[0].pid, signal.SIGKILL)  # the worker only: its runtime processes live on
    try:
        error = call.error(within=20)
        assert isinstance(error, LorspError) and "-9" in str(error), error
    finally:
        call.error(within=120)  # do not leave the call running into the next test
        for path in segments:
            Path(path).unlink(missing_ok=True)
    call.assert_nothing_left()
