r"""Plot a run's training signals beside its evaluation return: where a run went wrong, and when.

Reads the CSV logger's files of a run directory (``<run>/<exp>/scalars/train/*.csv``, written
with ``logger.backend=csv``) and its ``eval.csv``, and draws the evaluation return, the critic
losses, the policy entropy and the soft model return against environment steps, one panel
each, so that a collapse can be traced to what changed first. Writes ``<name>.png`` and a
``<name>.json`` with the series.

    python benchmarks/training_signals.py runs/mujoco/s2vg_HalfCheetah-v5/seed0 \
        --out benchmarks/results/mujoco_100k/diagnostics --name s2vg_HalfCheetah-v5_seed0
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

SIGNALS = ("loss_qvalue", "loss_value", "entropy", "model_return", "alpha")


def _read(path: Path) -> list[tuple[float, float]]:
    rows = []
    with path.open() as f:
        for row in csv.reader(f):
            if len(row) == 2:
                rows.append((float(row[0]), float(row[1])))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    scalars = next(args.run.glob("*/scalars/train"), None)
    if scalars is None:
        raise SystemExit(f"{args.run} has no CSV-logger training scalars (logger.backend=csv).")
    series = {
        name: _read(scalars / f"{name}.csv")
        for name in SIGNALS
        if (scalars / f"{name}.csv").exists()
    }
    evals = [
        (float(r["frames"]), float(r["return_mean"]))
        for r in csv.DictReader((args.run / "eval.csv").open())
    ]
    series["eval_return"] = evals
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(series))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("eval_return", "evaluation return"), *((s, s) for s in SIGNALS if s in series)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.8 * len(panels)), sharex=True)
    for ax, (key, label) in zip(axes, panels, strict=True):
        points = series[key]
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="." if key == "eval_return" else None,
        )
        if key.startswith("loss_"):
            ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("environment steps")
    axes[0].set_title(args.name, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}.png", dpi=100)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
