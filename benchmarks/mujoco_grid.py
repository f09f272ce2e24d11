r"""MuJoCo evidence: S2VG against SAC at 100k environment steps, a task x algorithm x seed grid.

Every seed runs ``python -m torchrl_svg.train`` in its own process (one torch thread each,
``--jobs`` at a time), checkpointing into ``runs/mujoco/<algorithm>_<task>/seed<N>/`` every
5k environment steps; evaluation is 10 deterministic episodes every 5k steps. The grid is
resumable across sessions: ``run --resume`` skips finished seeds and continues interrupted
ones from their checkpoints. ``report`` reads whatever the run directories hold (finished or
not) and rewrites ``benchmarks/results/mujoco_100k/``: the per-seed evaluation CSVs
(environment steps, wall time, returns), each seed's resolved configuration, a summary JSON
(how far each seed got, its wall time, the mean at the budget, the published figures) and the
comparison plot. ``run`` rewrites the report after every seed.

SAC is TorchRL's ``SACLoss`` as its users run it (``algorithm=sac``: learned alpha, initial
1.0, target entropy -|A|, one update per step), with S2VG's networks, batch, replay, warm-up
and evaluation. S2VG runs its Table 2 preset. ``s2vg_h3`` and ``s2vg_h5`` are S2VG with the
multi-step actor (``loss.actor_horizon`` = 3 or 5, see :data:`VARIANTS`), run in the same
harness beside them, with the preset's fixed alpha or (``*_learned_alpha``) alpha learned
towards the target entropy -|A|.

Example (the committed runs)::

    python benchmarks/mujoco_grid.py run --algorithms sac --seeds 0 1 2 --jobs 1 --resume
    python benchmarks/mujoco_grid.py run --algorithms s2vg --seeds 0 1 2 --jobs 1 --resume
    python benchmarks/mujoco_grid.py run --algorithms s2vg_h3 --seeds 0 \
        --tasks HalfCheetah-v5 --jobs 1 --resume   # stopped at 30k
    python benchmarks/mujoco_grid.py run --algorithms s2vg_h3_learned_alpha \
        s2vg_h5_learned_alpha --seeds 0 --tasks HalfCheetah-v5 --jobs 1 --resume
    python benchmarks/mujoco_grid.py run --algorithms s2vg_learned_alpha s2vg_critic_lr3e-4 \
        --seeds 0 --tasks HalfCheetah-v5 --jobs 1 --resume   # diagnostics of the collapses
    python benchmarks/mujoco_grid.py report
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import _git_commit, run_seed  # noqa: E402

from torchrl_svg.train.records import plot_curves  # noqa: E402

TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
#: The multi-step S2VG actor as ``examples/configs/s2vg_multistep.yaml`` runs it: the soft
#: return through H imagined steps of a 5-member dynamics ensemble (one member per imagined
#: rollout), the actor's gradient norm clipped at 10; everything else is S2VG's Table 2 preset.
MULTISTEP = (
    "model.ensemble_size=5",
    "loss.ensemble_members=rollout",
    "loss.actor_max_grad_norm=10.0",
)
#: Each grid algorithm: the recipe's ``algorithm`` and the overrides that make it.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "s2vg": ("s2vg", ()),
    "sac": ("sac", ()),
    # S2VG with alpha learned towards -|A| from the preset's value (the preset fixes it)
    "s2vg_learned_alpha": ("s2vg", ("loss.fixed_alpha=false",)),
    # S2VG with SAC's critic learning rate (the preset's is 1e-3 on HalfCheetah and Hopper,
    # with 5 updates per step): does a slower critic stop the actor-critic collapses?
    "s2vg_critic_lr3e-4": ("s2vg", ("optim.critic_lr=3e-4",)),
    # S2VG with a LayerNorm after each hidden layer of its critics
    "s2vg_critic_ln": ("s2vg", ("network.critic_layer_norm=true",)),
    "s2vg_h3": ("s2vg", (*MULTISTEP, "loss.actor_horizon=3")),
    "s2vg_h5": ("s2vg", (*MULTISTEP, "loss.actor_horizon=5")),
    # the same with alpha learned towards the target entropy -|A| (from the preset's value),
    # as SAC-SVG(H) learns it
    "s2vg_h3_learned_alpha": (
        "s2vg",
        (*MULTISTEP, "loss.actor_horizon=3", "loss.fixed_alpha=false"),
    ),
    "s2vg_h5_learned_alpha": (
        "s2vg",
        (*MULTISTEP, "loss.actor_horizon=5", "loss.fixed_alpha=false"),
    ),
}
ALGORITHMS = tuple(VARIANTS)
LABELS = {
    "s2vg": "S2VG (Table 2 preset)",
    "sac": "SAC (TorchRL SACLoss, learned alpha)",
    "s2vg_learned_alpha": "S2VG, learned alpha",
    "s2vg_critic_lr3e-4": "S2VG, critic lr 3e-4",
    "s2vg_critic_ln": "S2VG, LayerNorm critics",
    "s2vg_h3": "S2VG, multi-step actor H=3 (5-member ensemble)",
    "s2vg_h5": "S2VG, multi-step actor H=5 (5-member ensemble)",
    "s2vg_h3_learned_alpha": "S2VG, multi-step actor H=3, learned alpha",
    "s2vg_h5_learned_alpha": "S2VG, multi-step actor H=5, learned alpha",
}
BUDGET = 100_000
#: The settings every seed of the grid shares (on top of each algorithm's per-task preset).
GRID_OVERRIDES = (
    f"collector.total_frames={BUDGET}",
    "eval.interval=5000",
    "eval.episodes=10",
    "checkpoint.interval=5000",
)
#: S2VG's own targets at 100k steps (mean of 3 seeds).
TARGETS = {"HalfCheetah-v5": 8000, "Hopper-v5": 3000, "Walker2d-v5": 3000}
#: Published evaluation returns at 100k environment steps on the Gymnasium v4 tasks (8 seeds,
#: from the DHMBPO authors' released result files), and the S2VG paper's own figures at the
#: budget its curves reach. Our tasks are Gymnasium's v5 versions, not v4: the same tasks
#: with v5's fixes (e.g. Walker2d-v5's left foot has the right foot's friction), so the
#: figures are a guide, not a like-for-like comparison.
PUBLISHED = {
    "HalfCheetah-v5": {
        "SAC @100k (v4)": 7040,
        "MBPO @100k (v4)": 9560,
        "SAC-SVG(H) @100k (v4)": 6330,
        "DHMBPO @100k (v4)": 9880,
        "S2VG paper @200k": 8000,
    },
    "Hopper-v5": {
        "SAC @100k (v4)": 2670,
        "MBPO @100k (v4)": 3320,
        "SAC-SVG(H) @100k (v4)": 3310,
        "DHMBPO @100k (v4)": 3400,
        "S2VG paper @300k": 3300,
    },
    "Walker2d-v5": {
        "SAC @100k (v4)": 1050,
        "MBPO @100k (v4)": 3480,
        "SAC-SVG(H) @100k (v4)": 2380,
        "DHMBPO @100k (v4)": 6460,
        "S2VG paper @300k": 2900,
    },
}


def run_dir(run_root: Path, algorithm: str, task: str, seed: int) -> Path:
    """Where one seed of the grid trains."""
    return run_root / f"{algorithm}_{task}" / f"seed{seed}"


def _rows(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(path.open())]


def _split(name: str) -> tuple[str, str]:
    """``"<algorithm>_<task>"`` -> ``(algorithm, task)`` (algorithm names hold underscores)."""
    for task in TASKS:
        if name.endswith("_" + task):
            return name[: -len(task) - 1], task
    raise ValueError(f"{name!r} does not end with one of the grid's tasks {TASKS}.")


def _recorded(run_root: Path, out: Path) -> list[tuple[str, str, int]]:
    """Every (algorithm, task, seed) with a run directory or a CSV in the results folder."""
    found = set()
    for folder in run_root.glob("*_*/seed*"):
        algorithm, task = _split(folder.parent.name)
        found.add((algorithm, task, int(folder.name.removeprefix("seed"))))
    for path in out.glob("*_*_seed*.csv"):
        name, seed = path.stem.rsplit("_seed", 1)
        algorithm, task = _split(name)
        found.add((algorithm, task, int(seed)))
    return sorted(found)


def finished_elsewhere(run_root: Path, out: Path, algorithm: str, task: str, seed: int) -> bool:
    """Whether the results folder holds the seed finished while its run directory is absent.

    Run directories live on the machine that trained them; a seed that reached the budget on
    another machine is kept from its committed CSV instead of being trained again.
    """
    folder = run_dir(run_root, algorithm, task, seed)
    rows = _rows(out / f"{algorithm}_{task}_seed{seed}.csv")
    return not (folder / "eval.csv").exists() and bool(rows) and rows[-1]["frames"] >= BUDGET


def report(run_root: Path, out: Path, grid: list[tuple[str, str, int]] | None = None) -> dict:
    """Rewrite the results folder from the run directories; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, dict] = {}
    curves: dict[tuple[str, str], dict[int, list[dict[str, float]]]] = {}
    for algorithm, task, seed in _recorded(run_root, out):
        if grid is not None and (algorithm, task, seed) not in grid:
            continue
        folder = run_dir(run_root, algorithm, task, seed)
        name = f"{algorithm}_{task}_seed{seed}"
        rows = _rows(folder / "eval.csv")
        archived = _rows(out / f"{name}.csv")
        # A run directory is the live record; the results folder keeps the record of a seed
        # whose run directory is not on this machine (or that restarted and has not caught up)
        if rows and (not archived or rows[-1]["frames"] >= archived[-1]["frames"]):
            shutil.copy(folder / "eval.csv", out / f"{name}.csv")
            if (folder / "config.yaml").exists():
                shutil.copy(folder / "config.yaml", out / f"{name}.config.yaml")
            finished = (folder / "summary.json").exists() and rows[-1]["frames"] >= BUDGET
            source = "run directory"
        elif archived:
            rows = archived
            finished = rows[-1]["frames"] >= BUDGET
            source = "results folder (an earlier machine's run directory)"
        else:
            continue
        seeds[name] = {
            "algorithm": algorithm,
            "task": task,
            "seed": seed,
            "source": source,
            "frames": int(rows[-1]["frames"]),
            "finished": finished,
            "last_return": rows[-1]["return_mean"],
            "best_return": max(r["return_mean"] for r in rows),
            "wall_time_s": rows[-1]["wall_time_s"],
            "wall_time_h_per_100k": rows[-1]["wall_time_s"] / 3600 * BUDGET / rows[-1]["frames"],
        }
        curves.setdefault((algorithm, task), {})[seed] = rows

    tasks = {}
    for task in TASKS:
        per_algo = {}
        series = {}
        for algorithm in ALGORITHMS:
            runs = curves.get((algorithm, task), {})
            if not runs:
                continue
            # mean +- std over the seeds that reached each evaluation point
            frames = sorted({r["frames"] for rows in runs.values() for r in rows})
            mean_curve = []
            for f in frames:
                values = [
                    r["return_mean"] for rows in runs.values() for r in rows if r["frames"] == f
                ]
                m = sum(values) / len(values)
                s = (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5
                mean_curve.append({"frames": f, "mean": m, "std": s, "seeds": len(values)})
            at_budget = [
                rows[-1]["return_mean"] for rows in runs.values() if rows[-1]["frames"] >= BUDGET
            ]
            per_algo[algorithm] = {
                "seeds": sorted(runs),
                "frames_reached": {s: int(rows[-1]["frames"]) for s, rows in sorted(runs.items())},
                "mean_return_at_budget": (
                    sum(at_budget) / len(at_budget) if len(at_budget) == len(runs) else None
                ),
                "returns_at_budget": at_budget,
                "mean_curve": mean_curve,
            }
            n = len(runs)
            label = f"{LABELS[algorithm]}, {n} seed{'s' if n > 1 else ''}"
            series[label] = [(p["frames"], p["mean"], p["std"]) for p in mean_curve]
        if series:
            plot_curves(
                series,
                out / f"{task}.png",
                title=f"{task}: mean ± std over seeds",
                target=TARGETS[task],
            )
        tasks[task] = {
            "algorithms": per_algo,
            "s2vg_target_at_100k": TARGETS[task],
            "published": PUBLISHED[task],
        }
    summary = {
        "budget_frames": BUDGET,
        "grid_overrides": list(GRID_OVERRIDES),
        "git_commit": _git_commit(),
        "commands": [
            "python benchmarks/mujoco_grid.py run --algorithms sac --seeds 0 1 2 --jobs 1 --resume",
            "python benchmarks/mujoco_grid.py run --algorithms s2vg --seeds 0 1 2 --jobs 1 --resume",
            "python benchmarks/mujoco_grid.py run --algorithms s2vg_h3 --seeds 0 "
            "--tasks HalfCheetah-v5 --jobs 1 --resume  (stopped at 30k)",
            "python benchmarks/mujoco_grid.py run --algorithms s2vg_h3_learned_alpha "
            "s2vg_h5_learned_alpha --seeds 0 --tasks HalfCheetah-v5 --jobs 1 --resume",
            "python benchmarks/mujoco_grid.py report",
        ],
        "seeds": seeds,
        "tasks": tasks,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_table(summary, out / "results.md")
    return summary


def _write_table(summary: dict, path: Path) -> None:
    lines = [
        f"# S2VG vs SAC on MuJoCo at {BUDGET // 1000}k environment steps",
        "",
        "Evaluation: mean return of 10 deterministic episodes every 5k steps. "
        "Wall time: the seed's own training process (one torch thread, two seeds sharing "
        "the 2-core machine).",
        "",
        "| task | algorithm | seed | env steps reached | return there | best | wall time (h) | h per 100k |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _name, s in sorted(
        summary["seeds"].items(), key=lambda kv: (kv[1]["task"], kv[1]["algorithm"], kv[1]["seed"])
    ):
        lines.append(
            f"| {s['task']} | {s['algorithm']} | {s['seed']} | {s['frames']} | "
            f"{s['last_return']:.0f} | {s['best_return']:.0f} | {s['wall_time_s'] / 3600:.2f} | "
            f"{s['wall_time_h_per_100k']:.2f} |"
        )
    lines += [
        "",
        "| task | algorithm | mean at 100k (seeds) | target | published at 100k (v4) |",
        "|---|---|---|---:|---|",
    ]
    for task, t in summary["tasks"].items():
        for algorithm, a in t["algorithms"].items():
            mean = a["mean_return_at_budget"]
            lines.append(
                f"| {task} | {algorithm} | "
                + (
                    f"{mean:.0f} ({len(a['returns_at_budget'])})"
                    if mean is not None
                    else "not all seeds there yet"
                )
                + f" | {t['s2vg_target_at_100k'] if algorithm == 's2vg' else ''} | "
                + ", ".join(f"{k} {v}" for k, v in t["published"].items())
                + " |"
            )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("run", "report"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=["s2vg", "sac"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "mujoco")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mujoco_100k")
    parser.add_argument("overrides", nargs="*", help="extra group.key=value for every seed")
    args = parser.parse_args(argv)

    if args.mode == "report":
        report(args.run_root, args.out)
        return 0
    # seed-major order: every task gets a first seed before any gets a second
    grid = [(a, t, s) for s in args.seeds for t in args.tasks for a in args.algorithms]
    print(
        "python benchmarks/mujoco_grid.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    )

    def one(item: tuple[str, str, int]) -> None:
        algorithm, task, seed = item
        folder = run_dir(args.run_root, algorithm, task, seed)
        if finished_elsewhere(args.run_root, args.out, algorithm, task, seed):
            print(
                f"kept {algorithm} {task} seed {seed}: finished in the results folder", flush=True
            )
            return
        recipe_algorithm, variant_overrides = VARIANTS[algorithm]
        try:
            run_seed(
                recipe_algorithm,
                task,
                seed,
                [*GRID_OVERRIDES, *variant_overrides, *args.overrides],
                folder.parent,
                resume=args.resume,
            )
        finally:
            report(args.run_root, args.out)
        print(f"finished {algorithm} {task} seed {seed}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(one, item) for item in grid]:
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
