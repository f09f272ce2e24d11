"""TorchRL's own SAC as a baseline agent of the recipe (``algorithm=sac``)."""

from __future__ import annotations

import torch
from torchrl.data import TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import SACLoss, SoftUpdate

from torchrl_svg.train.agents.base import (
    ModelFreeAgent,
    make_actor_and_qvalue,
    make_soft_actor_critic_optimizer,
    make_update,
    target_entropy,
    trainable,
)
from torchrl_svg.train.config import Config

__all__ = ["SACAgent"]


class SACAgent(ModelFreeAgent):
    """TorchRL's :class:`~torchrl.objectives.SACLoss` in the same recipe as S2VG.

    The baseline of the benchmarks, run as TorchRL's sota-implementation and
    CleanRL run SAC: a learned alpha (initial 1.0, target entropy ``-|A|``),
    one learning rate (3e-4) for the actor, the critics and alpha, one update
    per environment step (``config.SAC_SETTINGS``); and the same actor and
    twin-Q networks (``network.*``), collector, replay buffer, warm-up,
    discount and Polyak rate as :class:`~torchrl_svg.train.S2VGAgent`.

    Args:
        cfg: the configuration (``algorithm=sac``).
        observation_spec: the environment's observation spec (``[obs_dim]``).
        action_spec: the environment's bounded action spec (``[action_dim]``).
        device: where the parameters live.
        env: unused (the signature of every agent).

    Examples:
        >>> from torchrl.envs import GymEnv
        >>> from torchrl_svg.modules import env_specs
        >>> from torchrl_svg.train import load_config
        >>> cfg = load_config(["algorithm=sac", "network.actor_hidden_sizes=[16]",
        ...                    "network.critic_hidden_sizes=[16]"])
        >>> agent = SACAgent(cfg, *env_specs(GymEnv("Pendulum-v1")))
        >>> sorted(agent.loss_keys)
        ['loss_actor', 'loss_alpha', 'loss_qvalue']
    """

    name = "sac"
    loss_keys = ("loss_actor", "loss_qvalue", "loss_alpha")

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
        self.loss = SACLoss(
            self.actor,
            qvalue,
            num_qvalue_nets=2,
            loss_function=cfg.loss.loss_function,
            alpha_init=cfg.loss.alpha_init,
            fixed_alpha=cfg.loss.fixed_alpha,
            target_entropy=target_entropy(cfg),
            action_spec=action_spec,
        )
        self.loss.make_value_estimator(gamma=cfg.loss.gamma)
        self.target_updater = SoftUpdate(self.loss, tau=cfg.loss.tau)
        self.optimizer, params = make_soft_actor_critic_optimizer(
            cfg,
            self.loss,
            trainable(self.loss.actor_network_params),
            trainable(self.loss.qvalue_network_params),
            device,
        )
        self.step = make_update(
            cfg,
            self.loss,
            self.loss_keys,
            self.optimizer,
            params,
            after_step=self.target_updater.step,
            kind="actor-critic",
        )

    def updates_per_step(self) -> int:
        """``loss.updates_per_step`` SAC updates per environment step."""
        return self.cfg.loss.updates_per_step
