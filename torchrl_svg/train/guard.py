"""Counting non-finite updates, and stopping a run that keeps producing them."""

from __future__ import annotations

from torchrl_svg._utils import NonFiniteLossError

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard:
    """Counts skipped (non-finite) updates and stops after too many in a row.

    Args:
        max_consecutive: how many non-finite updates in a row are skipped
            before :class:`~torchrl_svg.NonFiniteLossError` is raised (0: raise
            on the first).

    Examples:
        >>> guard = NonFiniteGuard(max_consecutive=1)
        >>> guard.record(False, "non-finite loss_actor")  # skipped, counted
        >>> guard.record(True, "")  # a good update resets the streak
        >>> guard.skipped, guard.consecutive
        (1, 0)
    """

    def __init__(self, max_consecutive: int = 0):
        self.max_consecutive = int(max_consecutive)
        self.consecutive = 0
        self.skipped = 0

    def record(self, ok: bool, what: str) -> None:
        """Record one update; raise if the streak of bad ones exceeds the limit."""
        if ok:
            self.consecutive = 0
            return
        self.record_skipped(1, self.consecutive + 1, what)

    def record_skipped(self, skipped: int, streak: int, what: str) -> None:
        """Record ``skipped`` updates counted on the device, ``streak`` of them the latest in a row.

        Raises:
            NonFiniteLossError: when ``streak`` exceeds the limit.
        """
        self.skipped += skipped
        self.consecutive = streak
        if streak > self.max_consecutive:
            raise NonFiniteLossError(
                f"{what} ({streak} non-finite update(s) in a row, {self.skipped} in all)"
            )
