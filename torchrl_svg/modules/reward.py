"""Learned Gaussian reward model ``r(s, a) = mu(s, a) + sigma(s, a) * zeta``."""

from __future__ import annotations

from tensordict.utils import NestedKey

from torchrl_svg._utils import Unpack
from torchrl_svg.modules.gaussian import GaussianModelOptions, ObservationActionModel

__all__ = ["RewardModel"]


class RewardModel(ObservationActionModel):
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
        min_log_std, max_log_std: as in :class:`GaussianDynamics` (the
            :class:`GaussianModelOptions`, whose defaults are there). Any other
            keyword raises :class:`TypeError`, ``per_dimension`` and ``member_key``
            included.
        observation_key / action_key / reward_key: entries read and written.
            Defaults ``"observation"``, ``"action"``, ``("next", "reward")``.

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
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        reward_key: NestedKey = ("next", "reward"),
        **options: Unpack[GaussianModelOptions],
    ):
        super().__init__(
            observation_dim,
            action_dim,
            reward_key,
            1,
            observation_key=observation_key,
            action_key=action_key,
            options=options,
        )
        self.reward_key = reward_key
