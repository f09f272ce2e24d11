"""Shared fixtures and small builders for the test suite."""

from __future__ import annotations

import os

# the tests' networks are tiny: one thread each (the recipe and subprocesses read this too),
# so that tests sharing a busy machine do not wait on descheduled OpenMP threads
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torchrl.data import Bounded  # noqa: E402

from torchrl_svg.modules import (  # noqa: E402
    GaussianDynamics,
    LearnedTermination,
    RewardModel,
    make_actor,
    make_qvalue,
    make_value,
)
from torchrl_svg.objectives import S2VGLoss, SVG0Loss, SVGInfLoss, SVGLoss  # noqa: E402

torch.set_num_threads(1)

OBS_DIM, ACT_DIM = 4, 2


# The smallest training run of the recipe (16-unit networks, a short evaluation, CSV logs,
# one thread): the fault, run-directory and signal tests add their own keys to it.
TINY_RUN = (
    "network.actor_hidden_sizes=[16]",
    "network.critic_hidden_sizes=[16]",
    "model.hidden_sizes=[16]",
    "model.pretrain_updates=5",
    "loss.updates_per_step=1",
    "eval.episodes=1",
    "eval.max_steps=20",
    "logger.progress=false",
    "logger.backend=csv",
    "num_threads=1",
    "collector.init_random_frames=50",
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def make_batch(
    batch_size=(8,),
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    *,
    dtype: torch.dtype = torch.float32,
    keys: dict | None = None,
) -> TensorDict:
    """A batch of random transitions with TorchRL's keys (``keys`` renames them)."""
    keys = keys or {}
    obs = keys.get("observation", "observation")
    act = keys.get("action", "action")
    rew = keys.get("reward", "reward")
    done = keys.get("done", "done")
    term = keys.get("terminated", "terminated")
    batch_size = tuple(batch_size)
    terminated = torch.zeros(*batch_size, 1, dtype=torch.bool)
    terminated.view(-1)[::3] = True
    return TensorDict(
        {
            obs: torch.randn(*batch_size, obs_dim, dtype=dtype),
            act: (torch.rand(*batch_size, act_dim, dtype=dtype) * 2 - 1) * 0.99,
            keys.get("sample_log_prob", "action_log_prob"): torch.randn(*batch_size, dtype=dtype)
            - 1,
            ("next", obs): torch.randn(*batch_size, obs_dim, dtype=dtype),
            ("next", rew): torch.randn(*batch_size, 1, dtype=dtype),
            ("next", done): terminated.clone(),
            ("next", term): terminated,
        },
        list(batch_size),
    )


def _networks(obs_dim: int, act_dim: int, keys: dict):
    obs = keys.get("observation", "observation")
    act = keys.get("action", "action")
    spec = Bounded(-torch.ones(act_dim), torch.ones(act_dim), (act_dim,))
    return {
        "actor": make_actor(obs_dim, spec, hidden_sizes=(16,), observation_key=obs, action_key=act),
        "qvalue": make_qvalue(
            obs_dim, act_dim, hidden_sizes=(16,), observation_key=obs, action_key=act
        ),
        "value": make_value(obs_dim, hidden_sizes=(16,), observation_key=obs),
        "dynamics": GaussianDynamics(
            obs_dim,
            act_dim,
            hidden_sizes=(16,),
            observation_key=obs,
            action_key=act,
            next_observation_key=("next", obs),
        ),
        "reward": RewardModel(
            obs_dim,
            act_dim,
            hidden_sizes=(16,),
            observation_key=obs,
            action_key=act,
            reward_key=("next", keys.get("reward", "reward")),
        ),
    }


def _finish(loss, keys):
    if keys:
        loss.set_keys(**keys)
    loss.make_value_estimator(gamma=0.9)
    return loss


def make_svg0(*, obs_dim=OBS_DIM, act_dim=ACT_DIM, keys=None, **kwargs) -> SVG0Loss:
    """A small SVG(0) loss."""
    keys = keys or {}
    nets = _networks(obs_dim, act_dim, keys)
    return _finish(SVG0Loss(nets["actor"], nets["qvalue"], **kwargs), keys)


def make_svg(*, horizon=1, obs_dim=OBS_DIM, act_dim=ACT_DIM, keys=None, **kwargs) -> SVGLoss:
    """A small SVG(k) loss with learned models."""
    keys = keys or {}
    nets = _networks(obs_dim, act_dim, keys)
    loss = SVGLoss(
        nets["actor"], nets["value"], nets["dynamics"], nets["reward"], horizon=horizon, **kwargs
    )
    return _finish(loss, keys)


def make_svginf(*, obs_dim=OBS_DIM, act_dim=ACT_DIM, keys=None, **kwargs) -> SVGInfLoss:
    """A small SVG(inf) loss with learned models."""
    keys = keys or {}
    nets = _networks(obs_dim, act_dim, keys)
    return _finish(SVGInfLoss(nets["actor"], nets["dynamics"], nets["reward"], **kwargs), keys)


def make_s2vg(
    *,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    learned_termination: bool = True,
    keys: dict | None = None,
    **loss_kwargs,
) -> S2VGLoss:
    """A small S2VG loss with our modules (optionally on renamed keys)."""
    keys = keys or {}
    nets = _networks(obs_dim, act_dim, keys)
    termination = (
        LearnedTermination(
            obs_dim,
            hidden_sizes=(8,),
            next_observation_key=("next", keys.get("observation", "observation")),
            terminated_key=("next", keys.get("terminated", "terminated")),
        )
        if learned_termination
        else None
    )
    loss = S2VGLoss(
        nets["actor"],
        nets["qvalue"],
        nets["value"],
        nets["dynamics"],
        nets["reward"],
        termination,
        **loss_kwargs,
    )
    return _finish(loss, keys)


def constant_step_ensemble(log_std: float = -20.0) -> GaussianDynamics:
    """A 1-d dynamics ensemble whose 3 members move the state by 1, 2 and 3.

    ``log_std``: the noise's normalised log-std (-20 is soft-clamped to exp(-5): noise below
    0.05).
    """
    dynamics = GaussianDynamics(1, 1, hidden_sizes=(4,), ensemble_size=3, sigma="constant")
    with torch.no_grad():
        for w in dynamics.net.weights:
            w.zero_()
        for b in dynamics.net.biases:
            b.zero_()
        dynamics.net.biases[-1][:, 0] = torch.tensor([1.0, 2.0, 3.0])  # member e: e + 1
        dynamics.log_std.fill_(log_std)
    return dynamics


def constant_step_loss(log_std: float, **options) -> S2VGLoss:
    """An H = 3 S2VG loss on the 1-d task of :func:`constant_step_ensemble`."""
    from torchrl.data import Bounded

    from torchrl_svg.modules import RewardModel, make_actor, make_value

    loss = S2VGLoss(
        make_actor(1, Bounded(-1.0, 1.0, (1,)), hidden_sizes=(4,)),
        make_qvalue(1, 1, hidden_sizes=(4,)),
        make_value(1, hidden_sizes=(4,)),
        constant_step_ensemble(log_std),
        RewardModel(1, 1, hidden_sizes=(4,)),
        actor_horizon=3,
        **options,
    )
    loss.make_value_estimator(gamma=0.9)
    return loss
