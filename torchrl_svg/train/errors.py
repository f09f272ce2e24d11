"""The recipe's checkpoint errors, in a module light enough for the command line.

:mod:`torchrl_svg.train.config` derives its resume error from them, and the
command line imports the config for ``--help`` without importing torch; so they
live here rather than in :mod:`torchrl_svg.train.checkpoint` (which re-exports them).
"""

from __future__ import annotations

__all__ = ["CheckpointError", "StorageError"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or used (the message says why)."""


class StorageError(CheckpointError):
    """A file of the run cannot be written (a full disk, a directory in the way, ...).

    The message names the file and the error, and says what was kept: the file
    is either whole or as it was before, never cut short.
    """
