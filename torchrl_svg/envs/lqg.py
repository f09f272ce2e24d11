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

from torchrl_svg.envs import lqg_closed_form, lqg_env
from torchrl_svg.envs.lqg_closed_form import *  # noqa: F403
from torchrl_svg.envs.lqg_env import *  # noqa: F403

__all__ = [*lqg_closed_form.__all__, *lqg_env.__all__]
