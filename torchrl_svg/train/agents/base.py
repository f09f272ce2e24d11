"""The agent interface of the training loop, and the pieces agents share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule, SoftUpdate

from torchrl_svg.modules import (
    GaussianDynamics,
    LearnedTermination,
    RewardModel,
    Termination,
    make_actor,
    make_qvalue,
    make_value,
    termination_for_env,
)
from torchrl_svg.objectives import GaussianWorldModelLoss
from torchrl_svg.train.agents.updates import (
    GuardedUpdate,
    fast_kwargs,
    guarded_step,
    make_adam,
    make_soft_actor_critic_optimizer,
    make_update,
    run_updates,
    trainable,
)
from torchrl_svg.train.builders import ACTIVATIONS, check_against_env, make_known_reward
from torchrl_svg.train.config import Config
from torchrl_svg.train.fast import FastUpdate, FastWorldModelUpdate
from torchrl_svg.train.guard import NonFiniteGuard

log = logging.getLogger("torchrl_svg")

__all__ = [
    "Agent",
    "ModelFreeAgent",
    "GuardedUpdate",
    "NonFiniteGuard",
    "WorldModel",
    "guarded_step",
    "make_actor_and_qvalue",
    "make_policy",
    "make_state_value",
    "fast_kwargs",
    "make_adam",
    "make_soft_actor_critic_optimizer",
    "make_update",
    "run_updates",
    "target_entropy",
    "trainable",
]


def make_policy(
    cfg: Config, observation_spec: TensorSpec, action_spec: TensorSpec, device: torch.device
) -> nn.Module:
    """The TanhNormal actor of ``cfg.network`` for these specs."""
    return make_actor(
        observation_spec,
        action_spec,
        hidden_sizes=cfg.network.actor_hidden_sizes,
        activation_class=ACTIVATIONS[cfg.network.activation],
        scale_lb=cfg.network.scale_lb,
        safe_tanh=not cfg.compile.compile,  # TorchRL: safe_tanh breaks under torch.compile
        device=device,
    )


def make_actor_and_qvalue(
    cfg: Config, observation_spec: TensorSpec, action_spec: TensorSpec, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """The TanhNormal actor and the Q network of ``cfg.network`` for these specs."""
    obs_dim, act_dim = observation_spec.shape[-1], action_spec.shape[-1]
    actor = make_policy(cfg, observation_spec, action_spec, device)
    qvalue = make_qvalue(
        obs_dim,
        act_dim,
        hidden_sizes=cfg.network.critic_hidden_sizes,
        activation_class=ACTIVATIONS[cfg.network.activation],
        device=device,
        layer_norm=cfg.network.critic_layer_norm,
    )
    return actor, qvalue


def make_state_value(cfg: Config, observation_spec: TensorSpec, device: torch.device) -> nn.Module:
    """The state-value (V) network of ``cfg.network`` for this observation spec."""
    return make_value(
        observation_spec.shape[-1],
        hidden_sizes=cfg.network.critic_hidden_sizes,
        activation_class=ACTIVATIONS[cfg.network.activation],
        device=device,
        layer_norm=cfg.network.critic_layer_norm,
    )


def target_entropy(cfg: Config) -> str | float:
    """``loss.target_entropy`` as the losses take it: ``"auto"`` or a number."""
    value = cfg.loss.target_entropy
    return value if value == "auto" else float(value)


class StateParts:
    """``state_dict`` / ``load_state_dict`` of an object made of parts that have them."""

    def _state_parts(self) -> dict[str, Any]:
        """The parts of the training state (modules, optimisers, ...) by their key."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything needed to continue training: each part's ``state_dict`` under its key."""
        return {name: part.state_dict() for name, part in self._state_parts().items()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        for name, part in self._state_parts().items():
            part.load_state_dict(state[name])


class WorldModel(StateParts):
    """The dynamics, reward and termination models of an agent, their NLL loss and optimiser.

    Built from ``cfg.model``: a :class:`GaussianDynamics`; a learned
    :class:`RewardModel` or the task's known reward; a known, learned or no
    termination model (``termination=False`` skips it, as the SVG losses use
    the real termination flags).
    """

    def __init__(
        self,
        cfg: Config,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        device: torch.device,
        *,
        env: EnvBase | None = None,
        termination: bool = True,
    ):
        obs_dim, act_dim = observation_spec.shape[-1], action_spec.shape[-1]
        act_cls = ACTIVATIONS[cfg.model.activation]
        self.cfg = cfg
        # the settings of cfg.model that the dynamics and the learned reward share
        shared = {
            "hidden_sizes": cfg.model.hidden_sizes,
            "activation_class": act_cls,
            "sigma": cfg.model.sigma,
            "min_log_std": cfg.model.min_log_std,
            "max_log_std": cfg.model.max_log_std,
        }
        self.dynamics = GaussianDynamics(
            obs_dim,
            act_dim,
            per_dimension=cfg.model.per_dimension,
            ensemble_size=cfg.model.ensemble_size,
            ensemble_reduction=cfg.model.ensemble_reduction,
            **shared,
        ).to(device)
        if cfg.model.reward == "known":
            self.reward = make_known_reward(cfg, env).to(device)
        else:
            self.reward = RewardModel(obs_dim, act_dim, **shared).to(device)
        self.termination: Termination | None = None
        if termination and cfg.model.termination == "known":
            self.termination = termination_for_env(cfg.env.name)
        elif termination and cfg.model.termination == "learned":
            self.termination = LearnedTermination(obs_dim, activation_class=act_cls).to(device)
        check_against_env(
            observation_spec,
            action_spec,
            dynamics_model=self.dynamics,
            reward_model=self.reward,
            termination_model=self.termination,
        )
        learned_reward = cfg.model.reward == "learned"
        self.loss = GaussianWorldModelLoss(
            self.dynamics, self.reward if learned_reward else None, self.termination
        )
        self.loss_keys = (
            ("loss_dynamics",)
            + (("loss_reward",) if learned_reward else ())
            + (("loss_termination",) if self.loss.learns_termination else ())
        )
        self.parameters = [p for p in self.loss.parameters() if p.requires_grad]
        self.optimizer = make_adam(
            self.parameters,
            cfg,
            device,
            lr=cfg.optim.model_lr,
            weight_decay=cfg.optim.model_weight_decay,
        )
        self.step: GuardedUpdate | FastUpdate = make_update(
            cfg, self.loss, self.loss_keys, self.optimizer, self.parameters, kind="world-model"
        )
        if cfg.compile.fast_update:
            reason = FastWorldModelUpdate.supported(self.loss)
            if reason is None:
                self.step = FastWorldModelUpdate(
                    self.loss, self.optimizer, self.parameters, **fast_kwargs(cfg)
                )
            else:
                log.info("The world model trains through its LossModule: %s", reason)

    def observe(self, data: TensorDictBase) -> None:
        """Merge a batch of real transitions into the models' running statistics."""
        self.loss.update_normalizers(data)

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One NLL gradient step on a batch of real transitions; returns the detached losses."""
        return self.step(batch)

    def fit(
        self, sample: Callable[[int], TensorDictBase], updates: int, batch_size: int
    ) -> TensorDictBase | None:
        """``updates`` NLL steps on fresh replay batches (see :func:`run_updates`)."""
        return run_updates(self.step, sample, updates, batch_size, transitions=True)

    def _state_parts(self) -> dict[str, Any]:
        """Model parameters, normalisation statistics and optimiser state."""
        return {"loss": self.loss, "optimizer": self.optimizer}


class Agent(StateParts):
    """What the training loop needs from an algorithm.

    Each agent makes its parts in :meth:`build`, called by the constructor
    (``Agent(cfg, observation_spec, action_spec, device="cpu", env=None)``).

    Attributes:
        name: the ``algorithm`` name.
        cfg: the configuration.
        device: where the parameters live.
        policy: the exploration policy given to the collector (it shares the trained parameters).
        world_model: the agent's :class:`WorldModel`, or ``None`` for model-free agents.
        episodic: ``True`` when the agent learns from whole fresh episodes
            (SVG(inf)); the loop then collects ``episodes_per_batch`` complete
            episodes per batch.
        slice_len: when set, the replay buffer samples sub-trajectories of this
            many real steps (``[B, slice_len]``) instead of transitions.
    """

    name: str = ""
    policy: nn.Module
    world_model: WorldModel | None = None
    episodic: bool = False
    slice_len: int | None = None
    _guard: NonFiniteGuard | None = None

    def __init__(
        self,
        cfg: Config,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        device: torch.device | str = "cpu",
        env: EnvBase | None = None,
    ):
        """Build the agent from a configuration and an environment's specs.

        Args:
            cfg: the configuration.
            observation_spec: the environment's observation spec (``[obs_dim]``).
            action_spec: the environment's bounded action spec (``[action_dim]``).
            device: where the parameters live.
            env: the environment (needed only for a known reward).
        """
        self.cfg = cfg
        self.device = torch.device(device)
        self.build(observation_spec, action_spec, env)

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """Make the agent's networks, losses, optimisers and update steps (on ``self.device``)."""
        raise NotImplementedError

    def _polyak_actor_critic(
        self, loss: LossModule, critic_params: list[torch.Tensor], *, alpha: bool = True
    ) -> list[torch.Tensor]:
        """Take ``loss`` as the agent's actor-critic loss, with a Polyak target and one Adam.

        Sets ``self.loss`` (its value estimator discounting by ``loss.gamma``),
        ``self.target_updater`` (a :class:`~torchrl.objectives.SoftUpdate` at
        ``loss.tau``), ``self._actor_params`` and ``self.optimizer`` (see
        :func:`make_soft_actor_critic_optimizer`; ``alpha=False`` for a loss
        without an entropy coefficient).

        Returns:
            The parameters the optimiser steps, for the update step.
        """
        cfg = self.cfg
        self.loss = loss
        loss.make_value_estimator(gamma=cfg.loss.gamma)
        self.target_updater = SoftUpdate(loss, tau=cfg.loss.tau)
        self._actor_params = trainable(loss.actor_network_params)
        self.optimizer, params = make_soft_actor_critic_optimizer(
            cfg, loss, self._actor_params, critic_params, self.device, alpha=alpha
        )
        return params

    def _actor_critic_step(
        self,
        keys: Sequence[str],
        params: list[torch.Tensor],
        clip_groups: Sequence[tuple[Sequence[torch.Tensor], float]] = (),
    ) -> GuardedUpdate:
        """The :class:`GuardedUpdate` of ``self.loss``'s ``keys``, then the Polyak target update."""
        return make_update(
            self.cfg,
            self.loss,
            keys,
            self.optimizer,
            params,
            after_step=self.target_updater.step,
            kind="actor-critic",
            clip_groups=clip_groups,
        )

    @property
    def guard(self) -> NonFiniteGuard:
        """The agent's :class:`NonFiniteGuard` (shared with its world model)."""
        if self._guard is None:
            self._guard = NonFiniteGuard(0)
        return self._guard

    @guard.setter
    def guard(self, guard: NonFiniteGuard) -> None:
        self._guard = guard
        for step in self.updates():
            step.guard = guard

    def updates(self) -> list[GuardedUpdate | FastUpdate]:
        """Every update step of the agent (and of its world model)."""
        steps = [v for v in vars(self).values() if isinstance(v, (GuardedUpdate, FastUpdate))]
        if self.world_model is not None:
            steps.append(self.world_model.step)
        return steps

    def sample(self, replay: ReplayBuffer, batch_size: int) -> TensorDictBase:
        """``batch_size`` transitions from replay (whole slices of ``slice_len`` when set)."""
        if self.slice_len:
            batch_size = max(1, batch_size // self.slice_len) * self.slice_len
        return replay.sample(batch_size)

    def observe(self, data: TensorDictBase) -> None:
        """Merge freshly collected real transitions into running statistics."""
        if self.world_model is not None:
            self.world_model.observe(data)

    def pretrain(self, replay: ReplayBuffer, steps: int, batch_size: int) -> int:
        """Fit the world model on the warm-up data; returns the number of model updates."""
        if self.world_model is None:
            return 0
        self.world_model.fit(lambda n: self.sample(replay, n), steps, batch_size)
        return steps

    def train_on_batch(
        self, fresh: TensorDictBase, replay: ReplayBuffer
    ) -> tuple[TensorDictBase | None, int, int]:
        """All updates that follow one collected batch ``fresh``.

        Returns:
            ``(last_losses, policy_or_critic_updates, model_updates)``.
        """
        raise NotImplementedError


class ModelFreeAgent(Agent):
    """An agent with one loss, one optimiser step per update and no world model.

    Subclasses set ``self.loss``, ``self.optimizer`` and ``self.step`` (a
    :class:`GuardedUpdate`) in :meth:`~Agent.build` and say how many updates
    follow each collected environment step (:meth:`updates_per_step`).
    """

    loss: nn.Module
    optimizer: torch.optim.Optimizer
    step: GuardedUpdate

    def updates_per_step(self) -> int:
        """Updates per collected environment step."""
        raise NotImplementedError

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One update of the loss (and its target networks); returns the detached losses."""
        return self.step(batch)

    def train_on_batch(self, fresh: TensorDictBase, replay: ReplayBuffer):
        """``updates_per_step()`` updates per collected step, each on a fresh replay batch."""
        out = None
        updates = fresh.numel() * self.updates_per_step()
        for _ in range(updates):
            out = self.update(self.sample(replay, self.cfg.replay_buffer.batch_size))
        return out, updates, 0

    def _state_parts(self) -> dict[str, Any]:
        """Parameters, targets (and alpha) and the optimiser state."""
        return {"loss": self.loss, "optimizer": self.optimizer}
