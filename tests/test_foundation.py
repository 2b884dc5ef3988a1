"""Both environments work: a Norse step in .venv, a Lava run through the worker in .venv-lava."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from norse.torch import LIFBoxCell, LIFCell, LIFParameters
from norse.torch.module.lif_box import LIFBoxParameters

from exporters.semantics import DiscreteNeuron, SemanticsError, discretize, step
from hardware_sims import LavaWorkerError, run_lava
from hardware_sims.smoke import dense_lif_graph, dense_lif_smoke, expected_lava_spikes
from lorsp_app.cli import main as cli_main


def test_norse_lif_step_matches_hand_computation():
    p = LIFParameters(
        tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.5)
    )
    cell = LIFCell(p, dt=1e-3)
    x = torch.tensor([[2.0, 30.0]])
    z, state = cell(x)
    # Norse 1.1.0 (DESIGN.md §2): i' = i + x; v = v + dt·τm⁻¹(v_leak − v + i'); i = (1 − dt·τs⁻¹) i'
    v = 0.1 * x
    assert torch.allclose(z, (v > 0.5).float())
    assert torch.allclose(state.v, torch.where(v > 0.5, torch.zeros_like(v), v))
    assert torch.allclose(state.i, 0.8 * x)


def test_canonical_form_reproduces_norse_lifcell_and_lifboxcell():
    dt, steps = 1e-3, 30
    x = torch.rand(steps, 5, dtype=torch.float64) * 8
    cell = LIFCell(
        LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0)), dt=dt
    )
    box = LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.tensor(100.0)), dt=dt)
    cuba = discretize(
        nir.CubaLIF(
            tau_syn=np.full(5, 1 / 200),
            tau_mem=np.full(5, 1 / 100),
            r=np.ones(5),
            v_leak=np.zeros(5),
            v_threshold=np.ones(5),
            w_in=np.full(5, 1 / (dt * 200)),
        ),
        dt,
    )
    lif = discretize(
        nir.LIF(tau=np.full(5, 1 / 100), r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.ones(5)),
        dt,
    )
    for module, coeffs in ((cell, cuba), (box, lif)):
        state, u, v, fired = None, np.zeros(5), np.zeros(5), 0
        for t in range(steps):
            z, state = module(x[t], state)
            # Norse's i' is the un-decayed current; the canonical u is dv·r·i'.
            s, u, v = step(coeffs, u, v, x[t].numpy())
            np.testing.assert_array_equal(z.detach().numpy(), s)
            np.testing.assert_allclose(state.v.detach().numpy(), v, atol=1e-12)
            fired += s.sum()
        assert 0 < fired < steps * 5


def test_discretize_rejects_bad_parameters():
    node = nir.LIF(
        tau=np.array([0.01, -1.0]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2)
    )
    with pytest.raises(SemanticsError, match="tau"):
        discretize(node, 1e-3, "lif1")
    good = nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    with pytest.raises(SemanticsError, match="dt"):
        discretize(good, 0.0)
    assert isinstance(discretize(good, 1e-3), DiscreteNeuron)


@pytest.mark.lava
def test_lava_dense_lif_matches_hand_computed_spike_train():
    report = dense_lif_smoke(steps=20)
    assert report["matches"], report
    # a spike train that tests something: some neurons fire, not every step
    assert 0 < report["spikes"] < 20 * 3
    assert report["lava_version"] == "0.10.0"


def test_hand_computation_is_not_trivial():
    x = np.random.default_rng(0).uniform(0.0, 3.0, size=(20, 2))
    spikes = expected_lava_spikes(x)
    assert spikes[0].sum() == 0  # Dense delays by one step
    assert 0 < spikes.sum() < spikes.size


@pytest.mark.lava
def test_lava_records_voltage_and_reports_delay(tmp_path):
    path = tmp_path / "g.nir"
    nir.write(str(path), dense_lif_graph())
    x = np.ones((10, 2))
    result = run_lava(path, {"input": x}, 10, record=("spikes", "v", "u"))
    assert result.records["lif"]["v"].shape == (10, 3)
    assert result.status["delays"] == {"lif": 1}
    assert np.all(result.records["lif"]["u"][0] == 0)


def _leftover_tempdirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "lorsp-lava-*")))


def test_missing_lava_environment_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "g.nir"
    nir.write(str(path), dense_lif_graph())
    monkeypatch.setenv("LORSP_LAVA_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(LavaWorkerError, match="Lava environment not found"):
        run_lava(path, {"input": np.ones((5, 2))}, 5)


@pytest.mark.lava
def test_malformed_nir_file_reaches_caller_and_cleans_up(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"this is not HDF5")
    before = _leftover_tempdirs()
    with pytest.raises(LavaWorkerError, match="Lava worker failed"):
        run_lava(bad, {"input": np.ones((5, 2))}, 5)
    assert _leftover_tempdirs() == before


@pytest.mark.lava
def test_wrong_input_shape_is_reported_by_name(tmp_path):
    path = tmp_path / "g.nir"
    nir.write(str(path), dense_lif_graph())
    with pytest.raises(LavaWorkerError, match="input 'input' has shape"):
        run_lava(path, {"input": np.ones((5, 7))}, 5)


def test_worker_timeout_kills_the_process_group(tmp_path):
    # A fake interpreter that hangs (and starts a child that would hang too).
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{sys.executable} -c 'import time; time.sleep(300)' &\nsleep 300\n")
    fake.chmod(0o755)
    path = tmp_path / "g.nir"
    nir.write(str(path), dense_lif_graph())
    before = _leftover_tempdirs()
    with pytest.raises(LavaWorkerError, match="timed out"):
        run_lava(path, {"input": np.ones((5, 2))}, 5, timeout=2, python=fake)
    assert _leftover_tempdirs() == before
    survivors = subprocess.run(
        ["pgrep", "-f", "time.sleep\\(300\\)"], capture_output=True, text=True
    )
    assert survivors.stdout.strip() == ""


def test_worker_crash_is_reported(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault (simulated)' >&2\nexit 139\n")
    fake.chmod(0o755)
    path = tmp_path / "g.nir"
    nir.write(str(path), dense_lif_graph())
    with pytest.raises(LavaWorkerError, match=r"(?s)exited with code 139.*Segmentation"):
        run_lava(path, {"input": np.ones((5, 2))}, 5, python=fake)


def test_worker_imports_no_torch():
    root = Path(__file__).resolve().parent.parent
    lava_py = root / ".venv-lava" / "bin" / "python"
    code = "import sys, hardware_sims.worker, hardware_sims.lava_backend; print('torch' in sys.modules)"
    out = subprocess.run(
        [str(lava_py), "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert out.stdout.strip() == "False"


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    assert "lava-check" in capsys.readouterr().out
