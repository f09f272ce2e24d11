r"""What limits a trained run: model error, value bias, entropy, measured from its checkpoint.

For each run directory (a ``python -m torchrl_svg.train`` run with a ``checkpoint.pt``) the
script rebuilds the agent from the run's own ``config.yaml``, loads the checkpoint (networks,
world model, replay buffer) and measures:

* **model error** (S2VG): the world model's one-step error on the newest 10% of the replay
  buffer and on older data (mean squared error of the predicted mean, in units of each state
  dimension's standard deviation; the Gaussian NLL of the normalised delta), and the
  open-loop error of k-step model predictions along real trajectories (real start state and
  real actions, the model's mean), k = 1, 5, 10, 25: how fast model error compounds;
* **value bias**: ``episodes`` real episodes with the stochastic policy; at every step the
  critic's estimate (S2VG: ``V(s)``; SAC: ``min_i Q_i(s, a) - alpha log pi(a|s)``) against the
  discounted soft Monte-Carlo return actually obtained from there,
  ``G_t = sum_k gamma^k (r_{t+k} - alpha log pi(a_{t+k}|s_{t+k}))``, over the steps whose
  return is determined to within ``gamma^300``; a positive bias is over-estimation;
* **episodes**: the lengths of the stochastic episodes above, and the returns, lengths and
  discounted returns (the run's gamma) of as many deterministic episodes;
* **entropy and alpha**: the policy's entropy at replay states and the temperature, and the
  stochastic episodes' return beside the run's last deterministic evaluation.

Writes ``diagnostics.json`` and ``diagnostics.md`` to ``--out``::

    python benchmarks/diagnose.py runs/mujoco/s2vg_HalfCheetah-v5/seed0 \
        runs/mujoco/sac_HalfCheetah-v5/seed0 --out benchmarks/results/mujoco_100k/diagnostics
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402

from torchrl_svg.modules import env_specs  # noqa: E402
from torchrl_svg.train import load_config, make_agent  # noqa: E402
from torchrl_svg.train.builders import make_env  # noqa: E402
from torchrl_svg.train.checkpoint import load_checkpoint  # noqa: E402

HORIZONS = (1, 5, 10, 25)
TAIL = 300  # steps of an episode whose Monte-Carlo return is cut off by the time limit


def rebuild(run_dir: Path, seed_offset: int = 20_000, overrides: Sequence[str] = ()):
    """The run's configuration, a fresh agent built from it and an environment of its task.

    ``seed_offset``: added to the run's seed for the environment, so that measurements use
    episodes the run never saw. ``overrides``: ``group.key=value`` changes to the run's
    configuration (e.g. to measure the same trained networks with another loss setting).
    """
    cfg = load_config(overrides, config_file=run_dir / "config.yaml")
    env = make_env(cfg, seed_offset=seed_offset)
    agent = make_agent(cfg, *env_specs(env), env=env)
    return cfg, agent, env


def load_run(run_dir: Path, seed_offset: int = 20_000, overrides: Sequence[str] = ()):
    """:func:`rebuild`, with the run's ``checkpoint.pt`` loaded; also returns that state."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    cfg, agent, env = rebuild(run_dir, seed_offset, overrides)
    agent.load_state_dict(state["agent"])
    return cfg, agent, env, state


def shifted(module: torch.nn.Module, direction: torch.Tensor, length: float) -> TensorDict:
    """The parameters of ``module`` moved by ``length`` along a flat ``direction``.

    ``direction`` is ordered as ``TensorDict.from_module(module)``'s leaves (the order of a
    loss's ``actor_network_params`` for the same module); use the result with
    ``with params.to_module(module): ...``.
    """
    params = TensorDict.from_module(module)
    moved, offset = params.clone(), 0
    for key in params.keys(True, True):
        value = params.get(key)
        step = direction[offset : offset + value.numel()].reshape(value.shape)
        moved.set(key, value.detach() + length * step)
        offset += value.numel()
    if offset != direction.numel():
        raise ValueError(f"direction has {direction.numel()} entries, the module {offset}.")
    return moved


@torch.no_grad()
def model_error(agent, replay: TensorDict, horizons: Sequence[int] = HORIZONS) -> dict:
    """One-step and open-loop k-step error (``k`` in ``horizons``) of the world model on the run's data."""
    dynamics = agent.world_model.dynamics
    n = replay.numel()
    newest = replay[int(0.9 * n) :]
    older = replay[torch.randperm(int(0.9 * n))[: newest.numel()]]
    std = replay["next", "observation"].std(0).clamp_min(1e-6)
    out = {}
    for name, data in (("newest_10pct", newest), ("older", older)):
        mean = dynamics.get_dist(data.select("observation", "action")).mean
        err = ((mean - data["next", "observation"]) / std).pow(2).mean()
        nll = -dynamics.log_prob_normalized(data).mean()
        out[f"one_step_mse_{name}"] = float(err)
        out[f"one_step_nll_{name}"] = float(nll)
    # open-loop predictions along the newest real trajectories (real actions, model means)
    traj = newest["collector", "traj_ids"]
    errors = {k: [] for k in horizons}
    for tid in traj.unique()[:20]:
        episode = newest[traj == tid]
        if episode.numel() <= max(horizons):
            continue
        starts = torch.arange(0, episode.numel() - max(horizons), 25)
        state = episode["observation"][starts]
        for k in range(1, max(horizons) + 1):
            td = TensorDict({"observation": state, "action": episode["action"][starts + k - 1]})
            state = dynamics.get_dist(td).mean
            if k in errors:
                real = episode["next", "observation"][starts + k - 1]
                errors[k].append(((state - real) / std).pow(2).mean(-1))
    for k, values in errors.items():
        if values:
            out[f"open_loop_mse_k{k}"] = float(torch.cat(values).mean())
    return out


@torch.no_grad()
def value_bias(cfg, agent, env, episodes: int) -> dict:
    """Critic estimates against the discounted soft Monte-Carlo returns of real episodes."""
    loss = agent.loss
    gamma = cfg.loss.gamma
    alpha = float(loss.log_alpha.exp())
    estimates, returns, episode_returns, log_probs, lengths = [], [], [], [], []
    for _ in range(episodes):
        with set_exploration_type(ExplorationType.RANDOM):
            rollout = env.rollout(cfg.eval.max_steps, agent.policy, break_when_any_done=True)
        reward = rollout["next", "reward"].squeeze(-1)
        log_prob = rollout["action_log_prob"].reshape(-1)
        soft = reward - alpha * log_prob
        truncated = not bool(rollout["next", "terminated"][-1])
        steps = reward.numel()
        lengths.append(steps)
        g, values = 0.0, torch.empty(steps)
        for t in reversed(range(steps)):
            g = float(soft[t]) + gamma * g
            values[t] = g
        keep = steps - TAIL if truncated else steps
        episode_returns.append(float(reward.sum()))
        log_probs.append(log_prob)
        if keep <= 0:
            continue
        obs = rollout["observation"][:keep]
        if cfg.algorithm == "s2vg":
            estimate = loss._state_value(obs, loss.value_network_params)
        else:  # SAC: V(s) = min_i Q_i(s, a) - alpha log pi(a|s) at the episode's own actions
            td = TensorDict({"observation": obs, "action": rollout["action"][:keep]}, [keep])
            q = loss._vmap_qnetworkN0(td, loss.qvalue_network_params)
            estimate = q["state_action_value"].squeeze(-1).min(0).values - alpha * log_prob[:keep]
        estimates.append(estimate)
        returns.append(values[:keep])
    out = {
        "alpha": alpha,
        "stochastic_episode_return_mean": sum(episode_returns) / len(episode_returns),
        "stochastic_episode_lengths": lengths,
        "entropy_along_episodes": float(-torch.cat(log_probs).mean()),
    }
    if not estimates:  # e.g. Pendulum-v1: 200-step episodes, all cut by the time limit
        out["value_bias_note"] = (
            f"every episode ended by the time limit within {TAIL} steps "
            f"(lengths {lengths}): no state's Monte-Carlo return is determined; "
            "benchmarks/value_bias.py measures it with longer rollouts from replay states"
        )
        return out
    est, ret = torch.cat(estimates), torch.cat(returns)
    return {
        **out,
        "value_estimate_mean": float(est.mean()),
        "monte_carlo_soft_return_mean": float(ret.mean()),
        "value_bias_mean": float((est - ret).mean()),
        "value_bias_relative": float((est - ret).mean() / ret.abs().mean().clamp_min(1e-6)),
        "steps_compared": int(est.numel()),
    }


@torch.no_grad()
def deterministic_episodes(cfg, agent, env, episodes: int) -> dict:
    """Returns, lengths and discounted returns (the run's gamma) of deterministic episodes."""
    returns, lengths, discounted = [], [], []
    for _ in range(episodes):
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            rollout = env.rollout(cfg.eval.max_steps, agent.policy, break_when_any_done=True)
        reward = rollout["next", "reward"].reshape(-1).double()
        returns.append(float(reward.sum()))
        lengths.append(reward.numel())
        weights = cfg.loss.gamma ** torch.arange(reward.numel(), dtype=torch.float64)
        discounted.append(float((weights * reward).sum()))
    return {
        "deterministic_episode_returns": returns,
        "deterministic_episode_lengths": lengths,
        "deterministic_discounted_returns": discounted,
    }


def diagnose(run_dir: Path, episodes: int) -> dict:
    """All measurements of one run."""
    cfg, agent, env, state = load_run(run_dir)
    replay = state["replay"]["data"]
    out = {
        "run_dir": str(run_dir),
        "algorithm": cfg.algorithm,
        "env": cfg.env.name,
        "seed": cfg.env.seed,
        "frames": state["counters"]["frames"],
        "last_deterministic_eval": state["records"][-1]["returns"] if state["records"] else None,
    }
    if state["records"]:
        returns = state["records"][-1]["returns"]
        out["last_deterministic_eval"] = sum(returns) / len(returns)
    out.update(value_bias(cfg, agent, env, episodes))
    out.update(deterministic_episodes(cfg, agent, env, episodes))
    if agent.world_model is not None:
        out.update(model_error(agent, replay))
    env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = [diagnose(run, args.episodes) for run in args.runs]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    report = {
        "command": "python benchmarks/diagnose.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": commit,
        "runs": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diagnostics.json").write_text(json.dumps(report, indent=2))
    keys = [
        "frames",
        "last_deterministic_eval",
        "stochastic_episode_return_mean",
        "alpha",
        "entropy_along_episodes",
        "value_estimate_mean",
        "monte_carlo_soft_return_mean",
        "value_bias_relative",
        "one_step_mse_newest_10pct",
        "one_step_mse_older",
        *(f"open_loop_mse_k{k}" for k in HORIZONS),
    ]
    lines = [
        "# Diagnostics of trained runs",
        "",
        f"`{report['command']}` at `{commit[:10]}`. Model errors are mean squared errors in "
        "units of each state dimension's standard deviation; value bias is (critic estimate - "
        "discounted soft Monte-Carlo return) / mean |return| over real stochastic episodes.",
        "",
        "| run | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for r in results:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(
                ""
                if v is None
                else (f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else str(v))
            )
        label = f"{r['algorithm']} {r['env']} s{r['seed']}"
        if Path(r["run_dir"]).name != f"seed{r['seed']}":  # e.g. a folder holding one checkpoint
            label += f" ({Path(r['run_dir']).name})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (args.out / "diagnostics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(OmegaConf.to_container(OmegaConf.create(results)), indent=1)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
