"""What SVG(inf)'s policy gradient looks like on the Hand task, from a run's checkpoint.

For a ``python -m torchrl_svg.train algorithm=svginf env.name=Hand-v0`` run directory the
script rebuilds the agent from the run's ``config.yaml`` and ``checkpoint.pt``, collects
``--batches`` independent batches of ``--episodes`` real episodes with the current stochastic
policy, and reports for the policy gradient the run's own loss computes (``svg.noise`` as the
run has it: inferred noise along real trajectories, or the planner's sampled noise):

* its norm per batch (the run clips it at ``svg.actor_max_grad_norm``);
* the cosine between the gradients of independent batches (near 1: a consistent direction;
  near 0: noise);
* the cosine between the gradient through the learned model and the gradient through the
  env's own dynamics (``torchrl_svg.envs.hand_dynamics_model``) on the same episodes: how
  far the learned model's Jacobians, chained over the whole episode, are from the true ones;
* the two parts of the true-model gradient: that of the per-step control cost alone
  (:math:`\alpha_2 = 0`) and that of the final-step distance cost alone (:math:`\alpha_1 = 0`),
  their norms and the cosine of each with the whole.

Writes ``<out>/<run>_gradient.json``::

    python benchmarks/svginf_gradient.py runs/bench/svginf_Hand-v0_1000steps_real/seed0 \\
        --out benchmarks/results/svginf_Hand-v0_1000steps_real
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from diagnose import load_run  # noqa: E402
from learning import _git_commit  # noqa: E402
from torch.nn.functional import cosine_similarity  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402

from torchrl_svg.envs import hand_dynamics_model, hand_reward_module  # noqa: E402
from torchrl_svg.objectives import SVGInfLoss  # noqa: E402


def _flat_gradient(loss: SVGInfLoss, episodes) -> torch.Tensor:
    params = list(loss.actor_network_params.values(True, True))
    grads = torch.autograd.grad(loss(episodes)["loss_actor"], params, allow_unused=True)
    return torch.cat([g.reshape(-1) for g in grads if g is not None])


def measure(run_dir: Path, batches: int, episodes: int) -> dict:
    """The gradient statistics of one run's checkpoint."""
    cfg, agent, env, state = load_run(run_dir, seed_offset=40_000)
    if cfg.algorithm != "svginf" or cfg.env.name != "Hand-v0":
        raise ValueError(
            f"{run_dir}: an SVG(inf) run on Hand-v0 is needed, got {cfg.algorithm} on {cfg.env.name}."
        )
    base = env
    while not hasattr(base, "params"):
        base = base.base_env
    true_loss = SVGInfLoss(
        agent.policy,
        hand_dynamics_model(base.params),
        agent.world_model.reward,
        noise=cfg.svg.noise,
    )
    true_loss.make_value_estimator(gamma=1.0)
    parts = {}
    for part, zero in (
        ("control_cost_only", "terminal_cost"),
        ("terminal_cost_only", "control_cost"),
    ):
        params = dataclasses.replace(base.params, **{zero: 0.0})
        parts[part] = SVGInfLoss(
            agent.policy,
            hand_dynamics_model(params),
            hand_reward_module(params),
            noise=cfg.svg.noise,
        )
        parts[part].make_value_estimator(gamma=1.0)
    part_norms = {part: [] for part in parts}
    part_cosines = {part: [] for part in parts}
    steps = cfg.env.max_episode_steps or base.params.episode_steps
    norms, returns, learned, true = [], [], [], []
    for _ in range(batches):
        with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
            data = torch.stack([env.rollout(steps, agent.policy) for _ in range(episodes)], 0)
        returns.append(float(data["next", "reward"].sum(-2).mean()))
        learned.append(_flat_gradient(agent.loss, data))
        true.append(_flat_gradient(true_loss, data))
        norms.append(float(learned[-1].norm()))
        for part, part_loss in parts.items():
            g = _flat_gradient(part_loss, data)
            part_norms[part].append(float(g.norm()))
            part_cosines[part].append(float(cosine_similarity(g, true[-1], 0)))
    env.close()
    pairs = [(i, j) for i in range(batches) for j in range(i + 1, batches)]
    return {
        "run_dir": str(run_dir),
        "frames": state["counters"]["frames"],
        "policy_updates": state["counters"]["updates"],
        "episode_steps": steps,
        "noise": cfg.svg.noise,
        "episodes_per_batch": episodes,
        "actor_max_grad_norm": cfg.svg.actor_max_grad_norm,
        "stochastic_return_per_batch": returns,
        "learned_model_gradient_norm_per_batch": norms,
        "true_model_gradient_norm_per_batch": [float(t.norm()) for t in true],
        "cosine_between_batches": [
            float(cosine_similarity(learned[i], learned[j], 0)) for i, j in pairs
        ],
        "true_model_gradient_part_norms": part_norms,
        "true_model_gradient_part_cosine_with_whole": part_cosines,
        "cosine_learned_vs_true_model": [
            float(cosine_similarity(a, b, 0)) for a, b in zip(learned, true, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        result = measure(run, args.batches, args.episodes)
        result["command"] = "python benchmarks/svginf_gradient.py " + " ".join(argv or sys.argv[1:])
        result["git_commit"] = _git_commit()
        name = f"{run.name}_gradient_at{result['frames']}.json"
        (args.out / name).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
