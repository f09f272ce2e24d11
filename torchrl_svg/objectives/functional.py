r"""The equations of the losses as pure tensor functions: one implementation of each.

The LossModules of :mod:`torchrl_svg.objectives` and the fast update steps of
:mod:`torchrl_svg.train` both compute their terms with these functions, so the two
paths cannot drift apart. Every function takes and returns plain tensors
(``[*B]`` per-sample values unless stated) and has no side effects.

Notation (S2VG paper): real transition :math:`(s, a, r, s', d)`; continuation
:math:`c = 1 - d`; temperature :math:`\alpha`; discount :math:`\gamma`.
"""

from __future__ import annotations

from torch import Tensor

from torchrl_svg.modules.functional import normal_log_prob, squashed_normal_log_prob

__all__ = [
    "normal_log_prob",
    "s2vg_actor_objective",
    "soft_state_value_target",
    "squashed_normal_log_prob",
    "td_target",
    "temperature_loss",
]


def td_target(reward: Tensor, continuation: Tensor, next_value: Tensor, gamma: float) -> Tensor:
    r"""One-step bootstrapped target :math:`y = r + \gamma\,c\,V(s')` (S2VG eq 7 with H = 1).

    Examples:
        >>> import torch
        >>> td_target(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([5.0]), 0.9)
        tensor([1.])
    """
    return reward + gamma * continuation * next_value


def soft_state_value_target(q_values: Tensor, log_prob: Tensor, alpha: Tensor | float) -> Tensor:
    r"""The soft state value of S2VG eq 8: :math:`\min_i Q_i(s, \tilde a) - \alpha\log\pi(\tilde a|s)`.

    Args:
        q_values: ``[N_q, *B]``, one row per critic.
        log_prob: ``[*B]``.
        alpha: the temperature.
    """
    return q_values.min(0).values - alpha * log_prob


def s2vg_actor_objective(
    model_reward: Tensor,
    log_prob: Tensor,
    continuation: Tensor,
    next_value: Tensor,
    alpha: Tensor | float,
    gamma: float,
) -> Tensor:
    r"""The one-step soft model return that S2VG's actor maximises (eqs 10-11).

    .. math::

        \hat r(s, \tilde a) - \alpha\log\pi_\theta(\tilde a|s) + \gamma\,(1-\hat d(\hat s'))\,V(\hat s')
    """
    return model_reward - alpha * log_prob + gamma * continuation * next_value


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: Tensor | float) -> Tensor:
    r"""SAC's temperature loss :math:`-\log\alpha\,(\log\pi + \bar{\mathcal H})`, ``[*B]``.

    ``log_prob`` is detached: only :math:`\log\alpha` receives a gradient.
    """
    return -log_alpha * (log_prob.detach() + target_entropy)
