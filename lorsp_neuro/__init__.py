"""LoRSP: Low-Rank visual Spike Prompting for frozen vision backbones.

Submodules are imported on demand: ``lorsp_neuro.errors`` is torch-free and is also used by the
Lava environment.
"""

__version__ = "0.1.0"
