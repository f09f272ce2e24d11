"""World models (dynamics, reward, termination, ensembles) and actor/critic factories."""

from torchrl_svg.modules._mlp import StackedMLP
from torchrl_svg.modules.dynamics import GaussianDynamics
from torchrl_svg.modules.factories import env_specs, make_actor, make_qvalue, make_value
from torchrl_svg.modules.gaussian import GaussianMLPModel
from torchrl_svg.modules.normalizer import RunningNormalizer
from torchrl_svg.modules.reward import RewardModel
from torchrl_svg.modules.termination import (
    KnownTermination,
    LearnedTermination,
    Termination,
    hopper_v5_terminated,
    inverted_pendulum_v5_terminated,
    never_terminated,
    termination_for_env,
    walker2d_v5_terminated,
)

__all__ = [
    "GaussianDynamics",
    "GaussianMLPModel",
    "KnownTermination",
    "LearnedTermination",
    "RewardModel",
    "RunningNormalizer",
    "StackedMLP",
    "Termination",
    "env_specs",
    "hopper_v5_terminated",
    "inverted_pendulum_v5_terminated",
    "make_actor",
    "make_qvalue",
    "make_value",
    "never_terminated",
    "termination_for_env",
    "walker2d_v5_terminated",
]
