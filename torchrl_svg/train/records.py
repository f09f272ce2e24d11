"""Evaluation of a run: the deterministic episodes, their records (CSV, learning-curve PNG), the result."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.train.checkpoint import StorageError, write_atomically

__all__ = ["EvalRecord", "EvalRecords", "TrainResult", "evaluate", "plot_curves"]

CSV_FIELDS = (
    "frames",
    "updates",
    "wall_time_s",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "episodes",
    "nonfinite_episodes",
)


@dataclass
class EvalRecord:
    """One evaluation: deterministic-policy returns after ``frames`` environment steps."""

    frames: int
    updates: int
    wall_time_s: float
    returns: list[float]

    @property
    def finite_returns(self) -> list[float]:
        """The returns of the episodes whose rewards were all finite."""
        return [r for r in self.returns if math.isfinite(r)]

    @property
    def nonfinite_episodes(self) -> int:
        """Episodes with a NaN or infinite return (left out of the statistics)."""
        return len(self.returns) - len(self.finite_returns)

    @property
    def mean(self) -> float:
        """Mean return of the finite episodes (NaN when there is none)."""
        finite = self.finite_returns
        return sum(finite) / len(finite) if finite else math.nan

    @property
    def std(self) -> float:
        """Standard deviation of the finite returns (population; NaN when there is none)."""
        finite, m = self.finite_returns, self.mean
        return math.sqrt(sum((r - m) ** 2 for r in finite) / len(finite)) if finite else math.nan

    def row(self) -> dict[str, float | int | str]:
        """The CSV row of this evaluation (statistics of the finite episodes; empty if none)."""
        finite = self.finite_returns
        return {
            "frames": self.frames,
            "updates": self.updates,
            "wall_time_s": round(self.wall_time_s, 3),
            "return_mean": self.mean if finite else "",
            "return_std": self.std if finite else "",
            "return_min": min(finite) if finite else "",
            "return_max": max(finite) if finite else "",
            "episodes": len(self.returns),
            "nonfinite_episodes": self.nonfinite_episodes,
        }


@dataclass
class EvalRecords:
    """Appends evaluations to ``<run_dir>/eval.csv`` and redraws ``learning_curve.png``.

    Both files are rewritten after every evaluation, so a run stopped part-way
    keeps its curve so far.
    """

    run_dir: Path
    title: str
    records: list[EvalRecord] = field(default_factory=list)

    @property
    def csv_path(self) -> Path:
        """``<run_dir>/eval.csv``."""
        return Path(self.run_dir) / "eval.csv"

    @property
    def png_path(self) -> Path:
        """``<run_dir>/learning_curve.png``."""
        return Path(self.run_dir) / "learning_curve.png"

    def add(self, record: EvalRecord) -> None:
        """Record an evaluation: rewrite the CSV with every record so far and redraw the curve."""
        self.records.append(record)
        self.write()

    def write(self) -> None:
        """Write ``eval.csv`` and ``learning_curve.png`` from the records (a resumed run rewrites them).

        Each file is replaced whole (written aside, then renamed), so a failed write
        (a full disk) leaves the previous one.

        Raises:
            StorageError: naming the file that could not be written.
        """
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in self.records:
            writer.writerow(r.row())
        write_atomically(self.csv_path, text.getvalue())
        points = [(r.frames, r.mean, r.std) for r in self.records if r.finite_returns]
        if not points:
            return
        tmp = self.png_path.with_name(f".{self.png_path.stem}.tmp{self.png_path.suffix}")
        try:
            plot_curves({self.title: points}, tmp, title=self.title)
            os.replace(tmp, self.png_path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StorageError(
                f"Could not write {self.png_path}: {type(err).__name__}: {err}. The file is as it "
                "was before (never cut short)."
            ) from err


#: The most legend entries :func:`plot_curves` puts inside the axes; more go below them.
_LEGEND_INSIDE = 4


def plot_curves(
    curves: dict[str, list[tuple[float, float, float]]],
    path: str | Path,
    *,
    title: str = "",
    target: float | None = None,
    ylabel: str = "evaluation return",
) -> None:
    """Plot ``{label: [(frames, mean, std), ...]}`` as lines with a +-std band.

    Curves of few evaluations get markers, and a curve of one evaluation its ±std as an
    error bar, so that a run evaluated once still shows its point. Up to four legend
    entries sit inside the axes; more go below them, where they cover no curve.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "curve.png"
        >>> plot_curves({"seed 0": [(1000, -1200.0, 150.0)]}, path, title="one evaluation")
        >>> path.read_bytes()[1:4]
        b'PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        if not points:
            continue
        x = [p[0] for p in points]
        y = [p[1] for p in points]
        s = [p[2] for p in points]
        # markers: a curve of one evaluation is a single point, which a bare line does not show
        (line,) = ax.plot(x, y, label=label, marker="o" if len(x) < 20 else None, markersize=4)
        if len(x) == 1:  # a band of zero width is invisible too
            ax.errorbar(x, y, yerr=s, fmt="none", ecolor=line.get_color(), capsize=4)
        ax.fill_between(
            x,
            [a - b for a, b in zip(y, s, strict=True)],
            [a + b for a, b in zip(y, s, strict=True)],
            alpha=0.2,
        )
    if target is not None:
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    entries = len(ax.get_legend_handles_labels()[1])
    if entries > _LEGEND_INSIDE:  # more entries inside the axes would hide the curves
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize="small", frameon=False)
        fig.set_size_inches(6, 4 + 0.2 * entries)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    else:
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def evaluate(env: EnvBase, policy: torch.nn.Module, episodes: int, max_steps: int) -> list[float]:
    """Returns of ``episodes`` episodes of the deterministic policy (mean action)."""
    returns = []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            rollout = env.rollout(
                max_steps, policy, break_when_any_done=True, auto_cast_to_device=True
            )
            returns.append(float(rollout.get(("next", "reward")).sum()))
    return returns


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    run_dir: Path
    frames: int
    updates: int
    records: list[EvalRecord] = field(default_factory=list)

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return self.records[-1].mean
