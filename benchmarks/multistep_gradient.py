r"""What S2VG's actor gradient looks like through 1, 3 and 5 imagined steps, from a run's checkpoint.

For a ``python -m torchrl_svg.train algorithm=s2vg`` run directory the script rebuilds the agent
from the run's ``config.yaml`` and ``checkpoint.pt`` (networks, world model, alpha, replay
buffer) and, for each actor horizon ``H`` in ``--horizons`` (the run's agent rebuilt with
``loss.actor_horizon=H`` and the checkpoint loaded: the same trained networks and models),
measures the actor's gradient on ``--batches`` independent replay batches of the run's batch
size (each batch's gradient carries the noise of the batch and of the imagined steps):

* its norm per batch, and the share of batches whose norm is over the run's clip
  (``loss.actor_max_grad_norm``): a clipped gradient moves the policy less than Adam's rate;
* the cosine between the gradients of independent batches (near 1: a consistent direction;
  near 0: noise);
* the cosine of each ``H``'s mean gradient with the one-step (``H = 1``, eq 11) mean gradient;
* the mean soft model return the actor maximises;
* the same for the gradient's three parts, those of the imagined steps' discounted model
  rewards, of their entropy bonuses and of the final :math:`V(\hat s_H)`, and the cosines
  between the parts' mean gradients (consistent parts that point against each other leave a
  small, noisy sum).

With ``--model-mean`` it measures the same gradients again with the imagined steps taken at the
model's mean (``loss.actor_model_noise=false``: the policy's draws are the only noise along the
rollout), under ``"horizons_model_mean"``: how much of the gradient's variance between batches
is the model noise's, and (the cosine of the two mean gradients at the same ``H``) how far the
noiseless objective turns the expected gradient. With ``--bounded`` it does the same with the
imagined states clipped to the task's known observation bounds (``loss.observation_bounds=known``:
Hopper's and Walker2d's joint velocities, which the environment observes clipped at 10), under
``"horizons_bounded"``; with both flags, also with both settings at once
(``"horizons_model_mean_bounded"``).

Where the imagined states go: from replay states, the share of the current policy's imagined
states (the run's own settings) outside the box of every state in the replay buffer (per
dimension, its smallest and largest value), step by step, and the mean :math:`V` of the states
inside and outside it: states no network was fitted on.

And, for the world model along the horizon: the disagreement of the ensemble members over the
imagined steps of the current policy from replay states (the standard deviation of the members'
predicted mean next state, in units of each state dimension's standard deviation in the
replay), and the open-loop error of k-step model predictions along real trajectories (real
actions, k = 1, 3, 5; :func:`diagnose.model_error`).

Writes ``<out>/<run>_multistep_gradient_at<frames>.json``::

    python benchmarks/multistep_gradient.py runs/mujoco/s2vg_h3_HalfCheetah-v5/seed0 \
        --out benchmarks/results/mujoco_100k/diagnostics [--model-mean]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from diagnose import load_run, model_error  # noqa: E402
from learning import save_measurement  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch.nn.functional import cosine_similarity  # noqa: E402

from torchrl_svg.objectives import S2VGLoss  # noqa: E402
from torchrl_svg.objectives.functional import soft_model_return  # noqa: E402


def soft_return_parts(
    loss: S2VGLoss, rollout: dict, value: torch.Tensor, whole_only: bool = False
) -> dict:
    r"""The soft model return of an actor rollout and two of its parts, each ``[B]``.

    ``rollout``: ``loss._actor_rollout(batch)``; ``value``: :math:`V(\hat s_H)` at its final
    state. ``"whole"`` is the actor's objective, ``"reward_part"`` the discounted model
    rewards alone and ``"entropy_part"`` the discounted entropy bonuses alone (with the same
    imagined steps); the rest of the whole is the discounted final value. ``whole_only``:
    ``"whole"`` alone.
    """
    no_value = torch.zeros_like(value)
    no_rewards = [torch.zeros_like(r) for r in rollout["rewards"]]

    def soft_return(rewards, final_value: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return soft_model_return(
            rewards,
            rollout["log_probs"],
            rollout["continuations"],
            final_value,
            alpha,
            loss._gamma,
            bootstrap_values=rollout["values"] or None,
            trusted=rollout["trusted"] or None,
        )

    whole = soft_return(rollout["rewards"], value, loss._alpha)
    if whole_only:
        return {"whole": whole}
    return {
        "whole": whole,
        "reward_part": soft_return(rollout["rewards"], no_value, torch.zeros_like(loss._alpha)),
        "entropy_part": soft_return(no_rewards, no_value, loss._alpha),
    }


def _actor_gradients(
    loss: S2VGLoss, batch, whole_only: bool = False
) -> tuple[dict[str, torch.Tensor], float]:
    r"""The actor's gradient on one batch, whole and split into its three parts.

    The soft return of eq 11 (``H = 1``) or of ``H`` imagined steps is the sum of the
    discounted model rewards, the discounted entropy bonuses :math:`-\alpha\log\pi` of the
    imagined actions and the discounted :math:`V(\hat s_H)`. With the same imagined steps
    (the same noise) the gradient of the first alone is the ``"reward_part"``, of the second
    the ``"entropy_part"`` and the rest the ``"value_part"``. Returns the gradients (flat;
    ``"whole"`` alone with ``whole_only``, the same draws) and the mean soft model return.
    """
    params = list(loss.actor_network_params.values(True, True))
    rollout = loss._actor_rollout(batch)
    value = loss._state_value(rollout["final_state"], loss._cached_detached_value_params)
    parts = soft_return_parts(loss, rollout, value, whole_only)
    out = {}
    for name, objective in parts.items():
        grads = torch.autograd.grad(-objective.mean(), params, retain_graph=True, allow_unused=True)
        out[name] = torch.cat([g.reshape(-1) for g in grads if g is not None])
    if not whole_only:
        out["value_part"] = out["whole"] - out["reward_part"] - out["entropy_part"]
    return out, float(parts["whole"].detach().mean())


def _consistency(grads: list[torch.Tensor]) -> dict[str, float]:
    """Median norm, mean norm of the mean, and mean cosine between the gradients of batches."""
    norms = sorted(float(g.norm()) for g in grads)
    pairs = [(i, j) for i in range(len(grads)) for j in range(i + 1, len(grads))]
    cosines = [float(cosine_similarity(grads[i], grads[j], 0)) for i, j in pairs]
    return {
        "norm_median": norms[len(norms) // 2],
        "mean_gradient_norm": float(torch.stack(grads).mean(0).norm()),
        "cosine_between_batches_mean": sum(cosines) / len(cosines),
    }


@torch.no_grad()
def ensemble_disagreement(agent, replay, steps: int, states: int = 1024) -> list[float]:
    """Members' spread of the predicted mean next state along the current policy's imagined steps.

    At each step: the standard deviation over the members of their mean next state, in units
    of each state dimension's standard deviation in the replay, averaged; the rollout then
    goes on from one member's mean per state, drawn uniformly. Empty without an ensemble.
    """
    dynamics = agent.dynamics
    members = dynamics.ensemble_size
    if members < 2:
        return []
    std = replay["next", "observation"].std(0).clamp_min(1e-6)
    obs = replay["observation"][torch.randint(replay.numel(), (states,))]
    spread = []
    for _ in range(steps):
        action = agent.actor(TensorDict({"observation": obs}, [states]))["action"]
        means = torch.stack(
            [
                dynamics.get_dist(
                    TensorDict(
                        {
                            "observation": obs,
                            "action": action,
                            dynamics.member_key: torch.full((states,), m),
                        },
                        [states],
                    ),
                    ensemble_reduction="sample",
                ).mean
                for m in range(members)
            ]
        )
        spread.append(float((means.std(0) / std).mean()))
        obs = means[torch.randint(members, (states,)), torch.arange(states)]
    return spread


@torch.no_grad()
def outside_the_replay(loss: S2VGLoss, replay, steps: int, states: int = 2048) -> dict:
    """Along the current policy's imagined steps: the share of states outside the replay's box.

    From ``states`` replay states, ``steps`` imagined steps as the run's actor takes them (its
    model noise, ensemble members and observation bounds); at each step, the share of states
    with an entry below the smallest or above the largest value of that entry in the replay,
    the share outside in each entry, and the mean :math:`V` of the states inside and outside
    (``None`` where there are none); and the replay's box itself.
    """
    obs = replay["observation"]
    low, high = obs.min(0).values, obs.max(0).values
    generator = torch.Generator().manual_seed(0)
    state = obs[torch.randint(obs.shape[0], (states,), generator=generator)]
    member = None
    if loss.ensemble_members == "rollout":
        member = loss.dynamics_model.draw_members(state.shape[:-1], state.device)
    out: dict[str, list] = {
        "replay_low": low.tolist(),
        "replay_high": high.tolist(),
        "share": [],
        "share_per_entry": [],
        "value_inside": [],
        "value_outside": [],
    }
    key = loss.tensor_keys.observation
    for _ in range(steps):
        action, _ = loss._policy(TensorDict({key: state}, [states]))
        state = loss._model_step(state, action, member)[1]
        entries = (state < low) | (state > high)
        outside = entries.any(-1)
        value = loss._state_value(state, loss.value_network_params)
        out["share"].append(float(outside.float().mean()))
        out["share_per_entry"].append(entries.float().mean(0).tolist())
        for name, rows in (("value_inside", ~outside), ("value_outside", outside)):
            out[name].append(float(value[rows].mean()) if rows.any() else None)
    return out


#: The actor gradient's parts (:func:`_actor_gradients`).
PARTS = ("whole", "reward_part", "entropy_part", "value_part")
#: The settings ``--model-mean`` and ``--bounded`` measure the gradients again with: their
#: overrides and the name of the cosine of their mean gradient with the run settings' one.
ALTERNATIVES = {
    "model_mean": (("loss.actor_model_noise=false",), "cosine_of_mean_with_model_noise_mean"),
    "bounded": (("loss.observation_bounds=known",), "cosine_of_mean_with_unbounded_mean"),
    "model_mean_bounded": (
        ("loss.actor_model_noise=false", "loss.observation_bounds=known"),
        "cosine_of_mean_with_run_settings_mean",
    ),
}


def _batch_gradients(
    run_dir: Path, samples: list, overrides: list[str], whole_only: bool = False
) -> tuple[dict[str, list[torch.Tensor]], list[float]]:
    """Each replay batch's actor gradient (whole and parts, or whole only) and soft model return.

    The run's agent is rebuilt with ``overrides`` and its checkpoint loaded; batch ``i``
    draws its noise from seed ``i``.
    """
    loss = load_run(run_dir, 60_000, overrides)[1].loss
    parts: dict[str, list[torch.Tensor]] = {
        name: [] for name in (PARTS[:1] if whole_only else PARTS)
    }
    returns = []
    for index, batch in enumerate(samples):
        torch.manual_seed(index)
        grads, ret = _actor_gradients(loss, batch.clone(), whole_only)
        for name, g in grads.items():
            parts[name].append(g)
        returns.append(ret)
    return parts, returns


def measure(
    run_dir: Path, horizons: list[int], batches: int, alternatives: Sequence[str] = ()
) -> dict:
    """The gradient statistics of one run's checkpoint for every horizon.

    ``alternatives``: names of :data:`ALTERNATIVES` to measure the gradients with as well.
    """
    cfg, agent, env, state = load_run(run_dir, seed_offset=60_000)
    env.close()
    if cfg.algorithm != "s2vg":
        raise ValueError(f"{run_dir}: an S2VG run is needed, got {cfg.algorithm}.")
    replay = state["replay"]["data"]
    clip = cfg.loss.actor_max_grad_norm
    result = {
        "run_dir": str(run_dir),
        "env": cfg.env.name,
        "seed": cfg.env.seed,
        "frames": state["counters"]["frames"],
        "run_actor_horizon": cfg.loss.actor_horizon,
        "ensemble_size": cfg.model.ensemble_size,
        "ensemble_members": cfg.loss.ensemble_members,
        "actor_max_grad_norm": clip,
        "batch_size": cfg.replay_buffer.batch_size,
        "batches": batches,
        "horizons": {},
    }
    generator = torch.Generator().manual_seed(0)
    samples = [
        replay[torch.randint(replay.numel(), (cfg.replay_buffer.batch_size,), generator=generator)]
        for _ in range(batches)
    ]
    means = {}
    for horizon in horizons:
        # the same trained networks and models, with the actor's objective through H steps
        parts, returns = _batch_gradients(run_dir, samples, [f"loss.actor_horizon={horizon}"])
        whole = parts["whole"]
        norms = [float(g.norm()) for g in whole]
        means[horizon] = torch.stack(whole).mean(0)
        part_means = {name: torch.stack(parts[name]).mean(0) for name in PARTS[1:]}
        result["horizons"][str(horizon)] = {
            **_consistency(whole),
            "gradient_norm_per_batch": norms,
            "share_over_clip": (sum(n > clip for n in norms) / len(norms)) if clip else None,
            "model_return_mean": sum(returns) / len(returns),
            **{name: _consistency(parts[name]) for name in PARTS[1:]},
            "cosine_between_part_means": {
                f"{a}_vs_{b}": float(cosine_similarity(part_means[a], part_means[b], 0))
                for i, a in enumerate(PARTS[1:])
                for b in PARTS[i + 2 :]
            },
        }
    if 1 in means:
        for horizon, mean in means.items():
            result["horizons"][str(horizon)]["cosine_of_mean_with_one_step"] = float(
                cosine_similarity(mean, means[1], 0)
            )
    for name in alternatives:
        settings, cosine_name = ALTERNATIVES[name]
        result[f"horizons_{name}"] = {}
        for horizon in horizons:
            overrides = [f"loss.actor_horizon={horizon}", *settings]
            whole = _batch_gradients(run_dir, samples, overrides, whole_only=True)[0]["whole"]
            norms = [float(g.norm()) for g in whole]
            result[f"horizons_{name}"][str(horizon)] = {
                **_consistency(whole),
                "share_over_clip": (sum(n > clip for n in norms) / len(norms)) if clip else None,
                cosine_name: float(
                    cosine_similarity(torch.stack(whole).mean(0), means[horizon], 0)
                ),
            }
    result["imagined_states_outside_the_replay"] = outside_the_replay(
        agent.loss, replay, max(horizons)
    )
    result["ensemble_disagreement_along_imagined_steps"] = ensemble_disagreement(
        agent, replay, max(horizons)
    )
    result.update(model_error(agent, replay, horizons=(1, 3, 5)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--model-mean",
        action="store_true",
        help="also measure with the imagined steps at the model's mean (no model noise)",
    )
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="also measure with the imagined states clipped to the task's known observation bounds",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        alternatives = [
            name
            for name, on in (
                ("model_mean", args.model_mean),
                ("bounded", args.bounded),
                ("model_mean_bounded", args.model_mean and args.bounded),
            )
            if on
        ]
        result = measure(run, args.horizons, args.batches, alternatives)
        name = f"{run.parent.name}_{run.name}_multistep_gradient_at{result['frames']}.json"
        save_measurement(result, args.out / name, "multistep_gradient.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
