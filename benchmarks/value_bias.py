"""The bias of the learned value along training on Pendulum-v1 (the S2VG paper's Fig. 2c).

For every checkpoint a run kept (``checkpoint.keep=true``: ``checkpoints/checkpoint_<frames>.pt``)
the script rebuilds the agent from the run's ``config.yaml``, draws ``--states`` states from
that checkpoint's own replay buffer and compares

* the critic's estimate ``V(s)`` (S2VG's state-value network), averaged over the states, with
* the discounted Monte-Carlo return of ``--rollouts`` real rollouts of the current stochastic
  policy from each state, averaged over rollouts and states.

The rollouts run Gymnasium's ``Pendulum-v1`` dynamics from each replay state (``state =
(atan2(sin, cos), thdot)`` from the observation ``(cos, sin, thdot)``): all rollouts step
together through ``Pendulum-v1``'s own equations written over arrays, and at every step the
first ``--check`` of them are also stepped by Gymnasium's ``PendulumEnv`` (set to the same
state, given the same action); a difference above 1e-9 stops the script. They run for
``--steps`` steps (past the 200-step time limit: the critic bootstraps through
truncations, so its target is the discounted infinite-horizon return; ``gamma**steps`` of it
is cut off). Both the plain discounted return (what the paper plots) and the soft return
``sum_k gamma^k (r_k - alpha log pi(a_k|s_k))`` (what S2VG's ``V`` estimates) are reported;
the bias is ``V - return``, positive for over-estimation.

Writes ``<name>.csv`` per run (frames, the estimate, both returns, both biases) and, for
several runs, ``value_bias.json`` and ``value_bias.png`` (mean +- std over the seeds of each
group) to ``--out``::

    python benchmarks/value_bias.py runs/bench/s2vg_H1_Pendulum-v1/seed0 ... \\
        --group H=1 H=1 H=1 H=2 ... --out benchmarks/results/s2vg_horizon_Pendulum-v1

``--kept LABEL=CSV ...`` adds runs measured earlier from the per-run CSVs this script wrote
(for runs whose directories are gone), into the group ``LABEL``; their ``states``,
``rollouts`` and ``steps`` must be this call's.
"""

from __future__ import annotations

import argparse
import csv
import json
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
from gymnasium.envs.classic_control.pendulum import angle_normalize  # noqa: E402
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


def _pendulum_step(
    state: np.ndarray, action: np.ndarray, env
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``PendulumEnv.step`` over arrays: (next state, next observation, reward) for ``[N]`` envs.

    ``state`` is ``[N, 2]`` (angle, angular velocity), ``action`` ``[N, 1]``; the constants are
    read from ``env`` (a Gymnasium ``PendulumEnv``).
    """
    th, thdot = state[:, 0], state[:, 1]
    u = np.clip(action, -env.max_torque, env.max_torque)[:, 0]
    costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
    newthdot = (
        thdot + (3 * env.g / (2 * env.l) * np.sin(th) + 3.0 / (env.m * env.l**2) * u) * env.dt
    )
    newthdot = np.clip(newthdot, -env.max_speed, env.max_speed)
    newth = th + newthdot * env.dt
    # float32, as PendulumEnv._get_obs returns it
    obs = np.stack([np.cos(newth), np.sin(newth), newthdot], axis=1).astype(np.float32)
    return np.stack([newth, newthdot], axis=1), obs, -costs


def _check_against_gymnasium(
    envs: list, state: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray
) -> None:
    """Step Gymnasium's own ``PendulumEnv`` from the first rows and compare (1e-9)."""
    for i, env in enumerate(envs):
        env.state = state[i].copy()
        obs, r, *_ = env.step(action[i])
        err = max(float(np.abs(obs - next_obs[i]).max()), abs(float(r) - float(reward[i])))
        if err > 1e-9:
            raise RuntimeError(
                f"the array Pendulum-v1 step differs from Gymnasium's PendulumEnv by {err:.3g} "
                f"(state {state[i]}, action {action[i]})."
            )


@torch.no_grad()
def monte_carlo(
    agent,
    states: torch.Tensor,
    rollouts: int,
    steps: int,
    gamma: float,
    alpha: float,
    seed: int,
    check: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted (plain, soft) returns of real rollouts from each state: two ``[S]`` tensors."""
    start = states.repeat_interleave(rollouts, 0)  # [S * R, 3]
    gym_envs = [gym.make("Pendulum-v1").unwrapped for _ in range(min(check, start.shape[0]))]
    for i, env in enumerate(gym_envs):
        env.reset(seed=seed + i)
    obs_np = start.double().numpy()
    state = np.stack([np.arctan2(obs_np[:, 1], obs_np[:, 0]), obs_np[:, 2]], axis=1)
    obs = start.clone()
    plain = torch.zeros(start.shape[0], dtype=torch.float64)
    soft = torch.zeros_like(plain)
    discount = 1.0
    for _ in range(steps):
        with set_exploration_type(ExplorationType.RANDOM):
            td = agent.policy(TensorDict({"observation": obs}, [obs.shape[0]]))
        actions = td["action"].double().numpy()
        log_prob = td["action_log_prob"].reshape(-1).double()
        next_state, next_obs, rewards = _pendulum_step(state, actions, gym_envs[0])
        _check_against_gymnasium(gym_envs, state, actions, next_obs, rewards)
        reward = torch.as_tensor(rewards)
        plain += discount * reward
        soft += discount * (reward - alpha * log_prob)
        discount *= gamma
        state = next_state
        obs = torch.as_tensor(next_obs, dtype=obs.dtype)
    for env in gym_envs:
        env.close()
    return plain.view(-1, rollouts).mean(1), soft.view(-1, rollouts).mean(1)


@torch.no_grad()
def measure(
    run_dir: Path, n_states: int, rollouts: int, steps: int, seed: int, check: int = 8
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
        plain, soft = monte_carlo(
            agent, states, rollouts, steps, gamma, alpha, seed + frames, check
        )
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


def read_rows(path: Path, states: int, rollouts: int, steps: int) -> list[dict[str, float]]:
    """The rows of a per-run CSV this script wrote, measured with the same sizes.

    Raises:
        ValueError: a column is missing, or the CSV was measured with other sizes.
    """
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows.")
    missing = [k for k in FIELDS if k not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}: not a value_bias.py CSV.")
    out = [{k: float(r[k]) for k in FIELDS} for r in rows]
    want = {"states": states, "rollouts": rollouts, "steps": steps}
    for r in out:
        got = {k: int(r[k]) for k in want}
        if got != want:
            raise ValueError(f"{path} was measured with {got}, this call with {want}.")
        r["frames"] = int(r["frames"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--group", nargs="+", help="a label per run (default: its folder name)")
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--rollouts", type=int, default=50)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check",
        type=int,
        default=8,
        help="rollouts also stepped by Gymnasium's PendulumEnv at every step, as a check",
    )
    parser.add_argument(
        "--kept",
        nargs="+",
        default=[],
        metavar="LABEL=CSV",
        help="runs measured earlier: a per-run CSV this script wrote, in the group LABEL",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.runs and not args.kept:
        parser.error("give run directories to measure, or --kept LABEL=CSV, or both.")
    if args.group is not None and len(args.group) != len(args.runs):
        parser.error(f"--group needs one label per run ({len(args.runs)}), got {len(args.group)}.")
    kept = []
    for item in args.kept:
        label, sep, path = item.rpartition("=")  # a label may hold "=" (H=1)
        if not sep or not label or not path:
            parser.error(f"--kept takes LABEL=CSV, got {item!r}.")
        try:
            rows = read_rows(Path(path), args.states, args.rollouts, args.steps)
        except (OSError, ValueError) as err:
            parser.error(f"--kept {item}: {err}")
        kept.append((label, rows))
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[list[dict[str, float]]]] = {}
    for i, run in enumerate(args.runs):
        rows = measure(run, args.states, args.rollouts, args.steps, args.seed, args.check)
        name = f"{run.parent.name}_{run.name}"
        with (args.out / f"{name}_value_bias.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        label = args.group[i] if args.group else run.parent.name
        groups.setdefault(label, []).append(rows)
    for label, rows in kept:
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
