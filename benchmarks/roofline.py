"""Roofline of one update: each update's time as a multiple of the matmuls it contains.

For every variant the script runs one update under a recording dispatch mode that lists
every matrix multiply it executes (``mm``, ``addmm``, ``bmm``, ``baddbmm``, forward and
backward, with their exact shapes, strides and dtypes). It then times each of those
matmuls alone, on this machine, in this process (random operands with the same layout,
the median of repeated calls), and sums them: the *roofline time* of the update, what it
would cost if it did nothing but its matrix multiplies at the rate this machine reaches
for exactly those shapes. The update itself is timed as in ``throughput.py`` (medians of
interleaved repeats), and the report gives the ratio ``update time / roofline time``.

Variants (HalfCheetah-v5 shapes: observation 17, action 6, batch 256; 256x256 actor and
critics; S2VG's world model the Table 2 HalfCheetah model, 256x128):

* ``sac_torchrl``: TorchRL's ``SACLoss`` + ``SoftUpdate`` as TorchRL's docs write the step
  (``torch.optim.Adam``), the reference;
* ``s2vg_full_fp32`` / ``s2vg_full_bf16``: one world-model step and one actor-critic step
  as the recipe runs them (the fast steps of ``torchrl_svg.train.fast``), fp32 and bf16
  autocast; ``s2vg_full_lossmodule``: the same through the LossModules
  (``compile.fast_update=false``, the path before the fast steps); ``s2vg_full_compiled``:
  the fast steps with ``compile.compile=true``;
* ``s2vg_multistep_h1`` / ``_h3`` / ``_h5``: S2VG with the multi-step actor's settings
  (``examples/configs/s2vg_multistep.yaml``: a 5-member dynamics ensemble, one member per
  imagined rollout, actor gradient clipped at 10) and ``loss.actor_horizon`` = 1, 3, 5:
  what H imagined steps in the actor cost per update; ``..._all_members``: the same with
  every member evaluated on every sample and one kept (the ensemble's prediction before it
  ran each sample through its own member only);
* ``s2vg_critic_h2`` / ``_h5``: S2VG with the critic's value expansion over ``loss.horizon``
  = 2, 5 steps (eq 7), the fast step; ``..._lossmodule``: the same through ``S2VGLoss``;
* ``svg1_fp32``: one SVG(1)-ER round (model, value and policy steps) with the SVG paper's
  App. D sizes on HalfCheetah shapes;
* ``svginf_hand1000``: one SVG(inf) policy step through a batch of 8 real 1000-step
  Hand-v0 episodes (the paper's episode length), and the world-model fit that goes with it.

Writes ``roofline.json`` and ``roofline.md`` to ``--out``::

    python benchmarks/roofline.py --repeats 7 --iters 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from throughput import BATCH, _batches, make_sac_torchrl  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torchrl.envs import GymEnv  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402

from torchrl_svg.modules import env_specs, functional, gaussian  # noqa: E402
from torchrl_svg.train import load_config, make_agent  # noqa: E402
from torchrl_svg.train.builders import make_env  # noqa: E402

aten = torch.ops.aten
MATMULS = {
    aten.mm.default: "mm",
    aten.addmm.default: "addmm",
    aten.bmm.default: "bmm",
    aten.baddbmm.default: "baddbmm",
}


def _describe(x):
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), tuple(x.stride()), str(x.dtype).removeprefix("torch."))
    return ("V", x)


class MatmulRecorder(TorchDispatchMode):
    """Lists the matrix multiplies executed under it (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS:
            key = (
                MATMULS[func],
                tuple(_describe(a) for a in args),
                tuple(sorted((k, _describe(v)) for k, v in kwargs.items())),
            )
            self.calls[key] += 1
        return func(*args, **kwargs)


def _flops(call) -> int:
    name, args, _ = call
    if name in ("mm", "addmm"):
        a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
        (m, k), n = a[1], b[1][1]
        return 2 * m * k * n
    a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
    (bs, m, k), n = a[1], b[1][2]
    return 2 * bs * m * k * n


def _materialise(desc):
    if desc[0] == "V":
        return desc[1]
    _, shape, stride, dtype = desc
    storage = sum((s - 1) * st for s, st in zip(shape, stride, strict=True)) + 1
    flat = torch.randn(max(storage, 1), dtype=getattr(torch, dtype))
    return flat.as_strided(shape, stride)


def time_matmul(call, min_time: float = 0.02, repeats: int = 5) -> float:
    """Seconds per call of one recorded matmul, alone (median of repeats)."""
    name, args, kwargs = call
    op = getattr(torch, name)
    tensors = [_materialise(a) for a in args]
    kw = {k: _materialise(v) for k, v in kwargs}
    for _ in range(3):
        op(*tensors, **kw)
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            op(*tensors, **kw)
        if time.perf_counter() - t0 > min_time / repeats:
            break
        n *= 2
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            op(*tensors, **kw)
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def roofline(step: Callable[[], None]) -> dict:
    """Matmul FLOPs of one update and the time those matmuls take alone, on this machine."""
    recorder = MatmulRecorder()
    with recorder:
        step()
    rows = []
    total_flops, total_s = 0, 0.0
    for call, count in recorder.calls.items():
        flops = _flops(call)
        seconds = time_matmul(call)
        total_flops += count * flops
        total_s += count * seconds
        rows.append(
            {
                "op": call[0],
                "shapes": [a[1] for a in call[1] if a[0] == "T"],
                "dtype": next(a[3] for a in call[1] if a[0] == "T"),
                "count": count,
                "gflop_per_call": flops / 1e9,
                "us_per_call": seconds * 1e6,
                "gflop_per_s": flops / seconds / 1e9,
            }
        )
    rows.sort(key=lambda r: -r["count"] * r["us_per_call"])
    return {
        "matmul_gflop": total_flops / 1e9,
        "roofline_ms": total_s * 1e3,
        "matmul_gflop_per_s": total_flops / total_s / 1e9,
        "matmul_calls": sum(recorder.calls.values()),
        "matmuls": rows,
    }


def _cfg(algorithm: str, env: str, *extra: str):
    return load_config(
        [
            f"algorithm={algorithm}",
            f"env.name={env}",
            f"replay_buffer.batch_size={BATCH}",
            f"model.batch_size={BATCH}",
            "logger.backend=none",
            *extra,
        ]
    )


def make_s2vg(obs_spec, act_spec, *extra: str) -> Callable:
    """One world-model step and one actor-critic step, as the recipe runs them."""
    agent = make_agent(_cfg("s2vg", "HalfCheetah-v5", *extra), obs_spec, act_spec)

    def step(batch):
        agent.update_model(batch)
        agent.update(batch)

    return step, agent


def make_svg1(obs_spec, act_spec) -> Callable:
    """One SVG(1)-ER round: a model step, a value step and a policy step from replay."""
    agent = make_agent(_cfg("svg1_er", "HalfCheetah-v5"), obs_spec, act_spec)

    def step(batch):
        agent.world_model.update(batch)
        agent.value_step(batch)
        agent.policy_step(batch)

    return step, agent


def make_svginf_hand(
    episodes: int = 8, length: int = 1000, *extra: str
) -> tuple[Callable, Callable, dict]:
    """One SVG(inf) policy step through real 1000-step Hand-v0 episodes (and its model fit)."""
    cfg = _cfg("svginf", "Hand-v0", f"env.max_episode_steps={length}", *extra)
    env = make_env(cfg, num_envs=episodes)
    obs_spec, act_spec = env_specs(env)
    agent = make_agent(cfg, obs_spec, act_spec, env=env)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        data = env.rollout(length, agent.policy, break_when_any_done=False)
    data = data.select(
        "observation",
        "action",
        "action_log_prob",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    )
    agent.world_model.observe(data.reshape(-1))
    transitions = data.reshape(-1)
    model_batch = transitions[torch.randint(transitions.numel(), (BATCH,))]
    # As the recipe does before a policy step: fit the model on the episodes (an unfitted
    # random model can make a 1000-step backward pass overflow).
    for _ in range(cfg.svg.model_updates_per_batch):
        agent.world_model.update(transitions[torch.randint(transitions.numel(), (BATCH,))])

    def policy(_):
        agent.policy_step(data)

    def model(_):
        agent.world_model.update(model_batch)

    info = {
        "episodes": episodes,
        "episode_steps": length,
        "env_steps_per_policy_update": episodes * length,
        "model_updates_per_policy_update": cfg.svg.model_updates_per_batch,
    }
    return policy, model, info


def _never(*args) -> bool:
    return False


def all_members(step: Callable) -> Callable:
    """``step`` with the ensemble evaluating every member for every sample (and keeping one)."""

    def wrapped(batch):
        with (
            mock.patch.object(gaussian, "routes_members", _never),
            mock.patch.object(functional, "routes_members", _never),
        ):
            step(batch)

    return wrapped


def _time(step: Callable, batches: list, iters: int) -> float:
    t0 = time.perf_counter()
    for i in range(iters):
        step(batches[i % len(batches)])
    return (time.perf_counter() - t0) * 1e3 / iters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-svginf", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="time only these variants (names as in the list above; sac_torchrl is kept)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "roofline")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs_spec, act_spec = env_specs(GymEnv("HalfCheetah-v5"))
    batches = _batches(16, obs_spec.shape[-1], act_spec.shape[-1], torch.device("cpu"))

    variants: dict[str, Callable] = {
        "sac_torchrl": make_sac_torchrl(obs_spec, act_spec, torch.device("cpu")),
    }
    variants["s2vg_full_fp32"], _ = make_s2vg(obs_spec, act_spec)
    variants["s2vg_full_bf16"], _ = make_s2vg(obs_spec, act_spec, "precision=bf16")
    variants["s2vg_full_lossmodule"], _ = make_s2vg(obs_spec, act_spec, "compile.fast_update=false")
    if not args.no_compile:
        variants["s2vg_full_compiled"], _ = make_s2vg(obs_spec, act_spec, "compile.compile=true")
    multistep = ("model.ensemble_size=5", "loss.ensemble_members=rollout")
    multistep += ("loss.actor_max_grad_norm=10.0",)
    for horizon in (1, 3, 5):
        variants[f"s2vg_multistep_h{horizon}"], _ = make_s2vg(
            obs_spec, act_spec, *multistep, f"loss.actor_horizon={horizon}"
        )
        step, _ = make_s2vg(obs_spec, act_spec, *multistep, f"loss.actor_horizon={horizon}")
        variants[f"s2vg_multistep_h{horizon}_all_members"] = all_members(step)
    for horizon in (2, 5):  # the critic's value expansion (eq 7), fast step and LossModule
        critic = f"loss.horizon={horizon}"
        variants[f"s2vg_critic_h{horizon}"], _ = make_s2vg(obs_spec, act_spec, critic)
        variants[f"s2vg_critic_h{horizon}_lossmodule"], _ = make_s2vg(
            obs_spec, act_spec, critic, "compile.fast_update=false"
        )
    variants["svg1_fp32"], _ = make_svg1(obs_spec, act_spec)
    info = {}
    if not args.no_svginf:
        variants["svginf_hand1000_policy"], variants["svginf_hand1000_model"], info = (
            make_svginf_hand()
        )
        variants["svginf_hand1000_policy_lossmodule"], _, _ = make_svginf_hand(
            8, 1000, "compile.fast_update=false"
        )

    if args.only:
        unknown = set(args.only) - set(variants)
        if unknown:
            parser.error(f"--only: no variant {sorted(unknown)}; they are {sorted(variants)}")
        variants = {n: v for n, v in variants.items() if n == "sac_torchrl" or n in args.only}

    warmup_s = {}
    for name, step in variants.items():
        t0 = time.perf_counter()
        iters = 2 if name.startswith("svginf") else 10
        _time(step, batches, iters)
        warmup_s[name] = time.perf_counter() - t0
        print(f"warm-up {name}: {warmup_s[name]:.1f}s", flush=True)

    rooflines = {}
    for name, step in variants.items():
        rooflines[name] = roofline(lambda step=step: step(batches[0]))
        r = rooflines[name]
        print(
            f"{name}: {r['matmul_gflop']:.3f} GFLOP in {r['matmul_calls']} matmuls, "
            f"roofline {r['roofline_ms']:.2f} ms ({r['matmul_gflop_per_s']:.0f} GFLOP/s)",
            flush=True,
        )

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            iters = (
                max(2, args.iters // 10)
                if name.startswith("svginf_hand1000_policy")
                else args.iters
            )
            times[name].append(_time(variants[name], batches, iters))
        print(f"repeat {rep}: " + ", ".join(f"{n} {times[n][-1]:.2f}ms" for n in names), flush=True)

    def ratio(a: str, b: str) -> dict | None:
        if a not in times or b not in times:
            return None
        per = [x / y for x, y in zip(times[a], times[b], strict=True)]
        return {"median": statistics.median(per), "min": min(per), "max": max(per)}

    results = {}
    for n, t in times.items():
        med = statistics.median(t)
        results[n] = {
            "ms_per_update_median": med,
            "ms_per_update_min": min(t),
            "ms_per_update_max": max(t),
            "ms_per_update": t,
            "warmup_s": warmup_s[n],
            "roofline_ms": rooflines[n]["roofline_ms"],
            "matmul_gflop": rooflines[n]["matmul_gflop"],
            "matmul_gflop_per_s_alone": rooflines[n]["matmul_gflop_per_s"],
            "times_roofline": med / rooflines[n]["roofline_ms"],
        }
    ratios = {
        key: ratio(*key.split(" / "))
        for key in (
            "s2vg_full_fp32 / sac_torchrl",
            "s2vg_full_bf16 / sac_torchrl",
            "s2vg_full_fp32 / s2vg_full_bf16",
            "s2vg_full_lossmodule / s2vg_full_fp32",
            "s2vg_full_compiled / s2vg_full_fp32",
            "svginf_hand1000_policy_lossmodule / svginf_hand1000_policy",
            "s2vg_multistep_h1 / s2vg_full_fp32",
            "s2vg_multistep_h3 / s2vg_multistep_h1",
            "s2vg_multistep_h5 / s2vg_multistep_h1",
            "s2vg_multistep_h3 / sac_torchrl",
            "s2vg_multistep_h5 / sac_torchrl",
            "s2vg_multistep_h1_all_members / s2vg_multistep_h1",
            "s2vg_multistep_h3_all_members / s2vg_multistep_h3",
            "s2vg_multistep_h5_all_members / s2vg_multistep_h5",
            "s2vg_critic_h2 / s2vg_full_fp32",
            "s2vg_critic_h5 / s2vg_full_fp32",
            "s2vg_critic_h2_lossmodule / s2vg_critic_h2",
            "s2vg_critic_h5_lossmodule / s2vg_critic_h5",
        )
    }
    ratios = {k: v for k, v in ratios.items() if v is not None}
    svginf = {}
    if info and "svginf_hand1000_policy_lossmodule" in results:
        policy_ms = results["svginf_hand1000_policy"]["ms_per_update_median"]
        model_ms = results["svginf_hand1000_model"]["ms_per_update_median"]
        per_update_s = (policy_ms + info["model_updates_per_policy_update"] * model_ms) / 1e3
        before_ms = results["svginf_hand1000_policy_lossmodule"]["ms_per_update_median"]
        svginf = {
            **info,
            "policy_update_ms_before": before_ms,
            "update_seconds_per_100k_env_steps_before": (
                before_ms + info["model_updates_per_policy_update"] * model_ms
            )
            / 1e3
            * 100_000
            / info["env_steps_per_policy_update"],
            "policy_update_ms": policy_ms,
            "model_update_ms": model_ms,
            "update_seconds_per_100k_env_steps": per_update_s
            * 100_000
            / info["env_steps_per_policy_update"],
        }

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    report = {
        "command": "python benchmarks/roofline.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": commit,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"torch {torch.__version__}",
        "threads": args.threads,
        "repeats": args.repeats,
        "iters": args.iters,
        "results": results,
        "ratios": ratios,
        "svginf_hand1000": svginf,
        "matmuls": {n: r["matmuls"] for n, r in rooflines.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "roofline.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Update time against the matmul roofline (CPU, {args.threads} thread(s))",
        "",
        f"`{report['command']}` at `{commit[:10]}`; {report['machine']}. Medians of "
        f"{args.repeats} interleaved repeats. Roofline: the update's own matrix multiplies "
        "(forward and backward, recorded), each timed alone on this machine for its exact "
        "shape and dtype, summed.",
        "",
        "| variant | ms / update (median) | min | max | matmul GFLOP | roofline ms | x roofline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results.items():
        lines.append(
            f"| {n} | {r['ms_per_update_median']:.2f} | {r['ms_per_update_min']:.2f} | "
            f"{r['ms_per_update_max']:.2f} | {r['matmul_gflop']:.3f} | {r['roofline_ms']:.2f} | "
            f"{r['times_roofline']:.2f} |"
        )
    lines += ["", "| ratio (per repeat) | median | min | max |", "|---|---:|---:|---:|"]
    for k, v in ratios.items():
        lines.append(f"| {k} | {v['median']:.2f} | {v['min']:.2f} | {v['max']:.2f} |")
    if svginf:
        lines += [
            "",
            f"SVG(inf) on Hand-v0, {svginf['episodes']} real episodes of "
            f"{svginf['episode_steps']} steps per policy update: policy step "
            f"{svginf['policy_update_ms']:.0f} ms (before, through SVGInfLoss's unrolled "
            f"autograd graph: {svginf['policy_update_ms_before']:.0f} ms), model step "
            f"{svginf['model_update_ms']:.2f} ms ({svginf['model_updates_per_policy_update']} "
            "per policy update): "
            f"{svginf['update_seconds_per_100k_env_steps']:.1f} s of updates per 100k "
            f"environment steps (before: {svginf['update_seconds_per_100k_env_steps_before']:.1f} s).",
        ]
    (args.out / "roofline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
