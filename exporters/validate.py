"""Reading, checking and writing NIR files safely (numpy only: the Lava environment uses it too).

:func:`load_nir` is the one way this project opens a NIR file it did not just write: it wraps
``nir.read`` and then :func:`validate_graph` checks what ``nir.read`` does not — node types,
numeric and finite parameters, edges between existing nodes, consistent shapes along every edge,
no cycle without a stateful node (the rules of :mod:`exporters.graph_rules`), and sizes within
:class:`NIRLimits`. Every failure is a :class:`NIRFileError` whose message names the file, the
node and the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import select
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np

from exporters.graph_rules import (
    GraphShapes,
    NIRGraphError,
    check_node,
    infer_shapes,
    node_label,
    recorded_dt,
)


class NIRFileError(NIRGraphError):
    """A NIR file cannot be read or holds a malformed graph; the message names the file."""


@dataclass(frozen=True)
class NIRLimits:
    """Upper bounds a NIR file from elsewhere must respect before anything is built from it."""

    max_file_bytes: int = 2**30
    max_nodes: int = 10_000
    max_edges: int = 100_000
    max_parameters: int = 500_000_000
    max_population: int = 50_000_000  # elements in one node's output, batch excluded
    # Bytes the file's datasets declare, uncompressed: checked before anything is read, since a
    # small compressed (or never written) dataset can declare gigabytes.
    max_declared_bytes: int = 2**31
    # Metadata is printed and copied as JSON by every tool: megabytes there are an attack.
    max_metadata_bytes: int = 2**20
    # libhdf5 is not hardened: one flipped byte in a string heap can make it loop forever, so
    # the file is parsed first in a child process that is killed after this many seconds.
    max_read_seconds: float = 60.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"NIRLimits.{field.name} must be >= 1")


#: The limits :func:`load_nir` applies unless told otherwise.
DEFAULT_LIMITS = NIRLimits()


def validate_graph(graph, limits: NIRLimits = DEFAULT_LIMITS) -> GraphShapes:
    """Check a NIR graph (see the module docstring); return its shapes."""
    if not isinstance(graph, nir.NIRGraph):
        raise NIRGraphError(f"expected a NIRGraph, got {type(graph).__name__}")
    if len(graph.nodes) > limits.max_nodes:
        raise NIRGraphError(f"{len(graph.nodes)} nodes exceed the limit of {limits.max_nodes}")
    if len(graph.edges) > limits.max_edges:
        raise NIRGraphError(f"{len(graph.edges)} edges exceed the limit of {limits.max_edges}")
    parameters = sum(check_node(name, node) for name, node in graph.nodes.items())
    if parameters > limits.max_parameters:
        raise NIRGraphError(
            f"{parameters} parameter values exceed the limit of {limits.max_parameters}"
        )
    if not any(isinstance(node, nir.Input) for node in graph.nodes.values()):
        raise NIRGraphError("the graph has no Input node")
    recorded_dt(graph)
    shapes = infer_shapes(graph)
    for name, shape in shapes.outputs.items():
        if int(np.prod(shape)) > limits.max_population:
            raise NIRGraphError(
                f"{node_label(name, graph.nodes[name])}: {int(np.prod(shape))} elements exceed the "
                f"limit of {limits.max_population}"
            )
    return shapes


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line and at most ``limit`` characters: messages quote values from files."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Deepest group nesting a NIR file needs (node/nodes/<name>/metadata/<nested dicts>) with room.
MAX_HDF5_DEPTH = 32


def check_hdf5_layout(handle, limits: NIRLimits = DEFAULT_LIMITS) -> None:
    """Check an open HDF5 file before ``nir.read`` loads every dataset in it.

    ``nir.write`` makes only hard links, plain numeric/boolean/string datasets stored in the file
    and one name per object. Anything else is refused without reading data: external links and
    external or virtual storage (they make reading pull in other files, e.g. a secret shown by
    ``nir-info``), one object under two names (a group linked into itself never ends), compound,
    reference or complex types, nesting deeper than :data:`MAX_HDF5_DEPTH`, more nodes or edges
    than ``limits`` allow, and datasets declaring more than ``limits.max_declared_bytes`` (metadata:
    ``limits.max_metadata_bytes``).
    """
    import h5py

    root = handle["node"]
    nodes, edges = root.get("nodes"), root.get("edges")
    if isinstance(nodes, h5py.Group) and len(nodes) > limits.max_nodes:
        raise NIRGraphError(f"{len(nodes)} nodes exceed the limit of {limits.max_nodes}")
    if isinstance(edges, h5py.Dataset) and edges.shape and edges.shape[0] > limits.max_edges:
        raise NIRGraphError(f"{edges.shape[0]} edges exceed the limit of {limits.max_edges}")
    declared = metadata = 0
    seen = {root.id}
    pending = [(root, 1)]
    while pending:
        group, depth = pending.pop()
        if depth > MAX_HDF5_DEPTH:
            raise NIRGraphError(f"'{group.name}': groups nested deeper than {MAX_HDF5_DEPTH}")
        prefix = group.name.rstrip("/")
        for key in group:
            where = f"{prefix}/{key}"
            # The low-level link query does not follow the link (h5py's getlink=True is slower).
            if group.id.links.get_info(key.encode()).type != h5py.h5l.TYPE_HARD:
                raise NIRGraphError(f"'{where}' is a soft or external link, not stored data")
            item = group[key]
            if item.id in seen:
                raise NIRGraphError(f"'{where}' names an object that has another name in the file")
            seen.add(item.id)
            if isinstance(item, h5py.Group):
                pending.append((item, depth + 1))
                continue
            if not isinstance(item, h5py.Dataset):
                raise NIRGraphError(f"'{where}' is neither a group nor a dataset")
            if item.external or item.is_virtual:
                raise NIRGraphError(f"'{where}' keeps its data outside the file")
            dtype = item.dtype
            if not (dtype.kind in "biufS" or h5py.check_string_dtype(dtype) is not None) or (
                dtype.names or dtype.subdtype
            ):
                raise NIRGraphError(f"'{where}' has type {dtype}, not numbers or text")
            declared += item.nbytes
            if "/metadata/" in where:
                metadata += item.nbytes
                if metadata > limits.max_metadata_bytes:
                    raise NIRGraphError(
                        f"its metadata declares more than {limits.max_metadata_bytes} bytes "
                        f"(limit max_metadata_bytes; '{where}' alone declares {item.nbytes})"
                    )
            if declared > limits.max_declared_bytes:
                raise NIRGraphError(
                    f"its datasets declare more than {limits.max_declared_bytes} bytes "
                    f"(limit max_declared_bytes; '{where}' alone declares {item.nbytes})"
                )


def _parse_nir(data: bytes, path: Path, limits: NIRLimits, check_layout: bool = True):
    """``nir.read`` of the file's bytes after :func:`check_hdf5_layout`; errors name the file."""
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            if "node" not in handle:
                raise NIRFileError(f"{path}: not a NIR file (no 'node' group)")
            try:
                if check_layout:
                    check_hdf5_layout(handle, limits)
            except NIRGraphError as exc:
                raise NIRFileError(f"{path}: {exc}") from None
        # Type checking here would mutate the graph (adding Input/Output nodes) and stop at the
        # first mismatch with a terse message; validate_graph does the same checks with names.
        return nir.read(io.BytesIO(data), type_check=False)
    except NIRFileError:
        raise
    except Exception as exc:  # nir.read raises bare KeyError/AssertionError/TypeError on bad files
        detail = one_line(str(exc) or type(exc).__name__)
        raise NIRFileError(f"{path}: not a readable NIR graph: {detail}") from exc


def _parse_nir_in_child(data: bytes, path: Path, limits: NIRLimits) -> None:
    """Run :func:`_parse_nir` in a forked child under ``limits.max_read_seconds``.

    libhdf5 parses the same bytes the same way twice, so once a child has parsed them without
    hanging or crashing, the caller's own parse is safe. A :class:`NIRFileError` in the child is
    raised here; a hang or a crash of the library becomes one too.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into the caller's code
        code, message = 0, b""
        try:
            os.close(read_end)
            _parse_nir(data, path, limits)
        except NIRFileError as exc:
            code, message = 1, str(exc).encode(errors="replace")
        except BaseException as exc:
            code, message = 2, f"{path}: not a readable NIR graph: {exc!r}".encode(errors="replace")
        finally:
            with contextlib.suppress(OSError):
                os.write(write_end, message[:_MAX_CHILD_MESSAGE])
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + limits.max_read_seconds
    chunks: list[bytes] = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                raise NIRFileError(
                    f"{path}: reading did not finish within {limits.max_read_seconds:g} s "
                    "(limit max_read_seconds); its HDF5 structure is damaged or hostile"
                )
            chunk = os.read(read_end, _MAX_CHILD_MESSAGE)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
        raise NIRFileError(
            f"{path}: the HDF5 library crashed reading it (signal {os.WTERMSIG(status)}); "
            "the file is damaged or hostile"
        )
    if message:
        raise NIRFileError(message)


_MAX_CHILD_MESSAGE = 65536


def load_nir(path: str | os.PathLike, limits: NIRLimits = DEFAULT_LIMITS) -> nir.NIRGraph:
    """Read and validate a NIR file; raise :class:`NIRFileError` naming the file and the problem.

    The bytes are read once; they are parsed in a child process first (where fork exists, see
    :func:`_parse_nir_in_child`), then here, then checked by :func:`validate_graph`.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise NIRFileError(f"{path}: no such file")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise NIRFileError(f"{path}: {size} bytes exceed the limit of {limits.max_file_bytes}")
    if not h5py.is_hdf5(path):
        raise NIRFileError(f"{path}: not a NIR file (not HDF5)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NIRFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > limits.max_file_bytes:
        raise NIRFileError(f"{path}: {len(data)} bytes exceed the limit of {limits.max_file_bytes}")
    isolated = hasattr(os, "fork")
    if isolated:
        _parse_nir_in_child(data, path, limits)
    graph = _parse_nir(data, path, limits, check_layout=not isolated)
    try:
        validate_graph(graph, limits)
    except NIRGraphError as exc:
        raise NIRFileError(f"{path}: {one_line(str(exc))}") from exc
    return graph


def write_nir(graph: nir.NIRGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` with ``nir.write`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
