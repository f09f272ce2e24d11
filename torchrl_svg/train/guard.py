"""Counting non-finite updates, and stopping a run that keeps producing them."""

from __future__ import annotations

from torchrl_svg._utils import NonFiniteLossError

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard:
    """Counts skipped (non-finite) updates, per kind of update, and stops a run that keeps skipping.

    Each kind of update (``"actor-critic"``, ``"world-model"``, ``"policy"``,
    ``"value"``, ...) has its own streak: good world-model updates do not hide a
    run of non-finite actor-critic ones. A streak longer than
    ``max_consecutive`` raises; :meth:`check_progress` raises when some kind of
    update was skipped every time it ran.

    Args:
        max_consecutive: how many non-finite updates of one kind in a row are
            skipped before :class:`~torchrl_svg.NonFiniteLossError` is raised (0:
            raise on the first).

    Examples:
        >>> guard = NonFiniteGuard(max_consecutive=1)
        >>> guard.record(False, "non-finite loss_actor", kind="actor-critic")  # skipped
        >>> guard.record(True, "", kind="world-model")  # another kind: the streak stays
        >>> guard.skipped, guard.streaks["actor-critic"]
        (1, 1)
        >>> guard.record(True, "", kind="actor-critic")  # a good one resets it
        >>> guard.consecutive
        0
    """

    def __init__(self, max_consecutive: int = 0):
        self.max_consecutive = int(max_consecutive)
        self.skipped = 0
        self.streaks: dict[str, int] = {}
        self.applied_by_kind: dict[str, int] = {}
        self.skipped_by_kind: dict[str, int] = {}

    @property
    def consecutive(self) -> int:
        """The longest current streak of skipped updates over all kinds."""
        return max(self.streaks.values(), default=0)

    def record(self, ok: bool, what: str, kind: str = "update") -> None:
        """Record one update of ``kind``; raise if its streak of bad ones exceeds the limit."""
        streak = 0 if ok else self.streaks.get(kind, 0) + 1
        self.record_updates(kind, applied=int(ok), skipped=int(not ok), streak=streak, what=what)

    def record_updates(self, kind: str, applied: int, skipped: int, streak: int, what: str) -> None:
        """Record ``applied`` and ``skipped`` updates of ``kind`` (e.g. counted on the device).

        Args:
            kind: the kind of update.
            applied: updates applied since the last record.
            skipped: updates skipped since the last record.
            streak: how many of the latest updates of this kind, in a row, were skipped.
            what: what was non-finite (for the message).

        Raises:
            NonFiniteLossError: when ``streak`` exceeds the limit.
        """
        self.skipped += skipped
        self.applied_by_kind[kind] = self.applied_by_kind.get(kind, 0) + applied
        self.skipped_by_kind[kind] = self.skipped_by_kind.get(kind, 0) + skipped
        self.streaks[kind] = streak
        if streak > self.max_consecutive:
            label = "" if kind == "update" else f"{kind} "
            raise NonFiniteLossError(
                f"{what} ({streak} non-finite {label}update(s) in a row, {self.skipped} in all)"
            )

    def check_progress(self) -> None:
        """Raise if some kind of update ran but was never applied (all non-finite).

        Raises:
            NonFiniteLossError: naming the kind and how many of its updates were skipped.
        """
        for kind, skipped in self.skipped_by_kind.items():
            if skipped and not self.applied_by_kind.get(kind, 0):
                raise NonFiniteLossError(
                    f"every {kind} update was non-finite and skipped ({skipped} of them): "
                    "the run learned nothing from them"
                )
