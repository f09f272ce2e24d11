r"""A linear-quadratic-Gaussian (LQG) task with exact analytic returns, values and gradients.

.. math::

    s_{t+1} = A s_t + B a_t + \sigma_w\,\xi_t,\quad \xi_t \sim \mathcal N(0, I),\qquad
    r_t = -(s_t^\top Q s_t + a_t^\top R a_t),\qquad s_0 \sim \mathcal N(\mu_0, \sigma_0^2 I)

Under a linear-Gaussian policy :math:`a = K s + \sigma_a \eta` everything is
Gaussian, so the expected return (:func:`lqg_expected_return`), the value
function of the infinite-horizon discounted problem (:func:`lqg_value_function`)
and, by autograd through them, the exact policy gradient are available in closed
form. With the true model (:func:`lqg_dynamics_model`), the known reward
(:func:`lqg_reward_module`) and critic (:func:`lqg_value_module`) they are the
reference against which SVG gradient estimators are tested in float64.
"""

from torchrl_svg.envs.lqg_closed_form import (
    LinearGaussianPolicy,
    linear_gaussian_actor,
    lqg_expected_return,
    lqg_lookahead_return,
    lqg_policy_gradient,
    lqg_state_moments,
    lqg_value_function,
    lqg_value_module,
)
from torchrl_svg.envs.lqg_env import (
    LQGEnv,
    lqg_dynamics_model,
    lqg_mean_next_observation,
    lqg_reward,
    lqg_reward_module,
)

__all__ = [
    "LQGEnv",
    "LinearGaussianPolicy",
    "linear_gaussian_actor",
    "lqg_dynamics_model",
    "lqg_expected_return",
    "lqg_lookahead_return",
    "lqg_policy_gradient",
    "lqg_state_moments",
    "lqg_mean_next_observation",
    "lqg_reward",
    "lqg_reward_module",
    "lqg_value_function",
    "lqg_value_module",
]
