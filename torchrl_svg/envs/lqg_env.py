r"""The LQG task: the batched environment and its exact, differentiable transition and reward.

.. math::

    s_{t+1} = A s_t + B a_t + \sigma_w\,\xi_t,\quad \xi_t \sim \mathcal N(0, I),\qquad
    r_t = -(s_t^\top Q s_t + a_t^\top R a_t),\qquad s_0 \sim \mathcal N(\mu_0, \sigma_0^2 I)

:class:`LQGEnv` is the TorchRL environment; :func:`lqg_dynamics_model` and
:func:`lqg_reward_module` are its true model and known reward as TensorDict
modules. The closed-form returns, values and gradients are in
:mod:`torchrl_svg.envs.lqg_closed_form`; :mod:`torchrl_svg.envs.lqg` gathers both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import (
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from tensordict.utils import NestedKey
from torch import Tensor, nn

from torchrl_svg.envs._base import DEVICE, _FlatStateEnv, known_dynamics_model

__all__ = [
    "LQGEnv",
    "lqg_dynamics_model",
    "lqg_mean_next_observation",
    "lqg_reward",
    "lqg_reward_module",
]

MatrixLike = Tensor | Sequence[Sequence[float]]
VectorLike = Tensor | Sequence[float] | float

DEFAULT_A = [[0.9, 0.2], [-0.1, 0.9]]
DEFAULT_B = [[0.0], [1.0]]
DEFAULT_Q = [[1.0, 0.0], [0.0, 1.0]]
DEFAULT_R = [[0.1]]
DEFAULT_INIT_MEAN = [1.0, -0.5]


def _matrix(name: str, value: MatrixLike, shape: tuple[int | None, int | None]) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim != 2 or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"LQGEnv: {name} must be a matrix of shape {want}, got {tuple(t.shape)}.")
    return t


def _vector(name: str, value: VectorLike, size: int, *, positive: bool = False) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(size).clone()
    if t.shape != (size,):
        raise ValueError(
            f"LQGEnv: {name} must be a scalar or a vector of size {size}, got {tuple(t.shape)}."
        )
    if positive and (t < 0).any():
        raise ValueError(f"LQGEnv: {name} must be non-negative, got {t.tolist()}.")
    return t


def _quadratic(x: Tensor, M: Tensor) -> Tensor:
    r""":math:`x^\top M x` over the last dimension: ``[*B, n]``, ``[n, n]`` -> ``[*B, 1]``."""
    return ((x @ M) * x).sum(-1, keepdim=True)


def lqg_mean_next_observation(
    observation: Tensor, action: Tensor, A: Tensor, B: Tensor, action_bound: float
) -> Tensor:
    r""":math:`A s + B\,\mathrm{clip}(a)`: the mean LQG transition, ``[*B, n]``.

    Actions are clipped to ``[-action_bound, action_bound]`` (a no-op for the
    large default bound) exactly as :class:`LQGEnv` does.

    Examples:
        >>> import torch
        >>> A, B = torch.eye(2), torch.tensor([[0.0], [1.0]])
        >>> lqg_mean_next_observation(torch.ones(2), torch.tensor([2.0]), A, B, 100.0)
        tensor([1., 3.])

    """
    action = action.clamp(-action_bound, action_bound)
    return observation @ A.T + action @ B.T


def lqg_reward(
    observation: Tensor, action: Tensor, Q: Tensor, R: Tensor, action_bound: float
) -> Tensor:
    r""":math:`-(s^\top Q s + a^\top R a)` with the clipped action, ``[*B, 1]``.

    Examples:
        >>> import torch
        >>> lqg_reward(torch.ones(2), torch.ones(1), torch.eye(2), torch.eye(1) * 0.1, 100.0)
        tensor([-2.1000])

    """
    action = action.clamp(-action_bound, action_bound)
    return -(_quadratic(observation, Q) + _quadratic(action, R))


class LQGEnv(_FlatStateEnv):
    r"""A batched linear-quadratic-Gaussian TorchRL env.

    .. math::

        s_{t+1} = A s_t + B a_t + \sigma_w \xi_t,\qquad
        r_t = -(s_t^\top Q s_t + a_t^\top R a_t),\qquad
        s_0 \sim \mathcal N(\mu_0, \mathrm{diag}(\sigma_0^2))

    with :math:`\xi_t \sim \mathcal N(0, I)`. The observation is the state
    (``[*B, n]``), the reward depends on the state *before* the step, and an
    episode is truncated after ``horizon`` steps (rewards :math:`r_0 \ldots
    r_{H-1}`); nothing terminates.

    The action spec is ``Bounded(-action_bound, action_bound)`` with a large
    default bound (100): it is meant to be effectively unbounded for
    linear-Gaussian policies. Actions are clipped only where they exceed it
    (also in :func:`lqg_dynamics_model` and :func:`lqg_reward_module`); the
    closed forms ignore the bound, so keep it out of reach.

    Defaults (2 states, 1 action): :math:`A = [[0.9, 0.2], [-0.1, 0.9]]`
    (stable, spectral radius 0.911, lightly rotating), :math:`B = [[0], [1]]`,
    :math:`Q = I`, :math:`R = 0.1`, :math:`\sigma_w = 0.1`,
    :math:`\mu_0 = (1, -0.5)`, :math:`\sigma_0 = 0.3`, horizon 20.

    Args:
        A: ``[n, n]`` (tensor or nested lists).
        B: ``[n, m]``.
        Q: ``[n, n]``, symmetric positive semi-definite.
        R: ``[m, m]``, symmetric positive semi-definite.

    Keyword Args:
        noise_std: :math:`\sigma_w`, scalar or ``[n]`` (per-dimension).
        init_mean: :math:`\mu_0`, ``[n]`` (``None``: the default above for
            ``n = 2``, zeros otherwise).
        init_std: :math:`\sigma_0`, scalar or ``[n]``.
        horizon: steps per episode.
        action_bound: the symmetric action bound.
        dtype: floating dtype of observations, actions and rewards.
        batch_size: number of parallel episodes.
        device: where the state and matrices live.
        seed: seed of the env's generator (drawn from torch's global RNG if ``None``).

    Attributes:
        A, B, Q, R, noise_std, init_mean, init_std: the problem, as buffers in ``dtype``.

    Examples:
        >>> import torch
        >>> from torchrl.envs.utils import check_env_specs
        >>> env = LQGEnv(batch_size=[16], dtype=torch.float64, seed=0)
        >>> check_env_specs(env)
        >>> data = env.rollout(100)
        >>> data.shape, data["next", "reward"].shape, data["next", "truncated"][:, -1].all().item()
        (torch.Size([16, 20]), torch.Size([16, 20, 1]), True)

    """

    def __init__(
        self,
        A: MatrixLike | None = None,
        B: MatrixLike | None = None,
        Q: MatrixLike | None = None,
        R: MatrixLike | None = None,
        *,
        noise_std: VectorLike = 0.1,
        init_mean: VectorLike | None = None,
        init_std: VectorLike = 0.3,
        horizon: int = 20,
        action_bound: float = 100.0,
        dtype: torch.dtype = torch.float32,
        batch_size: Sequence[int] | torch.Size = (),
        device: DEVICE = None,
        seed: int | None = None,
    ):
        A = _matrix("A", DEFAULT_A if A is None else A, (None, None))
        n = A.shape[0]
        if A.shape[1] != n:
            raise ValueError(f"LQGEnv: A must be square, got shape {tuple(A.shape)}.")
        B = _matrix("B", DEFAULT_B if B is None else B, (n, None))
        m = B.shape[1]
        Q = _matrix("Q", DEFAULT_Q if Q is None else Q, (n, n))
        R = _matrix("R", DEFAULT_R if R is None else R, (m, m))
        if init_mean is None:
            init_mean = DEFAULT_INIT_MEAN if n == 2 else 0.0
        if int(horizon) < 1:
            raise ValueError(f"LQGEnv: horizon must be >= 1, got {horizon}.")
        if not action_bound > 0:
            raise ValueError(f"LQGEnv: action_bound must be > 0, got {action_bound}.")
        self.action_bound = float(action_bound)
        self.horizon = int(horizon)
        bound = torch.full((m,), self.action_bound)
        super().__init__(
            observation_dim=n,
            action_low=-bound,
            action_high=bound,
            max_steps=self.horizon,
            dtype=dtype,
            batch_size=batch_size,
            device=device,
            seed=seed,
        )
        problem = {
            "A": A,
            "B": B,
            "Q": Q,
            "R": R,
            "noise_std": _vector("noise_std", noise_std, n, positive=True),
            "init_mean": _vector("init_mean", init_mean, n),
            "init_std": _vector("init_std", init_std, n, positive=True),
        }
        for name, value in problem.items():
            self.register_buffer(name, value.to(dtype=dtype, device=self._device_or_cpu))

    @property
    def observation_dim(self) -> int:
        """State size ``n``."""
        return self.A.shape[0]

    @property
    def action_dim(self) -> int:
        """Action size ``m``."""
        return self.B.shape[1]

    def _initial_state(self) -> Tensor:
        return self.init_mean + self.init_std * self._randn(self.observation_dim)

    def _transition(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        mean = lqg_mean_next_observation(state, action, self.A, self.B, self.action_bound)
        next_state = mean + self.noise_std * self._randn(self.observation_dim)
        return next_state, lqg_reward(state, action, self.Q, self.R, self.action_bound)


def _check_env(env: LQGEnv, caller: str) -> None:
    if not isinstance(env, LQGEnv):
        raise TypeError(f"{caller} expects an LQGEnv, got {type(env).__name__}.")


class _LQGTerms(nn.Module):
    """The env's action bound and copies of the named env tensors, as buffers."""

    def __init__(self, env: LQGEnv, *names: str):
        super().__init__()
        self.action_bound = env.action_bound
        for name in names:
            self.register_buffer(name, getattr(env, name).clone())


class _LQGTransition(_LQGTerms):
    def __init__(self, env: LQGEnv):
        super().__init__(env, "A", "B", "noise_std")

    def forward(self, observation: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        loc = lqg_mean_next_observation(observation, action, self.A, self.B, self.action_bound)
        return loc, self.noise_std.expand_as(loc)


def lqg_dynamics_model(
    env: LQGEnv,
    *,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
    next_observation_key: NestedKey = ("next", "observation"),
    loc_key: NestedKey = "next_observation_loc",
    scale_key: NestedKey = "next_observation_scale",
) -> ProbabilisticTensorDictSequential:
    r"""The true LQG transition model in the location-scale contract (exact).

    ``get_dist(td)`` is ``Independent(Normal(A s + B a, noise_std), 1)`` over
    ``("next", "observation")``; :meth:`forward` writes a sample
    (``InteractionType.RANDOM``) or the mean under a deterministic exploration
    type. ``A``, ``B`` and ``noise_std`` are copied as buffers (no parameters).
    ``noise_std`` must be positive on every dimension.

    Args:
        env: the :class:`LQGEnv` to model.

    Keyword Args:
        observation_key: the observation entry read.
        action_key: the action entry read.
        next_observation_key: the entry the distribution is over (and forward writes).
        loc_key: where the location is written.
        scale_key: where the scale is written.

    Shapes:
        ``[*B, n]``, ``[*B, m]`` -> ``event_shape [n]``, ``batch_shape [*B]``.

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64, seed=0)
        >>> data = env.rollout(5)
        >>> dist = lqg_dynamics_model(env).get_dist(data)
        >>> noise = (data["next", "observation"] - dist.mean) / dist.stddev
        >>> torch.allclose(dist.mean + dist.stddev * noise, data["next", "observation"])
        True
        >>> dist.log_prob(data["next", "observation"]).shape
        torch.Size([5])

    """
    _check_env(env, "lqg_dynamics_model")
    if not (env.noise_std > 0).all():
        raise ValueError(
            f"lqg_dynamics_model: noise_std must be > 0 on every dimension, got {env.noise_std.tolist()}."
        )
    return known_dynamics_model(
        _LQGTransition(env), [observation_key, action_key], loc_key, scale_key, next_observation_key
    )


class _LQGReward(_LQGTerms):
    def __init__(self, env: LQGEnv):
        super().__init__(env, "Q", "R")

    def forward(self, observation: Tensor, action: Tensor) -> Tensor:
        return lqg_reward(observation, action, self.Q, self.R, self.action_bound)


def lqg_reward_module(
    env: LQGEnv,
    *,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
    reward_key: NestedKey = ("next", "reward"),
) -> TensorDictModule:
    r"""The known LQG reward :math:`-(s^\top Q s + a^\top R a)` as a TensorDict module.

    Exactly the reward of :class:`LQGEnv`, differentiable in ``s`` and ``a``;
    ``Q`` and ``R`` are buffers.

    Args:
        env: the :class:`LQGEnv`.

    Keyword Args:
        observation_key: the observation entry read.
        action_key: the action entry read.
        reward_key: the reward entry written.

    Shapes:
        ``[*B, n]``, ``[*B, m]`` -> ``[*B, 1]``.

    Examples:
        >>> import torch
        >>> env = LQGEnv(dtype=torch.float64, seed=0)
        >>> data = env.rollout(5)
        >>> reward = lqg_reward_module(env)(data.clone())["next", "reward"]
        >>> torch.equal(reward, data["next", "reward"])
        True

    """
    _check_env(env, "lqg_reward_module")
    return TensorDictModule(
        _LQGReward(env), in_keys=[observation_key, action_key], out_keys=[reward_key]
    )
