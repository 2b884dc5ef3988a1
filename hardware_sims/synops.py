r"""Synaptic operations and neuron updates counted from recorded activity (numpy; no torch, no Lava).

Definitions (DESIGN.md §3), for a NIR graph read by :func:`hardware_sims.graph.analyse`:

* **Fan-out** of a source element (an input value or a neuron) is the number of non-zero synapses
  leaving it, over every path to every population (:meth:`NetworkModel.fan_out`).
* **Binary SynOps** of a spiking layer: :math:`\sum_t \sum_j z_j[t]\, \mathrm{fanout}_j` — every
  spike is delivered once through each of its synapses.
* **Graded SynOps** of an input layer (the first layer sees graded values, not spikes): a non-zero
  value is one *graded spike* (an event with a payload, Loihi 2 style) delivered through each
  synapse: :math:`\sum_t \sum_j [x_j[t] \ne 0]\, \mathrm{fanout}_j`. Each is a multiply-accumulate
  (payload × weight) on a CMOS profile, an accumulate for a binary SynOp. A zero input costs
  nothing, which is where event-driven hardware saves over dense MACs.
* **Neuron updates**: every neuron is updated every step (``size · T`` per image). An update is
  *active* when the neuron receives at least one synaptic event in that step, still holds the
  synaptic current of an earlier event of the same image (a current that outlives its step,
  ``d_u < 1``: a persistent current, ``d_u = 2**-60``, holds an input presented once for the whole
  image and keeps driving the membrane), has a non-zero (synaptic or leak) bias, or spikes;
  otherwise it is *inactive* (only its state decays). A current that lasts one step (``d_u = 1``,
  and every ``LIF``) makes no difference.
* **Spikes**: spikes emitted, per layer.

Counts are per image (averaged over the images given). Both simulators' records go through the
same function, so the Norse/torch and the Lava counts are equal exactly when the spike trains
are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse

from hardware_sims.graph import NetworkModel


@dataclass
class LayerActivity:
    """One source layer: ``kind`` is ``spiking`` (a neuron node) or ``graded`` (an Input node)."""

    kind: str
    events_per_image: float  # spikes, or non-zero graded values
    synops_per_image: float
    fan_out: int  # synapses leaving the layer in total


@dataclass
class SynOpsReport:
    images: int
    steps: int
    layers: dict[str, LayerActivity]
    neuron_updates_per_image: float
    active_neuron_updates_per_image: float
    spikes_per_image: float
    updates_by_population: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def binary_synops_per_image(self) -> float:
        return sum(a.synops_per_image for a in self.layers.values() if a.kind == "spiking")

    @property
    def graded_synops_per_image(self) -> float:
        return sum(a.synops_per_image for a in self.layers.values() if a.kind == "graded")

    @property
    def synops_per_image(self) -> float:
        return self.binary_synops_per_image + self.graded_synops_per_image

    @property
    def inactive_neuron_updates_per_image(self) -> float:
        return self.neuron_updates_per_image - self.active_neuron_updates_per_image

    @property
    def activation_sparsity(self) -> float:
        """Neuron-steps without a spike over all neuron-steps, every population: one minus the
        neuron-weighted mean of the firing rates (NeuroBench's ``ActivationSparsity``)."""
        silent = self.neuron_updates_per_image - self.spikes_per_image
        return silent / self.neuron_updates_per_image

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(
            synops_per_image=self.synops_per_image,
            binary_synops_per_image=self.binary_synops_per_image,
            graded_synops_per_image=self.graded_synops_per_image,
            inactive_neuron_updates_per_image=self.inactive_neuron_updates_per_image,
        )
        return out


def _events(values: np.ndarray, images: int, steps: int) -> np.ndarray:
    """``(images·steps, n)`` event indicator: a spike, or a non-zero graded value."""
    return (np.asarray(values).reshape(images * steps, -1) != 0).astype(np.float64)


def synaptic_ops(events: np.ndarray, fan_out: np.ndarray) -> float:
    r"""Total SynOps :math:`\sum_{t,j} e_j[t]\,\mathrm{fanout}_j` of an ``(steps, n)`` event array."""
    return float(np.asarray(events, np.float64).reshape(-1, fan_out.size).sum(0) @ fan_out)


def _receives(weight, events: np.ndarray) -> np.ndarray:
    """``(steps, n_target)``: which targets get at least one event through ``weight``."""
    if scipy.sparse.issparse(weight):
        pattern = scipy.sparse.csr_matrix(weight != 0, dtype=np.float64)
        return np.asarray(pattern @ events.T).T > 0
    return events @ (np.asarray(weight) != 0).T.astype(np.float64) > 0


def _held(received: np.ndarray, carries: np.ndarray, images: int, steps: int) -> np.ndarray:
    """``(images·steps, n)``: from its first event in an image on, a neuron whose current
    ``carries`` over to the next step holds a current (the window reset clears it per image)."""
    if not carries.any():
        return received
    held = np.logical_or.accumulate(received.reshape(images, steps, -1), axis=1)
    return np.where(carries[None, :], held.reshape(received.shape), received)


def count_synops(
    model: NetworkModel,
    spikes: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
) -> SynOpsReport:
    """Count SynOps and neuron updates from records (see module doc).

    ``spikes[population]`` and ``inputs[input]`` have shape ``(images, steps, *shape)`` in the
    discrete model's time base (Lava records aligned first).
    """
    first = next(iter(spikes.values()))
    images, steps = int(first.shape[0]), int(first.shape[1])
    events = {name: _events(inputs[name], images, steps) for name in model.inputs}
    events.update({name: _events(spikes[name], images, steps) for name in model.populations})
    layers = {}
    for name, ev in events.items():
        fan_out = model.fan_out(name)
        kind = "graded" if name in model.inputs else "spiking"
        layers[name] = LayerActivity(
            kind=kind,
            events_per_image=float(ev.sum()) / images,
            synops_per_image=synaptic_ops(ev, fan_out) / images,
            fan_out=int(fan_out.sum()),
        )
    total_updates = active_updates = 0.0
    by_population = {}
    for name, pop in model.populations.items():
        received = np.zeros((images * steps, pop.size), dtype=bool)
        for conn in model.incoming(name):
            received |= _receives(conn.weight, events[conn.source])
        received = _held(received, np.asarray(pop.coeffs.du).ravel() < 1, images, steps)
        always = np.asarray(pop.coeffs.bias).ravel() != 0
        if name in model.biases:
            always |= model.biases[name] != 0
        active = received | always[None, :] | (events[name] > 0)
        updates = float(images * steps * pop.size) / images
        active_count = float(active.sum()) / images
        by_population[name] = {"updates": updates, "active": active_count}
        total_updates += updates
        active_updates += active_count
    spikes_total = sum(layers[p].events_per_image for p in model.populations)
    return SynOpsReport(
        images=images,
        steps=steps,
        layers=layers,
        neuron_updates_per_image=total_updates,
        active_neuron_updates_per_image=active_updates,
        spikes_per_image=spikes_total,
        updates_by_population=by_population,
    )
