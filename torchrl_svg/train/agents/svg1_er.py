"""SVG(1)-ER (SVG paper Algorithm 2 with experience replay)."""

from __future__ import annotations

from torchrl_svg.train.agents.svg import SVGAgent

__all__ = ["SVG1ERAgent"]


class SVG1ERAgent(SVGAgent):
    """SVG(1)-ER: ``svg.policy_updates_per_step`` policy updates per step on replay batches.

    Each replayed transition is weighted by ``pi / beta`` truncated at
    ``svg.max_importance_weight``; with ``svg.kl_coef > 0`` the policy is held near the one
    it was at the start of each round of updates (App. D's KL penalty).

    Examples:
        >>> SVG1ERAgent.replays_policy, SVG1ERAgent.slice_len  # single transitions
        (True, None)
    """

    name = "svg1_er"
    replays_policy = True
