"""Small reference tasks (the SVG paper's "Hand", an LQG problem) and the imagined-rollout env.

The two tasks are batched TorchRL :class:`~torchrl.envs.EnvBase` environments whose
transition and reward are also available as exact, differentiable TensorDict
modules (a true dynamics model, a known reward). The LQG task adds closed-form
returns, values and policy gradients for checking SVG estimators.
:class:`WorldModelEnv` turns learned (or known) models into an environment for
imagined rollouts.
"""

from torchrl_svg.envs.hand import HandEnv, HandParams, hand_dynamics_model, hand_reward_module
from torchrl_svg.envs.lqg import (
    LinearGaussianPolicy,
    LQGEnv,
    linear_gaussian_actor,
    lqg_dynamics_model,
    lqg_expected_return,
    lqg_lookahead_return,
    lqg_policy_gradient,
    lqg_reward_module,
    lqg_state_moments,
    lqg_value_function,
    lqg_value_module,
)
from torchrl_svg.envs.transforms import EndOnNonFinite
from torchrl_svg.envs.world_model_env import InitialObservations, WorldModelEnv

__all__ = [
    "EndOnNonFinite",
    "HandEnv",
    "HandParams",
    "InitialObservations",
    "LQGEnv",
    "LinearGaussianPolicy",
    "WorldModelEnv",
    "hand_dynamics_model",
    "hand_reward_module",
    "linear_gaussian_actor",
    "lqg_dynamics_model",
    "lqg_expected_return",
    "lqg_lookahead_return",
    "lqg_policy_gradient",
    "lqg_state_moments",
    "lqg_reward_module",
    "lqg_value_function",
    "lqg_value_module",
]
