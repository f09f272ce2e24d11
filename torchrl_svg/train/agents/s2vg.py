"""The S2VG agent: world model, twin Q, V with a Polyak target, actor, alpha."""

from __future__ import annotations

import logging
from typing import Any

from tensordict import TensorDictBase
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase

from torchrl_svg.modules import observation_bounds_for_env
from torchrl_svg.objectives import S2VGLoss
from torchrl_svg.train.agents.base import (
    Agent,
    WorldModel,
    fast_kwargs,
    make_actor_and_qvalue,
    make_state_value,
    run_updates,
    target_entropy,
    trainable,
)
from torchrl_svg.train.fast import FastS2VGUpdate, fast_s2vg_supported

log = logging.getLogger("torchrl_svg")

__all__ = ["S2VGAgent"]


class S2VGAgent(Agent):
    """S2VG (S2VG paper, Algorithm 1) built from a configuration and an environment's specs.

    Per collected environment step: ``model.updates_per_step`` world-model
    updates, then ``loss.updates_per_step`` (the paper's m) actor-critic
    updates, each on a fresh replay batch. One grouped Adam serves the actor,
    the critics and alpha (the paper's policy and value learning rates).

    Built as every :class:`~torchrl_svg.train.agents.base.Agent` is, from
    ``(cfg, observation_spec, action_spec, device="cpu", env=None)``; ``env`` is
    needed only for a known reward.
    """

    name = "s2vg"
    loss_keys = ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha")

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, twin Q, V, world model and :class:`~torchrl_svg.objectives.S2VGLoss`."""
        cfg, device = self.cfg, self.device
        self.actor, qvalue = make_actor_and_qvalue(cfg, observation_spec, action_spec, device)
        self.policy = self.actor
        value = make_state_value(cfg, observation_spec, device)
        self.world_model = WorldModel(cfg, observation_spec, action_spec, device, env=env)
        self.dynamics, self.reward = self.world_model.dynamics, self.world_model.reward
        self.termination = self.world_model.termination
        loss = S2VGLoss(
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
            actor_model_noise=cfg.loss.actor_model_noise,
            observation_bounds=(
                observation_bounds_for_env(cfg.env.name)
                if cfg.loss.observation_bounds == "known"
                else None
            ),
            disagreement_bound=cfg.loss.disagreement_bound,
            ensemble_members=cfg.loss.ensemble_members,
            expansion_ensemble_mean=cfg.loss.expansion_ensemble_mean,
        )
        params = self._polyak_actor_critic(
            loss, trainable(loss.qvalue_network_params) + trainable(loss.value_network_params)
        )
        clip_groups = (
            [(self._actor_params, cfg.loss.actor_max_grad_norm)]
            if cfg.loss.actor_max_grad_norm is not None
            else []
        )
        reason = fast_s2vg_supported(loss) if cfg.compile.fast_update else None
        if cfg.compile.fast_update and reason is None:
            self.step = FastS2VGUpdate(
                loss,
                self.optimizer,
                params,
                tau=cfg.loss.tau,
                clip_groups=clip_groups,
                **fast_kwargs(cfg),
            )
        else:
            if reason is not None:
                log.info("S2VG's actor-critic step runs through S2VGLoss: %s", reason)
            self.step = self._actor_critic_step(self.loss_keys, params, clip_groups)

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
