"""Helpers shared by the SVG-family losses."""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import Tensor
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules.distributions.utils import rsample_and_log_prob

__all__ = ["policy_sample"]


def policy_sample(
    actor: ProbabilisticTensorDictSequential,
    params: TensorDictBase,
    tensordict: TensorDictBase,
) -> tuple[Tensor, Tensor]:
    r"""Draw :math:`\tilde a = \pi_\theta(s, \eta)` with fresh :math:`\eta` and score it.

    The actor runs with ``params`` on a shallow selection of ``tensordict``
    (the input is not modified). The draw is reparameterised, so gradients
    reach ``params`` through the action and the log-probability.

    Returns:
        ``(action [*B, A], log_prob [*B])``; a per-dimension log-probability
        (e.g. from a plain :class:`torch.distributions.Normal`) is summed over
        the action dimension.

    """
    td = tensordict.select(*actor.in_keys, strict=False)
    with (
        set_exploration_type(ExplorationType.RANDOM),
        params.to_module(actor, preserve_module_state=False),
    ):
        dist = actor.get_dist(td)
    action, log_prob = rsample_and_log_prob(dist)
    if log_prob.ndim == action.ndim:
        log_prob = log_prob.sum(-1)
    return action, log_prob
