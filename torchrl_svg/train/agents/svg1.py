"""SVG(1) (SVG paper Algorithm 2 without a database)."""

from __future__ import annotations

from torchrl_svg.train.agents.svg import SVGAgent

__all__ = ["SVG1Agent"]


class SVG1Agent(SVGAgent):
    """SVG(1) (Algorithm 2 without a database): one policy update per fresh transition.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.train import load_config
        >>> cfg = load_config(["algorithm=svg1", "network.actor_hidden_sizes=[8]",
        ...                    "network.critic_hidden_sizes=[8]", "model.hidden_sizes=[8]"])
        >>> agent = SVG1Agent(cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
        >>> agent.name, agent.replays_policy, agent.slice_len
        ('svg1', False, None)
    """

    name = "svg1"
    replays_policy = False
