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
        >>> from torchrl_svg.train import load_config, make_agent
        >>> from torchrl_svg.train.builders import make_env
        >>> from torchrl_svg.modules import env_specs
        >>> cfg = load_config(["algorithm=svg0", "env.name=Pendulum-v1"])
        >>> agent = make_agent(cfg, *env_specs(make_env(cfg)))
        >>> type(agent).__name__, agent.updates_per_step()
        ('SVG0Agent', 1)
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
