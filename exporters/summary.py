"""What a NIR graph holds, as a JSON-ready dict and as text (``lorsp nir-info``); numpy only."""

from __future__ import annotations

import dataclasses
import textwrap

import nir
import numpy as np

from exporters.semantics import NEURON_TYPES, STATEFUL_TYPES
from exporters.validate import validate_graph

_SKIP_FIELDS = {"input_type", "output_type", "metadata"}


def json_ready(value):
    """Metadata as plain JSON types: numpy scalars → numbers, arrays → lists, bytes → str."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def parameter_count(node) -> int:
    """Number of stored numeric values of a node (weights, biases, neuron parameters)."""
    count = 0
    for field in dataclasses.fields(node):
        if field.name in _SKIP_FIELDS:
            continue
        value = getattr(node, field.name)
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number):
            count += int(value.size)
    return count


def summarize_graph(graph: nir.NIRGraph) -> dict:
    """Nodes (type, shapes, parameter and neuron counts, metadata), edges, totals, metadata."""
    shapes = validate_graph(graph)
    nodes = []
    for name in shapes.order.order:
        node = graph.nodes[name]
        kind = type(node).__name__
        size = int(np.prod(shapes.outputs[name]))
        nodes.append(
            {
                "name": name,
                "type": kind,
                "input_shape": list(shapes.inputs[name]),
                "output_shape": list(shapes.outputs[name]),
                "parameters": parameter_count(node),
                "neurons": size if kind in STATEFUL_TYPES else 0,
                "metadata": json_ready(node.metadata or {}),
            }
        )
    return {
        "nodes": nodes,
        "edges": [list(edge) for edge in graph.edges],
        "recurrent_edges": sorted(list(edge) for edge in shapes.order.recurrent),
        "totals": {
            "nodes": len(nodes),
            "edges": len(graph.edges),
            "parameters": sum(n["parameters"] for n in nodes),
            "neurons": sum(n["neurons"] for n in nodes),
            "spiking_neurons": sum(n["neurons"] for n in nodes if n["type"] in NEURON_TYPES),
        },
        "metadata": json_ready(graph.metadata or {}),
    }


def _short(value, limit: int = 72) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Numeric metadata arrays with more values than this are shown by shape and range.
_LISTED_VALUES = 8
#: Long metadata text is wrapped onto at most this many lines of this width.
_TEXT_LINES, _TEXT_WIDTH = 3, 88


def _metadata_value(value) -> list[str]:
    """A metadata value as text lines: big numeric arrays by shape and range, text wrapped."""
    if isinstance(value, list) and value:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # ragged, or not numbers
            array = None
        if array is not None and array.size > _LISTED_VALUES:
            shape = "×".join(map(str, array.shape))
            return [f"{shape} array in [{np.min(array):.4g}, {np.max(array):.4g}]"]
    if isinstance(value, str) and len(value) > _TEXT_WIDTH:
        lines = textwrap.wrap(value, _TEXT_WIDTH, max_lines=_TEXT_LINES, placeholder=" …")
        return lines or [_short(value)]
    return [_short(value)]


def format_summary(summary: dict, source: str = "") -> str:
    """The summary as an aligned text table (metadata: big arrays by shape and range, text wrapped)."""
    shape = "×".join
    lines = [f"NIR graph {source}".rstrip()]
    header = ("node", "type", "input", "output", "params", "neurons")
    rows = [
        (
            n["name"],
            n["type"],
            shape(map(str, n["input_shape"])),
            shape(map(str, n["output_shape"])),
            str(n["parameters"]),
            str(n["neurons"]) if n["neurons"] else "",
        )
        for n in summary["nodes"]
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    lines.append("edges:")
    recurrent = {tuple(e) for e in summary["recurrent_edges"]}
    for src, dst in summary["edges"]:
        lines.append(
            f"  {src} → {dst}" + ("  (recurrent: previous step)" if (src, dst) in recurrent else "")
        )
    totals = summary["totals"]
    lines.append(
        f"totals: {totals['nodes']} nodes, {totals['edges']} edges, {totals['parameters']} "
        f"parameters, {totals['neurons']} neurons ({totals['spiking_neurons']} spiking)"
    )
    lines.append("metadata:")

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            first, *rest = _metadata_value(value)
            lines.append(f"  {prefix[:-1]} = {first}")
            lines.extend(f"      {line}" for line in rest)

    walk("", summary["metadata"])
    for node in summary["nodes"]:
        if node["metadata"]:
            lines.append(f"  node {node['name']}: {_short(node['metadata'])}")
    return "\n".join(lines)
