r"""Sample efficiency: S2VG and SVG(1)-ER against TorchRL's ``SACLoss`` in one harness.

Every algorithm runs through the same recipe (``python -m torchrl_svg.train``, one process
per seed, see ``benchmarks/learning.py``) with the same task, seeds, environment-step budget,
collector, replay buffer, warm-up, actor and critic sizes (the task's S2VG preset; SAC takes
it with ``algorithm=sac``, plus its own one update per step). Per algorithm the per-seed
evaluation CSVs and the summary land in ``benchmarks/results/<algorithm>_<env>/``; the
comparison (plot, per-seed CSVs, summary with the published anchors) in
``benchmarks/results/sample_efficiency_<env>/``.

``--resume`` reuses finished seeds (and continues interrupted ones) under ``--run-root``; a
reused run must have been trained for the same budget. ``--seeds-for ALGO=0,1`` gives one
algorithm fewer seeds (say, when compute ran out); the summary records the seeds of each.

Example (the runs committed under ``benchmarks/results/``)::

    python benchmarks/sample_efficiency.py --env Pendulum-v1 --frames 10000 --seeds 0 1 2 \
        --target -200 --resume
    python benchmarks/sample_efficiency.py --env InvertedPendulum-v5 --frames 20000 \
        --seeds 0 1 2 --target 1000 --resume
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_svg.train.records import plot_curves  # noqa: E402

LABELS = {"s2vg": "S2VG", "svg1_er": "SVG(1)-ER", "sac": "SAC (TorchRL SACLoss)"}

#: Published returns at 100k environment steps (and S2VG's own at 200k), for the README.
ANCHORS = {
    "HalfCheetah-v5": {
        "SAC @100k (Gymnasium v4)": 7000,
        "MBPO @100k": 9500,
        "S2VG paper @200k": 8000,
    },
    "Hopper-v5": {"SAC @100k (Gymnasium v4)": 2700, "MBPO @100k": 3300},
}


def _seeds(args: argparse.Namespace, algorithm: str) -> list[int]:
    for item in args.seeds_for:
        name, _, seeds = item.partition("=")
        if name == algorithm:
            return [int(s) for s in seeds.split(",") if s]
    return list(args.seeds)


def run_algorithm(args: argparse.Namespace, algorithm: str) -> Path:
    """Train ``algorithm`` on every seed through ``learning.py``; returns its results folder."""
    out = args.results / f"{algorithm}_{args.env}"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "learning.py"),
        "--algorithm",
        algorithm,
        "--env",
        args.env,
        "--seeds",
        *map(str, _seeds(args, algorithm)),
        "--jobs",
        str(args.jobs),
        "--out",
        str(out),
        "--run-root",
        str(args.run_root),
        *(["--target", str(args.target)] if args.target is not None else []),
        *(["--resume"] if args.resume else []),
        f"collector.total_frames={args.frames}",
        *args.overrides,
    ]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def _rows(path: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(path.open())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", required=True)
    parser.add_argument("--frames", type=int, required=True, help="environment-step budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds-for", action="append", default=[], metavar="ALGO=0,1")
    parser.add_argument("--algorithms", nargs="+", default=["s2vg", "svg1_er", "sac"])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("overrides", nargs="*", help="group.key=value for every algorithm")
    args = parser.parse_args(argv)

    out = args.results / f"sample_efficiency_{args.env}"
    out.mkdir(parents=True, exist_ok=True)
    curves, table = {}, {}
    for algorithm in args.algorithms:
        folder = run_algorithm(args, algorithm)
        summary = json.loads((folder / "summary.json").read_text())
        for seed in summary["seeds"]:
            rows = _rows(folder / f"seed{seed}.csv")
            if int(rows[-1]["frames"]) < args.frames:
                raise RuntimeError(
                    f"{algorithm} seed {seed} in {folder} stops at {int(rows[-1]['frames'])} "
                    f"environment steps, short of the budget {args.frames}: rerun it without "
                    "--resume."
                )
            shutil.copy(folder / f"seed{seed}.csv", out / f"{algorithm}_seed{seed}.csv")
        label = LABELS.get(algorithm, algorithm)
        curves[label] = [(p["frames"], p["mean"], p["std"]) for p in summary["mean_curve"]]
        table[algorithm] = {
            "label": label,
            "seeds": summary["seeds"],
            "mean_final_return": summary["mean_final_return"],
            "per_seed_final_return": {s: v["final_return"] for s, v in summary["per_seed"].items()},
            "first_frames_at_target": {
                s: v["first_frames_at_target"] for s, v in summary["per_seed"].items()
            },
            "command": summary["command"],
            "git_commit": summary["git_commit"],
        }
    plot_curves(
        curves,
        out / "comparison.png",
        title=f"{args.env}: mean ± std over seeds",
        target=args.target,
    )
    result = {
        "env": args.env,
        "frames": args.frames,
        "target": args.target,
        "command": "python benchmarks/sample_efficiency.py " + " ".join(argv or sys.argv[1:]),
        "algorithms": table,
        "published_anchors": ANCHORS.get(args.env, {}),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    for row in table.values():
        print(
            f"{row['label']:>24}: mean final {row['mean_final_return']:.1f} (seeds {row['seeds']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
