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
    "KnownTermination",
    "LearnedTermination",
    "Termination",
    "hopper_v5_terminated",
    "inverted_pendulum_v5_terminated",
    "never_terminated",
    "termination_for_env",
    "walker2d_v5_terminated",
]


def hopper_v5_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``Hopper-v5`` termination from its default observation, ``[*B, 11] -> [*B]``.

    Unhealthy (terminated) unless ``z > 0.7``, ``|angle| < 0.2`` and every
    element of ``observation[1:]`` is in ``(-100, 100)``; non-finite
    observations count as terminated.
    """
    z, angle = observation[..., 0], observation[..., 1]
    rest = observation[..., 1:]
    healthy_state = ((rest > -100.0) & (rest < 100.0)).all(-1)
    healthy = healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def walker2d_v5_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``Walker2d-v5`` termination, ``[*B, 17] -> [*B]``: unless ``0.8 < z < 2`` and ``|angle| < 1``."""
    z, angle = observation[..., 0], observation[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def inverted_pendulum_v5_terminated(observation: torch.Tensor) -> torch.Tensor:
    """Gymnasium ``InvertedPendulum-v5`` termination, ``[*B, 4] -> [*B]``: pole angle beyond 0.2 rad or non-finite."""
    finite = torch.isfinite(observation).all(-1)
    return ~finite | (observation[..., 1].abs() > 0.2)


def never_terminated(observation: torch.Tensor) -> torch.Tensor:
    """For tasks that never terminate (only time limits): all ``False``, ``[*B, D] -> [*B]``."""
    return torch.zeros(observation.shape[:-1], dtype=torch.bool, device=observation.device)


_KNOWN: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int | None]] = {
    "Hopper-v5": (hopper_v5_terminated, 11),
    "Walker2d-v5": (walker2d_v5_terminated, 17),
    "InvertedPendulum-v5": (inverted_pendulum_v5_terminated, 4),
}


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
    """The known termination function of a Gymnasium task.

    ``Hopper-v5``, ``Walker2d-v5`` and ``InvertedPendulum-v5`` get their exact
    termination rules (default environment arguments); every other task
    (``HalfCheetah-v5``, ``Pendulum-v1``, ...) gets :func:`never_terminated`.

    Examples:
        >>> termination_for_env("Hopper-v5").fn.__name__
        'hopper_v5_terminated'
        >>> termination_for_env("HalfCheetah-v5").fn.__name__
        'never_terminated'

    """
    fn, dim = _KNOWN.get(env_name, (never_terminated, None))
    return KnownTermination(
        fn,
        dim,
        next_observation_key=next_observation_key,
        terminated_key=terminated_key,
    )
