"""Update throughput: TorchRL ``SACLoss`` + ``SoftUpdate`` against one full S2VG update.

Shapes are HalfCheetah-v5's (observation 17, action 6), batch 256, 256x256 actor and critics
(S2VG's world model is the Table 2 HalfCheetah model, 256x128). In one process, the variants
are timed in turn (interleaved, the order rotated each repeat) so that the machine's drift
hits them alike; each repeat times ``--iters`` updates on pre-sampled batches after a warm-up,
and the figures are medians over ``--repeats`` with the per-repeat ratio S2VG / SAC.

Variants:

* ``sac_torchrl``: a TorchRL user's SAC step: ``SACLoss`` (twin Q, no V) forward, the sum of
  its ``loss_*`` entries backward, ``torch.optim.Adam`` step, ``SoftUpdate.step()``;
* ``sac_recipe``: the same loss inside the package's recipe (``algorithm=sac``: fused Adam,
  the non-finite guard);
* ``s2vg_full``: one world-model step (dynamics + reward NLL) and one S2VG actor-critic step
  (twin Q, V, the model-based actor term, Polyak update) as the recipe runs them;
* ``s2vg_actor_critic``: the S2VG actor-critic step alone;
* ``sac_plain_torch``: SAC written in plain PyTorch (no TensorDict), the floor of what the
  SAC computation costs here.

With ``--compile`` the TorchRL SAC loss and the recipe's updates are also timed under
``torch.compile`` (``*_compiled``); with a GPU, ``--device cuda`` adds CUDA graphs
(``*_cudagraphs``). ``--loop-frames`` also times the whole training loop (collector,
replay, updates) on HalfCheetah-v5 for S2VG and SAC and reports environment steps/s.

Writes ``throughput.json`` and ``throughput.md`` to ``--out``::

    python benchmarks/throughput.py --repeats 7 --iters 50 --compile --loop-frames 300
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch import nn  # noqa: E402
from torchrl.envs import GymEnv  # noqa: E402
from torchrl.objectives import SACLoss, SoftUpdate  # noqa: E402

from torchrl_svg.modules import env_specs, make_actor, make_qvalue  # noqa: E402
from torchrl_svg.train import load_config, make_agent, train  # noqa: E402

BATCH = 256
HIDDEN = [256, 256]


def _batches(n: int, obs_dim: int, act_dim: int, device: torch.device) -> list[TensorDict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        term = torch.rand(BATCH, 1, generator=g) < 0.01
        out.append(
            TensorDict(
                {
                    "observation": torch.randn(BATCH, obs_dim, generator=g),
                    "action": torch.rand(BATCH, act_dim, generator=g) * 1.98 - 0.99,
                    "action_log_prob": torch.randn(BATCH, generator=g),
                    ("next", "observation"): torch.randn(BATCH, obs_dim, generator=g),
                    ("next", "reward"): torch.randn(BATCH, 1, generator=g),
                    ("next", "done"): term.clone(),
                    ("next", "terminated"): term,
                },
                [BATCH],
            ).to(device)
        )
    return out


def _recipe_cfg(algorithm: str, *, compile: bool, cudagraphs: bool, device: str) -> object:
    return load_config(
        [
            f"algorithm={algorithm}",
            "env.name=HalfCheetah-v5",
            f"network.actor_hidden_sizes={HIDDEN}",
            f"network.critic_hidden_sizes={HIDDEN}",
            f"replay_buffer.batch_size={BATCH}",
            f"model.batch_size={BATCH}",
            f"compile.compile={str(compile).lower()}",
            f"compile.cudagraphs={str(cudagraphs).lower()}",
            f"device={device}",
            "logger.backend=none",
        ]
    )


def make_sac_torchrl(obs_spec, act_spec, device, *, compile: bool = False) -> Callable:
    """SAC as a TorchRL user writes it (sota-implementations/sac style)."""
    obs_dim, act_dim = obs_spec.shape[-1], act_spec.shape[-1]
    actor = make_actor(obs_spec, act_spec, hidden_sizes=HIDDEN, safe_tanh=not compile)
    qvalue = make_qvalue(obs_dim, act_dim, hidden_sizes=HIDDEN)
    loss = SACLoss(actor, qvalue, num_qvalue_nets=2, action_spec=act_spec).to(device)
    loss.make_value_estimator(gamma=0.99)
    updater = SoftUpdate(loss, tau=0.005)
    optim = torch.optim.Adam(loss.parameters(), lr=3e-4)
    forward = torch.compile(loss) if compile else loss

    def step(batch):
        out = forward(batch)
        total = out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]
        optim.zero_grad(set_to_none=True)
        total.backward()
        optim.step()
        updater.step()

    return step


def make_recipe(algorithm: str, obs_spec, act_spec, device, **kw) -> tuple[Callable, Callable]:
    """The recipe's full update and its actor-critic update alone."""
    cfg = _recipe_cfg(algorithm, device=str(device), **kw)
    agent = make_agent(cfg, obs_spec, act_spec, device=device)

    def actor_critic(batch):
        agent.update(batch)

    def full(batch):
        if agent.world_model is not None:
            agent.update_model(batch)
        agent.update(batch)

    return full, actor_critic


class _PlainSAC(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()

        def mlp(i, o):
            return nn.Sequential(
                nn.Linear(i, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, o)
            )

        self.actor = mlp(obs_dim, 2 * act_dim)
        self.q1, self.q2 = mlp(obs_dim + act_dim, 1), mlp(obs_dim + act_dim, 1)
        self.q1_t, self.q2_t = mlp(obs_dim + act_dim, 1), mlp(obs_dim + act_dim, 1)
        self.q1_t.load_state_dict(self.q1.state_dict())
        self.q2_t.load_state_dict(self.q2.state_dict())
        self.log_alpha = nn.Parameter(torch.zeros(()))

    def sample(self, obs):
        loc, log_scale = self.actor(obs).chunk(2, -1)
        scale = nn.functional.softplus(log_scale) + 1e-4
        u = loc + scale * torch.randn_like(loc)
        a = torch.tanh(u)
        logp = torch.distributions.Normal(loc, scale).log_prob(u) - torch.log1p(-a.pow(2) + 1e-6)
        return a, logp.sum(-1, keepdim=True)


def make_sac_plain(obs_dim: int, act_dim: int, device) -> Callable:
    """SAC in plain PyTorch: the same computation without TensorDict or TorchRL."""
    m = _PlainSAC(obs_dim, act_dim).to(device)
    params = [*m.actor.parameters(), *m.q1.parameters(), *m.q2.parameters(), m.log_alpha]
    optim = torch.optim.Adam(params, lr=3e-4, fused=True)
    targets = [*m.q1_t.parameters(), *m.q2_t.parameters()]
    sources = [*m.q1.parameters(), *m.q2.parameters()]

    def step(batch):
        obs, act = batch["observation"], batch["action"]
        nobs, rew = batch["next", "observation"], batch["next", "reward"]
        notdone = (~batch["next", "terminated"]).float()
        alpha = m.log_alpha.exp().detach()
        with torch.no_grad():
            na, nlogp = m.sample(nobs)
            x = torch.cat([nobs, na], -1)
            q_t = torch.minimum(m.q1_t(x), m.q2_t(x)) - alpha * nlogp
            target = rew + 0.99 * notdone * q_t
        x = torch.cat([obs, act], -1)
        loss_q = (m.q1(x) - target).pow(2).mean() + (m.q2(x) - target).pow(2).mean()
        a, logp = m.sample(obs)
        x = torch.cat([obs, a], -1)
        loss_actor = (alpha * logp - torch.minimum(m.q1(x), m.q2(x))).mean()
        loss_alpha = -(m.log_alpha * (logp.detach() - act_dim)).mean()
        optim.zero_grad(set_to_none=True)
        (loss_q + loss_actor + loss_alpha).backward()
        optim.step()
        with torch.no_grad():
            torch._foreach_lerp_(targets, sources, 0.005)

    return step


def _time(step: Callable, batches: list, iters: int, device: torch.device) -> float:
    """Milliseconds per update over ``iters`` updates."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(iters):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / iters


def loop_throughput(
    algorithm: str, frames: int, warmup_frames: int, threads: int = 1, *extra: str
) -> dict:
    """Environment steps/s of the whole training loop on HalfCheetah-v5 after the warm-up.

    Collection, replay writes and samples, every update; timed between the evaluation
    right after the random warm-up and the one at the end (one 10-step episode each).
    """
    cfg = load_config(
        [
            f"algorithm={algorithm}",
            "env.name=HalfCheetah-v5",
            f"collector.init_random_frames={warmup_frames}",
            f"collector.total_frames={warmup_frames + frames}",
            "model.pretrain_updates=0",
            f"eval.interval={warmup_frames}",
            "eval.episodes=1",
            "eval.max_steps=10",
            "logger.backend=none",
            "logger.progress=false",
            "checkpoint.interval=100000000",
            f"logger.run_dir={ROOT / 'runs' / 'throughput' / algorithm}",
            f"num_threads={threads}",
            *extra,
        ]
    )
    result = train(cfg)
    first = next(r for r in result.records if r.frames >= warmup_frames)
    last = result.records[-1]
    return {
        "algorithm": algorithm,
        "threads": threads,
        "overrides": list(extra),
        "frames_timed": last.frames - first.frames,
        "updates_per_step": cfg.loss.updates_per_step,
        "updates_timed": last.updates - first.updates,
        "wall_time_s": last.wall_time_s - first.wall_time_s,
        "env_steps_per_s": (last.frames - first.frames) / (last.wall_time_s - first.wall_time_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--loop-frames", type=int, default=0, help="time the whole loop too")
    parser.add_argument(
        "--loop-threads", type=int, nargs="+", default=[1], help="torch threads of the loop runs"
    )
    parser.add_argument("--loop-only", action="store_true", help="only time the whole loop")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    env = GymEnv("HalfCheetah-v5")
    obs_spec, act_spec = env_specs(env)
    obs_dim, act_dim = obs_spec.shape[-1], act_spec.shape[-1]
    batches = _batches(16, obs_dim, act_dim, device)

    variants: dict[str, Callable] = {"sac_torchrl": make_sac_torchrl(obs_spec, act_spec, device)}
    variants["sac_recipe"], _ = make_recipe(
        "sac", obs_spec, act_spec, device, compile=False, cudagraphs=False
    )
    variants["s2vg_full"], variants["s2vg_actor_critic"] = make_recipe(
        "s2vg", obs_spec, act_spec, device, compile=False, cudagraphs=False
    )
    variants["sac_plain_torch"] = make_sac_plain(obs_dim, act_dim, device)
    if args.compile:
        variants["sac_torchrl_compiled"] = make_sac_torchrl(
            obs_spec, act_spec, device, compile=True
        )
        variants["sac_recipe_compiled"], _ = make_recipe(
            "sac", obs_spec, act_spec, device, compile=True, cudagraphs=False
        )
        variants["s2vg_full_compiled"], _ = make_recipe(
            "s2vg", obs_spec, act_spec, device, compile=True, cudagraphs=False
        )
    if device.type == "cuda":
        variants["sac_recipe_cudagraphs"], _ = make_recipe(
            "sac", obs_spec, act_spec, device, compile=False, cudagraphs=True
        )
        variants["s2vg_full_cudagraphs"], _ = make_recipe(
            "s2vg", obs_spec, act_spec, device, compile=False, cudagraphs=True
        )
    if args.loop_only:
        variants = {}

    compile_s = {}
    for name, step in variants.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        _time(step, batches, args.warmup, device)
        compile_s[name] = time.perf_counter() - t0
        print(f"warm-up {name}: {compile_s[name]:.1f}s", flush=True)

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats if names else 0):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(_time(variants[name], batches, args.iters, device))
        print(f"repeat {r}: " + ", ".join(f"{n} {times[n][-1]:.1f}ms" for n in names), flush=True)

    def ratio(a: str, b: str) -> dict | None:
        if a not in times or b not in times:
            return None
        per = [x / y for x, y in zip(times[a], times[b], strict=True)]
        return {"median": statistics.median(per), "min": min(per), "max": max(per)}

    results = {
        n: {
            "ms_per_update_median": statistics.median(t),
            "ms_per_update_min": min(t),
            "ms_per_update_max": max(t),
            "updates_per_s_median": 1e3 / statistics.median(t),
            "warmup_s": compile_s[n],
            "ms_per_update": t,
        }
        for n, t in times.items()
    }
    ratios = {
        "s2vg_full / sac_torchrl": ratio("s2vg_full", "sac_torchrl"),
        "s2vg_actor_critic / sac_torchrl": ratio("s2vg_actor_critic", "sac_torchrl"),
        "sac_torchrl / sac_plain_torch": ratio("sac_torchrl", "sac_plain_torch"),
        "sac_recipe / sac_torchrl": ratio("sac_recipe", "sac_torchrl"),
        "s2vg_full_compiled / sac_torchrl_compiled": ratio(
            "s2vg_full_compiled", "sac_torchrl_compiled"
        ),
        "s2vg_full_compiled / s2vg_full": ratio("s2vg_full_compiled", "s2vg_full"),
        "s2vg_full_cudagraphs / s2vg_full": ratio("s2vg_full_cudagraphs", "s2vg_full"),
    }
    ratios = {k: v for k, v in ratios.items() if v is not None}
    loop = []
    if args.loop_frames:
        for threads in args.loop_threads:
            for algorithm, extra in (("s2vg", ()), ("s2vg", ("precision=bf16",)), ("sac", ())):
                loop.append(loop_throughput(algorithm, args.loop_frames, BATCH, threads, *extra))
                torch.set_num_threads(args.threads)
                print(loop[-1], flush=True)

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    report = {
        "command": "python benchmarks/throughput.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": commit,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "threads": args.threads,
        "shapes": {"observation": obs_dim, "action": act_dim, "batch": BATCH, "hidden": HIDDEN},
        "repeats": args.repeats,
        "iters": args.iters,
        "results": results,
        "ratios": ratios,
        "loop": loop,
    }
    if args.out is None:
        name = "loop" if args.loop_only else "throughput"
        args.out = ROOT / "benchmarks" / "results" / name
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(report, indent=2))
    if args.loop_only:
        lines = [
            f"# Whole training loop throughput ({device})",
            "",
            f"`{report['command']}` at `{commit[:10]}`: python -m torchrl_svg.train on "
            "HalfCheetah-v5 (the recipe's collector, replay and updates; batch "
            f"{BATCH}), environment steps/s after the warm-up.",
        ]
    else:
        lines = [
            f"# Update throughput ({device}, {args.threads} thread(s))",
            "",
            f"`{report['command']}` at `{commit[:10]}`; HalfCheetah-v5 shapes (17/6), batch "
            f"{BATCH}, 256x256 networks; medians of {args.repeats} interleaved repeats of "
            f"{args.iters} updates.",
            "",
            "| variant | ms / update (median) | min | max | updates / s |",
            "|---|---:|---:|---:|---:|",
        ]
        for n, r in results.items():
            lines.append(
                f"| {n} | {r['ms_per_update_median']:.2f} | {r['ms_per_update_min']:.2f} | "
                f"{r['ms_per_update_max']:.2f} | {r['updates_per_s_median']:.1f} |"
            )
        lines += ["", "| ratio (per repeat) | median | min | max |", "|---|---:|---:|---:|"]
        for k, v in ratios.items():
            lines.append(f"| {k} | {v['median']:.2f} | {v['min']:.2f} | {v['max']:.2f} |")
    if loop:
        lines += [
            "",
            "| whole loop on HalfCheetah-v5 | threads | updates / env step | env steps / s |",
            "|---|---:|---:|---:|",
        ]
        for row in loop:
            name = " ".join([row["algorithm"], *row["overrides"]])
            lines.append(
                f"| {name} | {row['threads']} | {row['updates_per_step']} | "
                f"{row['env_steps_per_s']:.2f} |"
            )
    (args.out / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
