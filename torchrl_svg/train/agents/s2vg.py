"""The S2VG agent: world model, twin Q, V with a Polyak target, actor, alpha."""

from __future__ import annotations

import logging
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import SoftUpdate

from torchrl_svg.objectives import S2VGLoss
from torchrl_svg.train.agents.base import (
    Agent,
    WorldModel,
    fast_kwargs,
    make_actor_and_qvalue,
    make_soft_actor_critic_optimizer,
    make_state_value,
    make_update,
    run_updates,
    target_entropy,
    trainable,
)
from torchrl_svg.train.config import Config
from torchrl_svg.train.fast import FastS2VGUpdate, fast_s2vg_supported

log = logging.getLogger("torchrl_svg")

__all__ = ["S2VGAgent"]


class S2VGAgent(Agent):
    """S2VG (S2VG paper, Algorithm 1) built from a configuration and an environment's specs.

    Per collected environment step: ``model.updates_per_step`` world-model
    updates, then ``loss.updates_per_step`` (the paper's m) actor-critic
    updates, each on a fresh replay batch. One grouped Adam serves the actor,
    the critics and alpha (the paper's policy and value learning rates).

    Args:
        cfg: the configuration.
        observation_spec: the environment's observation spec (``[obs_dim]``).
        action_spec: the environment's bounded action spec (``[action_dim]``).
        device: where the parameters live.
        env: the environment (needed only for a known reward).
    """

    name = "s2vg"
    loss_keys = ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha")

    def __init__(
        self,
        cfg: Config,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        device: torch.device | str = "cpu",
        env: EnvBase | None = None,
    ):
        self.cfg = cfg
        device = torch.device(device)
        self.actor, qvalue = make_actor_and_qvalue(cfg, observation_spec, action_spec, device)
        self.policy = self.actor
        value = make_state_value(cfg, observation_spec, device)
        self.world_model = WorldModel(cfg, observation_spec, action_spec, device, env=env)
        self.dynamics, self.reward = self.world_model.dynamics, self.world_model.reward
        self.termination = self.world_model.termination
        self.loss = S2VGLoss(
            self.actor,
            qvalue,
            value,
            self.dynamics,
            self.reward,
            self.termination,
            horizon=cfg.loss.horizon,
            alpha_init=cfg.loss.alpha_init,
            fixed_alpha=cfg.loss.fixed_alpha,
            target_entropy=target_entropy(cfg),
            action_spec=action_spec,
            loss_function=cfg.loss.loss_function,
            expansion_entropy=cfg.loss.expansion_entropy,
            actor_horizon=cfg.loss.actor_horizon,
            disagreement_bound=cfg.loss.disagreement_bound,
            ensemble_members=cfg.loss.ensemble_members,
            expansion_ensemble_mean=cfg.loss.expansion_ensemble_mean,
        )
        self.loss.make_value_estimator(gamma=cfg.loss.gamma)
        self.target_updater = SoftUpdate(self.loss, tau=cfg.loss.tau)
        actor_params = trainable(self.loss.actor_network_params)
        clip_groups = (
            [(actor_params, cfg.loss.actor_max_grad_norm)]
            if cfg.loss.actor_max_grad_norm is not None
            else []
        )
        self.optimizer, params = make_soft_actor_critic_optimizer(
            cfg,
            self.loss,
            actor_params,
            trainable(self.loss.qvalue_network_params) + trainable(self.loss.value_network_params),
            device,
        )
        reason = fast_s2vg_supported(self.loss) if cfg.compile.fast_update else None
        if cfg.compile.fast_update and reason is None:
            self.step = FastS2VGUpdate(
                self.loss,
                self.optimizer,
                params,
                tau=cfg.loss.tau,
                clip_groups=clip_groups,
                **fast_kwargs(cfg),
            )
        else:
            if reason is not None:
                log.info("S2VG's actor-critic step runs through S2VGLoss: %s", reason)
            self.step = make_update(
                cfg,
                self.loss,
                self.loss_keys,
                self.optimizer,
                params,
                after_step=self.target_updater.step,
                kind="actor-critic",
                clip_groups=clip_groups,
            )

    @property
    def model_loss(self):
        """The world model's :class:`~torchrl_svg.objectives.GaussianWorldModelLoss`."""
        return self.world_model.loss

    def update_model(self, batch: TensorDictBase) -> TensorDictBase:
        """One world-model gradient step on a replay batch; returns the detached losses."""
        return self.world_model.update(batch)

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One actor-critic step (eqs 7, 8, 11 and alpha) and the Polyak update of the target V."""
        return self.step(batch)

    def train_on_batch(self, fresh: TensorDictBase, replay: ReplayBuffer):
        """Model updates, then m actor-critic updates per collected step, from replay."""
        n = fresh.numel()
        cfg = self.cfg
        model_updates = n * cfg.model.updates_per_step
        self.world_model.fit(lambda k: self.sample(replay, k), model_updates, cfg.model.batch_size)
        updates = n * cfg.loss.updates_per_step
        out = run_updates(
            self.step, lambda k: self.sample(replay, k), updates, cfg.replay_buffer.batch_size
        )
        return out, updates, model_updates

    def _state_parts(self) -> dict[str, Any]:
        """Parameters, targets, normalisation statistics, alpha and optimiser states."""
        return {"loss": self.loss, "world_model": self.world_model, "optimizer": self.optimizer}
