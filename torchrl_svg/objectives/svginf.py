"""SVG(inf) (SVG paper, Algorithm 1): back-propagation through whole real episodes, no critic."""

from __future__ import annotations

from dataclasses import dataclass

from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from torch import Tensor

from torchrl_svg._validation import Entry
from torchrl_svg.objectives._base import LossBase, LossOptions, Unpack
from torchrl_svg.objectives._unroll import (
    UnrollKeys,
    trajectory_entries,
    trajectory_masks,
    unroll_real,
)

__all__ = ["SVGInfLoss"]


class SVGInfLoss(LossBase):
    r"""SVG(:math:`\infty`) (SVG paper, Algorithm 1): back-propagation through whole real episodes, no critic.

    Input: whole episodes ``[*B, T]`` (padded ones marked by ``("collector", "mask")``).
    With inferred noise the episode is re-built through the policy and the model
    (its value equals the real trajectory) and

    .. math:: \mathcal L_\pi = -\sum_{t<T}\gamma^t\,\hat r(\hat s_t, \tilde a_t)

    whose gradient is the backward recursion of Algorithm 1 (lines 10-14),
    computed by autograd. ``noise="sampled"`` gives the planner of §6.1: the same
    objective on a trajectory simulated by the model from the real initial state
    with fresh noise. Clip the policy-gradient norm in the optimiser step (App. D).

    Args:
        actor_network: a location-scale policy.
        dynamics_model: location-scale model over the next observation.
        reward_model: reward module (may read ``("next", "observation")``).

    Keyword Args:
        noise: ``"inferred"`` (default) or ``"sampled"``.
        reduction: over the episodes ``[*B]``: ``"mean"`` (default) | ``"sum"`` | ``"none"``.
        action_spec / check_finite: as :class:`~torchrl_svg.objectives.SVGLoss`; default ``None``.

    Raises:
        TypeError / ValueError / KeyError: as :class:`~torchrl_svg.objectives.SVGLoss`
            documents, for whole episodes ``[*B, T]`` of any length ``T`` (a batch
            without a time dimension is refused) that need no ``action_log_prob``
            and no ``("next", "terminated")``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor
        >>> from torchrl_svg.objectives import SVGInfLoss
        >>> spec = Bounded(-1.0, 1.0, (1,))
        >>> loss = SVGInfLoss(make_actor(3, spec, hidden_sizes=(16,)), GaussianDynamics(3, 1, hidden_sizes=(16,)),
        ...                   RewardModel(3, 1, hidden_sizes=(16,)))
        >>> _ = loss.make_value_estimator(gamma=1.0)
        >>> episodes = TensorDict({"observation": torch.randn(4, 10, 3), "action": spec.rand((4, 10)) * 0.9,
        ...     ("next", "observation"): torch.randn(4, 10, 3), ("next", "reward"): torch.randn(4, 10, 1),
        ...     ("next", "done"): torch.zeros(4, 10, 1, dtype=torch.bool)}, [4, 10])
        >>> loss(episodes)["loss_actor"].backward()
    """

    @dataclass
    class _AcceptedKeys(UnrollKeys):
        """Configurable tensordict keys: those of the re-built episodes (``UnrollKeys``)."""

    tensor_keys: _AcceptedKeys
    _min_batch_ndim = 1  # whole episodes [*B, T]

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        *,
        noise: str = "inferred",
        **options: Unpack[LossOptions],
    ) -> None:
        super().__init__(options, noise=noise)
        models = {"dynamics_model": dynamics_model, "reward_model": reward_model}
        self._check_networks(actor_network, models, options.get("action_spec"))
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(dynamics_model, "dynamics_model")
        self.convert_to_functional(reward_model, "reward_model")

    def _input_entries(self) -> list[Entry]:
        """What the loss reads from whole episodes ``[*B, T]``."""
        return trajectory_entries(self.tensor_keys, *self._size_names(), bootstrap=False)

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Minus the (re-built or simulated) discounted episode return, ``[*B]`` before reduction."""
        keys = self.tensor_keys
        steps = tensordict.shape[-1]
        unroll = unroll_real(self, tensordict, steps, self.noise)
        alive, _ = trajectory_masks(tensordict, keys, steps)
        gamma = self._gamma
        ret = sum(gamma**t * alive[..., t] * r for t, r in enumerate(unroll["rewards"]))
        return self._reduce_loss(-ret, None), {"return": ret.detach()}

    _trained_networks = {"actor": "actor_network"}

    def _default_out_keys(self) -> list[str]:
        return ["loss_actor"] + (["episode_return"] if self.reduction != "none" else [])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_actor`` on whole episodes ``[*B, T]``."""
        self.validate_input(tensordict)
        loss, meta = self.actor_loss(tensordict)
        self.check_losses(tensordict, {"loss_actor": loss})
        if self.reduction == "none":
            return TensorDict({"loss_actor": loss}, tensordict.batch_size[:-1])
        return TensorDict({"loss_actor": loss, "episode_return": meta["return"].mean()}, [])
