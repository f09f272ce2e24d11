"""TorchRL's own SAC as a baseline agent of the recipe (``algorithm=sac``)."""

from __future__ import annotations

from torchrl.data import TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import SACLoss

from torchrl_svg.train.agents.base import (
    ModelFreeAgent,
    make_actor_and_qvalue,
    target_entropy,
    trainable,
)

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

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, the twin Q networks and :class:`~torchrl.objectives.SACLoss`."""
        cfg = self.cfg
        self.actor, qvalue = make_actor_and_qvalue(cfg, observation_spec, action_spec, self.device)
        self.policy = self.actor
        loss = SACLoss(
            self.actor,
            qvalue,
            num_qvalue_nets=2,
            loss_function=cfg.loss.loss_function,
            alpha_init=cfg.loss.alpha_init,
            fixed_alpha=cfg.loss.fixed_alpha,
            target_entropy=target_entropy(cfg),
            action_spec=action_spec,
        )
        params = self._polyak_actor_critic(loss, trainable(loss.qvalue_network_params))
        self.step = self._actor_critic_step(self.loss_keys, params)

    def updates_per_step(self) -> int:
        """``loss.updates_per_step`` SAC updates per environment step."""
        return self.cfg.loss.updates_per_step
