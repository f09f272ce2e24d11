"""``make_*`` factories of the training recipe: environments, collector, buffer, logger."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer, TensorSpec
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    TransformedEnv,
)
from torchrl.record.loggers import CSVLogger, Logger, TensorboardLogger, WandbLogger

from torchrl_svg._utils import check_same_shape
from torchrl_svg.data import slice_replay_buffer
from torchrl_svg.envs import EndOnNonFinite, HandEnv, LQGEnv, hand_reward_module, lqg_reward_module
from torchrl_svg.train.config import Config

__all__ = [
    "ACTIVATIONS",
    "check_against_env",
    "episode_length",
    "make_collector",
    "make_env",
    "make_known_reward",
    "make_logger",
    "make_replay_buffer",
    "make_run_dir",
    "warm_up_frames",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}

# Entries of a collected batch that the losses read; the rest (policy loc/scale,
# episode statistics) is not stored in the replay buffer.
REPLAY_KEYS = (
    "observation",
    "action",
    "action_log_prob",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("collector", "traj_ids"),
)


def make_env(cfg: Config, *, seed_offset: int = 0, num_envs: int | None = None) -> TransformedEnv:
    """The task as a TorchRL env (float32 observations, step counter, episode return).

    A step with a non-finite observation or reward ends its episode
    (:class:`~torchrl_svg.envs.EndOnNonFinite`), so the collector resets it.

    ``Hand-v0`` and ``LQG-v0`` are the package's own batched tasks; any other
    name is a Gymnasium environment. With ``num_envs`` the env runs that many
    episodes side by side (batch size ``[num_envs]``; Gymnasium tasks through a
    :class:`~torchrl.envs.SerialEnv`).
    """
    seed = cfg.env.seed + seed_offset
    batch = [] if num_envs is None else [num_envs]
    name, steps = cfg.env.name, cfg.env.max_episode_steps
    if name == "Hand-v0":
        base = HandEnv(
            batch_size=batch, seed=seed, **({} if steps is None else {"episode_steps": steps})
        )
    elif name == "LQG-v0":
        base = LQGEnv(batch_size=batch, seed=seed, **({} if steps is None else {"horizon": steps}))
    else:
        kwargs = {} if steps is None else {"max_episode_steps": steps}

        def make_gym() -> GymEnv:
            return GymEnv(name, device="cpu", **kwargs)

        base = make_gym() if num_envs is None else SerialEnv(num_envs, make_gym)
    env = TransformedEnv(
        base, Compose(DoubleToFloat(), EndOnNonFinite(), StepCounter(), RewardSum())
    )
    env.set_seed(seed)
    return env


def episode_length(env: EnvBase) -> int:
    """The fixed or time-limit episode length of a task made by :func:`make_env`."""
    base = env.base_env
    for attr in ("max_steps",):  # the package's own tasks
        if hasattr(base, attr):
            return int(getattr(base, attr))
    gym_env = base._envs[0] if isinstance(base, SerialEnv) and hasattr(base, "_envs") else base
    spec = getattr(getattr(gym_env, "_env", None), "spec", None)
    if spec is not None and spec.max_episode_steps:
        return int(spec.max_episode_steps)
    raise ValueError("Cannot tell the episode length of this task; set env.max_episode_steps.")


def make_known_reward(cfg: Config, env: EnvBase | None) -> nn.Module:
    """The exact differentiable reward module of ``Hand-v0`` or ``LQG-v0``."""
    if env is None:
        raise ValueError("model.reward='known' needs the environment to build its reward module.")
    if cfg.env.name == "Hand-v0":
        return hand_reward_module(env.base_env)
    if cfg.env.name == "LQG-v0":
        return lqg_reward_module(env.base_env)
    raise ValueError(f"{cfg.env.name!r} has no known reward module; use model.reward=learned.")


def check_against_env(
    observation_spec: TensorSpec, action_spec: TensorSpec, **models: nn.Module
) -> None:
    """Check that every model's observation/action sizes match the environment's specs.

    Raises:
        ValueError: naming the model and both shapes.

    """
    for name, model in models.items():
        obs_dim = getattr(model, "observation_dim", None)
        if obs_dim is not None:
            check_same_shape(
                "environment observation_spec",
                observation_spec.shape,
                f"{name} observation",
                (obs_dim,),
            )
        act_dim = getattr(model, "action_dim", None)
        if act_dim is not None:
            check_same_shape(
                "environment action_spec", action_spec.shape, f"{name} action", (act_dim,)
            )


def make_collector(
    cfg: Config,
    env: EnvBase,
    policy: nn.Module,
    *,
    episodic: bool = False,
    frames_done: int = 0,
) -> Collector:
    """A single-process TorchRL :class:`~torchrl.collectors.Collector`.

    Off-policy agents get ``collector.frames_per_batch`` steps per batch after
    ``collector.init_random_frames`` uniformly random ones. Episodic agents
    (SVG(inf)) get whole fresh episodes: ``env`` must be batched
    (``[episodes_per_batch]``) and each batch is ``[N, T]`` complete episodes.
    A resumed run passes the ``frames_done`` so far: the collector then runs
    the remaining frames (and the remaining warm-up frames).
    """
    if episodic:
        frames = env.numel() * episode_length(env)
        total = -(-cfg.collector.total_frames // frames) * frames
        return Collector(
            env,
            policy,
            frames_per_batch=frames,
            total_frames=max(total - frames_done, frames),
            reset_at_each_iter=True,
            split_trajs=False,
            device="cpu",
            storing_device="cpu",
            auto_register_policy_transforms=False,
        )
    fpb = cfg.collector.frames_per_batch
    init_random = max(0, warm_up_frames(cfg) - frames_done)
    return Collector(
        env,
        policy,
        frames_per_batch=fpb,
        total_frames=max(cfg.collector.total_frames - frames_done, fpb),
        init_random_frames=init_random or None,
        device="cpu",
        storing_device="cpu",
        auto_register_policy_transforms=False,
    )


def warm_up_frames(cfg: Config) -> int:
    """Uniformly random warm-up frames, rounded up to whole collector batches (0 for SVG(inf))."""
    if cfg.algorithm == "svginf":
        return 0
    fpb = cfg.collector.frames_per_batch
    return -(-cfg.collector.init_random_frames // fpb) * fpb


def make_replay_buffer(
    cfg: Config, device: torch.device, *, slice_len: int | None = None
) -> ReplayBuffer:
    """The replay buffer on ``device``: uniform transitions, or real sub-trajectories ``[B, slice_len]``.

    No default batch size: agents sample with the batch size of each use
    (``replay_buffer.batch_size`` for the losses, ``model.batch_size`` for the model).
    """
    if slice_len is not None:
        return slice_replay_buffer(cfg.replay_buffer.size, slice_len=slice_len, device=device)
    return TensorDictReplayBuffer(storage=LazyTensorStorage(cfg.replay_buffer.size, device=device))


def make_run_dir(cfg: Config) -> Path:
    """The run directory (created), ``runs/<env>-<algo>-seed<seed>-<time>`` unless configured."""
    if cfg.logger.run_dir is not None:
        path = Path(cfg.logger.run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{cfg.env.name}-{cfg.algorithm}-seed{cfg.env.seed}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_logger(cfg: Config, run_dir: Path, run_id: str | None = None) -> Logger | None:
    """A TorchRL logger writing into ``run_dir`` (W&B offline by default; ``run_id`` resumes a W&B run)."""
    exp_name = cfg.logger.exp_name or run_dir.name
    backend = cfg.logger.backend
    if backend == "none":
        return None
    if backend == "csv":
        return CSVLogger(exp_name=exp_name, log_dir=str(run_dir))
    if backend == "tensorboard":
        return TensorboardLogger(exp_name=exp_name, log_dir=str(run_dir))
    offline = cfg.logger.mode == "offline"
    return WandbLogger(
        exp_name=exp_name,
        offline=offline,
        save_dir=str(run_dir),
        project=cfg.logger.project,
        id=run_id,
        **({} if offline else {"mode": cfg.logger.mode}),
    )
