"""SVG(k): policy replay on real sub-trajectories of ``svg.horizon`` steps."""

from __future__ import annotations

from torchrl_svg.train.agents.svg import SVGAgent

__all__ = ["SVGkAgent"]


class SVGkAgent(SVGAgent):
    """SVG(k): policy replay on real sub-trajectories of ``svg.horizon`` steps.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.train import load_config
        >>> cfg = load_config(["algorithm=svgk", "network.actor_hidden_sizes=[8]",
        ...                    "network.critic_hidden_sizes=[8]", "model.hidden_sizes=[8]", "svg.horizon=3"])
        >>> agent = SVGkAgent(cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
        >>> agent.name, agent.horizon(), agent.slice_len
        ('svgk', 3, 3)
    """

    name = "svgk"
    replays_policy = True

    def horizon(self) -> int:
        """``svg.horizon``."""
        return self.cfg.svg.horizon
