"""World models (dynamics, reward, termination, ensembles) and actor/critic factories."""

from torchrl_svg.modules._mlp import StackedMLP
from torchrl_svg.modules.actor import PRE_TANH_KEY, PreTanhProbabilisticModule, TanhNormalActor
from torchrl_svg.modules.dynamics import GaussianDynamics
from torchrl_svg.modules.factories import env_specs, make_actor, make_qvalue, make_value
from torchrl_svg.modules.gaussian import GaussianMLPModel
from torchrl_svg.modules.normalizer import RunningNormalizer
from torchrl_svg.modules.reward import RewardModel
from torchrl_svg.modules.termination import (
    KNOWN_TERMINATION_ENVS,
    KnownTermination,
    LearnedTermination,
    Termination,
    ant_terminated,
    hopper_terminated,
    hopper_v5_terminated,
    humanoid_terminated,
    inverted_double_pendulum_terminated,
    inverted_pendulum_terminated,
    inverted_pendulum_v5_terminated,
    mountain_car_continuous_terminated,
    never_terminated,
    termination_for_env,
    walker2d_terminated,
    walker2d_v5_terminated,
)

__all__ = [
    "KNOWN_TERMINATION_ENVS",
    "GaussianDynamics",
    "GaussianMLPModel",
    "PRE_TANH_KEY",
    "PreTanhProbabilisticModule",
    "KnownTermination",
    "LearnedTermination",
    "RewardModel",
    "RunningNormalizer",
    "StackedMLP",
    "TanhNormalActor",
    "Termination",
    "ant_terminated",
    "env_specs",
    "hopper_terminated",
    "hopper_v5_terminated",
    "humanoid_terminated",
    "inverted_double_pendulum_terminated",
    "inverted_pendulum_terminated",
    "inverted_pendulum_v5_terminated",
    "make_actor",
    "make_qvalue",
    "make_value",
    "mountain_car_continuous_terminated",
    "never_terminated",
    "termination_for_env",
    "walker2d_terminated",
    "walker2d_v5_terminated",
]
