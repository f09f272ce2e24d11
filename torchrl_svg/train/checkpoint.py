"""Checkpoint files: atomic writes, a checked header, and loading that never runs code.

A checkpoint file is a fixed-size header followed by a payload:

* the header (:data:`HEADER_SIZE` bytes) is a magic line and a JSON object
  with the format name, its version, the payload's size and SHA-256, and the
  time it was written;
* the payload is ``torch.save`` of the training state, streamed to the file
  (the checksum is computed on the way, so saving costs about what a plain
  ``torch.save`` costs).

The state may hold only tensors, plain containers (dicts, lists, tuples,
strings, numbers, ``None``, ``torch.Size``/``dtype``/``device``) and
tensordict's ``TensorDict``: :func:`save_checkpoint` refuses anything else,
naming where it is, and :func:`load_checkpoint` reads the payload with
``torch.load(..., weights_only=True)`` and an allowlist of exactly the
``TensorDict`` class and its rebuild function (which sets the stored tensors
back as attributes), so a crafted file is refused without running any of its
code. The checksum detects damage, not tampering: it is not an
authentication.

Writing goes to ``<name>.tmp``, which is flushed to disk, then the previous
checkpoint is renamed to ``<stem>.prev<suffix>`` and the new one into place;
a crash at any moment leaves at least one complete checkpoint among the
three names, and :func:`load_latest_checkpoint` resumes from the newest
complete one. Reading refuses, with a message naming what was found, a
missing file, a directory, an interrupted write, a truncated, foreign,
corrupted or newer-format file.

Files of format version 1 (a ``torch.save`` of ``{"header", "payload"}``
written by earlier releases) are still read, with ``weights_only=True`` and
the allowlist extended to the numpy arrays they hold.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import time
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import torch

from torchrl_svg.train.errors import CheckpointError, StorageError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "HEADER_SIZE",
    "CheckpointError",
    "StorageError",
    "check_plain",
    "checkpoint_candidates",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_checkpoint",
    "save_checkpoint",
    "temporary_checkpoint",
    "write_atomically",
]

log = logging.getLogger("torchrl_svg")

CHECKPOINT_FORMAT = "torchrl_svg-checkpoint"
CHECKPOINT_VERSION = 2
HEADER_SIZE = 4096
_MAGIC = (CHECKPOINT_FORMAT + "\n").encode()
_CHUNK = 1 << 20


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, flushed, then renamed into place.

    Raises:
        StorageError: if it cannot be written; ``path`` is then as it was (or absent).

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "summary.json"
        >>> write_atomically(path, '{"frames": 10}')
        >>> path.read_text()
        '{"frames": 10}'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        state = "is as it was before" if path.exists() else "was not created"
        raise StorageError(
            f"Could not write {path}: {type(err).__name__}: {err}. The file {state} (never "
            "cut short)."
        ) from err


def previous_checkpoint(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced: ``<stem>.prev<suffix>``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def temporary_checkpoint(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` writes before renaming into place: ``<name>.tmp``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def checkpoint_candidates(path: str | Path) -> list[Path]:
    """The files a save to ``path`` can leave behind: ``path``, its ``.tmp`` and its ``.prev``."""
    return [Path(path), temporary_checkpoint(path), previous_checkpoint(path)]


# ------------------------------------------------------------------------ plain state
def _tensordict_class() -> type:
    from tensordict import TensorDict

    return TensorDict


_PLAIN_LEAVES = (str, bytes, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise ``TypeError`` unless ``obj`` holds only tensors, plain containers and TensorDicts.

    These are what :func:`load_checkpoint` reads back with ``weights_only=True``.

    Raises:
        TypeError: naming the first entry of another type and its type.

    Examples:
        >>> check_plain({"w": torch.ones(2), "step": 3, "lr": [1e-3, (0.9, 0.99)]})
        >>> check_plain({"rng": object()})
        Traceback (most recent call last):
        ...
        TypeError: state['rng'] is a object: a checkpoint holds only tensors and plain containers.
    """
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(
                f"{where} is a {type(obj).__name__} (a tensor subclass): a checkpoint holds only "
                "plain tensors."
            )
        return
    if isinstance(obj, _PLAIN_LEAVES):
        return
    if type(obj) is _tensordict_class():
        for key, value in obj.items():
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}.")
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__name__}: a checkpoint holds only tensors and plain containers."
    )


# ------------------------------------------------------------------------------ write
class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what it passes on to ``file``."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _header_bytes(header: dict[str, Any]) -> bytes:
    text = _MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
    if len(text) > HEADER_SIZE:
        raise ValueError("checkpoint header too long")
    return text.ljust(HEADER_SIZE, b" ")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` to ``path``, keeping the previous file as ``<stem>.prev<suffix>``.

    Args:
        path: the checkpoint file.
        state: tensors and plain containers only (see :func:`check_plain`).

    Returns:
        The path written.

    Raises:
        TypeError: if ``state`` holds anything but tensors and plain containers.
        CheckpointError: if the file cannot be written (a full disk, a
            directory in the way, ...); the previous checkpoint is then left
            as it was and no partial file remains.

    Examples:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> _ = save_checkpoint(path, {"step": 1, "w": torch.ones(2)})
        >>> _ = save_checkpoint(path, {"step": 2, "w": torch.zeros(2)})
        >>> load_checkpoint(path)["step"], load_checkpoint(previous_checkpoint(path))["step"]
        (2, 1)
    """
    check_plain(state)
    path = Path(path)
    tmp = temporary_checkpoint(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory")
        with tmp.open("wb") as f:
            f.write(b"\0" * HEADER_SIZE)  # the header goes last: a cut write has none
            writer = _HashingWriter(f)
            torch.save(state, writer)
            header = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "size": writer.size,
                "sha256": writer.sha256.hexdigest(),
                "written_ns": time.time_ns(),
            }
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            f.write(_header_bytes(header))
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous_checkpoint(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        kept = [str(p) for p in (path, previous_checkpoint(path)) if p.is_file()]
        raise StorageError(
            f"Could not write the checkpoint {path}: {type(err).__name__}: {err}. "
            + (f"The last checkpoint ({', '.join(kept)}) is intact." if kept else "")
        ) from err
    return path


# ------------------------------------------------------------------------------- read
class _PayloadReader(io.RawIOBase):
    """The bytes of ``file`` from ``offset`` on, as a seekable stream starting at 0."""

    def __init__(self, file: BinaryIO, offset: int):
        self.file = file
        self.offset = offset
        file.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos += self.offset
        return self.file.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.file.tell() - self.offset

    def readinto(self, buffer) -> int:
        return self.file.readinto(buffer)


def _allowlist() -> list[Any]:
    """The globals a payload may name: ``TensorDict`` and the function that rebuilds one."""
    from tensordict._reductions import _make_td

    return [_make_td, _tensordict_class()]


def _legacy_allowlist() -> list[Any]:
    """The globals of version-1 payloads: also numpy arrays (the numpy RNG state)."""
    import numpy as np

    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:  # numpy < 2
        reconstruct = np.core.multiarray._reconstruct
    return [*_allowlist(), reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _refusal(path: Path, err: Exception) -> CheckpointError:
    lines = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
    what = lines[0] if lines else f"{type(err).__name__}"
    return CheckpointError(
        f"{path} was refused: its payload holds objects other than tensors and plain "
        f"containers ({what.rstrip('.')}). It was not written by torchrl_svg's save_checkpoint, "
        "or was altered after; nothing in it was run."
    )


def _hint(path: Path) -> str:
    others = [p for p in checkpoint_candidates(path)[1:] if p.is_file() and p != path]
    return f" Other checkpoints here: {', '.join(map(str, others))}." if others else ""


def _read_header(path: Path, f: BinaryIO, file_size: int) -> dict[str, Any] | None:
    """The version-2 header, ``None`` for a version-1 (zip) file; raises for anything else."""
    head = f.read(HEADER_SIZE)
    if head[:4] == b"PK\x03\x04":
        return None  # a torch zip file: version 1, or someone else's
    if not head.startswith(_MAGIC):
        if head and not head.strip(b"\0"):
            raise CheckpointError(
                f"{path} is incomplete: its write was interrupted before the header was written."
            )
        raise CheckpointError(
            f"{path} is not a torchrl_svg checkpoint: it does not start with the "
            f"'{CHECKPOINT_FORMAT}' header ({file_size} bytes, starting {head[:16]!r})."
        )
    if len(head) < HEADER_SIZE:
        raise CheckpointError(
            f"{path} is truncated: {file_size} bytes, shorter than its own header."
        )
    try:
        header = json.loads(head[len(_MAGIC) :].decode().strip())
        int(header["size"]), str(header["sha256"]), int(header["version"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(
            f"{path} is corrupted: its header is damaged (bytes were changed after it was written)."
        ) from None
    if header["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {header['version']}; this torchrl_svg reads "
            f"up to {CHECKPOINT_VERSION}. Upgrade torchrl_svg to load it."
        )
    expected = HEADER_SIZE + header["size"]
    if file_size < expected:
        raise CheckpointError(
            f"{path} is truncated: {file_size} bytes, its header says {expected}."
        )
    if file_size > expected:
        raise CheckpointError(
            f"{path} is corrupted: {file_size} bytes, its header says {expected} (bytes were "
            "added after it was written)."
        )
    return header


def _verify(path: Path, f: BinaryIO, header: dict[str, Any]) -> None:
    f.seek(HEADER_SIZE)
    sha = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        sha.update(chunk)
    if sha.hexdigest() != header["sha256"]:
        raise CheckpointError(
            f"{path} is corrupted: its checksum does not match (bytes were changed after it "
            "was written, with its size unchanged)."
        )


def _open(path: Path) -> tuple[BinaryIO, int]:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file.")
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}.")
    try:
        f = path.open("rb")
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err}.") from None
    return f, os.fstat(f.fileno()).st_size


def _legacy_problem(path: Path) -> str:
    """Why a version-1 (zip) file does not open: truncated, or changed bytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return "truncated (its zip directory is missing)"
    except Exception as err:  # zlib and struct errors of damaged records
        return f"corrupted ({type(err).__name__}: {err})"
    if bad is not None:
        return f"corrupted (the record {bad!r} fails its CRC check)"
    return "not readable"


def _load_legacy(path: Path) -> dict[str, Any]:
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except Exception as err:  # zip errors of a truncated or damaged file
        raise CheckpointError(
            f"{path} is {_legacy_problem(path)}: {type(err).__name__}: {err}.{_hint(path)}"
        ) from None
    header = outer.get("header") if isinstance(outer, dict) else None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a torchrl_svg checkpoint (a torch file without the "
            f"'{CHECKPOINT_FORMAT}' header).{_hint(path)}"
        )
    if header.get("version", 0) > 1:
        raise CheckpointError(
            f"{path} has checkpoint format version {header['version']} in a version-1 layout: "
            "it was altered."
        )
    payload = outer.get("payload")
    if not isinstance(payload, bytes) or len(payload) != header.get("size"):
        raise CheckpointError(
            f"{path} is truncated: its payload is shorter than its header says.{_hint(path)}"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{path} is corrupted: its checksum does not match.{_hint(path)}")
    try:
        with torch.serialization.safe_globals(_legacy_allowlist()):
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None


def _load_payload(path: Path, f: BinaryIO) -> Any:
    try:
        with torch.serialization.safe_globals(_allowlist()):
            reader = _PayloadReader(f, HEADER_SIZE)
            return torch.load(reader, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except Exception as err:  # a payload whose checksum matches but is no torch file
        raise CheckpointError(
            f"{path} has a payload that is not a readable torch file: {type(err).__name__}: {err}."
        ) from None


def _load(path: Path, *, verify_only: bool = False) -> tuple[dict[str, Any] | None, float]:
    """``(state, time written)``; the state is ``None`` with ``verify_only`` (version 2)."""
    f, size = _open(path)
    state = None
    with f:
        try:
            header = _read_header(path, f, size)
            if header is not None:
                _verify(path, f, header)
        except CheckpointError as err:
            raise CheckpointError(f"{err}{_hint(path)}") from None
        if header is not None:
            written = header.get("written_ns", 0) / 1e9
            if verify_only:
                return None, written
            state = _load_payload(path, f)
    if header is None:  # version 1: verified while loading
        state, written = _load_legacy(path), os.stat(path).st_mtime
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training state.")
    return state, written


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    The payload is loaded with ``torch.load(..., weights_only=True)``: a file
    that holds anything but tensors and plain containers is refused without
    running any of its code.

    Raises:
        CheckpointError: naming what was found: no file, a directory, an
            interrupted write, a truncated, foreign or corrupted file, a
            newer format version, or a refused payload. The message names the
            other checkpoints (``.tmp``, ``.prev``) present, which are left
            untouched.
    """
    state, _ = _load(Path(path))
    assert state is not None
    return state


def load_latest_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The newest complete checkpoint among ``path``, its ``.tmp`` and its ``.prev``.

    A kill during :func:`save_checkpoint` can leave the newest state in
    ``<name>.tmp`` and no file at ``path`` (between its two renames), or a cut
    ``.tmp`` next to the good ``path``. Every candidate is verified; the one
    written last wins, and when that is not ``path`` a warning says which
    file is used and what is wrong with the others.

    Returns:
        ``(state, the file it came from)``.

    Raises:
        CheckpointError: when no candidate is usable, naming what was found at each.
    """
    path = Path(path)
    usable: list[tuple[float, int, Path]] = []
    problems: dict[Path, str] = {}
    for rank, candidate in enumerate(checkpoint_candidates(path)):
        if not candidate.exists():
            problems[candidate] = "absent"
            continue
        try:
            _, written = _load(candidate, verify_only=True)
        except CheckpointError as err:
            problems[candidate] = str(err).split(" Other checkpoints here")[0].rstrip(".")
            continue
        usable.append((written, -rank, candidate))
    for _, _, candidate in sorted(usable, reverse=True):
        try:
            state, _ = _load(candidate)
        except CheckpointError as err:  # verified, yet refused: a crafted payload
            problems[candidate] = str(err)
            continue
        if candidate != path:
            others = "; ".join(f"{p.name}: {why}" for p, why in problems.items())
            log.warning("Resuming from %s, the newest complete checkpoint (%s).", candidate, others)
        return state, candidate
    present = {p: why for p, why in problems.items() if why != "absent"}
    if list(present) == [path]:
        raise CheckpointError(present[path])
    if not present:
        raise CheckpointError(f"No checkpoint at {path} (nor {path.name}.tmp, nor .prev).")
    detail = "; ".join(f"{p.name}: {why}" for p, why in problems.items())
    raise CheckpointError(f"No usable checkpoint for {path}: {detail}")
