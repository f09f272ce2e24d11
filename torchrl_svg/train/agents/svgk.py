"""SVG(k): policy replay on real sub-trajectories of ``svg.horizon`` steps."""

from __future__ import annotations

from torchrl_svg.train.agents.svg import SVGAgent

__all__ = ["SVGkAgent"]


class SVGkAgent(SVGAgent):
    """SVG(k): SVG(1)-ER's replay on real sub-trajectories of ``svg.horizon`` steps.

    The replay buffer samples slices of ``k`` consecutive steps; the policy gradient
    back-propagates through the learned model along each slice (its noise inferred from the
    real next states) and ends in V; the weight of a slice is the product of its steps'.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.train import load_config
        >>> small = ["network.actor_hidden_sizes=[8]", "network.critic_hidden_sizes=[8]"]
        >>> cfg = load_config(["algorithm=svgk", "svg.horizon=3", *small])
        >>> agent = SVGkAgent(cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
        >>> agent.horizon(), agent.slice_len, agent.loss.horizon
        (3, 3, 3)
    """

    name = "svgk"
    replays_policy = True

    def horizon(self) -> int:
        """``svg.horizon``."""
        return self.cfg.svg.horizon
