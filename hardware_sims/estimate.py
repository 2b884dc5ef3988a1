"""Activity → SynOps → energy for one source: the pipeline every front end uses (main environment).

:func:`estimate_energy` ``(source, images, profiles) -> EnergyEstimate`` records the spikes of a run
directory or a NIR file with one simulator (:func:`hardware_sims.cosim.activity`), counts SynOps,
neuron updates and host operations (:func:`hardware_sims.synops.count_synops`) and costs them
under each hardware profile next to the ANN twin (:func:`hardware_sims.energy.energy_report`).
For a run directory it adds the frozen backbone's own MACs and their energy, the scale every
prompter cost should be read against. ``lorsp energy``, ``lorsp demo`` and the benchmarks call it
and only format it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware_sims.cosim import activity
from hardware_sims.energy import EnergyReport, HardwareProfile, energy_report, get_profile
from hardware_sims.synops import SynOpsReport, count_synops


@dataclass
class EnergyEstimate:
    """SynOps and energy per image of one source under one or more hardware profiles.

    ``reports`` maps each profile name to its :class:`~hardware_sims.energy.EnergyReport`;
    ``backbone_macs_per_image`` is ``None`` for a NIR file (no backbone in it).
    """

    source: str
    simulator: str
    images: int
    steps: int
    wall_s: float
    counts: SynOpsReport
    reports: dict[str, EnergyReport]
    profiles: dict[str, HardwareProfile]
    backbone_macs_per_image: int | None = None

    def backbone_energy_pj(self) -> dict[str, float] | None:
        """The frozen backbone's energy per image under each profile (its MACs at ``mac_pj``)."""
        if self.backbone_macs_per_image is None:
            return None
        return {n: self.backbone_macs_per_image * p.mac_pj for n, p in self.profiles.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; with one profile its report's fields are also at the top level."""
        payload: dict[str, Any] = {
            "source": self.source,
            "simulator": self.simulator,
            "images": self.images,
            "steps": self.steps,
            "wall_s": self.wall_s,
            "activity": self.counts.to_dict(),
            "profiles": {name: report.to_dict() for name, report in self.reports.items()},
            "sources": {name: profile.sources for name, profile in self.profiles.items()},
        }
        if self.backbone_macs_per_image is not None:
            payload["backbone"] = {
                "macs_per_image": self.backbone_macs_per_image,
                "energy_per_image_pj": self.backbone_energy_pj(),
            }
        if len(self.reports) == 1:
            payload.update(next(iter(self.reports.values())).to_dict())
        return payload


def estimate_energy(
    source: str | Path,
    images: int = 4,
    profiles: Sequence[str] | str = ("loihi",),
    *,
    steps: int | None = None,
    simulator: str = "torch",
    seed: int = 0,
    profiles_file: str | os.PathLike | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    backbone: bool = True,
    dt: float | None = None,
) -> EnergyEstimate:
    """SynOps and energy of ``source`` (run directory or NIR file) on ``images`` images.

    ``profiles``: profile names, or ``"all"`` for every profile (of ``profiles_file`` when
    given); ``simulator``: ``torch``, ``lava`` or ``reference`` (:func:`~hardware_sims.cosim.
    activity`); ``backbone=False`` skips counting the backbone's MACs of a run; ``dt``: the
    simulation step (seconds) of a NIR file whose metadata has none.
    """
    from hardware_sims.energy import load_profiles

    if profiles == "all":
        names = list(load_profiles(profiles_file))
    else:
        names = [profiles] if isinstance(profiles, str) else list(profiles)
    chosen = {name: get_profile(name, profiles_file) for name in names}
    act = activity(
        source, images=images, steps=steps, simulator=simulator, seed=seed, inputs=inputs, dt=dt
    )
    counts = count_synops(act.model, act.spikes, act.inputs)
    reports = {name: energy_report(act.graph, counts, p) for name, p in chosen.items()}
    macs = None
    if backbone and act.run_model is not None:
        from hardware_sims.energy_study import backbone_macs

        model = act.run_model
        macs = backbone_macs(model.backbone, model.prompter.image_size)["total"]
    return EnergyEstimate(
        source=str(source),
        simulator=act.simulator,
        images=counts.images,
        steps=counts.steps,
        wall_s=act.wall_s,
        counts=counts,
        reports=reports,
        profiles=chosen,
        backbone_macs_per_image=macs,
    )
