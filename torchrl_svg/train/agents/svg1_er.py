"""SVG(1)-ER (SVG paper Algorithm 2 with experience replay)."""

from __future__ import annotations

from torchrl_svg.train.agents.svg import SVGAgent

__all__ = ["SVG1ERAgent"]


class SVG1ERAgent(SVGAgent):
    """SVG(1)-ER (Algorithm 2 with experience replay): importance-weighted policy replay.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.train import load_config
        >>> cfg = load_config(["algorithm=svg1_er", "network.actor_hidden_sizes=[8]",
        ...                    "network.critic_hidden_sizes=[8]", "model.hidden_sizes=[8]"])
        >>> agent = SVG1ERAgent(cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
        >>> agent.name, agent.replays_policy, agent.slice_len
        ('svg1_er', True, None)
    """

    name = "svg1_er"
    replays_policy = True
