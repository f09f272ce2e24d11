"""The bias of the learned value along training on Pendulum-v1 (the S2VG paper's Fig. 2c).

For every checkpoint a run kept (``checkpoint.keep=true``: ``checkpoints/checkpoint_<frames>.pt``)
the script rebuilds the agent from the run's ``config.yaml``, draws ``--states`` states from
that checkpoint's own replay buffer and compares

* the critic's estimate ``V(s)`` (S2VG's state-value network), averaged over the states, with
* the discounted Monte-Carlo return of ``--rollouts`` real rollouts of the current stochastic
  policy from each state, averaged over rollouts and states.

The rollouts run in real Gymnasium ``Pendulum-v1`` environments set to each replay state
(``env.unwrapped.state = (atan2(sin, cos), thdot)`` from the observation ``(cos, sin,
thdot)``), for ``--steps`` steps (past the 200-step time limit: the critic bootstraps through
truncations, so its target is the discounted infinite-horizon return; ``gamma**steps`` of it
is cut off). Both the plain discounted return (what the paper plots) and the soft return
``sum_k gamma^k (r_k - alpha log pi(a_k|s_k))`` (what S2VG's ``V`` estimates) are reported;
the bias is ``V - return``, positive for over-estimation.

Writes ``<name>.csv`` per run (frames, the estimate, both returns, both biases) and, for
several runs, ``value_bias.json`` and ``value_bias.png`` (mean +- std over the seeds of each
group) to ``--out``::

    python benchmarks/value_bias.py runs/bench/s2vg_H1_Pendulum-v1/seed0 ... \\
        --group H=1 H=1 H=1 H=2 ... --out benchmarks/results/s2vg_horizon_Pendulum-v1
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diagnose import rebuild  # noqa: E402
from learning import _git_commit  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402

from torchrl_svg.train.checkpoint import load_checkpoint  # noqa: E402
from torchrl_svg.train.records import plot_curves  # noqa: E402

FIELDS = (
    "frames",
    "value_estimate",
    "mc_return",
    "mc_soft_return",
    "bias",
    "soft_bias",
    "alpha",
    "states",
    "rollouts",
    "steps",
)


def _kept(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (run_dir / "checkpoints").glob("checkpoint_*.pt"):
        match = re.fullmatch(r"checkpoint_(\d+)\.pt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise FileNotFoundError(
            f"{run_dir}: no kept checkpoints (train with checkpoint.keep=true)."
        )
    return sorted(found)


_PENDULUMS: list = []


def _pendulums(n: int) -> list:
    """``n`` real Pendulum-v1 environments (Gymnasium's own class), made once and reused."""
    while len(_PENDULUMS) < n:
        _PENDULUMS.append(gym.make("Pendulum-v1").unwrapped)
    return _PENDULUMS[:n]


@torch.no_grad()
def monte_carlo(
    agent, states: torch.Tensor, rollouts: int, steps: int, gamma: float, alpha: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted (plain, soft) returns of real rollouts from each state: two ``[S]`` tensors."""
    start = states.repeat_interleave(rollouts, 0)  # [S * R, 3]
    envs = _pendulums(start.shape[0])
    for i, (env, obs) in enumerate(zip(envs, start.double().numpy(), strict=True)):
        env.reset(seed=seed + i)
        env.state = np.array([math.atan2(obs[1], obs[0]), obs[2]])
    obs = start.clone()
    plain = torch.zeros(start.shape[0], dtype=torch.float64)
    soft = torch.zeros_like(plain)
    discount = 1.0
    for _ in range(steps):
        with set_exploration_type(ExplorationType.RANDOM):
            td = agent.policy(TensorDict({"observation": obs}, [obs.shape[0]]))
        actions = td["action"].double().numpy()
        log_prob = td["action_log_prob"].reshape(-1).double()
        rewards, next_obs = [], []
        for env, action in zip(envs, actions, strict=True):
            o, r, *_ = env.step(action)
            rewards.append(r)
            next_obs.append(o)
        reward = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
        plain += discount * reward
        soft += discount * (reward - alpha * log_prob)
        discount *= gamma
        obs = torch.as_tensor(np.stack(next_obs), dtype=obs.dtype)
    return plain.view(-1, rollouts).mean(1), soft.view(-1, rollouts).mean(1)


@torch.no_grad()
def measure(
    run_dir: Path, n_states: int, rollouts: int, steps: int, seed: int
) -> list[dict[str, float]]:
    """One row per kept checkpoint of ``run_dir``."""
    cfg, agent, env = rebuild(run_dir, seed_offset=30_000)
    env.close()
    if cfg.env.name != "Pendulum-v1" or cfg.algorithm != "s2vg":
        raise ValueError(
            f"{run_dir}: value_bias.py measures S2VG on Pendulum-v1, got "
            f"{cfg.algorithm} on {cfg.env.name}."
        )
    gamma = cfg.loss.gamma
    rows = []
    for frames, path in _kept(run_dir):
        state = load_checkpoint(path)
        agent.load_state_dict(state["agent"])
        replay = state["replay"]["data"]
        generator = torch.Generator().manual_seed(seed + frames)
        index = torch.randperm(replay.numel(), generator=generator)[:n_states]
        states = replay["observation"][index]
        loss = agent.loss
        alpha = float(loss.log_alpha.exp())
        estimate = loss._state_value(states, loss.value_network_params).reshape(-1)
        plain, soft = monte_carlo(agent, states, rollouts, steps, gamma, alpha, seed + frames)
        v = float(estimate.mean())
        rows.append(
            {
                "frames": frames,
                "value_estimate": v,
                "mc_return": float(plain.mean()),
                "mc_soft_return": float(soft.mean()),
                "bias": v - float(plain.mean()),
                "soft_bias": v - float(soft.mean()),
                "alpha": alpha,
                "states": int(states.shape[0]),
                "rollouts": rollouts,
                "steps": steps,
            }
        )
        print(f"{run_dir} {frames}: V {v:.1f}  MC {plain.mean():.1f}  soft MC {soft.mean():.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--group", nargs="+", help="a label per run (default: its folder name)")
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--rollouts", type=int, default=50)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.group is not None and len(args.group) != len(args.runs):
        parser.error(f"--group needs one label per run ({len(args.runs)}), got {len(args.group)}.")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[list[dict[str, float]]]] = {}
    for i, run in enumerate(args.runs):
        rows = measure(run, args.states, args.rollouts, args.steps, args.seed)
        name = f"{run.parent.name}_{run.name}"
        with (args.out / f"{name}_value_bias.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        label = args.group[i] if args.group else run.parent.name
        groups.setdefault(label, []).append(rows)

    series = {}
    summary = {}
    for label, runs in groups.items():
        frames = sorted({r["frames"] for rows in runs for r in rows})
        curve = []
        for f in frames:
            values = [r["bias"] for rows in runs for r in rows if r["frames"] == f]
            m = sum(values) / len(values)
            s = (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5
            curve.append((f, m, s))
        series[f"{label}: V - discounted MC return"] = curve
        summary[label] = {"runs": len(runs), "bias_curve": curve}
    plot_curves(
        series,
        args.out / "value_bias.png",
        title=f"Value bias along training ({args.states} replay states x {args.rollouts} rollouts)",
        ylabel="V(s) - discounted Monte-Carlo return",
    )
    report = {
        "command": "python benchmarks/value_bias.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": _git_commit(),
        "groups": summary,
    }
    (args.out / "value_bias.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
