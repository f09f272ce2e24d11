r"""Our SAC baseline beside CleanRL's SAC: a check that the baseline is not a weakened one.

CleanRL's ``sac_continuous_action.py`` (learned alpha, policy updated every second step,
critic learning rate 1e-3) is run unmodified, in its own environment with the Gymnasium it
pins (0.29.1, whose MuJoCo tasks stop at v4), and prints one line per finished training
episode (``global_step=..., episodic_return=[...]``). This script reads that log, writes the
episodes as ``cleanrl_training_episodes.csv`` and plots the mean of each window of
``--window`` environment steps beside the evaluation curves of our SAC runs (``eval.csv``
files of ``python -m torchrl_svg.train algorithm=sac``, or the per-seed CSVs the MuJoCo grid
commits), and writes ``reference_sac.json`` with both at the last window::

    python benchmarks/reference_sac.py --cleanrl-log cleanrl_hopper_v4_s0.log \
        --ours benchmarks/results/mujoco_100k/sac_Hopper-v5_seed{0,1,2}.csv \
        --out benchmarks/results/sac_reference_Hopper

CleanRL's returns are those of its stochastic training policy; ours are deterministic
evaluations (10 episodes every 5k steps): compare levels, not decimals.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import _read_curve  # noqa: E402

from torchrl_svg.train.records import plot_curves  # noqa: E402

_EPISODE = re.compile(r"global_step=(\d+), episodic_return=\[?\s*([-+0-9.eE]+)")


def read_cleanrl_log(path: Path) -> list[tuple[int, float]]:
    """``(environment step, return)`` of every training episode CleanRL printed."""
    episodes = [
        (int(m.group(1)), float(m.group(2)))
        for m in map(_EPISODE.search, path.read_text().splitlines())
        if m is not None
    ]
    if not episodes:
        raise ValueError(f"{path}: no 'global_step=..., episodic_return=...' lines")
    return episodes


def windows(episodes: list[tuple[int, float]], window: int) -> list[tuple[float, float, float]]:
    """Mean and std of the episodes that end in each window of ``window`` steps, at its end."""
    out = []
    last = max(step for step, _ in episodes)
    for end in range(window, last + window, window):
        values = [r for step, r in episodes if end - window < step <= end]
        if values:
            out.append((float(end), statistics.fmean(values), statistics.pstdev(values)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cleanrl-log", type=Path, required=True)
    parser.add_argument("--ours", type=Path, nargs="+", required=True, help="evaluation CSVs")
    parser.add_argument("--window", type=int, default=5000)
    parser.add_argument("--label", default="CleanRL SAC (training episodes)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    episodes = read_cleanrl_log(args.cleanrl_log)
    reference = windows(episodes, args.window)
    ours = {
        f"ours: {path.stem}": [
            (r["frames"], r["return_mean"], r["return_std"]) for r in _read_curve(path)
        ]
        for path in args.ours
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "cleanrl_training_episodes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "episodic_return"])
        writer.writerows(episodes)
    plot_curves(
        {args.label: reference, **ours},
        args.out / "reference_sac.png",
        title="SAC, learned alpha",
        ylabel="return",
    )
    end = reference[-1][0]
    summary = {
        "command": "python benchmarks/reference_sac.py " + " ".join(argv or sys.argv[1:]),
        "window": args.window,
        "cleanrl": {
            "episodes": len(episodes),
            "last_window_end": end,
            "last_window_mean": reference[-1][1],
            "last_window_episodes": sum(1 for s, _ in episodes if end - args.window < s <= end),
        },
        "ours": {
            name: {"frames": rows[-1][0], "return": rows[-1][1]} for name, rows in ours.items()
        },
    }
    (args.out / "reference_sac.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
