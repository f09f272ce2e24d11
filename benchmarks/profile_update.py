"""Where the time of one S2VG update goes: a torch.profiler breakdown of the recipe's update.

One full S2VG update as the recipe runs it (a world-model step and an actor-critic step,
HalfCheetah-v5 shapes, batch 256, 256x256 actor and critics, the Table 2 model), profiled
over ``--iters`` updates after a warm-up, fp32 and bf16. Operators are grouped into
matrix multiplies, element-wise kernels, copies, the optimiser, reductions and the rest
(dispatch, autograd and Python overhead: the wall time no operator accounts for).

Writes ``profile.json`` and ``profile.md`` to ``--out``::

    python benchmarks/profile_update.py --iters 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from roofline import make_s2vg  # noqa: E402
from throughput import _batches  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torchrl.envs import GymEnv  # noqa: E402

from torchrl_svg.modules import env_specs  # noqa: E402

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "copies and casts": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::cat"),
    "optimiser": ("aten::_fused_adam_", "aten::_foreach_lerp_", "aten::_foreach_norm"),
    "reductions": ("aten::sum", "aten::mean", "aten::min", "aten::linalg_vector_norm"),
}


def _group(name: str) -> str:
    for group, names in GROUPS.items():
        if name in names:
            return group
    if name.startswith("aten::"):
        return "element-wise and other kernels"
    return "framework (not an aten kernel)"


def profile_variant(step, batches, iters: int) -> dict:
    for i in range(10):
        step(batches[i % len(batches)])
    t0 = time.perf_counter()
    for i in range(iters):
        step(batches[i % len(batches)])
    wall_ms = (time.perf_counter() - t0) * 1e3 / iters
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(iters):
            step(batches[i % len(batches)])
    rows = []
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        self_ms = event.self_cpu_time_total / 1e3 / iters
        if self_ms <= 0:
            continue
        group = _group(event.key)
        groups[group] = groups.get(group, 0.0) + self_ms
        rows.append(
            {"op": event.key, "calls": event.count / iters, "self_ms": self_ms, "group": group}
        )
    rows.sort(key=lambda r: -r["self_ms"])
    profiled_ms = sum(groups.values())
    return {
        "wall_ms_per_update": wall_ms,
        "profiled_ms_per_update": profiled_ms,
        "groups_ms": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top_ops": rows[:25],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs_spec, act_spec = env_specs(GymEnv("HalfCheetah-v5"))
    batches = _batches(16, obs_spec.shape[-1], act_spec.shape[-1], torch.device("cpu"))
    results = {}
    for name, extra in (("fp32", ()), ("bf16", ("precision=bf16",))):
        step, _ = make_s2vg(obs_spec, act_spec, *extra)
        results[name] = profile_variant(step, batches, args.iters)
        print(name, json.dumps(results[name]["groups_ms"], indent=1), flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    report = {
        "command": "python benchmarks/profile_update.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": commit,
        "threads": args.threads,
        "torch": torch.__version__,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Where one S2VG update's time goes (CPU)",
        "",
        f"`{report['command']}` at `{commit[:10]}`, {args.threads} thread(s). One world-model "
        "step + one actor-critic step (the recipe's fast steps), HalfCheetah-v5 shapes. "
        "Self CPU time per update by group (torch.profiler; the profiler's own overhead "
        "inflates the framework share).",
        "",
    ]
    for name, r in results.items():
        lines += [
            f"## {name}: {r['wall_ms_per_update']:.2f} ms per update unprofiled",
            "",
            "| group | ms / update | share |",
            "|---|---:|---:|",
        ]
        total = r["profiled_ms_per_update"]
        for group, ms in r["groups_ms"].items():
            lines.append(f"| {group} | {ms:.2f} | {100 * ms / total:.0f}% |")
        lines += ["", "| top operators | calls / update | self ms / update |", "|---|---:|---:|"]
        for row in r["top_ops"][:12]:
            lines.append(f"| `{row['op']}` | {row['calls']:.0f} | {row['self_ms']:.3f} |")
        lines.append("")
    (args.out / "profile.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
