r"""The SVG paper's "Hand" task (Heess et al. 2015, §6.1 and App. D, eq 15) as a batched TorchRL env.

A point-mass *hand* on a 2D plane is velocity-controlled by the action. A *ball*
hangs from the hand on a zero-rest-length, damped spring and feels gravity and a
random Gaussian force. Each episode draws one of two ball targets, left or right
of the hanging position; the hand's target is the origin. Apart from a small
action penalty the reward arrives only at the last step (eq 15), so a policy has
to swing the ball and stop the hand at the right moment: 1,000 steps of
backpropagation for SVG(:math:`\infty`).

The transition, reward and their differentiable modules share one set of pure
functions, so :func:`hand_reward_module` computes exactly the env's reward and
:func:`hand_dynamics_model` is the env's own transition law.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict.nn import (
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from tensordict.utils import NestedKey
from torch import Tensor, nn

from torchrl_svg.envs._base import DEVICE, _FlatStateEnv, known_dynamics_model

__all__ = [
    "HandEnv",
    "HandParams",
    "hand_dynamics_model",
    "hand_mean_next_observation",
    "hand_reward",
    "hand_reward_module",
]

# Observation layout: [hand_xy, ball_xy, ball_vel_xy, target_xy, time_fraction].
HAND, BALL, BALL_VEL, TARGET, TIME = slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8), slice(8, 9)
OBS_DIM, ACTION_DIM = 9, 2


@dataclass(frozen=True)
class HandParams:
    r"""Physical constants, episode length and reward weights of :class:`HandEnv`.

    The defaults give a lightly damped ball (natural frequency
    :math:`\sqrt{k/m} \approx 7.07` rad/s, period 0.89 s, damping ratio
    :math:`c / (2\sqrt{km}) \approx 0.07`) hanging :math:`mg/k \approx 0.196` m
    below the hand. Driving the hand at resonance within its 1 m/s speed limit
    swings the ball far enough to reach the targets at :math:`x = \pm 0.5` m
    while the hand is back at the origin; the random force alone moves the ball
    by a few centimetres (stationary std of about 0.02 m per axis).

    Attributes:
        episode_steps: steps per episode (default 1000, i.e. 10 s at ``dt = 0.01``).
        dt: simulation time step in seconds.
        mass: ball mass :math:`m` (kg).
        stiffness: spring constant :math:`k` (N/m).
        damping: damping :math:`c` (N s/m) on the hand-ball relative velocity.
        gravity: :math:`g` (m/s²), pulling the ball towards :math:`-y`.
        max_speed: hand speed (m/s) per unit of action: ``hand_vel = max_speed * a``.
        force_std: std (N) of the random force on the ball, per axis and step.
        target_x: the ball target is :math:`(\pm x_0, y_0)` with :math:`x_0` = ``target_x``.
        target_y: :math:`y_0`; ``None`` means the hanging equilibrium :math:`-mg/k`.
        init_std: std (m) of the reset noise on the hand and ball positions.
        control_cost: :math:`\alpha_1` of eq 15, per step.
        terminal_cost: :math:`\alpha_2` of eq 15, at the final step.
        distance_eps: :math:`\epsilon` of the smooth distance
            :math:`\sqrt{\lVert d\rVert^2 + \epsilon}` (differentiable at 0).

    Examples:
        >>> params = HandParams()
        >>> round(params.hanging_y, 4), round(params.velocity_noise_std, 4)
        (-0.1962, 0.02)

    """

    episode_steps: int = 1000
    dt: float = 0.01
    mass: float = 1.0
    stiffness: float = 50.0
    damping: float = 1.0
    gravity: float = 9.81
    max_speed: float = 1.0
    force_std: float = 2.0
    target_x: float = 0.5
    target_y: float | None = None
    init_std: float = 0.01
    control_cost: float = 1e-3
    terminal_cost: float = 1.0
    distance_eps: float = 1e-6

    def __post_init__(self) -> None:
        if int(self.episode_steps) < 1:
            raise ValueError(f"HandParams: episode_steps must be >= 1, got {self.episode_steps}.")
        for name in ("dt", "mass", "stiffness", "max_speed"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HandParams: {name} must be > 0, got {getattr(self, name)}.")
        for name in ("damping", "force_std", "init_std", "control_cost", "terminal_cost"):
            if getattr(self, name) < 0:
                raise ValueError(f"HandParams: {name} must be >= 0, got {getattr(self, name)}.")
        if not self.distance_eps > 0:
            raise ValueError(f"HandParams: distance_eps must be > 0, got {self.distance_eps}.")

    @property
    def hanging_y(self) -> float:
        """The ball's equilibrium height below a resting hand, :math:`-mg/k`."""
        return -self.mass * self.gravity / self.stiffness

    @property
    def target_height(self) -> float:
        """:math:`y_0` of the ball targets."""
        return self.hanging_y if self.target_y is None else float(self.target_y)

    @property
    def velocity_noise_std(self) -> float:
        """Std of the random-force impulse on each ball-velocity component, ``dt * force_std / mass``."""
        return self.dt * self.force_std / self.mass


def _as_params(source: HandEnv | HandParams) -> HandParams:
    if isinstance(source, HandParams):
        return source
    if isinstance(source, HandEnv):
        return source.params
    raise TypeError(f"Expected a HandEnv or HandParams, got {type(source).__name__}.")


def hand_mean_next_observation(observation: Tensor, action: Tensor, params: HandParams) -> Tensor:
    r"""The deterministic part of the Hand transition (semi-implicit Euler).

    .. math::

        v_h &= v_{\max}\,\mathrm{clip}(a, -1, 1) \\
        h' &= h + \Delta t\, v_h \\
        \ddot b &= \big(k (h - b) + c (v_h - \dot b)\big)/m + (0, -g) \\
        \dot b' &= \dot b + \Delta t\, \ddot b \\
        b' &= b + \Delta t\, \dot b'

    The target is carried over and the time fraction advances by
    ``1 / episode_steps`` (recomputed from the step count, so the env and this
    function agree bit for bit). The env then adds the random-force impulse
    :math:`\Delta t\, F/m` to :math:`\dot b'` only.

    Args:
        observation: ``[*B, 9]``.
        action: ``[*B, 2]``.
        params: the task constants.

    Returns:
        The mean next observation, ``[*B, 9]``; differentiable in ``observation``
        (except the time fraction) and ``action``.

    Examples:
        >>> import torch
        >>> obs = torch.zeros(9)
        >>> nxt = hand_mean_next_observation(obs, torch.tensor([1.0, 0.0]), HandParams())
        >>> nxt[:2], nxt[-1]
        (tensor([0.0100, 0.0000]), tensor(0.0010))

    """
    p = params
    hand, ball, ball_vel = (
        observation[..., HAND],
        observation[..., BALL],
        observation[..., BALL_VEL],
    )
    target, time = observation[..., TARGET], observation[..., TIME]
    hand_vel = p.max_speed * action.clamp(-1.0, 1.0)
    spring_acc = (p.stiffness * (hand - ball) + p.damping * (hand_vel - ball_vel)) / p.mass
    ball_acc = torch.cat([spring_acc[..., :1], spring_acc[..., 1:] - p.gravity], dim=-1)
    next_ball_vel = ball_vel + p.dt * ball_acc
    next_ball = ball + p.dt * next_ball_vel
    next_hand = hand + p.dt * hand_vel
    steps = float(p.episode_steps)
    # round() recovers the integer step count, so (count + 1) / N is computed exactly as the env does.
    next_time = (torch.round(time.detach() * steps) + 1.0) / steps
    return torch.cat([next_hand, next_ball, next_ball_vel, target, next_time], dim=-1)


def _smooth_norm(x: Tensor, eps: float) -> Tensor:
    return torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def hand_reward(
    observation: Tensor, action: Tensor, next_observation: Tensor, params: HandParams
) -> Tensor:
    r"""The Hand reward (eq 15 as minus a cost), a pure function of ``(s, a, s')``.

    .. math::

        r = -\alpha_1 \lVert a\rVert^2
            - \mathbb 1[\tau' = 1]\,\alpha_2\big(d(h', 0) + d(b', b^*)\big),
        \qquad d(x, y) = \sqrt{\lVert x - y\rVert^2 + \epsilon}

    where :math:`\tau'` is the next time fraction: the terminal term is paid on
    the step that ends the episode. ``a`` is clipped to ``[-1, 1]`` as in the
    dynamics. ``observation`` is not used (the target is also in ``s'``) but is
    part of the signature shared by all reward functions.

    Args:
        observation: ``[*B, 9]``.
        action: ``[*B, 2]``.
        next_observation: ``[*B, 9]``.
        params: the task constants.

    Returns:
        ``[*B, 1]``, differentiable in ``action`` and ``next_observation``.

    Examples:
        >>> import torch
        >>> p = HandParams(episode_steps=10)
        >>> s, a = torch.zeros(9), torch.ones(2)
        >>> hand_reward(s, a, torch.zeros(9), p)  # not the last step: action cost only
        tensor([-0.0020])
        >>> last = torch.zeros(9)
        >>> last[-1] = 1.0
        >>> hand_reward(s, torch.zeros(2), last, p)  # hand and ball at the origin, target too
        tensor([-0.0020])

    """
    p = params
    del observation
    control = p.control_cost * action.clamp(-1.0, 1.0).pow(2).sum(-1, keepdim=True)
    hand, ball = next_observation[..., HAND], next_observation[..., BALL]
    target, time = next_observation[..., TARGET], next_observation[..., TIME]
    distance = _smooth_norm(hand, p.distance_eps) + _smooth_norm(ball - target, p.distance_eps)
    is_last = ((time.detach() - 1.0).abs() < 0.5 / p.episode_steps).to(distance.dtype)
    return -control - p.terminal_cost * is_last * distance


class HandEnv(_FlatStateEnv):
    r"""The SVG paper's "Hand" task (§6.1, App. D eq 15): swing a hanging ball onto a target.

    **Dynamics** (semi-implicit Euler, :math:`\Delta t` = ``dt``; constants in
    :class:`HandParams`). The action :math:`a \in [-1, 1]^2` is the hand
    velocity in units of ``max_speed``; the ball hangs from the hand on a
    zero-rest-length spring with damping on the relative velocity:

    .. math::

        v_h &= v_{\max} a, \qquad h' = h + \Delta t\, v_h \\
        \dot b' &= \dot b + \Delta t\,\big[(k(h - b) + c(v_h - \dot b))/m + (0, -g)\big]
                  + \Delta t\, F/m, \qquad F \sim \mathcal N(0, \sigma_F^2 I) \\
        b' &= b + \Delta t\,(\dot b' - \Delta t\, F/m)

    i.e. the random force acts as an impulse at the end of the step: it
    changes the ball velocity now and the ball position from the next step on.
    This keeps the transition Markov with *independent* Gaussian noise on the
    two velocity components only, so :func:`hand_dynamics_model` is exact (the
    plain semi-implicit scheme would put perfectly correlated noise on position
    and velocity). Actions outside ``[-1, 1]`` are clipped.

    **Reset.** Hand at the origin and ball at its hanging equilibrium
    :math:`(0, -mg/k)`, each plus :math:`\mathcal N(0,` ``init_std``:math:`^2)`
    noise; zero ball velocity; the ball target is :math:`(-x_0, y_0)` or
    :math:`(+x_0, y_0)` with probability 1/2 each (default :math:`x_0 = 0.5`,
    :math:`y_0 = -mg/k`); the hand target is the origin.

    **Observation** ``[*B, 9]``: ``[hand_xy, ball_xy, ball_vel_xy, target_xy,
    time_fraction]`` where ``time_fraction = t / episode_steps`` runs from 0 at
    reset to 1 at the last step (the optimal policy is time-dependent).

    **Reward** ``[*B, 1]`` (eq 15 as minus a cost, see :func:`hand_reward`):
    :math:`-\alpha_1\lVert a\rVert^2` every step (:math:`\alpha_1 = 10^{-3}`),
    plus :math:`-\alpha_2[d(h, 0) + d(b, b^*)]` on the last step
    (:math:`\alpha_2 = 1`) with the smooth distance
    :math:`d(x, y) = \sqrt{\lVert x - y\rVert^2 + 10^{-6}}`. The reward is a pure
    function of ``(observation, action, next observation)``:
    :func:`hand_reward_module` computes it exactly and differentiably.

    **Episodes** end after ``episode_steps`` steps with ``truncated = done =
    True``; ``terminated`` is always False. Each of the ``batch_size`` entries is
    an independent episode.

    Keyword Args:
        episode_steps: steps per episode (default 1000 = 10 s).
        dt: simulation step (s).
        dtype: floating dtype of observations, actions and rewards.
        batch_size: number of parallel episodes, e.g. ``[8]``; ``[]`` for one.
        device: where the state lives.
        seed: seed of the env's generator (drawn from torch's global RNG if ``None``).
        **physics: any other :class:`HandParams` field (``mass``, ``stiffness``,
            ``damping``, ``force_std``, ``target_x``, ``control_cost``, ...).

    Examples:
        >>> import torch
        >>> from torchrl.envs.utils import check_env_specs
        >>> env = HandEnv(batch_size=[4], episode_steps=50, seed=0)
        >>> check_env_specs(env)
        >>> data = env.rollout(100)  # stops at the end of the episode
        >>> data.shape, data["next", "observation"].shape
        (torch.Size([4, 50]), torch.Size([4, 50, 9]))
        >>> bool(data["next", "truncated"][:, -1].all()), float(data["next", "observation"][0, -1, -1])
        (True, 1.0)

    """

    def __init__(
        self,
        *,
        episode_steps: int = 1000,
        dt: float = 0.01,
        dtype: torch.dtype = torch.float32,
        batch_size: Sequence[int] | torch.Size = (),
        device: DEVICE = None,
        seed: int | None = None,
        **physics: float,
    ):
        unknown = set(physics) - set(HandParams.__dataclass_fields__)
        if unknown:
            raise TypeError(
                f"HandEnv got unknown keyword arguments {sorted(unknown)}; "
                f"valid physics arguments are the HandParams fields."
            )
        self.params = HandParams(episode_steps=int(episode_steps), dt=float(dt), **physics)
        one = torch.ones(ACTION_DIM)
        super().__init__(
            observation_dim=OBS_DIM,
            action_low=-one,
            action_high=one,
            max_steps=self.params.episode_steps,
            dtype=dtype,
            batch_size=batch_size,
            device=device,
            seed=seed,
        )

    def _initial_state(self) -> Tensor:
        p = self.params
        device = self._device_or_cpu
        hand = p.init_std * self._randn(2)
        hanging = torch.tensor([0.0, p.hanging_y], dtype=self.dtype, device=device)
        ball = hanging + p.init_std * self._randn(2)
        side = torch.randint(0, 2, self.batch_size, generator=self._rng, device=device)
        target_x = (2 * side - 1).to(self.dtype) * p.target_x
        target = torch.stack([target_x, torch.full_like(target_x, p.target_height)], dim=-1)
        zeros = torch.zeros(*self.batch_size, 2, dtype=self.dtype, device=device)
        time = torch.zeros(*self.batch_size, 1, dtype=self.dtype, device=device)
        return torch.cat([hand, ball, zeros, target, time], dim=-1)

    def _transition(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        p = self.params
        mean = hand_mean_next_observation(state, action, p)
        impulse = p.velocity_noise_std * self._randn(2)
        next_state = mean + F.pad(impulse, (BALL_VEL.start, OBS_DIM - BALL_VEL.stop))
        return next_state, hand_reward(state, action, next_state, p)


class _HandReward(nn.Module):
    def __init__(self, params: HandParams):
        super().__init__()
        self.params = params

    def forward(self, observation: Tensor, action: Tensor, next_observation: Tensor) -> Tensor:
        return hand_reward(observation, action, next_observation, self.params)


def hand_reward_module(
    env_or_params: HandEnv | HandParams,
    *,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
    next_observation_key: NestedKey = ("next", "observation"),
    reward_key: NestedKey = ("next", "reward"),
) -> TensorDictModule:
    r"""The known, differentiable Hand reward as a TensorDict module.

    Computes exactly the reward of :class:`HandEnv` (:func:`hand_reward`) from
    ``observation``, ``action`` and ``("next", "observation")``; gradients flow
    into the action and the next observation, as SVG needs.

    Args:
        env_or_params: a :class:`HandEnv` or its :class:`HandParams`.

    Keyword Args:
        observation_key: the observation entry read.
        action_key: the action entry read.
        next_observation_key: the next-observation entry read.
        reward_key: the reward entry written.

    Shapes:
        ``[*B, 9]``, ``[*B, 2]``, ``[*B, 9]`` -> ``[*B, 1]``, any ``*B`` and dtype.

    Examples:
        >>> import torch
        >>> env = HandEnv(episode_steps=20, dtype=torch.float64, seed=0)
        >>> data = env.rollout(20)
        >>> reward = hand_reward_module(env)(data.clone())["next", "reward"]
        >>> torch.equal(reward, data["next", "reward"])
        True

    """
    return TensorDictModule(
        _HandReward(_as_params(env_or_params)),
        in_keys=[observation_key, action_key, next_observation_key],
        out_keys=[reward_key],
    )


class _HandTransition(nn.Module):
    def __init__(self, params: HandParams, scale_floor: float):
        super().__init__()
        self.params = params
        self.scale_floor = scale_floor

    def forward(self, observation: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        loc = hand_mean_next_observation(observation, action, self.params)
        scale = torch.full_like(loc, self.scale_floor)
        scale[..., BALL_VEL] = self.params.velocity_noise_std
        return loc, scale


def hand_dynamics_model(
    env_or_params: HandEnv | HandParams,
    *,
    scale_floor: float = 1e-6,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
    next_observation_key: NestedKey = ("next", "observation"),
    loc_key: NestedKey = "next_observation_loc",
    scale_key: NestedKey = "next_observation_scale",
) -> ProbabilisticTensorDictSequential:
    r"""The true Hand transition model in the location-scale contract.

    ``get_dist(td)`` is ``Independent(Normal(loc, scale), 1)`` over
    ``("next", "observation")`` with ``loc`` = :func:`hand_mean_next_observation`
    and ``scale`` = ``dt * force_std / mass`` on the two ball-velocity
    components. :meth:`forward` writes a sample (``InteractionType.RANDOM``) or
    the mean under ``set_exploration_type(DETERMINISTIC)``.

    **What is exact.** The env's random force enters only the ball velocity,
    through independent per-axis impulses (see :class:`HandEnv`), so the mean,
    the velocity scale and the independence are the env's own law, and
    ``loc + scale * xi`` with the inferred ``xi = (s' - loc) / scale``
    reproduces the env's next observation; the Jacobians in ``(s, a)`` are the
    true ones. **What is approximated.** Hand, ball position, target and time
    are deterministic given ``(s, a)`` (a point mass); the model gives them the
    tiny ``scale_floor`` so the density exists. Their inferred noise on real
    transitions is 0, but a fresh sample perturbs them by ~``scale_floor``.
    The time fraction has zero gradient (it is not controllable).

    Args:
        env_or_params: a :class:`HandEnv` or its :class:`HandParams`.

    Keyword Args:
        scale_floor: std of the deterministic dimensions.
        observation_key: as in :func:`~torchrl_svg.envs.lqg_dynamics_model`.
        action_key: as in :func:`~torchrl_svg.envs.lqg_dynamics_model`.
        next_observation_key: as in :func:`~torchrl_svg.envs.lqg_dynamics_model`.
        loc_key: as in :func:`~torchrl_svg.envs.lqg_dynamics_model`.
        scale_key: as in :func:`~torchrl_svg.envs.lqg_dynamics_model`.

    Shapes:
        ``[*B, 9]``, ``[*B, 2]`` -> ``event_shape [9]``, ``batch_shape [*B]``.

    Examples:
        >>> import torch
        >>> env = HandEnv(episode_steps=10, dtype=torch.float64, seed=0)
        >>> data = env.rollout(10)
        >>> dist = hand_dynamics_model(env).get_dist(data)
        >>> noise = (data["next", "observation"] - dist.mean) / dist.stddev
        >>> noise[..., :4].abs().max().item(), noise.shape
        (0.0, torch.Size([10, 9]))
        >>> torch.allclose(dist.mean + dist.stddev * noise, data["next", "observation"], atol=1e-12)
        True

    """
    params = _as_params(env_or_params)
    if not scale_floor > 0:
        raise ValueError(f"hand_dynamics_model: scale_floor must be > 0, got {scale_floor}.")
    if not params.velocity_noise_std > 0:
        raise ValueError(
            "hand_dynamics_model: force_std must be > 0 for a valid Normal model "
            f"(got {params.force_std})."
        )
    return known_dynamics_model(
        _HandTransition(params, float(scale_floor)),
        [observation_key, action_key],
        loc_key,
        scale_key,
        next_observation_key,
    )
