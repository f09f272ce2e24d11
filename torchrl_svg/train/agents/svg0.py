"""SVG(0) with replay (SVG paper Algorithm 3): model-free, a Q critic."""

from __future__ import annotations

from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from torchrl_svg.objectives import SVG0Loss
from torchrl_svg.train.agents.base import ModelFreeAgent, make_actor_and_qvalue, trainable

__all__ = ["SVG0Agent"]


class SVG0Agent(ModelFreeAgent):
    """SVG(0) with replay (Algorithm 3): a Q critic by TD with a Polyak target, no model.

    Per collected environment step: ``svg.policy_updates_per_step`` updates of
    the actor and the critic, each on a fresh replay batch.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.train import load_config
        >>> cfg = load_config(["algorithm=svg0", "network.actor_hidden_sizes=[8]",
        ...                    "network.critic_hidden_sizes=[8]", "model.hidden_sizes=[8]"])
        >>> agent = SVG0Agent(cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
        >>> agent.name, agent.updates_per_step()
        ('svg0', 1)
    """

    name = "svg0"

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, the Q network and :class:`~torchrl_svg.objectives.SVG0Loss` (no alpha)."""
        cfg = self.cfg
        self.policy, qvalue = make_actor_and_qvalue(cfg, observation_spec, action_spec, self.device)
        loss = SVG0Loss(
            self.policy, qvalue, noise=cfg.svg.noise, loss_function=cfg.loss.loss_function
        )
        params = self._polyak_actor_critic(loss, trainable(loss.qvalue_network_params), alpha=False)
        self.step = self._actor_critic_step(("loss_actor", "loss_qvalue"), params)

    def updates_per_step(self) -> int:
        """``svg.policy_updates_per_step`` actor and critic updates per environment step."""
        return self.cfg.svg.policy_updates_per_step
