"""SVG(1), SVG(1)-ER and SVG(k) as a plain TorchRL pipeline: factories, one ``update()``, a loop.

The training recipe (``python -m torchrl_svg.train algorithm=svg1|svg1_er|svgk``; the example
configurations in ``examples/configs/``) adds presets, checkpoints, logging and fault handling
around the same parts. This script is what is left without them, in the manner of TorchRL's
sota-implementations, with the recipe's networks (App. D of the SVG paper: tanh networks, one
model sub-network per state dimension, a constant model noise) and schedule: a collector fills
a replay buffer, its first ``--warmup`` actions uniformly random (``RandomActionLogProb`` gives
them their behaviour log-density); the world model (``GaussianWorldModelLoss``) is fitted once
on the warm-up data, then after each collected batch of ``n`` steps come ``n`` world-model
updates, ``n`` value updates (fitted policy evaluation, Algorithm 4, with the target V copied
every 50 updates by ``HardUpdate``) and the policy (``SVGLoss``, eq 13 of the SVG paper, its
gradient norm clipped to 10 as in App. D):

* ``--no-replay`` (SVG(1), Algorithm 2 without a database): one update per fresh transition,
  in the order they came (weighted by ``pi / beta`` too: 1 for the first, smaller as the
  policy moves away from the one that acted);
* ``--replay`` (SVG(1)-ER, the default): ``n`` updates on replay batches, each transition
  weighted by ``pi / beta`` truncated at ``--max-weight``; ``--kl-coef`` adds App. D's KL
  penalty against the policy at the start of each round;
* ``--horizon K`` with ``K > 1`` (SVG(k)): the same replay on real sub-trajectories of ``K``
  steps (TorchRL's ``SliceSampler``), unrolled through the learned models.

SVG(0), model-free with a Q critic (``SVG0Loss``), is the recipe's ``algorithm=svg0``.

Run ``python examples/svg_pipeline.py`` (SVG(1)-ER on InvertedPendulum-v5, 10,000 steps; one
run, seed 0, scored 10 at 1k steps, the end of the random warm-up, 37-155 at 2k-5k, then the
task's maximum, 1,000, at 6k-10k; 2.3 minutes of one CPU core) or e.g.
``python examples/svg_pipeline.py --no-replay`` (one run: 1,000 at 4k, 7k, 8k and 10k steps,
falling to 34-70 between) or ``python examples/svg_pipeline.py --horizon 3`` (one run: 560 at
9k steps, 292 at 10k; its importance weights, products over 3 steps, vanish as the policy's
standard deviation shrinks).
"""

from __future__ import annotations

import argparse

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer
from torchrl.envs import DoubleToFloat, EnvBase, GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.data import RandomActionLogProb, slice_replay_buffer
from torchrl_svg.modules import GaussianDynamics, RewardModel, env_specs, make_actor, make_value
from torchrl_svg.objectives import GaussianWorldModelLoss, HardUpdate, SVGLoss

ACTOR_MAX_GRAD_NORM = 10.0  # App. D: the policy gradient's norm is clipped


def make_env(name: str, seed: int) -> TransformedEnv:
    """A Gymnasium task as a TorchRL env, float64 observations cast to float32."""
    env = TransformedEnv(GymEnv(name, device="cpu"), DoubleToFloat())
    env.set_seed(seed)
    return env


def make_parts(
    args: argparse.Namespace,
) -> tuple[
    TransformedEnv,
    nn.Module,
    SVGLoss,
    GaussianWorldModelLoss,
    dict[str, torch.optim.Optimizer],
    HardUpdate,
]:
    """The environment, the actor, the SVG and world-model losses, optimisers and target V."""
    env = make_env(args.env, args.seed)
    obs_spec, act_spec = env_specs(env)
    obs_dim, act_dim = obs_spec.shape[-1], act_spec.shape[-1]
    actor = make_actor(
        obs_spec,
        act_spec,
        hidden_sizes=(100, 100),
        activation_class=nn.Tanh,
        scale_lb=args.scale_lb,
    )
    # App. C/D: one sub-network per state dimension, a learned constant noise per dimension
    model = {
        "hidden_sizes": tuple(args.model_sizes),
        "activation_class": nn.Tanh,
        "sigma": "constant",
    }
    dynamics = GaussianDynamics(obs_dim, act_dim, per_dimension=True, **model)
    reward = RewardModel(obs_dim, act_dim, **model)
    loss = SVGLoss(
        actor,
        make_value(obs_dim, hidden_sizes=(200, 100), activation_class=nn.Tanh),
        dynamics,
        reward,
        horizon=args.horizon,
        max_importance_weight=args.max_weight,
        kl_coef=args.kl_coef if args.replay else 0.0,
        action_spec=act_spec,
    )
    loss.make_value_estimator(gamma=args.gamma)
    # the SVG losses read the real termination flags: the world model needs no termination head
    model_loss = GaussianWorldModelLoss(dynamics, reward)
    groups = loss.parameter_groups()  # {"actor": ..., "value": ...}; the models are not in it
    optims = {
        "actor": torch.optim.Adam(groups["actor"], lr=args.lr),
        "value": torch.optim.Adam(groups["value"], lr=args.lr),
        "model": torch.optim.Adam(
            [{"params": p} for p in model_loss.parameter_groups().values()], lr=args.lr
        ),
    }
    target_updater = HardUpdate(loss, value_network_update_interval=50)  # C of Algorithm 4
    return env, actor, loss, model_loss, optims, target_updater


def sample(replay: ReplayBuffer, horizon: int, batch_size: int) -> TensorDictBase:
    """A replay batch: transitions ``[B]``, or ``[B // K, K]`` sub-trajectories of ``K`` steps."""
    return replay.sample(max(1, batch_size // horizon) * horizon)


def step(
    optim: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float | None = None
) -> None:
    """One gradient step of ``optim`` on ``loss``, its gradient norm clipped when asked."""
    optim.zero_grad()
    loss.backward()
    if max_grad_norm is not None:
        params = [p for group in optim.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optim.step()


def update(
    loss: SVGLoss,
    model_loss: GaussianWorldModelLoss,
    optims: dict[str, torch.optim.Optimizer],
    target_updater: HardUpdate,
    replay: ReplayBuffer,
    fresh: TensorDictBase,
    args: argparse.Namespace,
    model_updates: int,
) -> dict[str, float]:
    """The updates that follow one collected batch of ``n`` steps.

    ``model_updates`` world-model updates, ``n`` updates of V, then ``n`` of the policy.

    Returns:
        The last V loss and the mean importance weight of the last policy batch.
    """
    n = fresh.numel()
    for _ in range(model_updates):
        out = model_loss(sample(replay, args.horizon, args.batch_size).reshape(-1))
        step(optims["model"], out["loss_dynamics"] + out["loss_reward"])
    for _ in range(n):
        loss_value, _ = loss.value_loss(sample(replay, args.horizon, args.batch_size))
        step(optims["value"], loss_value)
        target_updater.step()
    if args.replay:  # SVG(1)-ER and SVG(k): importance-weighted updates on replayed data
        if loss.kl_coef > 0:
            loss.update_reference_policy()  # the KL penalty's reference: the policy of this round
        batches = (sample(replay, args.horizon, args.batch_size) for _ in range(n))
    else:  # SVG(1): one update per freshly observed transition, in order
        batches = (fresh[i : i + 1] for i in range(n))
    for batch in batches:
        loss_actor, meta = loss.actor_loss(batch)
        if loss.kl_coef > 0:
            loss_actor = loss_actor + loss.kl_loss(batch)
        step(optims["actor"], loss_actor, ACTOR_MAX_GRAD_NORM)
    return {
        "loss_value": float(loss_value.detach()),
        "importance_weight": float(meta["importance_weight"].mean()),
    }


@torch.no_grad()
def evaluate(env: EnvBase, actor: nn.Module, max_steps: int) -> float:
    """The return of one episode of the deterministic policy (the mode of its actions)."""
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        return float(env.rollout(max_steps, actor)["next", "reward"].sum())


def main(argv: list[str] | None = None) -> list[tuple[int, float]]:
    """Train, printing and returning ``(environment steps, evaluation return)`` pairs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000, help="uniformly random steps")
    parser.add_argument("--horizon", type=int, default=1, help="K of SVG(K): real steps unrolled")
    parser.add_argument(
        "--replay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="policy updates on replayed data (SVG(1)-ER, SVG(K)) or on fresh steps (SVG(1))",
    )
    parser.add_argument("--max-weight", type=float, default=5.0, help="importance-weight cap")
    parser.add_argument("--kl-coef", type=float, default=0.0, help="App. D's KL penalty")
    parser.add_argument("--scale-lb", type=float, default=1e-4, help="policy std floor")
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model-sizes", type=int, nargs="+", default=[20, 20])
    parser.add_argument("--model-pretrain", type=int, default=500, help="fits after warm-up")
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--eval-steps", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.horizon < 1:
        parser.error("--horizon must be at least 1 (SVG(0) is the recipe's algorithm=svg0)")
    if args.horizon > 1 and not args.replay:
        parser.error("SVG(K) with K > 1 learns from replayed sub-trajectories: drop --no-replay")
    torch.manual_seed(args.seed)
    env, actor, loss, model_loss, optims, target_updater = make_parts(args)
    collector = Collector(
        env,
        actor,
        frames_per_batch=10,
        total_frames=args.frames,
        init_random_frames=args.warmup,
        # warm-up steps: the uniform log-density as behaviour log-prob (the collector writes 0)
        postproc=RandomActionLogProb(env.action_spec),
        auto_register_policy_transforms=False,
    )
    if args.horizon > 1:  # real sub-trajectories [B, K] that never cross an episode's end
        replay = slice_replay_buffer(args.frames, slice_len=args.horizon)
    else:
        replay = TensorDictReplayBuffer(storage=LazyTensorStorage(args.frames))
    eval_env = make_env(args.env, args.seed + 10_000)
    curve, frames, losses = [], 0, {}
    for batch in collector:
        batch = batch.reshape(-1)
        frames += batch.numel()
        model_loss.update_normalizers(batch)  # running input/target statistics of real data
        replay.extend(batch)
        if frames > args.warmup:
            # the first update after the warm-up first fits the world model on the warm-up data
            model_updates = batch.numel() + (0 if losses else args.model_pretrain)
            losses = update(
                loss, model_loss, optims, target_updater, replay, batch, args, model_updates
            )
        if frames % args.eval_every == 0:
            curve.append((frames, evaluate(eval_env, actor, args.eval_steps)))
            last = "".join(f"  {name} {value:.3g}" for name, value in losses.items())
            print(f"{frames:>7} steps  return {curve[-1][1]:9.1f}{last}", flush=True)
    collector.shutdown()
    return curve


if __name__ == "__main__":
    main()
