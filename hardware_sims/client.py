"""Main-side client of the Lava worker.

The main environment cannot import Lava (Python 3.11, numpy 2); the worker runs in the Lava
environment and is given only a NIR file and input arrays, so every run also proves that the NIR
file is complete on its own. Every failure — missing environment, bad file, exception inside Lava,
timeout, crash — reaches the caller as one :class:`LavaWorkerError` carrying the worker's message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardware_sims.worker_protocol import RECORDABLE, SHARED_MEMORY_LIST
from lorsp_neuro.errors import LorspError

#: Environment variable that overrides the Lava interpreter.
LAVA_PYTHON_ENV = "LORSP_LAVA_PYTHON"
REPO_ROOT = Path(__file__).resolve().parent.parent


class LavaWorkerError(LorspError, RuntimeError):
    """The Lava worker could not produce a result; the message says why."""


@dataclass
class LavaRunResult:
    """What the worker recorded.

    ``records[node][kind]`` is an array for every neuron node and recorded kind (``spikes``,
    ``v``, ``u``): ``(steps, *node_shape)`` in Lava's time base from :func:`run_lava`,
    ``(images, steps, *node_shape)`` aligned from :func:`run_lava_images`; ``status`` is the
    worker's JSON status (wall and run times, versions, delays, the mapping it applied).
    """

    records: dict[str, dict[str, np.ndarray]]
    status: dict = field(default_factory=dict)

    def spikes(self, node: str) -> np.ndarray:
        return self.records[node]["spikes"]


def lava_python() -> Path:
    """The interpreter of the Lava environment: ``$LORSP_LAVA_PYTHON`` or ``.venv-lava``."""
    override = os.environ.get(LAVA_PYTHON_ENV)
    path = Path(override) if override else REPO_ROOT / ".venv-lava" / "bin" / "python"
    if not path.exists():
        raise LavaWorkerError(
            f"Lava environment not found: {path} does not exist. Run `make setup` "
            f"(or set {LAVA_PYTHON_ENV} to a Python 3.10 interpreter with lava-nc installed)."
        )
    return path


def _kill_group(proc: subprocess.Popen, workdir: Path) -> None:
    """Kill the worker's whole session and unlink the shared memory its processes created.

    Lava starts its own runtime processes and talks to them through ``/dev/shm`` segments; a
    killed or timed-out worker cannot release them, so the client unlinks them by the names the
    worker listed as it created them (:data:`~hardware_sims.worker_protocol.SHARED_MEMORY_LIST`):
    the segments of other Lava runs are never touched.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    listing = workdir / SHARED_MEMORY_LIST
    names = listing.read_text().split() if listing.exists() else []  # none: no segment made yet
    for name in names:  # "/psm_…": POSIX shared memory lives in /dev/shm on Linux
        with contextlib.suppress(OSError):
            (Path("/dev/shm") / Path(name).name).unlink()


def run_lava(
    graph_path: str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    record: Sequence[str] = ("spikes",),
    *,
    dt: float | None = None,
    precision: str = "floating_pt",
    timeout: float = 600.0,
    python: str | os.PathLike | None = None,
) -> LavaRunResult:
    """Run a NIR graph in Lava for ``steps`` steps and return what was recorded.

    ``inputs`` maps each NIR ``Input`` node name to an array of shape ``(steps, *input_shape)``.
    Records are in Lava's time base: node ``n`` runs ``status["delays"][n]`` steps behind the
    discrete model. ``dt`` defaults to the ``dt`` in the graph's metadata. The call is bounded by
    ``timeout`` seconds; temporary files are removed whatever happens.
    """
    request = {
        "mode": "raw",
        "steps": steps,
        "record": list(record),
        "dt": dt,
        "precision": precision,
    }
    return _call_worker(graph_path, inputs, request, timeout, python)


def run_lava_images(
    graph_path: str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    record: Sequence[str] = ("spikes",),
    *,
    dt: float | None = None,
    precision: str = "floating_pt",
    input_ranges: Mapping[str, float] | None = None,
    timeout: float = 600.0,
    python: str | os.PathLike | None = None,
) -> LavaRunResult:
    """Run several images through a NIR graph in one Lava worker call, aligned to the discrete model.

    ``inputs[name]`` has shape ``(images, steps, *input_shape)``; ``records[node][kind]`` has shape
    ``(images, steps, *node_shape)`` and step ``s`` is step ``s`` of the discrete model (Lava's
    one-step delay per connection removed; images run back to back with a state reset, see
    :mod:`hardware_sims.plan`). ``v``/``u`` are in the graph's float units for both precisions.
    ``input_ranges`` bounds ``|x|`` per input for the ``fixed_pt`` payload (default: the data's
    largest value).
    """
    request = {
        "mode": "images",
        "steps": steps,
        "record": list(record),
        "dt": dt,
        "precision": precision,
        "input_ranges": dict(input_ranges) if input_ranges else None,
    }
    return _call_worker(graph_path, inputs, request, timeout, python)


def run_netx(
    netx_path: str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    steps: int,
    record: Sequence[str] = ("spikes", "v"),
    *,
    timeout: float = 600.0,
    python: str | os.PathLike | None = None,
) -> LavaRunResult:
    """Run a netx file (:mod:`hardware_sims.netx`) with lava-dl and with our own Lava processes.

    ``inputs``: ``bias/<block>`` ``(images, size)`` bias mantissas and, for a streamed input,
    ``payload`` ``(images, steps, n_in)`` integers. ``records["netx/<block>"]`` and
    ``records["lava/<block>"]`` are ``(images, steps, size)``, aligned to the discrete model.
    """
    request = {"mode": "netx", "steps": steps, "record": list(record)}
    return _call_worker(netx_path, inputs, request, timeout, python)


def _call_worker(graph_path, inputs, request: dict, timeout: float, python) -> LavaRunResult:
    steps = request["steps"]
    if steps < 1:
        raise LavaWorkerError(f"steps must be >= 1, got {steps}")
    unknown = set(request["record"]) - set(RECORDABLE)
    if unknown:
        raise LavaWorkerError(f"cannot record {sorted(unknown)}; choose from {RECORDABLE}")
    graph_path = Path(graph_path)
    if not graph_path.is_file():
        raise LavaWorkerError(f"NIR file not found: {graph_path}")
    interpreter = Path(python) if python else lava_python()

    workdir = Path(tempfile.mkdtemp(prefix="lorsp-lava-"))
    try:
        arrays = {name: np.asarray(value, dtype=np.float64) for name, value in inputs.items()}
        np.savez(workdir / "inputs.npz", **arrays)
        shutil.copyfile(graph_path, workdir / "graph.nir")
        request = {**request, "graph": "graph.nir", "inputs": "inputs.npz", "steps": int(steps)}
        (workdir / "request.json").write_text(json.dumps(request))
        env = dict(os.environ)
        # The worker must find this checkout's hardware_sims even when the Lava env has no
        # editable install of it (e.g. an interpreter given through LORSP_LAVA_PYTHON).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        # Output goes to a file, not a pipe: Lava's runtime processes inherit the descriptor and
        # would keep a pipe open after the worker died, hiding the death until the timeout.
        log_path = workdir / "worker.log"
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [str(interpreter), "-m", "hardware_sims.worker", str(workdir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                    start_new_session=True,
                )
        except OSError as exc:
            raise LavaWorkerError(f"cannot start the Lava worker {interpreter}: {exc}") from exc
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, workdir)
            raise LavaWorkerError(
                f"Lava worker timed out after {timeout:g} s ({steps} steps of {graph_path.name})"
            ) from None
        except BaseException:
            _kill_group(proc, workdir)
            raise
        # Lava may leave runtime helpers behind after the parent exits (always, if it was killed).
        _kill_group(proc, workdir)
        output = log_path.read_bytes()
        text = output.decode(errors="replace").strip()
        status_file = workdir / "status.json"
        if not status_file.exists():
            tail = "\n".join(text.splitlines()[-20:])
            raise LavaWorkerError(
                f"Lava worker exited with code {proc.returncode} without a status:\n{tail}"
            )
        status = json.loads(status_file.read_text())
        if not status.get("ok"):
            raise LavaWorkerError(f"Lava worker failed: {status.get('error', 'unknown error')}")
        records: dict[str, dict[str, np.ndarray]] = {}
        with np.load(workdir / "result.npz") as result:
            for key in result.files:
                node, kind = key.rsplit("/", 1)
                records.setdefault(node, {})[kind] = result[key]
        return LavaRunResult(records=records, status=status)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
