"""Neuromorphic back-ends for LoRSP: Lava simulation, co-simulation and cost models.

This package is imported in two environments. On the main side (Python 3.11, torch) only
:mod:`hardware_sims.client` and the pure-numpy modules are used; the Lava side (Python 3.10,
numpy<2, no torch) runs :mod:`hardware_sims.worker`. Nothing here imports torch or lava at
package import time.
"""

from hardware_sims.client import (
    LavaRunResult,
    LavaWorkerError,
    lava_python,
    run_lava,
    run_lava_images,
)

__all__ = ["LavaRunResult", "LavaWorkerError", "lava_python", "run_lava", "run_lava_images"]
