"""SVG-family LossModules, the world-model loss and the noise-inference helpers."""

from torchrl_svg.objectives.noise import LocationScale, location_scale
from torchrl_svg.objectives.s2vg import S2VGLoss
from torchrl_svg.objectives.svg import SVG0Loss, SVG1Loss, SVGInfLoss, SVGLoss
from torchrl_svg.objectives.world_model import GaussianWorldModelLoss

__all__ = [
    "GaussianWorldModelLoss",
    "LocationScale",
    "S2VGLoss",
    "SVG0Loss",
    "SVG1Loss",
    "SVGInfLoss",
    "SVGLoss",
    "location_scale",
]
