"""S2VG as a plain TorchRL pipeline: factories, one ``update()``, a short loop.

The training recipe (``python -m torchrl_svg.train``, ``examples/configs/s2vg.yaml``) adds presets,
checkpoints, logging and fault handling around the same parts. This script is what is left
without them, in the manner of TorchRL's sota-implementations: a collector fills a replay
buffer; each environment step is followed by ``--utd`` world-model updates
(``GaussianWorldModelLoss``) and ``--utd`` actor-critic updates (``S2VGLoss``: eqs 7, 8 and 11
of the S2VG paper, with its temperature fixed); ``SoftUpdate`` moves the target V; every
``--eval-every`` steps a deterministic episode is scored.

Run ``python examples/s2vg_pipeline.py`` (Pendulum-v1, 6,000 steps; one run, seed 0, scored
-1,242 at 1k steps, the end of the random warm-up, then -119 to -125 at 2k-6k)
or e.g.
``python examples/s2vg_pipeline.py --env InvertedPendulum-v5 --alpha 0.1 --utd 1``.

The multi-step actor (the recipe's ``examples/configs/s2vg_multistep.yaml``) is
``--actor-horizon 5 --ensemble-size 5 --ensemble-members rollout --learn-alpha
--actor-max-grad-norm 10``: the actor's soft return runs through 5 imagined steps of a
5-member dynamics ensemble (one member per rollout) and ends in V.
"""

from __future__ import annotations

import argparse

import torch
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_svg.modules import (
    GaussianDynamics,
    RewardModel,
    env_specs,
    make_actor,
    make_qvalue,
    make_value,
    termination_for_env,
)
from torchrl_svg.objectives import GaussianWorldModelLoss, S2VGLoss


def make_env(name: str, seed: int) -> TransformedEnv:
    """A Gymnasium task as a TorchRL env, float64 observations cast to float32."""
    env = TransformedEnv(GymEnv(name, device="cpu"), DoubleToFloat())
    env.set_seed(seed)
    return env


def make_parts(args: argparse.Namespace):
    """The environment, the S2VG and world-model losses, their optimisers and target updater."""
    env = make_env(args.env, args.seed)
    obs_spec, act_spec = env_specs(env)
    obs_dim, act_dim = obs_spec.shape[-1], act_spec.shape[-1]
    actor = make_actor(obs_spec, act_spec)
    dynamics = GaussianDynamics(  # an ensemble with --ensemble-size K > 1
        obs_dim, act_dim, hidden_sizes=tuple(args.model_sizes), ensemble_size=args.ensemble_size
    )
    reward = RewardModel(obs_dim, act_dim, hidden_sizes=tuple(args.model_sizes))
    termination = termination_for_env(args.env)  # Gymnasium's own rule for the task
    loss = S2VGLoss(
        actor,
        make_qvalue(obs_dim, act_dim),
        make_value(obs_dim),
        dynamics,
        reward,
        termination_model=termination,
        alpha_init=args.alpha,
        fixed_alpha=not args.learn_alpha,  # learned: towards -|A|, as SAC learns it
        action_spec=act_spec,
        actor_horizon=args.actor_horizon,  # H imagined steps in the actor's soft return
        ensemble_members=args.ensemble_members,
    )
    loss.make_value_estimator(gamma=args.gamma)
    model_loss = GaussianWorldModelLoss(dynamics, reward, termination_model=termination)
    # each loss's own parameters (the S2VG loss holds the models too, which it does not train)
    optim = torch.optim.Adam([{"params": p} for p in loss.parameter_groups().values()], lr=args.lr)
    model_optim = torch.optim.Adam(
        [{"params": p} for p in model_loss.parameter_groups().values()], lr=args.lr
    )
    return env, actor, loss, model_loss, optim, model_optim, SoftUpdate(loss, tau=0.005)


def update(
    loss, model_loss, optim, model_optim, target_updater, replay, max_grad_norm=None
) -> dict[str, float]:
    """One world-model step and one actor-critic step, each on its own replay batch.

    ``max_grad_norm``: clip the actor's gradient (the multi-step actor's chain of H model
    steps can give large ones).
    """
    model_out = model_loss(replay.sample())
    model_optim.zero_grad()
    sum(model_out[key] for key in model_out.keys() if key.startswith("loss_")).backward()
    model_optim.step()

    out = loss(replay.sample())
    optim.zero_grad()
    sum(out[key] for key in out.keys() if key.startswith("loss_")).backward()  # + loss_alpha
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(loss.parameter_groups()["actor"], max_grad_norm)
    optim.step()
    target_updater.step()
    return {key: float(out[key].detach()) for key in ("loss_actor", "loss_qvalue", "loss_value")}


@torch.no_grad()
def evaluate(env, actor, max_steps: int) -> float:
    """The return of one episode of the deterministic policy (the mode of its actions)."""
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        return float(env.rollout(max_steps, actor)["next", "reward"].sum())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--frames", type=int, default=6_000)
    parser.add_argument("--warmup", type=int, default=1_000, help="uniformly random steps")
    parser.add_argument("--utd", type=int, default=5, help="updates per environment step")
    parser.add_argument("--alpha", type=float, default=0.2, help="the (initial) temperature")
    parser.add_argument("--learn-alpha", action="store_true", help="learn alpha towards -|A|")
    parser.add_argument("--actor-horizon", type=int, default=1, help="1: eq 11, one model step")
    parser.add_argument("--ensemble-size", type=int, default=1, help="dynamics ensemble members")
    parser.add_argument("--ensemble-members", choices=("step", "rollout"), default="step")
    parser.add_argument("--actor-max-grad-norm", type=float, default=None)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--model-sizes", type=int, nargs="+", default=[200, 200])
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--eval-steps", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[tuple[int, float]]:
    """Train, printing and returning ``(environment steps, evaluation return)`` pairs."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    env, actor, loss, model_loss, optim, model_optim, target_updater = make_parts(args)
    collector = Collector(
        env,
        actor,
        frames_per_batch=10,
        total_frames=args.frames,
        init_random_frames=args.warmup,
        auto_register_policy_transforms=False,
    )
    replay = TensorDictReplayBuffer(storage=LazyTensorStorage(args.frames), batch_size=256)
    eval_env = make_env(args.env, args.seed + 10_000)
    curve, frames = [], 0
    for batch in collector:
        batch = batch.reshape(-1)
        frames += batch.numel()
        model_loss.update_normalizers(batch)  # running input/target statistics of real data
        replay.extend(batch)
        if frames > args.warmup:
            for _ in range(args.utd * batch.numel()):
                losses = update(
                    loss,
                    model_loss,
                    optim,
                    model_optim,
                    target_updater,
                    replay,
                    args.actor_max_grad_norm,
                )
        if frames % args.eval_every == 0:
            curve.append((frames, evaluate(eval_env, actor, args.eval_steps)))
            shown = "" if frames <= args.warmup else f"  Q loss {losses['loss_qvalue']:.3g}"
            print(f"{frames:>7} steps  return {curve[-1][1]:9.1f}{shown}", flush=True)
    collector.shutdown()
    return curve


if __name__ == "__main__":
    main()
