"""Learned Gaussian reward model ``r(s, a) = mu(s, a) + sigma(s, a) * zeta``."""

from __future__ import annotations

from collections.abc import Sequence

from tensordict.utils import NestedKey
from torch import nn

from torchrl_svg.modules.gaussian import EnsembleReduction, GaussianMLPModel, SigmaMode

__all__ = ["RewardModel"]


class RewardModel(GaussianMLPModel):
    r"""A Gaussian reward model over ``("next", "reward")``.

    .. math::

        \hat r(s, a, \zeta) = \mu_r(s, a) + \sigma_r(s, a)\,\zeta,\qquad \zeta\sim\mathcal N(0, 1)

    Same conventions as :class:`GaussianDynamics` (normalised inputs and
    target, running statistics in buffers, soft-bounded learned sigma,
    optional ensemble), without the residual. Losses that need an expected
    reward use the mean of :meth:`get_dist`.

    Args:
        observation_dim: size of the observation vector.
        action_dim: size of the action vector.

    Keyword Args:
        hidden_sizes, activation_class, sigma, ensemble_size, ensemble_reduction,
        min_log_std, max_log_std: as in :class:`GaussianDynamics`.
        observation_key / action_key / reward_key: entries read and written.

    Shapes:
        ``observation [*B, obs_dim]``, ``action [*B, action_dim]`` ->
        ``("next", "reward") [*B, 1]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import RewardModel
        >>> model = RewardModel(3, 1, hidden_sizes=(32, 32))
        >>> data = TensorDict({"observation": torch.randn(8, 3), "action": torch.randn(8, 1)}, [8])
        >>> model(data)["next", "reward"].shape
        torch.Size([8, 1])

    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        hidden_sizes: Sequence[int] = (200, 200),
        activation_class: type[nn.Module] = nn.ReLU,
        sigma: SigmaMode = "state",
        ensemble_size: int = 1,
        ensemble_reduction: EnsembleReduction = "sample",
        min_log_std: float = -5.0,
        max_log_std: float = 0.5,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        reward_key: NestedKey = ("next", "reward"),
    ):
        super().__init__(
            input_keys=[observation_key, action_key],
            input_dims=[observation_dim, action_dim],
            target_key=reward_key,
            target_dim=1,
            hidden_sizes=hidden_sizes,
            activation_class=activation_class,
            sigma=sigma,
            ensemble_size=ensemble_size,
            ensemble_reduction=ensemble_reduction,
            min_log_std=min_log_std,
            max_log_std=max_log_std,
        )
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.observation_key = observation_key
        self.action_key = action_key
        self.reward_key = reward_key
