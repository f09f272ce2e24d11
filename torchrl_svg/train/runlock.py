"""One process per run directory: a lock file that names its holder.

Two processes writing one run directory (two fresh runs, or two resumes of
the same checkpoint) overwrite each other's checkpoints and log every row
twice. :class:`RunLock` takes an exclusive ``flock`` on ``<run_dir>/.lock``
and writes the holder's PID, host, start time and command line into it. A
second process is refused with :class:`RunDirectoryInUse`, naming the holder.
The kernel drops the lock of a process that dies, however it dies (SIGKILL,
out of memory, a lost node), so a lock left behind by a dead process is
recovered by the next one, which says so.

Where ``flock`` is not available (Windows, or a network file system without
locking) the lock falls back to the PID in the file: on the same host, a
holder that is no longer running is stale; on another host it is taken to be
alive, and the message says which file to delete if it is not.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from torchrl_svg.train.checkpoint import CheckpointError
from torchrl_svg.train.config import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunDirectoryInUse", "RunLock"]

log = logging.getLogger("torchrl_svg")

LOCK_NAME = ".lock"


class RunDirectoryInUse(ConfigError, CheckpointError):
    """Another process holds the run directory (the message names it).

    A :class:`ConfigError` about ``logger.run_dir``, and a
    :class:`~torchrl_svg.train.checkpoint.CheckpointError`: the run's checkpoint
    is not this process's to read or write.
    """


def _holder_text(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    since = (
        f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
        if isinstance(started, (int, float))
        else ""
    )
    command = holder.get("command")
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}" + (
        f" ({command})" if command else ""
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory, held from :meth:`acquire` to :meth:`release`.

    Args:
        run_dir: the run directory (it must exist).

    Examples:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> lock = RunLock(run_dir)
        >>> lock.acquire()
        >>> RunLock(run_dir).acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchrl_svg.train.runlock.RunDirectoryInUse: ... is in use by another run: PID ...
        >>> lock.release()
        >>> RunLock(run_dir).acquire()  # free again
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _read(self, fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 1 << 16).decode(errors="replace")
            holder = json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _refuse(self, holder: dict[str, Any], extra: str = "") -> RunDirectoryInUse:
        who = _holder_text(holder) if holder else "a process that has not written its name yet"
        return RunDirectoryInUse(
            f"logger.run_dir={self.run_dir} is in use by another run: {who}. Wait for it to "
            f"finish or stop it, or choose another logger.run_dir.{extra}"
        )

    def acquire(self) -> None:
        """Take the lock, recovering one left by a dead process.

        Raises:
            RunDirectoryInUse: if a running process holds it.
        """
        if self._fd is not None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                holder = self._read(fd)
                os.close(fd)
                raise self._refuse(holder)
            try:  # the holder may have deleted the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self._fd = fd
        if previous:
            log.warning(
                "Recovered the lock on %s left by %s, which is no longer running.",
                self.run_dir,
                _holder_text(previous),
            )

    def _lock(self, fd: int) -> bool:
        """Lock ``fd``; ``False`` when a live process holds it."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
        # no flock here: judge the recorded holder by its PID
        holder = self._read(fd)
        if not holder or holder.get("pid") == os.getpid():
            return not holder
        if holder.get("host") != socket.gethostname():
            raise self._refuse(
                holder,
                f" (This file system has no locks; if that run is gone, delete {self.path}.)",
            )
        return not _alive(int(holder.get("pid", 0)))

    def release(self) -> None:
        """Give the lock up and delete the lock file (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(fd)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
