r"""Learning-curve benchmark: train an algorithm on a task for several seeds and commit the curves.

Each seed runs ``python -m torchrl_svg.train`` in its own process (``--jobs`` at a time,
one torch thread each). The per-seed evaluation CSVs, a summary JSON (with the exact
command, the git commit and the machine) and a plot of mean +- std over seeds are written
to ``--out`` (by default ``benchmarks/results/<algorithm>_<env>/``). ``--kept-seeds`` adds
seeds finished earlier whose run directories are gone, from the CSVs already in ``--out``.

Example (S2VG on Pendulum-v1, three seeds)::

    python benchmarks/learning.py --env Pendulum-v1 --seeds 0 1 2 --jobs 2 \
        --target -200 collector.total_frames=10000
    python benchmarks/learning.py --env InvertedPendulum-v5 --seeds 0 1 2 --jobs 2 \
        --target 1000 collector.total_frames=20000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_svg.train.checkpoint import checkpoint_candidates  # noqa: E402
from torchrl_svg.train.records import plot_curves  # noqa: E402


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "torchrl_svg"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def save_measurement(result: dict, path: Path, script: str, argv: list[str] | None) -> None:
    """Write one measurement as JSON with the command that made it and the commit, and print it."""
    result["command"] = f"python benchmarks/{script} " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    result["git_commit"] = _git_commit()
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=1))


def _read_curve(path: Path) -> list[dict[str, float]]:
    """The rows of an ``eval.csv`` (an empty cell, e.g. of an all-non-finite evaluation, is NaN)."""
    rows = list(csv.DictReader(path.read_text().splitlines()))
    return [
        {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
        for row in rows
    ]


def _finished(run_dir: Path, overrides: list[str]) -> bool:
    """Whether the seed's run reached its budget (a run stopped early also writes a summary).

    The budget is the ``collector.total_frames=`` override if there is one, else the run's
    own configuration's.
    """
    summary = run_dir / "summary.json"
    if not summary.exists():
        return False
    frames = json.loads(summary.read_text())["frames"]
    budget = [o.split("=", 1)[1] for o in overrides if o.startswith("collector.total_frames=")]
    if budget:
        return frames >= int(budget[-1])
    config = run_dir / "config.yaml"
    if not config.exists():
        return True
    from omegaconf import OmegaConf

    return frames >= int(OmegaConf.load(config).collector.total_frames)


def run_seed(
    algorithm: str,
    env: str,
    seed: int,
    overrides: list[str],
    run_root: Path,
    resume: bool = False,
) -> Path:
    """Train one seed in a subprocess; return its run directory.

    With ``resume`` a finished seed (its ``summary.json`` written at its budget) is reused as is and an
    interrupted one continues from its ``checkpoint.pt`` (``checkpoint.resume=true``).
    """
    run_dir = run_root / f"seed{seed}"
    continuing = False
    if resume and _finished(run_dir, overrides):
        return run_dir
    if resume and any(p.exists() for p in checkpoint_candidates(run_dir / "checkpoint.pt")):
        continuing = True  # the recipe resumes from the newest complete one
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [
        sys.executable,
        "-m",
        "torchrl_svg.train",
        f"algorithm={algorithm}",
        f"env.name={env}",
        f"env.seed={seed}",
        "logger.backend=csv",
        "logger.progress=false",
        f"logger.run_dir={run_dir}",
        "num_threads=1",
        *overrides,
    ]
    if continuing:
        cmd.append("checkpoint.resume=true")
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "stdout.log").open("a" if continuing else "w") as log:
        env_vars = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env_vars)
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed} failed ({proc.returncode}); see {run_dir / 'stdout.log'}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algorithm", default="s2vg")
    parser.add_argument("--env", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--target", type=float, default=None, help="return the runs should reach")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--name", default=None, help="results folder name (default <algorithm>_<env>)"
    )
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished seeds and continue interrupted ones from their checkpoints",
    )
    parser.add_argument(
        "--kept-seeds",
        type=int,
        nargs="+",
        default=[],
        help="seeds finished in an earlier run whose run directories are gone: their curves are "
        "read from the seed<N>.csv files already in --out (wall time from the last row)",
    )
    parser.add_argument("overrides", nargs="*", help="group.key=value training overrides")
    args = parser.parse_args(argv)
    kept = sorted(set(args.kept_seeds))
    if not set(kept) <= set(args.seeds):
        parser.error(f"--kept-seeds {kept} must be among --seeds {args.seeds}")

    name = args.name or f"{args.algorithm}_{args.env}"
    out = args.out or ROOT / "benchmarks" / "results" / name
    missing = [seed for seed in kept if not (out / f"seed{seed}.csv").exists()]
    if missing:  # before any seed trains, not after
        parser.error(f"--kept-seeds {missing}: no seed<N>.csv for them in {out}")
    out.mkdir(parents=True, exist_ok=True)
    run_root = args.run_root / name
    command = "python benchmarks/learning.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )

    commit = _git_commit()  # the code the seeds run
    # seeds reused or continued by --resume ran (in part) at an earlier command and commit
    earlier = None
    if args.resume and (out / "summary.json").exists():
        prev = json.loads((out / "summary.json").read_text())
        earlier = {
            k: prev.get(k)
            for k in ("command", "git_commit", "seeds", "provenance", "earlier_summary")
            if prev.get(k) is not None
        }
    start = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            seed: pool.submit(
                run_seed, args.algorithm, args.env, seed, args.overrides, run_root, args.resume
            )
            for seed in args.seeds
            if seed not in kept
        }
        run_dirs = {seed: f.result() for seed, f in futures.items()}
    wall = time.time() - start

    curves, per_seed = {}, {}
    for seed in sorted(args.seeds):
        if seed in kept:
            rows = _read_curve(out / f"seed{seed}.csv")
            summary = {"wall_time_s": rows[-1]["wall_time_s"]}
        else:
            shutil.copy(run_dirs[seed] / "eval.csv", out / f"seed{seed}.csv")
            rows = _read_curve(run_dirs[seed] / "eval.csv")
            summary = json.loads((run_dirs[seed] / "summary.json").read_text())
        curves[seed] = rows
        first_hit = None
        if args.target is not None:
            hits = [r["frames"] for r in rows if r["return_mean"] >= args.target]
            first_hit = int(hits[0]) if hits else None
        per_seed[seed] = {
            "final_return": rows[-1]["return_mean"],
            "best_return": max(r["return_mean"] for r in rows),
            "frames": int(rows[-1]["frames"]),
            "wall_time_s": summary["wall_time_s"],
            "first_frames_at_target": first_hit,
            "kept_from_csv": seed in kept,
        }

    # mean +- std over seeds at the common evaluation points
    frames = sorted(set.intersection(*[{r["frames"] for r in c} for c in curves.values()]))
    mean_curve = []
    for f in frames:
        values = [next(r["return_mean"] for r in c if r["frames"] == f) for c in curves.values()]
        m = sum(values) / len(values)
        s = (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5
        mean_curve.append((f, m, s))
    finals = [v["final_return"] for v in per_seed.values()]
    mean_final = sum(finals) / len(finals)
    result = {
        "algorithm": args.algorithm,
        "env": args.env,
        "seeds": args.seeds,
        "overrides": args.overrides,
        "command": command,
        "git_commit": commit,
        "earlier_summary": earlier,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "wall_time_s": wall,
        "target": args.target,
        "mean_final_return": mean_final,
        "met_target": None if args.target is None else mean_final >= args.target,
        "per_seed": per_seed,
        "mean_curve": [{"frames": f, "mean": m, "std": s} for f, m, s in mean_curve],
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    series = {
        f"seed {seed}": [(r["frames"], r["return_mean"], 0.0) for r in c]
        for seed, c in curves.items()
    }
    series[f"mean of {len(curves)} seeds"] = mean_curve
    plot_curves(
        series,
        out / "curve.png",
        title=f"{args.algorithm.upper()} on {args.env}",
        target=args.target,
    )
    print(
        json.dumps(
            {k: result[k] for k in ("env", "mean_final_return", "met_target", "wall_time_s")}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
