"""Learned Gaussian dynamics: the model ``s' = s + mu(s, a) + sigma(s, a) * xi``."""

from __future__ import annotations

from tensordict.utils import NestedKey

from torchrl_svg._utils import Unpack
from torchrl_svg.modules.gaussian import GaussianModelOptions, ObservationActionModel

__all__ = ["GaussianDynamics"]


class GaussianDynamics(ObservationActionModel):
    r"""A Gaussian dynamics model over the next observation, predicted as a delta.

    .. math::

        \hat s' = \hat f(s, a, \xi) = s + \mu(s, a) + \sigma(s, a)\,\xi,\qquad
        \xi \sim \mathcal{N}(0, I)

    Inputs ``(s, a)`` are normalised with running statistics and the network
    predicts the normalised delta ``(s' - s - m) / d``; both sets of statistics
    are buffers (saved in the ``state_dict``) updated from real data with
    :meth:`update_normalizer`. The standard deviation is learned and
    state-dependent (``sigma="state"``) or one learned value per dimension
    (``sigma="constant"``, as in the SVG paper, App. C), and soft-bounded in
    normalised units. ``per_dimension=True`` uses one sub-network per state
    dimension (SVG paper, App. C); ``ensemble_size=N`` evaluates ``N``
    independent members with :func:`torch.vmap`.

    This module follows the contract every loss expects of a dynamics model: it reads
    ``observation`` and ``action`` and its :meth:`get_dist` is a location-scale
    distribution over ``("next", "observation")`` (``event_shape [obs_dim]``).
    :meth:`forward` writes a sample (``ExplorationType.RANDOM``) or the mean.

    Args:
        observation_dim: size of the observation vector.
        action_dim: size of the action vector.

    Keyword Args:
        hidden_sizes: hidden layer widths (of each sub-network if ``per_dimension``).
        activation_class: hidden activation.
        sigma: ``"state"`` or ``"constant"``.
        per_dimension: one sub-network per state dimension. Default ``False``.
        ensemble_size: number of members; ``ensemble_reduction`` is ``"sample"``
            (one member per sample: the one named by the ``member_key`` entry when
            the input has it, else drawn), ``"mean"`` or ``"average"``.
        min_log_std / max_log_std: soft bounds on the normalised log-std.
        observation_key / action_key / next_observation_key: entries read and written.
            Defaults ``"observation"``, ``"action"``, ``("next", "observation")``.
        member_key: the optional entry ``[*B]`` naming each sample's ensemble member.
            Default ``"ensemble_member"``.

        ``hidden_sizes``, ``activation_class``, ``sigma``, ``ensemble_size``,
        ``ensemble_reduction``, ``min_log_std`` and ``max_log_std`` are the
        :class:`GaussianModelOptions` (their defaults are there); any other
        keyword raises :class:`TypeError`.

    Shapes:
        ``observation [*B, obs_dim]``, ``action [*B, action_dim]`` ->
        ``("next", "observation") [*B, obs_dim]``.
        :meth:`normalized_params` returns ``[E, *B, obs_dim]`` tensors.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import GaussianDynamics
        >>> model = GaussianDynamics(3, 1, hidden_sizes=(32, 32))
        >>> data = TensorDict(
        ...     {"observation": torch.randn(8, 3), "action": torch.randn(8, 1),
        ...      ("next", "observation"): torch.randn(8, 3)}, [8])
        >>> model.update_normalizer(data)
        >>> dist = model.get_dist(data)
        >>> dist.rsample().shape, dist.log_prob(data["next", "observation"]).shape
        (torch.Size([8, 3]), torch.Size([8]))
        >>> model.log_prob_normalized(data).shape  # [E, *B]
        torch.Size([1, 8])

    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        per_dimension: bool = False,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        next_observation_key: NestedKey = ("next", "observation"),
        member_key: NestedKey = "ensemble_member",
        **options: Unpack[GaussianModelOptions],
    ):
        super().__init__(
            observation_dim,
            action_dim,
            next_observation_key,
            observation_dim,
            observation_key=observation_key,
            action_key=action_key,
            options=options,
            residual_key=observation_key,
            per_dimension=per_dimension,
            member_key=member_key,
        )
        self.next_observation_key = next_observation_key
