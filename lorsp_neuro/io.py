"""Atomic file writes and JSON, for every part of the toolkit; torch-free (the Lava worker uses it).

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: ``path`` always holds either its old or
  its new complete content (temporary file in the same folder, fsync, ``os.replace``, fsync of the
  folder), so a killed process never leaves half a file behind;
- :func:`json_ready`: numpy scalars and arrays, tuples, paths and bytes as plain JSON types, and
  non-finite floats as ``null`` so every file stays standard JSON (``NaN`` is not JSON);
- :func:`write_json`: both together; ``path=None`` writes nothing, so a command's optional
  ``--json FILE`` is one call;
- :func:`write_figure`: a matplotlib figure as a PNG, atomically (matplotlib is not imported here:
  the figure draws itself into memory first).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path, PurePath
from typing import Any

#: Prefix of the temporary files of interrupted atomic writes (see :func:`remove_temp_files`).
TEMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new content."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too, or a crash could resurrect the old file.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_temp_files(directory: str | Path) -> None:
    """Delete leftovers of interrupted atomic writes in ``directory`` (they are never read)."""
    for leftover in Path(directory).glob(f"{TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)


def json_ready(value: Any) -> Any:
    """``value`` with plain JSON types only; NaN and ±Inf become ``None``.

    numpy scalars → Python numbers, arrays and tuples → lists, paths → str, bytes → str (undecodable
    bytes replaced), mapping keys → str. Anything else that ``json`` cannot write is a ``TypeError``
    naming its type.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if type(value).__module__ == "numpy":  # numpy is imported only when its values are present
        import numpy as np

        if isinstance(value, np.ndarray):
            return json_ready(value.tolist())
        if isinstance(value, np.generic):
            return json_ready(value.item())
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_text(payload: Any, *, indent: int | None = 2) -> str:
    """``payload`` (see :func:`json_ready`) as standard JSON text ending in a newline."""
    return json.dumps(json_ready(payload), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path | None, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` atomically; ``path=None`` writes nothing."""
    if path is not None:
        atomic_write_text(path, json_text(payload))


def write_figure(fig, path: str | Path, *, dpi: int = 150) -> Path:
    """Write matplotlib ``fig`` as PNG to ``path`` atomically (a stopped run never leaves half an
    image); the folder is made if needed. The caller closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
