"""The project's one error family: every user-facing failure is a :class:`LorspError`.

This module imports nothing heavy, so the Lava environment (no torch) can use it too.
"""


class LorspError(Exception):
    """A failure the user can act on; the CLI prints its message as one line and exits 2."""


class TrainingError(LorspError):
    """Training cannot start or went wrong (non-finite loss, bad run directory, bad device)."""


class CheckpointError(LorspError):
    """A checkpoint or run directory is missing, incomplete, corrupt, or from another run."""
