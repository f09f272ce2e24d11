r"""The equations of the losses and their shared steps: one implementation of each.

The LossModules of :mod:`torchrl_svg.objectives`, the replay transforms of
:mod:`torchrl_svg.data`, :class:`~torchrl_svg.envs.WorldModelEnv` and the fast update steps
of :mod:`torchrl_svg.train` compute their terms with these functions, so the paths cannot
drift apart. Two kinds, neither with side effects:

- equations on plain tensors (``[*B]`` per-sample values unless stated): the TD target and
  eq 7's value-expansion targets (:func:`td_target`, :func:`value_expansion_targets`), the
  soft model return of eq 11 (:func:`soft_model_return`), the soft state value target,
  the temperature loss, truncated importance weights, episode masks, the SVG(∞)
  backward recursion;
- the shared steps that run the networks, given a TorchRL module, its parameters (or
  ``None`` for the module's own) and a tensordict: the policy's distribution and a
  reparameterised sample (:func:`policy_dist`, :func:`policy_sample`), the pre-image of a
  replayed action (:func:`replayed_preimage`), one model step (:func:`model_dist`), the
  expected reward, the continuation :math:`1 - p(d|s')`, the state value and an imagined
  rollout (:func:`imagine_rollout`).

Notation (S2VG paper): real transition :math:`(s, a, r, s', d)`; continuation
:math:`c = 1 - d`; temperature :math:`\alpha`; discount :math:`\gamma`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from torchrl_svg.modules.functional import normal_log_prob, squashed_normal_log_prob
from torchrl_svg.objectives._common import (
    continuation,
    expected_reward,
    imagine_rollout,
    model_dist,
    policy_dist,
    policy_preimage,
    policy_sample,
    replayed_preimage,
    state_value,
)

__all__ = [
    "continuation",
    "episode_masks",
    "expected_reward",
    "imagine_rollout",
    "model_dist",
    "policy_dist",
    "policy_preimage",
    "policy_sample",
    "replayed_preimage",
    "state_value",
    "truncated_importance_weight",
    "normal_log_prob",
    "soft_model_return",
    "soft_state_value_target",
    "squashed_normal_log_prob",
    "reverse_linear_scan",
    "svg_backward_recursion",
    "td_target",
    "temperature_loss",
    "value_expansion_targets",
]


def td_target(reward: Tensor, continuation: Tensor, next_value: Tensor, gamma: float) -> Tensor:
    r"""One-step bootstrapped target :math:`y = r + \gamma\,c\,V(s')` (S2VG eq 7 with H = 1).

    Examples:
        >>> import torch
        >>> td_target(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([5.0]), 0.9)
        tensor([1.])
    """
    return reward + gamma * continuation * next_value


def value_expansion_targets(
    rewards: Sequence[Tensor],
    continuations: Sequence[Tensor],
    log_probs: Sequence[Tensor],
    final_value: Tensor,
    alpha: Tensor | float,
    gamma: float,
    entropy: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""The critic's targets and masks of S2VG eq 7 over ``H`` expansion steps, ``[H, *B]`` each.

    .. math::

        y_t = \hat r_t + \gamma\,c_{t+1}\,G_{t+1},\quad G_H = \bar V(\hat s_H),\quad
        G_t = y_t - \alpha\log\pi(\hat a_t|\hat s_t)\ (t \ge 1),\quad
        w_t = \prod_{j \le t} c_j

    with :math:`c_0 = 1` (``entropy=False`` drops the entropy bonus, as eq 7 is written).

    Args:
        rewards: :math:`\hat r_t`, ``H`` tensors ``[*B]`` (or one ``[H, *B]`` tensor).
        continuations: :math:`c_{t+1} = 1 - d_{t+1}`, the same layout.
        log_probs: :math:`\log\pi(\hat a_t|\hat s_t)` of the imagined steps ``t = 1..H-1``.
        final_value: :math:`\bar V(\hat s_H)`, ``[*B]``.
        alpha: the temperature.
        gamma: the discount.
        entropy: include the entropy bonus of the imagined steps.

    Examples:
        >>> import torch
        >>> one = torch.ones(1)
        >>> rewards, continuations, log_probs = [one, one], [one, 0 * one], [0 * one]
        >>> targets, weights = value_expansion_targets(rewards, continuations, log_probs, 2 * one, 0.1, 0.5)
        >>> targets.squeeze(-1), weights.squeeze(-1)  # y_1 = 1 (terminal), y_0 = 1 + 0.5 * 1
        (tensor([1.5000, 1.0000]), tensor([1., 1.]))
    """
    horizon = len(rewards)
    targets: list[Tensor] = [None] * horizon  # type: ignore[list-item]
    future = final_value
    for t in reversed(range(horizon)):
        targets[t] = td_target(rewards[t], continuations[t], future, gamma)
        future = targets[t]
        if t >= 1 and entropy:
            future = future - alpha * log_probs[t - 1]
    # w_0 = 1, w_t = prod_{j<t} c_{j+1}
    weights = torch.cumprod(
        torch.stack([torch.ones_like(continuations[0]), *continuations[:-1]]), 0
    )
    return torch.stack(targets), weights


def truncated_importance_weight(
    log_prob: Tensor, behaviour_log_prob: Tensor, max_weight: float
) -> Tensor:
    r"""Truncated importance weight :math:`\min(\pi_\theta(a|s) / \beta(a|s), w_{\max})`.

    Args:
        log_prob: :math:`\log \pi_\theta(a|s)` of the current policy (summed over the steps
            of a sub-trajectory for its product weight), ``[*B]``.
        behaviour_log_prob: :math:`\log \beta(a|s)` stored at collection, same shape.
        max_weight: the truncation :math:`w_{\max}`.

    Examples:
        >>> import torch
        >>> truncated_importance_weight(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]), 2.0)
        tensor([1., 2.])
    """
    return (log_prob - behaviour_log_prob).exp().clamp_max(max_weight)


def soft_state_value_target(q_values: Tensor, log_prob: Tensor, alpha: Tensor | float) -> Tensor:
    r"""The soft state value of S2VG eq 8: :math:`\min_i Q_i(s, \tilde a) - \alpha\log\pi(\tilde a|s)`.

    Args:
        q_values: ``[N_q, *B]``, one row per critic.
        log_prob: ``[*B]``.
        alpha: the temperature.
    """
    return q_values.min(0).values - alpha * log_prob


def soft_model_return(
    rewards: list[Tensor],
    log_probs: list[Tensor],
    continuations: list[Tensor],
    final_value: Tensor,
    alpha: Tensor | float,
    gamma: float,
    bootstrap_values: list[Tensor] | None = None,
    trusted: list[Tensor] | None = None,
) -> Tensor:
    r"""The soft return of ``H`` imagined steps ending in a value (S2VG eq 11 for ``H = 1``).

    .. math::

        \sum_{t=0}^{H-1} \gamma^t c_t\,u_{t+1}\big(\hat r_t - \alpha\log\pi(\tilde a_t|\hat s_t)\big)
        + \sum_{t=0}^{H-1} \gamma^t c_t\,(u_t - u_{t+1})\,V(\hat s_t)
        + \gamma^H c_H\,u_H\,V(\hat s_H)

    with :math:`c_0 = 1`, :math:`c_{t+1} = c_t\,(1 - \hat d(\hat s_{t+1}))` (``continuations``
    hold :math:`1 - \hat d(\hat s_{t+1})`) and :math:`u_t` the ``trusted`` flags
    (:math:`u_0 = 1`; :math:`u_{t+1} = 0` once the model's step from :math:`\hat s_t` is not
    trusted, e.g. where an ensemble disagrees: the return then stops at :math:`\hat s_t`
    with its value). Without ``trusted`` every step counts and the middle sum vanishes.

    Args:
        rewards: :math:`\hat r_t`, ``H`` tensors ``[*B]``.
        log_probs: :math:`\log\pi(\tilde a_t|\hat s_t)`, ``H`` tensors ``[*B]``.
        continuations: :math:`1 - \hat d(\hat s_{t+1})`, ``H`` tensors ``[*B]``.
        final_value: :math:`V(\hat s_H)`, ``[*B]``.
        alpha: the temperature.
        gamma: the discount.
        bootstrap_values: :math:`V(\hat s_t)` for ``t < H`` (needed with ``trusted``).
        trusted: :math:`u_{t+1}` for ``t < H``, ``H`` tensors ``[*B]`` (``None``: all ones).

    Examples:
        >>> import torch
        >>> one = torch.ones(1)
        >>> soft_model_return([one], [0 * one], [one], 2 * one, 0.1, 0.5)  # 1 + 0.5 * 2
        tensor([2.])
    """
    horizon = len(rewards)
    total, discount, cont, trust = None, 1.0, None, None
    for t in range(horizon):
        step = rewards[t] - alpha * log_probs[t]
        weight = discount if cont is None else discount * cont
        if trusted is not None:
            now = trusted[t] if trust is None else trust * trusted[t]
            stop = (1.0 if trust is None else trust) - now
            step = now * step + stop * bootstrap_values[t]
            trust = now
        term = weight * step
        total = term if total is None else total + term
        cont = continuations[t] if cont is None else cont * continuations[t]
        discount = discount * gamma
    scale = discount * cont if trust is None else discount * cont * trust
    return total + scale * final_value


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: Tensor | float) -> Tensor:
    r"""SAC's temperature loss :math:`-\log\alpha\,(\log\pi + \bar{\mathcal H})`, ``[*B]``.

    ``log_prob`` is detached: only :math:`\log\alpha` receives a gradient.
    """
    return -log_alpha * (log_prob.detach() + target_entropy)


def episode_masks(
    done: Tensor, terminated: Tensor | None = None, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Which steps of real (sub-)trajectories count, and whether the last one may bootstrap.

    A step counts while the trajectory has not ended at an earlier step (``done``)
    and, for padded slices, while ``valid`` (TorchRL's ``("collector", "mask")``) says
    so; bootstrapping after the last step is allowed unless it terminated.

    Args:
        done: ``[*B, T]`` flags.
        terminated: ``[*B, T]`` flags (``None``: ``done``).
        valid: ``[*B, T]`` flags (``None``: all valid).

    Returns:
        ``(alive [*B, T], bootstrap [*B])`` as booleans.

    Examples:
        >>> import torch
        >>> alive, bootstrap = episode_masks(torch.tensor([[False, True, False]]))
        >>> alive.tolist(), bootstrap.tolist()
        ([[True, True, False]], [False])
    """
    done = done.to(torch.bool)
    terminated = done if terminated is None else terminated.to(torch.bool)
    valid = torch.ones_like(done) if valid is None else valid.to(torch.bool)
    ended_before = torch.cumsum(done.to(torch.int64), -1) - done.to(torch.int64) > 0
    alive = valid & ~ended_before
    return alive, alive[..., -1] & ~terminated[..., -1]


def svg_backward_recursion(
    reward_state: Tensor,
    reward_action: Tensor,
    reward_next_state: Tensor,
    policy_state: Tensor,
    model_state: Tensor,
    model_action: Tensor,
    gamma: float,
    final_state_grad: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The value-gradient recursion of SVG(:math:`\infty`) (SVG paper, Algorithm 1) along a trajectory.

    With :math:`J_t = \sum_{k\ge t}\gamma^{k-t} r_k`, :math:`r_t = r(s_t, a_t, s_{t+1})`,
    :math:`a_t = \pi(s_t, \eta_t)` and :math:`s_{t+1} = f(s_t, a_t, \xi_t)` (noise held
    fixed), the state gradient :math:`\lambda_t = \partial J_t/\partial s_t` and the action
    gradient :math:`g_t = \partial J_t/\partial a_t` obey, backwards from
    :math:`\lambda_T` (``final_state_grad``, zero without a critic):

    .. math::

        \mu_{t+1} &= r_{s',t} + \gamma\,\lambda_{t+1} \\
        g_t &= r_{a,t} + \mu_{t+1} f_{a,t} \\
        \lambda_t &= r_{s,t} + \mu_{t+1} f_{s,t} + g_t\,\pi_{s,t}

    so that :math:`\nabla_\theta J_0 = \sum_t \gamma^t g_t\,\partial\pi(s_t,\eta_t;\theta)/\partial\theta`
    (the same gradient as back-propagating through the unrolled chain). Vectors are rows.

    Args:
        reward_state: :math:`r_{s,t}`, ``[*B, T, D]`` (zero on masked steps, as the others).
        reward_action: :math:`r_{a,t}`, ``[*B, T, A]``.
        reward_next_state: :math:`r_{s',t}`, ``[*B, T, D]``.
        policy_state: :math:`\pi_{s,t} = \partial a_t/\partial s_t`, ``[*B, T, A, D]``.
        model_state: :math:`f_{s,t} = \partial s_{t+1}/\partial s_t`, ``[*B, T, D, D]``.
        model_action: :math:`f_{a,t} = \partial s_{t+1}/\partial a_t`, ``[*B, T, D, A]``.
        gamma: the discount.
        final_state_grad: :math:`\lambda_T` ``[*B, D]`` (``None``: zero).

    Returns:
        ``(state_grad [*B, T, D], action_grad [*B, T, A])``: :math:`\lambda_t` and :math:`g_t`.
    """
    # lambda_t = u_t + lambda_{t+1} M_t with K_t = f_s + f_a pi_s:
    #   u_t = r_s + r_a pi_s + r_s' K_t,  M_t = gamma K_t
    row = torch.Tensor.unsqueeze
    k = model_state + model_action @ policy_state
    u = (
        reward_state
        + (row(reward_action, -2) @ policy_state).squeeze(-2)
        + (row(reward_next_state, -2) @ k).squeeze(-2)
    )
    lam = reverse_linear_scan(u, gamma * k, final_state_grad)
    final = (
        torch.zeros_like(lam[..., :1, :]) if final_state_grad is None else row(final_state_grad, -2)
    )
    lam_next = torch.cat([lam[..., 1:, :], final], -2)
    mu = reward_next_state + gamma * lam_next
    action_grad = reward_action + (row(mu, -2) @ model_action).squeeze(-2)
    return lam, action_grad


def reverse_linear_scan(u: Tensor, m: Tensor, final: Tensor | None = None) -> Tensor:
    r"""Solve :math:`x_t = u_t + x_{t+1} M_t` backwards from :math:`x_T` (``final``, zero if ``None``).

    A log-depth parallel scan (Hillis-Steele doubling on the affine maps
    :math:`x_{t+1} \mapsto x_t`): :math:`\lceil\log_2 T\rceil` batched matrix products
    instead of :math:`T` sequential steps. Vectors are rows.

    Args:
        u: ``[*B, T, D]``.
        m: ``[*B, T, D, D]``.
        final: ``[*B, D]`` or ``None``.

    Returns:
        ``x [*B, T, D]``.

    Examples:
        >>> import torch
        >>> u, m = torch.randn(3, 5, 2), 0.5 * torch.randn(3, 5, 2, 2)
        >>> x, expected = reverse_linear_scan(u, m), []
        >>> nxt = torch.zeros(3, 2)
        >>> for t in reversed(range(5)):
        ...     nxt = u[:, t] + (nxt.unsqueeze(-2) @ m[:, t]).squeeze(-2)
        ...     expected.insert(0, nxt)
        >>> torch.allclose(x, torch.stack(expected, 1), atol=1e-5)
        True
    """
    if final is not None:  # x_T enters as one more step with no successor
        u = torch.cat([u, final.unsqueeze(-2)], -2)
        m = torch.cat([m, torch.zeros_like(m[..., :1, :, :])], -3)
    steps = u.shape[-2]
    offset = 1
    while offset < steps:
        # compose each step's map with the one `offset` steps later (beyond the end: x = 0)
        u_later = torch.cat([u[..., offset:, :], torch.zeros_like(u[..., :offset, :])], -2)
        m_later = torch.cat([m[..., offset:, :, :], torch.zeros_like(m[..., :offset, :, :])], -3)
        u = u + (u_later.unsqueeze(-2) @ m).squeeze(-2)
        m = m_later @ m
        offset *= 2
    return u[..., :-1, :] if final is not None else u
