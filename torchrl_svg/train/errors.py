"""The recipe's configuration and checkpoint errors, in a module light enough for the command line.

:mod:`torchrl_svg.train.config` raises :class:`ConfigError` and derives its resume error
from both, and the command line imports the config for ``--help`` without importing
torch; so they live here (:mod:`torchrl_svg.train.config` re-exports ``ConfigError``,
:mod:`torchrl_svg.train.checkpoint` the checkpoint errors).
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "EnvironmentFailure", "StorageError"]


class ConfigError(ValueError):
    """A configuration problem found before training starts (the message names the key)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or used (the message says why)."""


class StorageError(CheckpointError):
    """A file of the run cannot be written (a full disk, a directory in the way, ...).

    The message names the file and the error, and says what was kept: the file
    is either whole or as it was before, never cut short.
    """


class EnvironmentFailure(RuntimeError):
    """The environment raised during collection; a resumable checkpoint was written first."""
