"""NIR export and import for LoRSP spiking networks.

:mod:`exporters.semantics` (numpy only) fixes how a NIR neuron is stepped in discrete time; it is
shared by the torch side (export/import) and the Lava side (``hardware_sims``), so the two agree
by construction. Torch-dependent modules are imported on demand, never here, because the Lava
environment has no torch.
"""
