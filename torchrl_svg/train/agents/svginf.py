"""SVG(inf) (SVG paper Algorithm 1): on-policy, whole episodes, no critic."""

from __future__ import annotations

import logging
from typing import Any

from tensordict import TensorDictBase
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase

from torchrl_svg.objectives import SVGInfLoss
from torchrl_svg.train.agents.base import WorldModel, make_policy
from torchrl_svg.train.agents.svg import _PolicyGradientAgent
from torchrl_svg.train.fast_svginf import FastSVGInfUpdate, fast_svginf_supported

log = logging.getLogger("torchrl_svg")

__all__ = ["SVGInfAgent"]


class SVGInfAgent(_PolicyGradientAgent):
    """SVG(inf) (Algorithm 1): on-policy, episode by episode, no critic.

    Each collected batch holds ``svg.episodes_per_batch`` complete real
    episodes (``[N, T]``). The model is fitted for ``svg.model_updates_per_batch``
    steps on all data seen, then one policy-gradient step (clipped to
    ``svg.actor_max_grad_norm``) back-propagates through the episodes with
    inferred noise (``svg.noise="sampled"``: the planner of the paper's Fig. 2).

    Examples:
        >>> SVGInfAgent.episodic  # the collector gathers whole episodes
        True
    """

    name = "svginf"
    episodic = True

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, the world model and :class:`~torchrl_svg.objectives.SVGInfLoss`."""
        cfg, device = self.cfg, self.device
        self.policy = make_policy(cfg, observation_spec, action_spec, device)
        self.world_model = WorldModel(
            cfg, observation_spec, action_spec, device, env=env, termination=False
        )
        self._policy_optimizer(
            SVGInfLoss(
                self.policy, self.world_model.dynamics, self.world_model.reward, noise=cfg.svg.noise
            )
        )
        reason = fast_svginf_supported(self.loss) if cfg.compile.fast_update else None
        if cfg.compile.fast_update and reason is None:
            # the gradient by Algorithm 1's recursion over batched Jacobians (not compiled)
            self.policy_step = FastSVGInfUpdate(
                self.loss,
                self.actor_optimizer,
                self._actor_params,
                max_grad_norm=cfg.svg.actor_max_grad_norm,
                precision=cfg.precision,
            )
        else:
            if reason is not None:
                log.info("SVG(inf)'s policy step runs through SVGInfLoss: %s", reason)
            # the unroll is as long as an episode: it is neither compiled nor captured
            self.policy_step = self._policy_step(self.loss, ("loss_actor",), eager=True)

    def train_on_batch(self, fresh: TensorDictBase, replay: ReplayBuffer):
        """Fit the model on all data, then one policy step on the fresh episodes."""
        cfg = self.cfg
        self.world_model.fit(
            lambda k: self.sample(replay, k), cfg.svg.model_updates_per_batch, cfg.model.batch_size
        )
        out = self.policy_step(fresh)
        return out, 1, cfg.svg.model_updates_per_batch

    def _state_parts(self) -> dict[str, Any]:
        """Parameters, statistics and optimiser states."""
        return {
            "loss": self.loss,
            "world_model": self.world_model,
            "actor_optimizer": self.actor_optimizer,
        }
