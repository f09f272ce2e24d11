"""Replay-buffer transforms for the SVG family and trajectory-slice buffers."""

from torchrl_svg.data import prioritized, transforms
from torchrl_svg.data.prioritized import *  # noqa: F403
from torchrl_svg.data.transforms import *  # noqa: F403

# data.transforms also exports the names of data.slices and data.world_model.
__all__ = [*prioritized.__all__, *transforms.__all__]
