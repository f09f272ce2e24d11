"""SVG-family LossModules and the world-model loss."""

from torchrl_svg.objectives.s2vg import S2VGLoss
from torchrl_svg.objectives.world_model import GaussianWorldModelLoss

__all__ = ["GaussianWorldModelLoss", "S2VGLoss"]
