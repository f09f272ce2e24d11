"""SVG(inf) as a plain TorchRL pipeline: factories, one ``update()``, a short loop.

The training recipe (``python -m torchrl_svg.train algorithm=svginf``; the example
configuration ``examples/configs/svginf.yaml``) adds presets, checkpoints, logging and fault
handling around the same parts. This script is what is left without them, in the manner of
TorchRL's sota-implementations: Algorithm 1 of the SVG paper on its Hand task (``HandEnv``,
200-step episodes, its exact reward), with the recipe's networks (App. D: tanh, one model
sub-network per state dimension, a constant model noise). Each batch of the collector is
``--episodes`` whole fresh episodes side by side (``[N, T]``); the dynamics model
(``GaussianWorldModelLoss``) is fitted on all data seen so far, ``--model-updates`` steps per
batch; then one policy-gradient step back-propagates through the episodes (``SVGInfLoss``: the
model re-builds each real trajectory from its inferred noise), its norm clipped to 10 (App. D).
``--noise sampled`` simulates the trajectories from the real initial states with fresh noise
instead: the planner of the paper's Fig. 2. Every ``--eval-every`` batches the deterministic
policy is scored on ``--episodes`` episodes.

Run ``python examples/svginf_pipeline.py`` (400 batches of 16 episodes, 1.28M steps, the
recipe's budget; one run, seed 0, scored -0.54 at 32k steps, -0.49 to -0.53 from 64k to 416k,
passed -0.3 at 640k and held -0.17 to -0.21 from 800k on, -0.20 at the end; 5.2 minutes of one
CPU core) or e.g. ``python examples/svginf_pipeline.py --noise sampled`` (one run: passed -0.3
at 448k steps, -0.17 to -0.22 from 736k on, -0.21 at the end).
"""

from __future__ import annotations

import argparse

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.envs import HandEnv, hand_reward_module
from torchrl_svg.modules import GaussianDynamics, env_specs, make_actor
from torchrl_svg.objectives import GaussianWorldModelLoss, SVGInfLoss

ACTOR_MAX_GRAD_NORM = 10.0  # App. D: the policy gradient's norm is clipped


def make_env(episodes: int, steps: int, seed: int) -> HandEnv:
    """``episodes`` Hand episodes of ``steps`` steps side by side (batch size ``[episodes]``)."""
    return HandEnv(batch_size=[episodes], episode_steps=steps, seed=seed)


def make_parts(
    args: argparse.Namespace,
) -> tuple[
    HandEnv,
    nn.Module,
    SVGInfLoss,
    GaussianWorldModelLoss,
    torch.optim.Optimizer,
    torch.optim.Optimizer,
]:
    """The environment, the actor, the SVG(inf) and world-model losses and their optimisers."""
    env = make_env(args.episodes, args.episode_steps, args.seed)
    obs_spec, act_spec = env_specs(env)
    obs_dim, act_dim = obs_spec.shape[-1], act_spec.shape[-1]
    actor = make_actor(obs_spec, act_spec, hidden_sizes=(100, 100), activation_class=nn.Tanh)
    # App. C/D: one sub-network per state dimension, a learned constant noise per dimension
    dynamics = GaussianDynamics(
        obs_dim,
        act_dim,
        per_dimension=True,
        hidden_sizes=tuple(args.model_sizes),
        activation_class=nn.Tanh,
        sigma="constant",
    )
    reward = hand_reward_module(env)  # the task's exact, differentiable reward: nothing to learn
    loss = SVGInfLoss(actor, dynamics, reward, noise=args.noise, action_spec=act_spec)
    loss.make_value_estimator(gamma=args.gamma)
    model_loss = GaussianWorldModelLoss(dynamics)  # the dynamics alone (the reward is known)
    optim = torch.optim.Adam(loss.parameter_groups()["actor"], lr=args.lr)
    model_optim = torch.optim.Adam(model_loss.parameter_groups()["dynamics"], lr=args.model_lr)
    return env, actor, loss, model_loss, optim, model_optim


def update(
    loss: SVGInfLoss,
    model_loss: GaussianWorldModelLoss,
    optim: torch.optim.Optimizer,
    model_optim: torch.optim.Optimizer,
    replay: TensorDictReplayBuffer,
    episodes: TensorDictBase,
    model_updates: int,
) -> dict[str, float]:
    """Fit the dynamics on replayed transitions, then one policy step on the fresh episodes.

    Returns:
        The last model NLL and the fresh episodes' mean return as the model re-builds them
        (with ``noise="sampled"``: of the trajectories it simulates from their initial states).
    """
    for _ in range(model_updates):
        model_out = model_loss(replay.sample())
        model_optim.zero_grad()
        model_out["loss_dynamics"].backward()
        model_optim.step()

    out = loss(episodes)  # [N, T] whole episodes; minus their mean return, re-built by the model
    optim.zero_grad()
    out["loss_actor"].backward()
    torch.nn.utils.clip_grad_norm_(loss.parameter_groups()["actor"], ACTOR_MAX_GRAD_NORM)
    optim.step()
    return {
        "loss_dynamics": float(model_out["loss_dynamics"].detach()),
        "episode_return": float(out["episode_return"]),
    }


@torch.no_grad()
def evaluate(env: HandEnv, actor: nn.Module, max_steps: int) -> float:
    """The mean return of ``env``'s episodes under the deterministic policy (its mode)."""
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        return float(env.rollout(max_steps, actor)["next", "reward"].sum(-2).mean())


def main(argv: list[str] | None = None) -> list[tuple[int, float]]:
    """Train, printing and returning ``(environment steps, evaluation return)`` pairs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400, help="policy updates")
    parser.add_argument("--episodes", type=int, default=16, help="fresh episodes per batch")
    parser.add_argument("--episode-steps", type=int, default=200, help="1000 in the paper")
    parser.add_argument("--noise", choices=["inferred", "sampled"], default="inferred")
    parser.add_argument("--model-updates", type=int, default=100, help="per batch")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3, help="of the policy")
    parser.add_argument("--model-lr", type=float, default=3e-4)
    parser.add_argument("--model-sizes", type=int, nargs="+", default=[20, 20])
    parser.add_argument("--eval-every", type=int, default=10, help="batches")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.model_updates < 1:
        parser.error("--model-updates must be at least 1: the dynamics are learned")
    torch.manual_seed(args.seed)
    env, actor, loss, model_loss, optim, model_optim = make_parts(args)
    frames_per_batch = args.episodes * args.episode_steps
    collector = Collector(
        env,
        actor,
        frames_per_batch=frames_per_batch,  # one whole episode in each of the N envs
        total_frames=args.batches * frames_per_batch,
        reset_at_each_iter=True,  # every batch starts fresh episodes
        auto_register_policy_transforms=False,
    )
    replay = TensorDictReplayBuffer(
        storage=LazyTensorStorage(args.batches * frames_per_batch), batch_size=256
    )
    eval_env = make_env(args.episodes, args.episode_steps, args.seed + 10_000)
    curve, frames = [], 0
    for i, episodes in enumerate(collector, 1):  # [N, T]
        frames += episodes.numel()
        transitions = episodes.reshape(-1)
        model_loss.update_normalizers(transitions)  # running input/target statistics
        replay.extend(transitions)
        losses = update(loss, model_loss, optim, model_optim, replay, episodes, args.model_updates)
        if i % args.eval_every == 0:
            curve.append((frames, evaluate(eval_env, actor, args.episode_steps)))
            last = "".join(f"  {name} {value:.3g}" for name, value in losses.items())
            print(f"{frames:>9} steps  return {curve[-1][1]:8.3f}{last}", flush=True)
    collector.shutdown()
    return curve


if __name__ == "__main__":
    main()
