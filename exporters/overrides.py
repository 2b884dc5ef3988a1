"""What a NIR file cannot say, given by its reader: how its spiking neurons reset (numpy only).

NIR resets a spiking neuron to ``v_reset``; it has no field for a producer that resets by
subtraction (snnTorch's and rockpool's ``"subtract"``, Norse's ``reset_subtract``). This project
reads it from node metadata, ``metadata["reset_mode"]`` (:mod:`exporters.semantics`), which only
its own exporter writes. :func:`with_reset_mode` sets it on every spiking neuron of a graph read
from elsewhere, for the importer (``import_nir(..., reset_mode=…)``) and ``lorsp cosim
--reset-mode``. The reader's names are :data:`RESET_OPTIONS`: ``zero`` is NIR's own reset
``v ← v_reset`` (``v_reset`` is 0 in the files of snnTorch, Norse and rockpool), ``subtract`` is
``v ← v − (v_threshold − v_reset)``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from exporters.semantics import NEURON_TYPES, RESET_KEY, RESET_MODES, SemanticsError

if TYPE_CHECKING:  # the command line reads RESET_OPTIONS without loading nir
    import nir

#: Reader's name → the ``reset_mode`` node metadata (:data:`exporters.semantics.RESET_MODES`).
RESET_OPTIONS = {"zero": "value", "subtract": "subtract"}


def reset_metadata(reset_mode: str) -> str:
    """The node metadata value for ``reset_mode`` (a name of :data:`RESET_OPTIONS` or of
    :data:`~exporters.semantics.RESET_MODES`)."""
    mode = RESET_OPTIONS.get(reset_mode, reset_mode)
    if mode not in RESET_MODES:
        raise SemanticsError(
            f"reset_mode must be one of {', '.join(RESET_OPTIONS)}, got {reset_mode!r}"
        )
    return mode


def with_reset_mode(graph: nir.NIRGraph, reset_mode: str) -> nir.NIRGraph:
    """A copy of ``graph`` whose spiking neuron nodes (LIF, CubaLIF, IF) all reset by
    ``reset_mode``; other nodes are shared with ``graph``, which is left unchanged."""
    mode = reset_metadata(reset_mode)
    nodes = {}
    for name, node in graph.nodes.items():
        if type(node).__name__ in NEURON_TYPES:
            node = copy.copy(node)
            node.metadata = {**(node.metadata or {}), RESET_KEY: mode}
        nodes[name] = node
    out = copy.copy(graph)
    out.nodes = nodes
    return out
