"""Termination models: known functions of the next observation, or a learned head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from torchrl_svg._utils import check_dim, get_key
from torchrl_svg.modules._mlp import StackedMLP
from torchrl_svg.modules.normalizer import RunningNormalizer

__all__ = [
    "KNOWN_TERMINATION_ENVS",
    "KnownTermination",
    "LearnedTermination",
    "Termination",
    "ant_terminated",
    "hopper_terminated",
    "hopper_v5_terminated",
    "humanoid_terminated",
    "inverted_double_pendulum_terminated",
    "inverted_pendulum_terminated",
    "inverted_pendulum_v5_terminated",
    "mountain_car_continuous_terminated",
    "never_terminated",
    "termination_for_env",
    "walker2d_terminated",
    "walker2d_v5_terminated",
]

# The rules below are Gymnasium's (``gymnasium/envs/mujoco/*_v4.py`` and ``*_v5.py``,
# ``terminated`` / ``is_healthy``) with the environments' default arguments
# (``terminate_when_unhealthy=True``, the default ``healthy_*_range`` and
# ``exclude_current_positions_from_observation=True``), written on the observation.
# Comparisons are those of Gymnasium (strict or not); a NaN fails every one of them,
# so a non-finite observation counts as terminated, as it does there.


def hopper_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``Hopper-v4`` / ``Hopper-v5`` termination, ``[*B, 11] -> [*B]``.

    Unhealthy (terminated) unless ``z = observation[0] > 0.7``,
    ``-0.2 < angle = observation[1] < 0.2`` and every element of
    ``observation[1:]`` is in ``(-100, 100)`` (Gymnasium checks the unclipped
    velocities, which the observation clips to ``[-10, 10]``: that part can only
    fail through the positions).
    """
    z, angle = observation[..., 0], observation[..., 1]
    rest = observation[..., 1:]
    healthy_state = ((rest > -100.0) & (rest < 100.0)).all(-1)
    healthy = healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def walker2d_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``Walker2d-v4`` / ``-v5`` termination, ``[*B, 17] -> [*B]``: unless ``0.8 < z < 2`` and ``-1 < angle < 1``."""
    z, angle = observation[..., 0], observation[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def ant_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``Ant-v4`` / ``Ant-v5`` termination, ``[*B, 27 or 105] -> [*B]``.

    Unhealthy unless the torso height ``z = observation[0]`` is in ``[0.2, 1.0]``
    (inclusive) and the state (positions and velocities: ``observation[:27]``;
    v5 appends contact forces) is finite.
    """
    z = observation[..., 0]
    finite = torch.isfinite(observation[..., :27]).all(-1)
    return ~(finite & (z >= 0.2) & (z <= 1.0))


def humanoid_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``Humanoid-v4`` / ``-v5`` termination, ``[*B, 376 or 348] -> [*B]``: unless ``1 < z = observation[0] < 2``."""
    z = observation[..., 0]
    return ~((z > 1.0) & (z < 2.0))


def inverted_pendulum_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``InvertedPendulum-v4`` / ``-v5`` termination, ``[*B, 4] -> [*B]``: pole angle beyond 0.2 rad or non-finite."""
    finite = torch.isfinite(observation).all(-1)
    return ~finite | (observation[..., 1].abs() > 0.2)


def inverted_double_pendulum_terminated(observation: torch.Tensor) -> torch.Tensor:
    r"""Gymnasium ``InvertedDoublePendulum-v4`` / ``-v5`` termination, ``[*B, 11 or 9] -> [*B]``.

    Terminated when the tip of the second pole is at height :math:`y \le 1`, with
    (poles of length 0.6 hinged on the cart at height 0, angles :math:`\theta_1`,
    :math:`\theta_2` given by their sines ``observation[1:3]`` and cosines ``observation[3:5]``)

    .. math:: y = 0.6\cos\theta_1 + 0.6\cos(\theta_1 + \theta_2).

    Gymnasium reads :math:`y` from MuJoCo's site position, computed before the
    last physics sub-step of the frame; the two differ by the tip's motion over
    that sub-step (about ``1e-4`` to ``1e-3``), so they may disagree only that close to
    the threshold.
    """
    sin1, sin2 = observation[..., 1], observation[..., 2]
    cos1, cos2 = observation[..., 3], observation[..., 4]
    y = 0.6 * cos1 + 0.6 * (cos1 * cos2 - sin1 * sin2)
    return ~(y > 1.0)


def mountain_car_continuous_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``MountainCarContinuous-v0`` termination, ``[*B, 2] -> [*B]``: position ``>= 0.45`` and velocity ``>= 0``."""
    return (observation[..., 0] >= 0.45) & (observation[..., 1] >= 0.0)


def never_terminated(observation: torch.Tensor) -> torch.Tensor:
    """For tasks that never terminate (only time limits): all ``False``, ``[*B, D] -> [*B]``."""
    return torch.zeros(observation.shape[:-1], dtype=torch.bool, device=observation.device)


# Former names, kept for existing code.
hopper_v5_terminated = hopper_terminated
walker2d_v5_terminated = walker2d_terminated
inverted_pendulum_v5_terminated = inverted_pendulum_terminated

_KNOWN: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int | None]] = {
    "Hopper-v4": (hopper_terminated, 11),
    "Hopper-v5": (hopper_terminated, 11),
    "Walker2d-v4": (walker2d_terminated, 17),
    "Walker2d-v5": (walker2d_terminated, 17),
    "Ant-v4": (ant_terminated, 27),
    "Ant-v5": (ant_terminated, 105),
    "Humanoid-v4": (humanoid_terminated, 376),
    "Humanoid-v5": (humanoid_terminated, 348),
    "InvertedPendulum-v4": (inverted_pendulum_terminated, 4),
    "InvertedPendulum-v5": (inverted_pendulum_terminated, 4),
    "InvertedDoublePendulum-v4": (inverted_double_pendulum_terminated, 11),
    "InvertedDoublePendulum-v5": (inverted_double_pendulum_terminated, 9),
    "MountainCarContinuous-v0": (mountain_car_continuous_terminated, 2),
    # tasks whose episodes only end by their time limit
    "HalfCheetah-v4": (never_terminated, 17),
    "HalfCheetah-v5": (never_terminated, 17),
    "Swimmer-v4": (never_terminated, 8),
    "Swimmer-v5": (never_terminated, 8),
    "Reacher-v4": (never_terminated, 11),
    "Reacher-v5": (never_terminated, 10),
    "Pusher-v4": (never_terminated, 23),
    "Pusher-v5": (never_terminated, 23),
    "HumanoidStandup-v4": (never_terminated, 376),
    "HumanoidStandup-v5": (never_terminated, 348),
    "Pendulum-v1": (never_terminated, 3),
    "Hand-v0": (never_terminated, None),
    "LQG-v0": (never_terminated, None),
}

#: The task ids :func:`termination_for_env` knows a termination rule for.
KNOWN_TERMINATION_ENVS = frozenset(_KNOWN)


class Termination(TensorDictModuleBase):
    """Base class of termination models.

    A termination model reads the next observation and gives the probability
    that the transition terminated, ``[*B, 1]``, through :meth:`probability`
    (used by the losses as the continuation ``1 - p``); :meth:`forward` writes
    the boolean ``("next", "terminated")`` like an environment would.
    """

    def __init__(
        self,
        next_observation_key: NestedKey = ("next", "observation"),
        terminated_key: NestedKey = ("next", "terminated"),
    ):
        super().__init__()
        self.next_observation_key = next_observation_key
        self.terminated_key = terminated_key
        self.in_keys = [next_observation_key]
        self.out_keys = [terminated_key]

    def probability(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Probability of termination, ``[*B, 1]``, in the dtype of the observation."""
        raise NotImplementedError

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the boolean termination flag (probability above one half)."""
        tensordict.set(self.terminated_key, self.probability(tensordict) > 0.5)
        return tensordict


class KnownTermination(Termination):
    """A known termination function of the next observation.

    Args:
        fn: maps observations ``[*B, D]`` to a boolean (or probability) ``[*B]``.
        observation_dim: if given, inputs are checked to have this many features.

    Keyword Args:
        next_observation_key / terminated_key: entries read and written.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import KnownTermination, hopper_v5_terminated
        >>> term = KnownTermination(hopper_v5_terminated, observation_dim=11)
        >>> obs = torch.zeros(2, 11)
        >>> obs[0, 0] = 1.25  # standing
        >>> term.probability(TensorDict({("next", "observation"): obs}, [2]))
        tensor([[0.],
                [1.]])

    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        observation_dim: int | None = None,
        *,
        next_observation_key: NestedKey = ("next", "observation"),
        terminated_key: NestedKey = ("next", "terminated"),
    ):
        super().__init__(next_observation_key, terminated_key)
        self.fn = fn
        self.observation_dim = observation_dim

    def probability(self, tensordict: TensorDictBase) -> torch.Tensor:
        """``fn`` of the next observation as a 0/1 probability, ``[*B, 1]``."""
        obs = get_key(type(self).__name__, tensordict, self.next_observation_key)
        if self.observation_dim is not None:
            check_dim(type(self).__name__, self.next_observation_key, obs, self.observation_dim)
        return self.fn(obs).to(obs.dtype).unsqueeze(-1)

    def extra_repr(self) -> str:
        """The function's name, shown in ``repr``."""
        return f"fn={getattr(self.fn, '__name__', self.fn)}"


class LearnedTermination(Termination):
    """A learned termination head: ``p(terminated | s') = sigmoid(MLP(normalised s'))``.

    Trained by binary cross-entropy on real ``("next", "terminated")`` flags
    (see :class:`~torchrl_svg.objectives.GaussianWorldModelLoss`). Its input
    statistics are running buffers updated with :meth:`update_normalizer`.

    Args:
        observation_dim: size of the observation vector.

    Keyword Args:
        hidden_sizes: hidden layer widths.
        activation_class: hidden activation.
        next_observation_key / terminated_key: entries read and written.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import LearnedTermination
        >>> head = LearnedTermination(11, hidden_sizes=(16,))
        >>> td = TensorDict({("next", "observation"): torch.randn(4, 11)}, [4])
        >>> head.logits(td).shape, head.probability(td).shape
        (torch.Size([4, 1]), torch.Size([4, 1]))

    """

    def __init__(
        self,
        observation_dim: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation_class: type[nn.Module] = nn.ReLU,
        next_observation_key: NestedKey = ("next", "observation"),
        terminated_key: NestedKey = ("next", "terminated"),
    ):
        super().__init__(next_observation_key, terminated_key)
        self.observation_dim = int(observation_dim)
        self.normalizer = RunningNormalizer(self.observation_dim)
        self.net = StackedMLP(1, self.observation_dim, 1, hidden_sizes, activation_class)

    def _observation(self, tensordict: TensorDictBase) -> torch.Tensor:
        obs = get_key(type(self).__name__, tensordict, self.next_observation_key)
        check_dim(type(self).__name__, self.next_observation_key, obs, self.observation_dim)
        return obs

    @torch.no_grad()
    def update_normalizer(self, tensordict: TensorDictBase) -> None:
        """Merge the real next observations of a batch into the input statistics."""
        self.normalizer.update(self._observation(tensordict))

    def logits(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Termination logits, ``[*B, 1]``."""
        obs = self._observation(tensordict)
        x = self.normalizer.normalize(obs).reshape(-1, self.observation_dim)
        return self.net(x)[0].reshape(*obs.shape[:-1], 1)

    def probability(self, tensordict: TensorDictBase) -> torch.Tensor:
        """``sigmoid(logits)``, ``[*B, 1]`` (differentiable in the next observation)."""
        return torch.sigmoid(self.logits(tensordict))


def termination_for_env(
    env_name: str,
    *,
    next_observation_key: NestedKey = ("next", "observation"),
    terminated_key: NestedKey = ("next", "terminated"),
) -> KnownTermination:
    """The known termination rule of a task (Gymnasium's, with the environment's default arguments).

    Rules ship for the Gymnasium MuJoCo tasks that terminate, v4 and v5
    (``Hopper``, ``Walker2d``, ``Ant``, ``Humanoid``, ``InvertedPendulum``,
    ``InvertedDoublePendulum``), for ``MountainCarContinuous-v0``, and
    :func:`never_terminated` for the tasks that only end by their time limit
    (``HalfCheetah``, ``Swimmer``, ``Reacher``, ``Pusher``, ``HumanoidStandup``
    v4 and v5, ``Pendulum-v1``, the package's ``Hand-v0`` and ``LQG-v0``): see
    :data:`KNOWN_TERMINATION_ENVS`. The observation size is checked where it is fixed.

    Raises:
        ValueError: for any other task id (no rule is known: assuming that it
            never terminates would be silently wrong); use a learned termination
            head (``model.termination=learned``,
            :class:`LearnedTermination`) or a :class:`KnownTermination` of your own.

    Examples:
        >>> termination_for_env("Hopper-v4").fn.__name__
        'hopper_terminated'
        >>> termination_for_env("HalfCheetah-v5").fn.__name__
        'never_terminated'
        >>> termination_for_env("BipedalWalker-v3")
        Traceback (most recent call last):
        ...
        ValueError: No known termination rule for 'BipedalWalker-v3' ...

    """
    if env_name not in _KNOWN:
        raise ValueError(
            f"No known termination rule for {env_name!r} (known: {sorted(_KNOWN)}). Use a learned "
            "termination head (model.termination=learned, torchrl_svg.modules.LearnedTermination) "
            "or pass your own KnownTermination."
        )
    fn, dim = _KNOWN[env_name]
    return KnownTermination(
        fn,
        dim,
        next_observation_key=next_observation_key,
        terminated_key=terminated_key,
    )
