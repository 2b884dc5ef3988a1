"""What the client (main environment) and the Lava worker (Lava environment) agree on.

Standard library only: the client imports it in the main environment, the worker and
:mod:`hardware_sims.lava_backend` in the Lava environment, and ``python -m hardware_sims.worker``
must not find the worker module imported before it runs (so the client cannot import it).
"""

#: What a request may record per neuron node.
RECORDABLE = ("spikes", "v", "u")
#: File in the request folder naming, one a line, every shared-memory segment the worker created.
SHARED_MEMORY_LIST = "shared_memory.txt"
