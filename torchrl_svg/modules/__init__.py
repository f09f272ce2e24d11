"""World models (dynamics, reward, termination, ensembles) and actor/critic factories."""

from torchrl_svg.modules import (
    _mlp,
    actor,
    bounds,
    dynamics,
    factories,
    gaussian,
    normalizer,
    reward,
    termination,
)
from torchrl_svg.modules._mlp import *  # noqa: F403
from torchrl_svg.modules.actor import *  # noqa: F403
from torchrl_svg.modules.bounds import *  # noqa: F403
from torchrl_svg.modules.dynamics import *  # noqa: F403
from torchrl_svg.modules.factories import *  # noqa: F403
from torchrl_svg.modules.gaussian import *  # noqa: F403
from torchrl_svg.modules.normalizer import *  # noqa: F403
from torchrl_svg.modules.reward import *  # noqa: F403
from torchrl_svg.modules.termination import *  # noqa: F403

__all__ = [
    *_mlp.__all__,
    *actor.__all__,
    *bounds.__all__,
    *dynamics.__all__,
    *factories.__all__,
    *gaussian.__all__,
    *normalizer.__all__,
    *reward.__all__,
    *termination.__all__,
]
