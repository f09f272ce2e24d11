"""Fit a world model on random Pendulum data and roll it out as a TorchRL environment.

1. collect random transitions from the real env with TorchRL's ``Collector``
   into a ``TensorDictReplayBuffer``;
2. fit a ``GaussianDynamics`` + ``RewardModel`` with ``GaussianWorldModelLoss``
   (normalisers updated on the collected data first);
3. wrap them into ``WorldModelEnv``, starting from replay observations, and
   roll out imagined trajectories with a ``make_actor`` policy;
4. print the one-step prediction error on held-out real transitions and the
   ``H``-step returns of the same policy from the same start states, in the
   real env and in the model.

The policy is untrained: the point is the comparison of real and imagined
data, not control. Run ``python examples/imagined_rollouts.py --help``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import EnvBase, GymEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.envs import WorldModelEnv
from torchrl_svg.modules import GaussianDynamics, RewardModel, env_specs, make_actor
from torchrl_svg.objectives import GaussianWorldModelLoss


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--frames", type=int, default=2000, help="random real transitions")
    parser.add_argument("--held-out", type=float, default=0.1, help="fraction kept for testing")
    parser.add_argument("--model-steps", type=int, default=1000, help="world-model updates")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--horizon", type=int, default=20, help="imagined rollout length H")
    parser.add_argument("--num-rollouts", type=int, default=16, help="parallel imagined episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument(
        "--num-threads", type=int, default=1, help="torch CPU threads (small MLPs: 1 is fastest)"
    )
    return parser.parse_args(argv)


# ------------------------------------------------------------------ factories
def make_env(name: str, seed: int) -> EnvBase:
    env = GymEnv(name)
    env.set_seed(seed)
    return env


def collect_random(env: EnvBase, frames: int, device: str) -> TensorDictBase:
    """``frames`` transitions of a uniformly random policy, flattened to ``[frames]``."""
    collector = Collector(
        env,
        policy=None,  # TorchRL's RandomPolicy over the action spec
        frames_per_batch=min(frames, 1000),
        total_frames=frames,
        auto_register_policy_transforms=False,
    )
    batches = [batch.reshape(-1).to(device) for batch in collector]
    collector.shutdown()
    return torch.cat(batches)[:frames]


def make_replay_buffer(data: TensorDictBase, batch_size: int) -> TensorDictReplayBuffer:
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(data.numel(), device=data.device), batch_size=batch_size
    )
    buffer.extend(data)
    return buffer


def make_world_model(
    env: EnvBase, hidden: Sequence[int], device: str
) -> tuple[GaussianDynamics, RewardModel]:
    obs_spec, action_spec = env_specs(env)
    obs_dim, action_dim = obs_spec.shape[-1], action_spec.shape[-1]
    dynamics = GaussianDynamics(obs_dim, action_dim, hidden_sizes=hidden).to(device)
    reward = RewardModel(obs_dim, action_dim, hidden_sizes=hidden).to(device)
    return dynamics, reward


# ------------------------------------------------------------------- training
def fit_world_model(
    loss: GaussianWorldModelLoss,
    buffer: TensorDictReplayBuffer,
    steps: int,
    lr: float,
    log_every: int,
) -> None:
    optim = torch.optim.Adam(loss.parameters(), lr=lr)

    def update(batch: TensorDictBase) -> TensorDictBase:
        out = loss(batch)
        total = out["loss_dynamics"] + out["loss_reward"]
        optim.zero_grad()
        total.backward()
        optim.step()
        return out.detach()

    for step in range(steps):
        out = update(buffer.sample())
        if step % log_every == 0 or step == steps - 1:
            print(
                f"  model step {step:5d}: loss_dynamics {out['loss_dynamics'].item():8.3f}  "
                f"loss_reward {out['loss_reward'].item():8.3f}"
            )


# ----------------------------------------------------------------- evaluation
@torch.no_grad()
def one_step_errors(
    dynamics: GaussianDynamics, reward: RewardModel, data: TensorDictBase
) -> dict[str, float]:
    """RMSE of the mean predictions on real transitions, next to naive baselines."""
    next_obs, real_reward = data["next", "observation"], data["next", "reward"]
    pred_obs = dynamics.get_dist(data.copy()).mean
    pred_reward = reward.get_dist(data.copy()).mean
    return {
        "obs_rmse": (pred_obs - next_obs).pow(2).mean().sqrt().item(),
        "obs_rmse_copy": (data["observation"] - next_obs).pow(2).mean().sqrt().item(),
        "reward_rmse": (pred_reward - real_reward).pow(2).mean().sqrt().item(),
        "reward_rmse_const": (real_reward.mean() - real_reward).pow(2).mean().sqrt().item(),
    }


@torch.no_grad()
def real_rollouts(env: EnvBase, actor, horizon: int, num: int) -> TensorDictBase:
    """``num`` real ``horizon``-step rollouts of ``actor``, stacked to ``[num, horizon]``."""
    with set_exploration_type(ExplorationType.RANDOM):
        return torch.stack(
            [env.rollout(horizon, actor, auto_cast_to_device=True) for _ in range(num)]
        )


@torch.no_grad()
def imagined_rollouts(
    env: WorldModelEnv, actor, starts: torch.Tensor, mode: ExplorationType
) -> TensorDictBase:
    """Imagined rollouts of ``actor`` from the given start observations (``set_state=True``)."""
    with set_exploration_type(mode):
        return env.rollout(
            env.max_steps,
            actor,
            tensordict=TensorDict({"observation": starts}, env.batch_size, device=env.device),
            set_state=True,
        )


def returns(data: TensorDictBase) -> torch.Tensor:
    return data["next", "reward"].sum((-2, -1))


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    real_env = make_env(args.env, args.seed)
    data = collect_random(real_env, args.frames, args.device)
    perm = torch.randperm(data.numel(), device=data.device)
    n_test = max(1, int(args.held_out * data.numel()))
    test, train = data[perm[:n_test]], data[perm[n_test:]]
    buffer = make_replay_buffer(train, args.batch_size)
    print(f"collected {data.numel()} random transitions ({train.numel()} train, {n_test} held out)")

    dynamics, reward = make_world_model(real_env, args.hidden, args.device)
    loss = GaussianWorldModelLoss(dynamics, reward)
    loss.update_normalizers(train)
    fit_world_model(loss, buffer, args.model_steps, args.lr, args.log_every)

    errors = one_step_errors(dynamics, reward, test)
    print("one-step RMSE on held-out real transitions (mean prediction):")
    print(
        f"  next observation: model {errors['obs_rmse']:.4f} | "
        f"copy-previous baseline {errors['obs_rmse_copy']:.4f}"
    )
    print(
        f"  reward:           model {errors['reward_rmse']:.4f} | "
        f"mean-reward baseline {errors['reward_rmse_const']:.4f}"
    )

    # The imagined env starts from replay observations (MBPO-style) unless told otherwise.
    imagined_env = WorldModelEnv.from_env(
        real_env,
        dynamics,
        reward,
        initial_observations=buffer,
        batch_size=[args.num_rollouts],
        max_steps=args.horizon,
        device=args.device,
        seed=args.seed,
    )
    actor = make_actor(*env_specs(real_env), hidden_sizes=args.hidden, device=args.device)
    with torch.no_grad():
        from_replay = imagined_env.rollout(args.horizon, actor)
    print(
        f"imagined rollouts from replay states: {tuple(from_replay.shape)} "
        f"(all truncated at H: {bool(from_replay['next', 'truncated'][:, -1].all())})"
    )

    # Same policy, same start states: real env vs model.
    real = real_rollouts(real_env, actor, args.horizon, args.num_rollouts).to(args.device)
    starts = real["observation"][:, 0]
    sampled = imagined_rollouts(imagined_env, actor, starts, ExplorationType.RANDOM)
    mean_model = imagined_rollouts(imagined_env, actor, starts, ExplorationType.DETERMINISTIC)
    real_return, sampled_return, mean_return = returns(real), returns(sampled), returns(mean_model)
    gap = (sampled_return - real_return).abs().mean().item()
    print(f"{args.horizon}-step return of the policy from {args.num_rollouts} real start states:")
    print(f"  real env                     {real_return.mean():9.2f} ± {real_return.std():.2f}")
    print(
        f"  model, sampled transitions   {sampled_return.mean():9.2f} ± {sampled_return.std():.2f}"
    )
    print(f"  model, mean transitions      {mean_return.mean():9.2f} ± {mean_return.std():.2f}")
    print(f"  mean |imagined - real| per start state: {gap:.2f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {
        **errors,
        "real_return": real_return.mean().item(),
        "imagined_return": sampled_return.mean().item(),
        "imagined_return_mean_model": mean_return.mean().item(),
        "return_gap": gap,
    }


if __name__ == "__main__":
    main()
