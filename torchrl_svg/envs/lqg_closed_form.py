r"""Closed forms of the LQG task under a linear-Gaussian policy: returns, values, gradients.

Under :math:`a = K s + \sigma_a \eta` (:func:`linear_gaussian_actor`) the state of
:class:`~torchrl_svg.envs.lqg_env.LQGEnv` stays Gaussian, so its expected return,
the discounted value function and, by autograd through them, the exact policy
gradient follow from propagating two moments. They are the float64 references
of the SVG gradient tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import InteractionType, TensorDictModule
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.modules.distributions import IndependentNormal

from torchrl_svg.envs._base import DEVICE
from torchrl_svg.envs.lqg_env import LQGEnv, _check_env, _quadratic

__all__ = [
    "LinearGaussianPolicy",
    "linear_gaussian_actor",
    "lqg_expected_return",
    "lqg_lookahead_return",
    "lqg_policy_gradient",
    "lqg_state_moments",
    "lqg_value_function",
    "lqg_value_module",
]


class LinearGaussianPolicy(nn.Module):
    r"""The parameters of :math:`\pi(a \mid s) = \mathcal N(K s, \mathrm{diag}(e^{2\ell}))`.

    ``forward(observation)`` returns ``(loc, scale)`` = ``(K s, exp(log_std))``
    with ``loc``/``scale`` of shape ``[*B, action_dim]``.

    Args:
        gain: initial :math:`K`, ``[action_dim, obs_dim]``.
        log_std: initial :math:`\ell`, ``[action_dim]``.

    Attributes:
        gain: :class:`~torch.nn.Parameter` :math:`K`.
        log_std: :class:`~torch.nn.Parameter` :math:`\ell` (state-independent).

    Examples:
        >>> import torch
        >>> net = LinearGaussianPolicy(torch.tensor([[1.0, -1.0]]), torch.zeros(1))
        >>> loc, scale = net(torch.tensor([[2.0, 1.0]]))
        >>> loc.tolist(), scale.tolist()
        ([[1.0]], [[1.0]])

    """

    def __init__(self, gain: Tensor, log_std: Tensor):
        super().__init__()
        if gain.ndim != 2 or log_std.shape != gain.shape[:1]:
            raise ValueError(
                "LinearGaussianPolicy: gain must be [action_dim, obs_dim] and log_std [action_dim]; "
                f"got {tuple(gain.shape)} and {tuple(log_std.shape)}."
            )
        self.gain = nn.Parameter(gain)
        self.log_std = nn.Parameter(log_std)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """``(K s, exp(log_std))``, each ``[*B, action_dim]``."""
        loc = observation @ self.gain.T
        return loc, self.log_std.exp().expand_as(loc)


def linear_gaussian_actor(
    obs_dim: int,
    action_dim: int,
    gain: Tensor | Sequence[Sequence[float]] | None = None,
    log_std: Tensor | Sequence[float] | float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: DEVICE = None,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
) -> ProbabilisticActor:
    r"""A linear-Gaussian :class:`~torchrl.modules.ProbabilisticActor`: :math:`a = K s + e^{\ell}\eta`.

    The distribution is TorchRL's ``IndependentNormal`` with ``tanh_loc=False``,
    so ``get_dist(td)`` has ``loc = K s`` and ``scale = exp(log_std)`` exactly
    (no squashing, no location rescaling), which is what the closed forms of
    :func:`lqg_expected_return` and :func:`lqg_value_function` assume. Like
    :func:`torchrl_svg.modules.make_actor` it samples by default
    (``InteractionType.RANDOM``) and writes ``"action_log_prob"``.

    The parameters are ``actor[0].module.gain`` (``[action_dim, obs_dim]``) and
    ``actor[0].module.log_std`` (``[action_dim]``), see :class:`LinearGaussianPolicy`.

    Args:
        obs_dim: state size ``n``.
        action_dim: action size ``m``.
        gain: initial :math:`K` (default zeros).
        log_std: initial :math:`\ell`, scalar or ``[m]`` (default zeros: std 1).

    Keyword Args:
        dtype: parameter dtype.
        device: parameter device.
        observation_key: the observation entry read.
        action_key: the action entry written.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = linear_gaussian_actor(2, 1, gain=[[-0.5, 0.2]], log_std=-1.0, dtype=torch.float64)
        >>> td = TensorDict({"observation": torch.ones(4, 2, dtype=torch.float64)}, [4])
        >>> dist = actor.get_dist(td)
        >>> dist.mean[0].tolist(), round(dist.stddev[0].item(), 4)
        ([-0.3], 0.3679)
        >>> actor(td)["action_log_prob"].shape, actor[0].module.gain.shape
        (torch.Size([4]), torch.Size([1, 2]))

    """
    kw = {"dtype": dtype, "device": device}
    gain = torch.zeros(action_dim, obs_dim, **kw) if gain is None else torch.as_tensor(gain, **kw)
    log_std = 0.0 if log_std is None else log_std
    log_std = torch.as_tensor(log_std, **kw)
    if log_std.ndim == 0:
        log_std = log_std.expand(action_dim)
    if gain.shape != (action_dim, obs_dim) or log_std.shape != (action_dim,):
        raise ValueError(
            f"linear_gaussian_actor: expected gain [{action_dim}, {obs_dim}] and log_std "
            f"[{action_dim}], got {tuple(gain.shape)} and {tuple(log_std.shape)}."
        )
    net = LinearGaussianPolicy(gain.clone(), log_std.clone())
    module = TensorDictModule(net, in_keys=[observation_key], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        distribution_class=IndependentNormal,
        distribution_kwargs={"tanh_loc": False},
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=True,
    )


def _policy_terms(
    env: LQGEnv, gain: Tensor, log_std: Tensor, caller: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(A, B, Q, R, K, Sigma_a, Sigma_w)`` in the policy's dtype, with shape checks."""
    _check_env(env, caller)
    n, m = env.observation_dim, env.action_dim
    if gain.shape != (m, n) or log_std.shape != (m,):
        raise ValueError(
            f"{caller}: gain must be [{m}, {n}] and log_std [{m}] for this env; "
            f"got {tuple(gain.shape)} and {tuple(log_std.shape)}."
        )
    kw = {"dtype": gain.dtype, "device": gain.device}
    A, B, Q, R = (env.A.to(**kw), env.B.to(**kw), env.Q.to(**kw), env.R.to(**kw))
    action_cov = torch.diag(torch.exp(2 * log_std.to(**kw)))
    noise_cov = torch.diag(env.noise_std.to(**kw) ** 2)
    return A, B, Q, R, gain, action_cov, noise_cov


def lqg_expected_return(
    env: LQGEnv,
    gain: Tensor,
    log_std: Tensor,
    horizon: int | None = None,
    gamma: float = 1.0,
) -> Tensor:
    r"""Exact expected return :math:`J = \mathbb E[\sum_{t<H} \gamma^t r_t]` of a linear-Gaussian policy.

    With :math:`a_t = K s_t + \Sigma_a^{1/2}\eta_t`,
    :math:`\Sigma_a = \mathrm{diag}(e^{2\ell})` and closed-loop
    :math:`A_K = A + BK`, the state stays Gaussian with mean :math:`m_t` and
    covariance :math:`S_t`:

    .. math::

        m_{t+1} &= A_K m_t, \qquad
        S_{t+1} = A_K S_t A_K^\top + B \Sigma_a B^\top + \mathrm{diag}(\sigma_w^2), \\
        \mathbb E[r_t] &= -\big(\mathrm{tr}(Q S_t) + m_t^\top Q m_t\big)
                         - \big(\mathrm{tr}(R (K S_t K^\top + \Sigma_a)) + (K m_t)^\top R K m_t\big)

    from :math:`m_0 = \mu_0`, :math:`S_0 = \mathrm{diag}(\sigma_0^2)`. Autograd
    through the result gives the exact policy gradient
    :math:`\nabla_{K, \ell} J`. The env's action bound is ignored (assumed out of reach).

    Args:
        env: the :class:`LQGEnv` (its matrices are cast to ``gain``'s dtype).
        gain: :math:`K`, ``[m, n]``.
        log_std: :math:`\ell`, ``[m]``.
        horizon: number of rewards ``H`` (default: ``env.horizon``, i.e. one episode).
        gamma: discount.

    Returns:
        The scalar :math:`J`.

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64)
        >>> gain = torch.tensor([[-0.1, -0.5]], dtype=torch.float64, requires_grad=True)
        >>> log_std = torch.full((1,), -1.0, dtype=torch.float64, requires_grad=True)
        >>> J = lqg_expected_return(env, gain, log_std)
        >>> J.shape, J.item() < 0
        (torch.Size([]), True)
        >>> grad_gain, grad_log_std = torch.autograd.grad(J, [gain, log_std])
        >>> grad_gain.shape, grad_log_std.shape
        (torch.Size([1, 2]), torch.Size([1]))

    """
    horizon = env.horizon if horizon is None else int(horizon)
    start_cov = torch.diag(env.init_std.to(gain) ** 2)
    return lqg_lookahead_return(
        env, gain, log_std, env.init_mean.to(gain), start_cov, horizon, gamma
    )


def lqg_lookahead_return(
    env: LQGEnv,
    gain: Tensor,
    log_std: Tensor,
    start_mean: Tensor,
    start_cov: Tensor,
    steps: int,
    gamma: float = 1.0,
    final_value: tuple[Tensor, Tensor | float] | None = None,
) -> Tensor:
    r"""Exact :math:`\mathbb E[\sum_{t<k}\gamma^t r_t + \gamma^k V(s_k)]` from Gaussian start states.

    The moments propagate as in :func:`lqg_expected_return`, from
    :math:`s_0 \sim \mathcal N(\mu, \Sigma_0)` with one mean per start state
    (``start_mean`` ``[*B, n]``, the result averaged over ``*B``) and a shared
    covariance. ``final_value`` :math:`(P, c)` adds :math:`\gamma^k V(s_k)` with
    :math:`V(s) = -s^\top P s - c` (e.g. from :func:`lqg_value_function`): the
    objective whose gradient SVG(k) estimates from states at :math:`(\mu, \Sigma_0)`.

    Args:
        env: the :class:`LQGEnv`.
        gain: :math:`K`, ``[m, n]``.
        log_std: :math:`\ell`, ``[m]``.
        start_mean: ``[n]`` or ``[*B, n]``.
        start_cov: ``[n, n]`` (zeros: deterministic start states).
        steps: :math:`k`.
        gamma: discount.
        final_value: :math:`(P, c)`, or ``None`` for no terminal value.

    Returns:
        The scalar expectation (mean over start states).

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64)
        >>> gain, log_std = torch.tensor([[-0.1, -0.5]], dtype=torch.float64), -torch.ones(1, dtype=torch.float64)
        >>> cov = torch.diag(env.init_std**2)
        >>> full = lqg_lookahead_return(env, gain, log_std, env.init_mean, cov, 20)
        >>> bool(torch.isclose(full, lqg_expected_return(env, gain, log_std)))
        True
    """
    A, B, Q, R, K, action_cov, noise_cov = _policy_terms(env, gain, log_std, "lqg_lookahead_return")
    closed_loop = A + B @ K
    process_cov = B @ action_cov @ B.T + noise_cov
    mean = start_mean.to(A)
    cov = start_cov.to(A)
    expected_return = A.new_zeros(())
    for t in range(steps):
        action_mean = mean @ K.T
        state_cost = torch.trace(Q @ cov) + ((mean @ Q) * mean).sum(-1)
        action_cost = torch.trace(R @ (K @ cov @ K.T + action_cov)) + (
            (action_mean @ R) * action_mean
        ).sum(-1)
        expected_return = expected_return - gamma**t * (state_cost + action_cost)
        mean = mean @ closed_loop.T
        cov = closed_loop @ cov @ closed_loop.T + process_cov
    if final_value is not None:
        P, c = final_value
        P = P.to(A)
        value = -(torch.trace(P @ cov) + ((mean @ P) * mean).sum(-1)) - c
        expected_return = expected_return + gamma**steps * value
    return expected_return.mean() if expected_return.ndim else expected_return


def lqg_state_moments(
    env: LQGEnv, gain: Tensor, log_std: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    r"""Mean ``[steps, n]`` and covariance ``[steps, n, n]`` of :math:`s_0 \ldots s_{steps-1}`.

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64)
        >>> mean, cov = lqg_state_moments(env, torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 3)
        >>> mean.shape, cov.shape, torch.allclose(mean[1], env.A @ env.init_mean)
        (torch.Size([3, 2]), torch.Size([3, 2, 2]), True)
    """
    A, B, _, _, K, action_cov, noise_cov = _policy_terms(env, gain, log_std, "lqg_state_moments")
    closed_loop = A + B @ K
    process_cov = B @ action_cov @ B.T + noise_cov
    mean, cov = env.init_mean.to(A), torch.diag(env.init_std.to(A) ** 2)
    means, covs = [], []
    for _ in range(steps):
        means.append(mean)
        covs.append(cov)
        mean = closed_loop @ mean
        cov = closed_loop @ cov @ closed_loop.T + process_cov
    return torch.stack(means), torch.stack(covs)


def lqg_policy_gradient(
    env: LQGEnv,
    gain: Tensor,
    log_std: Tensor,
    horizon: int | None = None,
    gamma: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The exact objective and policy gradient :math:`(J, \nabla_K J, \nabla_\ell J)`.

    Finite horizon (``horizon`` an int, or ``None`` with ``gamma == 1``: one
    episode): :math:`J = \mathbb E[\sum_{t<H}\gamma^t r_t]` (:func:`lqg_expected_return`).
    Infinite horizon (``horizon="inf"``, ``gamma < 1``):
    :math:`J = \mathbb E_{s_0}[V(s_0)] = -(\mathrm{tr}(P\Sigma_0) + \mu_0^\top P\mu_0) - c`
    (:func:`lqg_value_function`). Both by second-moment propagation, differentiated
    exactly by autograd.

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64)
        >>> gain, log_std = torch.tensor([[-0.1, -0.5]], dtype=torch.float64), -torch.ones(1, dtype=torch.float64)
        >>> J, dK, dl = lqg_policy_gradient(env, gain, log_std, "inf", gamma=0.9)
        >>> dK.shape, dl.shape, J.item() < 0
        (torch.Size([1, 2]), torch.Size([1]), True)
    """
    gain = gain.detach().clone().requires_grad_()
    log_std = log_std.detach().clone().requires_grad_()
    if horizon == "inf":
        P, c = lqg_value_function(env, gain, log_std, gamma)
        mean, cov = env.init_mean.to(P), torch.diag(env.init_std.to(P) ** 2)
        objective = -(torch.trace(P @ cov) + mean @ P @ mean) - c
    else:
        objective = lqg_expected_return(env, gain, log_std, horizon, gamma)
    grad_gain, grad_log_std = torch.autograd.grad(objective, [gain, log_std])
    return objective.detach(), grad_gain, grad_log_std


def lqg_value_function(
    env: LQGEnv, gain: Tensor, log_std: Tensor, gamma: float
) -> tuple[Tensor, Tensor]:
    r"""Exact value :math:`V(s) = -s^\top P s - c` of a linear-Gaussian policy, discounted, infinite horizon.

    :math:`P` solves the discrete Lyapunov equation and :math:`c` collects the
    noise terms:

    .. math::

        P &= Q + K^\top R K + \gamma A_K^\top P A_K, \qquad A_K = A + BK, \\
        c &= \frac{\mathrm{tr}(R\Sigma_a)
             + \gamma\,\mathrm{tr}\big(P (B\Sigma_a B^\top + \mathrm{diag}(\sigma_w^2))\big)}{1 - \gamma}

    The Lyapunov equation is solved exactly as the linear system
    :math:`(I - \gamma A_K^\top \otimes A_K^\top)\,\mathrm{vec}(P) = \mathrm{vec}(Q + K^\top R K)`
    (the fixed point of the iteration above, reached in one differentiable
    solve; fine for the small ``n`` of test problems). Autograd through
    ``(P, c)`` gives exact gradients in :math:`(K, \ell)`.

    Args:
        env: the :class:`LQGEnv`.
        gain: :math:`K`, ``[m, n]``.
        log_std: :math:`\ell`, ``[m]``.
        gamma: discount in ``[0, 1)``.

    Returns:
        ``(P, c)``: ``[n, n]`` symmetric and a scalar.

    Raises:
        ValueError: if ``gamma`` is outside ``[0, 1)`` or :math:`\sqrt\gamma A_K` is
            not stable (spectral radius >= 1: the value is infinite).

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64)
        >>> gain = torch.tensor([[-0.1, -0.5]], dtype=torch.float64)
        >>> P, c = lqg_value_function(env, gain, torch.full((1,), -1.0, dtype=torch.float64), 0.9)
        >>> closed_loop = env.A + env.B @ gain
        >>> torch.allclose(P, env.Q + gain.T @ env.R @ gain + 0.9 * closed_loop.T @ P @ closed_loop)
        True

    """
    A, B, Q, R, K, action_cov, noise_cov = _policy_terms(env, gain, log_std, "lqg_value_function")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"lqg_value_function: gamma must be in [0, 1), got {gamma}.")
    closed_loop = A + B @ K
    radius = torch.linalg.eigvals(closed_loop.detach() * gamma**0.5).abs().max().item()
    if radius >= 1.0:
        raise ValueError(
            f"lqg_value_function: sqrt(gamma) * (A + B K) has spectral radius {radius:.4f} >= 1, "
            "so the discounted cost is infinite under this policy."
        )
    n = A.shape[0]
    stage_cost = Q + K.T @ R @ K
    # Row-major vec: vec(X P Y) = (X kron Y^T) vec(P).
    system = torch.eye(n * n, dtype=A.dtype, device=A.device) - gamma * torch.kron(
        closed_loop.T, closed_loop.T
    )
    P = torch.linalg.solve(system, stage_cost.reshape(n * n)).reshape(n, n)
    P = (P + P.T) / 2
    c = (
        torch.trace(R @ action_cov) + gamma * torch.trace(P @ (B @ action_cov @ B.T + noise_cov))
    ) / (1.0 - gamma)
    return P, c


class _QuadraticValue(nn.Module):
    def __init__(self, P: Tensor, c: Tensor):
        super().__init__()
        self.register_buffer("P", P.detach().clone())
        self.register_buffer("c", torch.as_tensor(c).detach().clone().to(P))

    def forward(self, observation: Tensor) -> Tensor:
        return -_quadratic(observation, self.P) - self.c


def lqg_value_module(
    P: Tensor,
    c: Tensor | float,
    *,
    observation_key: NestedKey = "observation",
    value_key: NestedKey = "state_value",
) -> ValueOperator:
    r"""A known critic :math:`V(s) = -s^\top P s - c` as a :class:`~torchrl.modules.ValueOperator`.

    ``P`` and ``c`` (from :func:`lqg_value_function`) are stored detached, as
    buffers: the critic is a fixed reference, not trained.

    Args:
        P: ``[n, n]``.
        c: scalar.

    Keyword Args:
        observation_key: entry read.
        value_key: entry written.

    Shapes:
        ``[*B, n]`` -> ``[*B, 1]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> critic = lqg_value_module(torch.eye(2), 0.5)
        >>> critic(TensorDict({"observation": torch.ones(3, 2)}, [3]))["state_value"]
        tensor([[-2.5000],
                [-2.5000],
                [-2.5000]])

    """
    P = torch.as_tensor(P)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(
            f"lqg_value_module: P must be a square matrix, got shape {tuple(P.shape)}."
        )
    return ValueOperator(
        _QuadraticValue(P, torch.as_tensor(c)), in_keys=[observation_key], out_keys=[value_key]
    )
