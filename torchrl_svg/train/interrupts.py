"""Stopping a run on Ctrl-C, SIGTERM or SIGHUP at a point where its state is whole.

Ctrl-C (SIGINT), SIGTERM (SLURM preemption, ``docker stop``, Kubernetes
eviction) and SIGHUP (a closed terminal) all mean "save and stop". Python
turns SIGINT into a :class:`KeyboardInterrupt` wherever the main thread happens
to be: in the middle of an optimiser step, of a ``params.to_module(...)``
block, of a replay-buffer write. The training state is then half updated, and
the counters no longer say what the parameters have seen. SIGTERM and SIGHUP
kill the process outright.

:class:`StopSignals` catches the three signals while a run is in progress and
only *records* them; the training loop asks :attr:`StopSignals.requested`
between two pieces of work, after the updates of the batch in hand are
applied and counted, and then saves and stops. Where the loop merely waits
(for the collector or an evaluation episode), it enters
:meth:`StopSignals.interruptible`, and a signal stops the wait at once: that
work is abandoned, and none of it is in the training state.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StopSignals", "TrainingInterrupted", "signal_name"]

log = logging.getLogger("torchrl_svg")

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for ``signal.SIGTERM`` (``"signal N"`` for an unknown number)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(SystemExit, KeyboardInterrupt):
    """A run stopped by a signal, after writing its checkpoint.

    It is a :class:`KeyboardInterrupt`, so code written for Ctrl-C catches it,
    and a :class:`SystemExit` with status ``128 + signum`` (130 for Ctrl-C, 143
    for SIGTERM, 129 for SIGHUP), so a command that does not catch it exits
    with the status a shell expects from that signal, after the one line the
    trainer logged, instead of a traceback.

    Attributes:
        signum: the signal.
        message: what was saved where, and how to resume.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message

    def __str__(self) -> str:
        return self.message


class StopSignals:
    """Record SIGINT, SIGTERM and SIGHUP instead of acting on them, while in a ``with`` block.

    Only signals with their default disposition are taken over (Python's
    :func:`signal.default_int_handler` for SIGINT, ``SIG_DFL`` for the others):
    a signal the parent process ignores (``nohup``, a background shell) stays
    ignored, and a handler the user installed stays in charge. Outside the
    main thread nothing is installed (Python allows signal handlers only
    there). Leaving the block restores the previous handlers.

    Examples:
        >>> stop = StopSignals()
        >>> with stop:  # a training loop
        ...     for batch in range(3):
        ...         with stop.interruptible():
        ...             pass  # wait for data: a signal ends the wait at once
        ...         pass  # update: a signal here is only recorded
        ...         if stop.requested:
        ...             break  # save, then stop
        >>> stop.requested
        False
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._waiting = 0

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.received is not None

    def install(self) -> StopSignals:
        """Take over the signals that have their default disposition (see the class docstring)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            if current is default:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Give the signals back their previous handlers."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _handle(self, signum: int, frame: object) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self._waiting:
            raise KeyboardInterrupt(signal_name(signum))
        if first:
            log.warning(
                "Received %s: finishing the updates in progress, then saving a checkpoint "
                "and stopping.",
                signal_name(signum),
            )

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that a stop signal interrupts at once (with :class:`KeyboardInterrupt`).

        Raises:
            KeyboardInterrupt: at entry if a stop was already requested, or
                when a stop signal arrives inside the block.
        """
        if self.received is not None:
            raise KeyboardInterrupt(signal_name(self.received))
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
