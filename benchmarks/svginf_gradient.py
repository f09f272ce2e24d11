r"""What SVG(inf)'s policy gradient looks like on the Hand task, from a run's checkpoint.

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
* the cosine between independent batches' true-model gradients (the part of the gradient
  noise that is not the learned model's);
* the learned model's open-loop error along the batches' real episodes: from each episode's
  first state, the model's mean prediction under the episode's real actions, against the
  real states after ``k`` steps (k = 1, 10, 100 and the whole episode), in units of the
  states' standard deviation.

For a planner run (``svg.noise=sampled``) it also computes, at the same checkpoint and on the
same real episodes, the gradient SVG(∞) along real trajectories would take (inferred noise,
the run's learned model): its norms, the cosine between its batches and its cosine with the
planner's gradient.

Writes ``<out>/<run>_gradient_at<frames>.json``::

    python benchmarks/svginf_gradient.py runs/bench/svginf_Hand-v0_1000steps_real/seed0 \\
        --out benchmarks/results/svginf_Hand-v0_1000steps_real

With ``--line-search`` it measures instead how the real return responds to a step along the
policy update, from the same checkpoint (``<run>_linesearch_at<frames>.json`` and ``.png``):

* two directions in parameter space: the normalised negative gradient of the run's loss on a
  fresh batch, and the normalised step Adam would take next, from the checkpoint's optimiser
  state (Adam divides each coordinate by its own gradient scale, so its step can point far
  from the gradient);
* step lengths of ``k`` Adam steps (``k * lr * |Adam step|``), k = 0, 0.01, 0.03, ..., 100;
* at each, the mean return of ``--episodes`` real episodes with the stochastic policy and of
  the deterministic policy, with common random numbers (the same env and policy noise at
  every point), beside the first-order prediction from the gradient;
* where the gradient and the Adam step put their weight: the share of their squared norm in
  each layer, and in the policy head's location rows against its scale rows; and how
  saturated the policy is (the share of visited states where ``|loc| > 2``).

With ``--ascent N --step-length L`` it continues the checkpoint's policy for ``N`` updates of
plain normalised gradient ascent instead of the run's Adam: each update collects
``--episodes`` fresh real episodes, computes the run's own SVG(∞) gradient (its learned model,
held fixed) and moves the parameters a fixed length ``L`` along it, the length the line search
found best (``<run>_ascent<L>_at<frames>.json``: the batches' mean return per update).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from diagnose import load_run, shifted  # noqa: E402
from learning import save_measurement  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch.nn.functional import cosine_similarity  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402

from torchrl_svg.envs import HandEnv, hand_dynamics_model, hand_reward_module  # noqa: E402
from torchrl_svg.objectives import SVGInfLoss  # noqa: E402


def _flat_gradient(loss: SVGInfLoss, episodes) -> torch.Tensor:
    params = list(loss.actor_network_params.values(True, True))
    grads = torch.autograd.grad(loss(episodes)["loss_actor"], params, allow_unused=True)
    return torch.cat([g.reshape(-1) for g in grads if g is not None])


def _load_hand_run(run_dir: Path, seed_offset: int):
    """:func:`diagnose.load_run` for an SVG(inf) Hand-v0 run; also its ``HandParams`` and episode length."""
    cfg, agent, env, state = load_run(run_dir, seed_offset=seed_offset)
    if cfg.algorithm != "svginf" or cfg.env.name != "Hand-v0":
        raise ValueError(
            f"{run_dir}: an SVG(inf) run on Hand-v0 is needed, got {cfg.algorithm} on {cfg.env.name}."
        )
    base = env
    while not hasattr(base, "params"):
        base = base.base_env
    return (
        cfg,
        agent,
        env,
        state,
        base.params,
        cfg.env.max_episode_steps or base.params.episode_steps,
    )


def measure(run_dir: Path, batches: int, episodes: int) -> dict:
    """The gradient statistics of one run's checkpoint."""
    cfg, agent, env, state, hand, steps = _load_hand_run(run_dir, 40_000)
    true_loss = SVGInfLoss(
        agent.policy,
        hand_dynamics_model(hand),
        agent.world_model.reward,
        noise=cfg.svg.noise,
    )
    true_loss.make_value_estimator(gamma=1.0)
    parts = {}
    for part, zero in (
        ("control_cost_only", "terminal_cost"),
        ("terminal_cost_only", "control_cost"),
    ):
        params = dataclasses.replace(hand, **{zero: 0.0})
        parts[part] = SVGInfLoss(
            agent.policy,
            hand_dynamics_model(params),
            hand_reward_module(params),
            noise=cfg.svg.noise,
        )
        parts[part].make_value_estimator(gamma=1.0)
    real_loss = None
    if cfg.svg.noise == "sampled":  # the planner: also the real-trajectory gradient, same data
        real_loss = SVGInfLoss(
            agent.policy, agent.world_model.dynamics, agent.world_model.reward, noise="inferred"
        )
        real_loss.make_value_estimator(gamma=1.0)
    part_norms = {part: [] for part in parts}
    part_cosines = {part: [] for part in parts}
    norms, returns, learned, true, real, errors = [], [], [], [], [], []
    for _ in range(batches):
        with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
            data = torch.stack([env.rollout(steps, agent.policy) for _ in range(episodes)], 0)
        returns.append(float(data["next", "reward"].sum(-2).mean()))
        learned.append(_flat_gradient(agent.loss, data))
        true.append(_flat_gradient(true_loss, data))
        errors.append(open_loop_error(agent.world_model.dynamics, data))
        if real_loss is not None:
            real.append(_flat_gradient(real_loss, data))
        norms.append(float(learned[-1].norm()))
        for part, part_loss in parts.items():
            g = _flat_gradient(part_loss, data)
            part_norms[part].append(float(g.norm()))
            part_cosines[part].append(float(cosine_similarity(g, true[-1], 0)))
    env.close()
    pairs = [(i, j) for i in range(batches) for j in range(i + 1, batches)]
    result = {
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
        "cosine_between_batches_true_model": [
            float(cosine_similarity(true[i], true[j], 0)) for i, j in pairs
        ],
        "open_loop_error_per_batch": errors,
    }
    if real:
        result["real_trajectory_gradient_norm_per_batch"] = [float(g.norm()) for g in real]
        result["real_trajectory_cosine_between_batches"] = [
            float(cosine_similarity(real[i], real[j], 0)) for i, j in pairs
        ]
        result["cosine_planner_vs_real_trajectory"] = [
            float(cosine_similarity(a, b, 0)) for a, b in zip(learned, real, strict=True)
        ]
    return result


@torch.no_grad()
def open_loop_error(dynamics, episodes: TensorDict) -> dict[str, float]:
    """The model's open-loop error along real episodes ``[B, T]``, in state standard deviations.

    From each episode's first state the model's mean prediction is fed the episode's real
    actions; the error after ``k`` steps is the root mean square over the episodes and the
    state's dimensions of (prediction - real state) / (the states' standard deviation).
    """
    real = episodes["next", "observation"]
    std = real.reshape(-1, real.shape[-1]).std(0).clamp_min(1e-6)
    steps = real.shape[1]
    marks = sorted({k for k in (1, 10, 100, steps) if k <= steps})
    state, out = episodes["observation"][:, 0], {}
    for t in range(steps):
        td = TensorDict({"observation": state, "action": episodes["action"][:, t]}, [len(state)])
        state = dynamics.get_dist(td).mean
        if t + 1 in marks:
            err = ((state - real[:, t]) / std).pow(2).mean().sqrt()
            out[f"k{t + 1}"] = float(err)
    return out


ADAM_STEPS = (0, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)


def _episodes(policy, params, steps: int, episodes: int, seed: int, exploration) -> TensorDict:
    """``episodes`` real episodes ``[episodes, steps]`` of the Hand task with ``params``."""
    physics = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    env = HandEnv(batch_size=(episodes,), seed=seed, **physics)
    torch.manual_seed(seed)
    with set_exploration_type(exploration), torch.no_grad():
        return env.rollout(steps, policy, break_when_any_done=False)


def _returns(policy, params, steps: int, episodes: int, seed: int) -> tuple[float, float]:
    """Mean real return of the stochastic and of the deterministic policy (fixed noise)."""
    return tuple(
        float(
            _episodes(policy, params, steps, episodes, seed, exploration)["next", "reward"]
            .sum(-2)
            .mean()
        )
        for exploration in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC)
    )


def _shares(flat: torch.Tensor, names: list[str], sizes: list[int], head_rows: int) -> dict:
    """Share of the squared norm of a flat parameter vector per layer and per head part."""
    total = float(flat.pow(2).sum())
    out, offset = {}, 0
    for name, size in zip(names, sizes, strict=True):
        piece = flat[offset : offset + size]
        offset += size
        out[name] = float(piece.pow(2).sum()) / total
        if name == names[-2]:  # the last layer's weight: rows [loc | scale]
            rows = piece.reshape(2 * head_rows, -1)
            out["head_loc_rows"] = float(rows[:head_rows].pow(2).sum()) / total
            out["head_scale_rows"] = float(rows[head_rows:].pow(2).sum()) / total
    return out


def line_search(run_dir: Path, episodes: int) -> dict:
    """The real return along the gradient and along Adam's next step, from a checkpoint."""
    cfg, agent, env, state, hand, steps = _load_hand_run(run_dir, 50_000)
    env.close()
    policy = agent.policy
    params = TensorDict.from_module(policy)
    keys = list(params.keys(True, True))
    values = [params.get(k) for k in keys]
    names = [".".join(k[-2:]) for k in keys]
    sizes = [v.numel() for v in values]

    data = _episodes(policy, hand, steps, episodes, 7, ExplorationType.RANDOM)
    grad = _flat_gradient(agent.loss, data)
    with torch.no_grad():
        loc = policy.module[0](data.select("observation").clone())["loc"]
    adam_state = state["agent"]["actor_optimizer"]
    group = adam_state["param_groups"][0]
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    adam = []
    for index in group["params"]:
        s = adam_state["state"][index]
        t = float(s["step"])
        m_hat = s["exp_avg"] / (1 - beta1**t)
        v_hat = s["exp_avg_sq"] / (1 - beta2**t)
        adam.append((m_hat / (v_hat.sqrt() + eps)).reshape(-1))
    adam = torch.cat(adam)
    adam_norm = float(adam.norm())
    directions = {"gradient": -grad / grad.norm(), "adam": -adam / adam.norm()}
    # the loss is the negative mean episode return: its slope along d is -grad . d
    result = {
        "run_dir": str(run_dir),
        "frames": state["counters"]["frames"],
        "policy_updates": state["counters"]["updates"],
        "episode_steps": steps,
        "episodes": episodes,
        "adam_lr": lr,
        "adam_step_norm": lr * adam_norm,
        "gradient_norm": float(grad.norm()),
        "cosine_gradient_vs_adam_step": float(cosine_similarity(-grad, -adam, 0)),
        "gradient_share": _shares(grad, names, sizes, loc.shape[-1]),
        "adam_step_share": _shares(adam, names, sizes, loc.shape[-1]),
        "share_of_states_with_abs_loc_over_2": float((loc.abs() > 2).float().mean()),
        "mean_abs_loc": float(loc.abs().mean()),
        "adam_steps": list(ADAM_STEPS),
        "step_lengths": [k * lr * adam_norm for k in ADAM_STEPS],
    }
    for name, direction in directions.items():
        slope = float(-(grad * direction).sum())
        stochastic, deterministic = [], []
        for length in result["step_lengths"]:
            with shifted(policy, direction, length).to_module(policy):
                s, d = _returns(policy, hand, steps, episodes, seed=123)
            stochastic.append(s)
            deterministic.append(d)
        result[name] = {
            "stochastic_return": stochastic,
            "deterministic_return": deterministic,
            "first_order_prediction": [
                stochastic[0] + slope * length for length in result["step_lengths"]
            ],
            "slope_per_unit_length": slope,
        }
    return result


def plot_line_search(result: dict, path: Path) -> None:
    """The change of the real return along each direction, beside its first-order prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["adam_steps"][1:]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, color, label in (("gradient", "C0", "the gradient"), ("adam", "C3", "Adam's step")):
        part = result[name]
        base = part["stochastic_return"][0]
        change = [r - base for r in part["stochastic_return"][1:]]
        predicted = [r - base for r in part["first_order_prediction"][1:]]
        ax.plot(steps, change, color=color, marker="o", label=f"along {label}: measured")
        ax.plot(steps, predicted, color=color, ls=":", label=f"along {label}: first order")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("step length, in Adam steps of the run")
    ax.set_ylabel("change of the mean real return (stochastic policy)")
    ax.set_title(
        f"Hand-v0, {result['episode_steps']}-step episodes, after "
        f"{result['policy_updates']} updates, {result['episodes']} episodes per point"
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ascent(run_dir: Path, updates: int, length: float, episodes: int) -> dict:
    """``updates`` fixed-length normalised gradient steps from a checkpoint's policy."""
    cfg, agent, env, state, hand, steps = _load_hand_run(run_dir, 80_000)
    env.close()
    policy = agent.policy
    params = list(agent.loss.actor_network_params.values(True, True))
    returns = []
    for update in range(updates):
        data = _episodes(policy, hand, steps, episodes, 1_000 + update, ExplorationType.RANDOM)
        returns.append(float(data["next", "reward"].sum(-2).mean()))
        grad = _flat_gradient(agent.loss, data)
        moved = shifted(policy, -grad / grad.norm(), length)
        with torch.no_grad():
            for param, key in zip(params, moved.keys(True, True), strict=True):
                param.copy_(moved.get(key))
    return {
        "run_dir": str(run_dir),
        "frames": state["counters"]["frames"],
        "policy_updates_before": state["counters"]["updates"],
        "episode_steps": steps,
        "episodes_per_update": episodes,
        "step_length": length,
        "return_per_update": returns,
        "return_first_10_mean": sum(returns[:10]) / len(returns[:10]),
        "return_last_10_mean": sum(returns[-10:]) / len(returns[-10:]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--line-search", action="store_true")
    parser.add_argument("--ascent", type=int, default=0, metavar="UPDATES")
    parser.add_argument("--step-length", type=float, default=0.002)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        if args.ascent:
            result = ascent(run, args.ascent, args.step_length, args.episodes)
            name = f"{run.name}_ascent{args.step_length:g}_at{result['frames']}.json"
            save_measurement(result, args.out / name, "svginf_gradient.py", argv)
            continue
        if args.line_search:
            result = line_search(run, args.episodes)
            name = f"{run.name}_linesearch_at{result['frames']}"
            save_measurement(result, args.out / f"{name}.json", "svginf_gradient.py", argv)
            plot_line_search(result, args.out / f"{name}.png")
            continue
        result = measure(run, args.batches, args.episodes)
        name = f"{run.name}_gradient_at{result['frames']}.json"
        save_measurement(result, args.out / name, "svginf_gradient.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
