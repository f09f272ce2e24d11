"""Helpers shared by the SVG-family losses: calling policies, models and critics with given parameters."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torch import distributions as D
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules.distributions.utils import rsample_and_log_prob

__all__ = [
    "continuation",
    "expected_reward",
    "imagine_rollout",
    "model_dist",
    "policy_dist",
    "policy_sample",
    "state_value",
    "transition",
]


def policy_dist(
    actor: ProbabilisticTensorDictSequential,
    params: TensorDictBase,
    tensordict: TensorDictBase,
) -> D.Distribution:
    """The policy distribution at the states of ``tensordict``, computed with ``params``.

    The actor runs on a shallow selection of ``tensordict`` (the input is not modified).
    """
    td = tensordict.select(*actor.in_keys, strict=False)
    with (
        set_exploration_type(ExplorationType.RANDOM),
        params.to_module(actor, preserve_module_state=False),
    ):
        return actor.get_dist(td)


def policy_sample(
    actor: ProbabilisticTensorDictSequential,
    params: TensorDictBase,
    tensordict: TensorDictBase,
) -> tuple[Tensor, Tensor]:
    r"""Draw :math:`\tilde a = \pi_\theta(s, \eta)` with fresh :math:`\eta` and score it.

    The draw is reparameterised, so gradients reach ``params`` through the
    action and the log-probability.

    Returns:
        ``(action [*B, A], log_prob [*B])``; a per-dimension log-probability
        (e.g. from a plain :class:`torch.distributions.Normal`) is summed over
        the action dimension.
    """
    dist = policy_dist(actor, params, tensordict)
    action, log_prob = rsample_and_log_prob(dist)
    if log_prob.ndim == action.ndim:
        log_prob = log_prob.sum(-1)
    return action, log_prob


def transition(
    observation_key: NestedKey,
    action_key: NestedKey,
    observation: Tensor,
    action: Tensor,
    next_observation: Tensor | None = None,
) -> TensorDictBase:
    """A transition tensordict ``{s, a[, ("next", s)]}`` of batch shape ``observation.shape[:-1]``."""
    entries = {observation_key: observation, action_key: action}
    if next_observation is not None:
        entries[("next", observation_key)] = next_observation
    return TensorDict(entries, observation.shape[:-1])


def model_dist(
    model: TensorDictModuleBase, params: TensorDictBase, tensordict: TensorDictBase
) -> D.Distribution:
    """The dynamics model's distribution over the next observation, computed with ``params``."""
    with params.to_module(model, preserve_module_state=False):
        return model.get_dist(tensordict.copy())


def expected_reward(
    model: TensorDictModuleBase, params: TensorDictBase, tensordict: TensorDictBase
) -> Tensor:
    """``E[r(s, a[, s'])]`` from a reward model: the mean of its ``get_dist``, or its output, ``[*B]``.

    A deterministic reward module (e.g. a known reward) is called on a shallow
    copy of ``tensordict`` and its last out key is read.
    """
    with params.to_module(model, preserve_module_state=False):
        if hasattr(model, "get_dist"):
            reward = model.get_dist(tensordict.copy()).mean
        else:
            reward = model(tensordict.copy()).get(model.out_keys[-1])
    return reward.squeeze(-1)


def state_value(
    value_network: TensorDictModuleBase,
    params: TensorDictBase,
    observation: Tensor,
    observation_key: NestedKey,
    value_key: NestedKey,
) -> Tensor:
    """``V(observation)`` computed with ``params``: ``[*B]``."""
    td = TensorDict({observation_key: observation}, observation.shape[:-1])
    with params.to_module(value_network, preserve_module_state=False):
        value_network(td)
    return td.get(value_key).squeeze(-1)


def continuation(
    termination: TensorDictModuleBase | None,
    params: TensorDictBase | None,
    next_observation: Tensor,
    observation_key: NestedKey,
) -> Tensor:
    """``1 - p(terminated | s')``: ``[*B]`` (ones without a termination model)."""
    if termination is None:
        return next_observation.new_ones(next_observation.shape[:-1])
    td = TensorDict({("next", observation_key): next_observation}, next_observation.shape[:-1])
    with params.to_module(termination, preserve_module_state=False):
        prob = termination.probability(td)
    return 1.0 - prob.squeeze(-1)


def imagine_rollout(
    actor: ProbabilisticTensorDictSequential,
    actor_params: TensorDictBase,
    dynamics: TensorDictModuleBase,
    dynamics_params: TensorDictBase,
    reward: TensorDictModuleBase,
    reward_params: TensorDictBase,
    termination: TensorDictModuleBase | None,
    termination_params: TensorDictBase | None,
    start: Tensor,
    steps: int,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
) -> TensorDictBase:
    r"""Imagine ``steps`` transitions from ``start`` with the policy and the models (fresh noise).

    Each step draws :math:`a_k \sim \pi(s_k)`, :math:`s_{k+1} \sim \hat f(s_k, a_k)`,
    the expected reward :math:`\hat r(s_k, a_k, s_{k+1})` and the continuation
    :math:`1 - \hat d(s_{k+1})`.

    Returns:
        A TensorDict of batch shape ``[*B, steps]`` with ``observation``, ``action``,
        ``"log_prob"``, ``"continuation"``, ``("next", "observation")`` and
        ``("next", "reward")`` (``[*B, steps]``, no trailing singleton).
    """
    observations, actions, log_probs, rewards, conts, next_observations = [], [], [], [], [], []
    state = start
    for _ in range(steps):
        td_state = TensorDict({observation_key: state}, state.shape[:-1])
        action, log_prob = policy_sample(actor, actor_params, td_state)
        step = transition(observation_key, action_key, state, action)
        next_state = model_dist(dynamics, dynamics_params, step).rsample()
        step.set(("next", observation_key), next_state)
        observations.append(state)
        actions.append(action)
        log_probs.append(log_prob)
        rewards.append(expected_reward(reward, reward_params, step))
        conts.append(continuation(termination, termination_params, next_state, observation_key))
        next_observations.append(next_state)
        state = next_state
    batch = [*start.shape[:-1], steps]
    if steps == 0:
        empty_obs = start.new_zeros(*batch, start.shape[-1])
        return TensorDict({observation_key: empty_obs, ("next", observation_key): empty_obs}, batch)
    return TensorDict(
        {
            observation_key: torch.stack(observations, -2),
            action_key: torch.stack(actions, -2),
            "log_prob": torch.stack(log_probs, -1),
            "continuation": torch.stack(conts, -1),
            ("next", observation_key): torch.stack(next_observations, -2),
            ("next", "reward"): torch.stack(rewards, -1),
        },
        batch,
    )
