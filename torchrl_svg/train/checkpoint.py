"""Checkpoint files: atomic writes, a format version and a checksum.

A checkpoint is a ``torch.save`` of ``{"header": {...}, "payload": bytes}``
where ``payload`` is the ``torch.save`` serialisation of the training state
and the header holds the format name, its version, the payload size and its
SHA-256. Writing goes to a temporary file that is flushed to disk and then
renamed over the target, after the previous checkpoint has been moved to
``<name>.prev.pt``; a crash mid-write therefore never leaves a half-written
file under the checkpoint's name and never destroys the last good one.
Reading refuses, with a message naming the problem, a missing, truncated,
foreign, corrupted or newer-format file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "previous_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "torchrl_svg-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (the message says why)."""


def previous_checkpoint(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced: ``<stem>.prev<suffix>``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` to ``path``, keeping the previous file as ``<stem>.prev<suffix>``.

    Returns:
        The path written.

    Examples:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> _ = save_checkpoint(path, {"step": 1, "w": torch.ones(2)})
        >>> _ = save_checkpoint(path, {"step": 2, "w": torch.zeros(2)})
        >>> load_checkpoint(path)["step"], load_checkpoint(previous_checkpoint(path))["step"]
        (2, 1)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save({"header": header, "payload": payload}, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, previous_checkpoint(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: if the file is missing, truncated or not a torch file,
            not a torchrl_svg checkpoint, of a newer format version, or fails
            its size or checksum check. The message names the file and the
            previous checkpoint, which is left untouched.
    """
    path = Path(path)
    prev = previous_checkpoint(path)
    hint = f" The previous checkpoint is {prev}." if prev.exists() and prev != path else ""
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.{hint}")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip/pickle errors of a truncated or foreign file
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not a torch file): "
            f"{type(err).__name__}: {err}.{hint}"
        ) from None
    header = outer.get("header") if isinstance(outer, dict) else None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a torchrl_svg checkpoint (no '{CHECKPOINT_FORMAT}' header).{hint}"
        )
    if header.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {header['version']}; this torchrl_svg reads up to "
            f"{CHECKPOINT_VERSION}. Upgrade torchrl_svg to load it."
        )
    payload = outer.get("payload")
    if not isinstance(payload, bytes) or len(payload) != header.get("size"):
        raise CheckpointError(
            f"{path} is truncated: its payload is shorter than its header says.{hint}"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{path} is corrupted: its checksum does not match.{hint}")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
