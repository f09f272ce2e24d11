"""``make_*`` factories of the training recipe: environments, collector, buffer, logger."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer, TensorSpec
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymEnv,
    RewardSum,
    StepCounter,
    TransformedEnv,
)
from torchrl.record.loggers import CSVLogger, Logger, TensorboardLogger, WandbLogger

from torchrl_svg._utils import check_same_shape
from torchrl_svg.train.config import Config

__all__ = [
    "ACTIVATIONS",
    "check_against_env",
    "make_collector",
    "make_env",
    "make_logger",
    "make_replay_buffer",
    "make_run_dir",
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


def make_env(cfg: Config, *, seed_offset: int = 0) -> TransformedEnv:
    """The Gymnasium task as a TorchRL env (float32 observations, step counter, episode return)."""
    kwargs = {}
    if cfg.env.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.env.max_episode_steps
    env = GymEnv(cfg.env.name, device="cpu", **kwargs)
    env = TransformedEnv(env, Compose(DoubleToFloat(), StepCounter(), RewardSum()))
    env.set_seed(cfg.env.seed + seed_offset)
    return env


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


def make_collector(cfg: Config, env: EnvBase, policy: nn.Module) -> Collector:
    """A single-process TorchRL :class:`~torchrl.collectors.Collector` with random warm-up frames."""
    fpb = cfg.collector.frames_per_batch
    # The collector counts random frames in whole batches.
    init_random = -(-cfg.collector.init_random_frames // fpb) * fpb
    return Collector(
        env,
        policy,
        frames_per_batch=fpb,
        total_frames=cfg.collector.total_frames,
        init_random_frames=init_random or None,
        device="cpu",
        storing_device="cpu",
        auto_register_policy_transforms=False,
    )


def make_replay_buffer(cfg: Config, device: torch.device) -> TensorDictReplayBuffer:
    """A uniform ``TensorDictReplayBuffer`` whose storage lives on ``device``."""
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(cfg.replay_buffer.size, device=device),
        batch_size=cfg.replay_buffer.batch_size,
    )


def make_run_dir(cfg: Config) -> Path:
    """The run directory (created), ``runs/<env>-<algo>-seed<seed>-<time>`` unless configured."""
    if cfg.logger.run_dir is not None:
        path = Path(cfg.logger.run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{cfg.env.name}-{cfg.algorithm}-seed{cfg.env.seed}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_logger(cfg: Config, run_dir: Path) -> Logger | None:
    """A TorchRL logger writing into ``run_dir`` (W&B offline by default)."""
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
        **({} if offline else {"mode": cfg.logger.mode}),
    )
