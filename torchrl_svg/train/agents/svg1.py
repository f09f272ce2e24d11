"""SVG(1) (SVG paper Algorithm 2 without a database)."""

from __future__ import annotations

from torchrl_svg.train.agents.svg import SVGAgent

__all__ = ["SVG1Agent"]


class SVG1Agent(SVGAgent):
    """SVG(1): the policy learns from each fresh transition once, in the order they came.

    No policy replay (Algorithm 2 run without a database), so the importance weights
    ``pi / beta`` start at 1 and fall only as the policy moves within one collected batch.
    The model and V still learn from replay (:class:`SVGAgent`).

    Examples:
        >>> SVG1Agent.name, SVG1Agent.replays_policy
        ('svg1', False)
    """

    name = "svg1"
    replays_policy = False
