r"""Energy per image on named hardware profiles, for the SNN and its ANN twin.

Profiles live in one data file, ``hardware_sims/profiles.json``, each figure with its source.
Users add or override profiles with a JSON file of the same layout, passed as ``profiles_file``
or listed (``os.pathsep``-separated) in ``$LORSP_HARDWARE_PROFILES``; later files win.

SNN energy per image (counts from :func:`hardware_sims.synops.count_synops`):

.. math::
    E_{SNN} = N_{syn}^{bin} e_{syn} + N_{syn}^{graded} e_{graded} + N_{upd}^{active} e_{active}
        + N_{upd}^{inactive} e_{inactive} + N_{spikes} e_{spike} + N_{host} e_{host}

ANN twin (the same synapses with ReLU units, evaluated once per image — it has no time steps):

.. math::
    E_{ANN} = N_{MAC} e_{MAC} + N_{host} e_{host}, \qquad
    N_{MAC} = \sum_{\text{synapse nodes}} \mathrm{MACs}(node)

with Affine/Linear ``out·in`` (every weight, zeros included: a dense layer does not skip them),
Scale ``n``, Conv2d ``C_out·H'·W'·(C_in/groups)·kH·kW``. For ``lorsp`` (v2, ``N`` pixel neurons:
``3·H·W``, or ``3·G·G`` with a grid; ``r`` gates; ``D = 3p²``) this is
``(D + 1)·r + N·r + 2·N`` (``gate_affine``, ``gate_bias``, ``gate_synapses``, ``image_gain``,
``pixel_bias``); for ``lorsp_v1`` ``D·K + 2·3·H·W·K + 2·3·H·W`` (an Affine's bias is not a
MAC). Host operations (both sides), read from the graph's ``metadata["lorsp"]`` through
:func:`exporters.lorsp_export.lorsp_host`:
v2 descriptor pooling ``3·H·W`` adds, image pooling ``3·H·W`` adds with a grid, the readout
``V ⊙ ρ`` ``3·H·W``; v1 pooling ``3·H·W`` and ``α ⊙ (on − off)`` ``3·H·W``. Together they equal
the twin's own ``mac_count()`` (``LoRSPAnnPrompter``, ``LoRSPv1AnnPrompter``).

:mod:`hardware_sims.energy_study` sweeps a prompter over T and the grid with these functions and
puts the frozen backbone's MACs next to them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import nir
import numpy as np

from exporters.graph_rules import infer_shapes
from hardware_sims.synops import SynOpsReport
from lorsp_neuro.errors import LorspError

PROFILES_FILE = Path(__file__).with_name("profiles.json")
PROFILES_ENV = "LORSP_HARDWARE_PROFILES"
LORSP_METADATA = "lorsp"


class ProfileError(LorspError, ValueError):
    """A hardware profile is missing, unknown or malformed; the message names file and field."""


@dataclass(frozen=True)
class HardwareProfile:
    """Energy per operation in picojoules, and where each figure comes from."""

    name: str
    description: str
    synop_pj: float
    graded_synop_pj: float
    neuron_update_active_pj: float
    neuron_update_inactive_pj: float
    spike_pj: float
    mac_pj: float
    host_mac_pj: float
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for f in fields(self):
            if f.name.endswith("_pj"):
                value = getattr(self, f.name)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ProfileError(f"profile '{self.name}': {f.name} must be a number")
                if not math.isfinite(value) or value < 0:
                    raise ProfileError(f"profile '{self.name}': {f.name} must be >= 0, got {value}")


ENERGY_FIELDS = tuple(f.name for f in fields(HardwareProfile) if f.name.endswith("_pj"))


def _read_profiles(path: Path) -> dict[str, HardwareProfile]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ProfileError(f"cannot read hardware profiles {path}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProfileError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected an object of named profiles")
    profiles = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ProfileError(f"{path}: profile '{name}' must be an object")
        missing = [f for f in (*ENERGY_FIELDS, "description") if f not in entry]
        unknown = sorted(set(entry) - {f.name for f in fields(HardwareProfile)})
        if missing or unknown:
            raise ProfileError(
                f"{path}: profile '{name}': "
                + "; ".join(
                    part
                    for part in (
                        f"missing {missing}" if missing else "",
                        f"unknown fields {unknown}" if unknown else "",
                    )
                    if part
                )
            )
        try:
            profiles[name] = HardwareProfile(**{**entry, "name": name})
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None
    return profiles


def load_profiles(profiles_file: str | os.PathLike | None = None) -> dict[str, HardwareProfile]:
    """The built-in profiles, then those of ``$LORSP_HARDWARE_PROFILES``, then ``profiles_file``."""
    profiles = _read_profiles(PROFILES_FILE)
    extra = [p for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    if profiles_file:
        extra.append(str(profiles_file))
    for path in extra:
        profiles.update(_read_profiles(Path(path)))
    return profiles


def get_profile(name: str, profiles_file: str | os.PathLike | None = None) -> HardwareProfile:
    profiles = load_profiles(profiles_file)
    if name not in profiles:
        raise ProfileError(f"unknown hardware profile '{name}'; known: {', '.join(profiles)}")
    return profiles[name]


# --------------------------------------------------------------------------------------------
# Operation counts of the ANN twin and the host


def _dense_macs(node, in_shape, out_shape) -> int:
    return int(np.prod(np.shape(node.weight)))


def _scale_macs(node, in_shape, out_shape) -> int:
    return int(np.size(node.scale))


def _conv_macs(node, in_shape, out_shape) -> int:
    _, c_in_group, *kernel = np.shape(node.weight)
    return int(np.prod(out_shape)) * int(c_in_group) * int(np.prod(kernel))


#: NIR synapse type → MACs of one evaluation ``(node, in_shape, out_shape) -> int``.
ANN_MACS: dict[type, Callable] = {
    nir.Affine: _dense_macs,
    nir.Linear: _dense_macs,
    nir.Scale: _scale_macs,
    nir.Conv2d: _conv_macs,
}


def ann_twin_macs(graph: nir.NIRGraph) -> dict[str, int]:
    """MACs per image of every synapse node of ``graph``, evaluated once (see module doc)."""
    shapes = infer_shapes(graph)
    return {
        name: ANN_MACS[type(node)](node, shapes.inputs.get(name), shapes.outputs[name])
        for name, node in graph.nodes.items()
        if type(node) in ANN_MACS
    }


#: ``mac_count()`` layers of the ANN twins that run on the host, not on the chip.
HOST_LAYERS = ("descriptor_pool", "image_pool", "value_readout", "prompt_combine")


def host_macs(graph: nir.NIRGraph) -> dict[str, int]:
    """Host-side operations per image of a LoRSP graph (module doc); other graphs: none."""
    if not isinstance((graph.metadata or {}).get(LORSP_METADATA), dict):
        return {}
    from exporters.lorsp_export import FORMAT_V1, lorsp_host
    from lorsp_neuro.prompters import CHANNELS

    host = lorsp_host(graph)
    pixels = CHANNELS * host.image_size[0] * host.image_size[1]
    if host.format == FORMAT_V1:
        return {"descriptor_pool": pixels, "prompt_combine": pixels}
    macs = {"descriptor_pool": pixels}
    if host.grid is not None:
        macs["image_pool"] = pixels
    macs["value_readout"] = pixels
    return macs


# --------------------------------------------------------------------------------------------
# Energy


def snn_energy_pj(report: SynOpsReport, profile: HardwareProfile, host: float) -> dict[str, float]:
    """Energy per image by term, in pJ (module doc); ``total`` is their sum."""
    terms = {
        "binary_synops": report.binary_synops_per_image * profile.synop_pj,
        "graded_synops": report.graded_synops_per_image * profile.graded_synop_pj,
        "active_neuron_updates": report.active_neuron_updates_per_image
        * profile.neuron_update_active_pj,
        "inactive_neuron_updates": report.inactive_neuron_updates_per_image
        * profile.neuron_update_inactive_pj,
        "spikes": report.spikes_per_image * profile.spike_pj,
        "host": host * profile.host_mac_pj,
    }
    terms["total"] = sum(terms.values())
    return terms


def ann_energy_pj(macs: float, host: float, profile: HardwareProfile) -> float:
    return macs * profile.mac_pj + host * profile.host_mac_pj


@dataclass
class EnergyReport:
    """What ``lorsp energy`` reports for one profile (all figures per image)."""

    profile: str
    synops_per_image: float
    binary_synops_per_image: float
    graded_synops_per_image: float
    neuron_updates_per_image: float
    active_neuron_updates_per_image: float
    spikes_per_image: float
    host_macs_per_image: float
    energy_per_image_pj: float
    energy_breakdown_pj: dict[str, float]
    ann_twin_macs_per_image: float
    ann_twin_macs_by_layer: dict[str, int]
    ann_twin_energy_pj: float
    snn_over_ann_energy: float
    synops_by_layer: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def energy_report(
    graph: nir.NIRGraph, report: SynOpsReport, profile: HardwareProfile
) -> EnergyReport:
    """SNN and ANN-twin energy per image of ``graph`` under ``profile``."""
    host = float(sum(host_macs(graph).values()))
    macs = ann_twin_macs(graph)
    snn = snn_energy_pj(report, profile, host)
    ann = ann_energy_pj(float(sum(macs.values())), host, profile)
    return EnergyReport(
        profile=profile.name,
        synops_per_image=report.synops_per_image,
        binary_synops_per_image=report.binary_synops_per_image,
        graded_synops_per_image=report.graded_synops_per_image,
        neuron_updates_per_image=report.neuron_updates_per_image,
        active_neuron_updates_per_image=report.active_neuron_updates_per_image,
        spikes_per_image=report.spikes_per_image,
        host_macs_per_image=host,
        energy_per_image_pj=snn["total"],
        energy_breakdown_pj=snn,
        ann_twin_macs_per_image=float(sum(macs.values())),
        ann_twin_macs_by_layer=macs,
        ann_twin_energy_pj=ann,
        snn_over_ann_energy=snn["total"] / ann if ann > 0 else float("inf"),
        synops_by_layer={n: a.synops_per_image for n, a in report.layers.items()},
    )
