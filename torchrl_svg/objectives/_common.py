"""Helpers shared by the SVG-family losses: calling policies, models and critics with given parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
)
from tensordict.utils import NestedKey
from torch import Tensor
from torch import distributions as D
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ValueOperator
from torchrl.modules.distributions.utils import rsample_and_log_prob

from torchrl_svg._validation import (
    Entry,
    check_finite_losses,
    check_preimage,
    module_dtype,
    unique,
    validate,
)
from torchrl_svg.objectives.noise import LocationScale

__all__ = [
    "InputValidation",
    "check_stored_preimage",
    "continuation",
    "expected_reward",
    "imagine_rollout",
    "model_dist",
    "module_outputs",
    "policy_dist",
    "policy_preimage",
    "policy_sample",
    "replayed_preimage",
    "state_value",
    "swapped",
    "transition",
]


class InputValidation:
    """Mixin of the package's losses: the input check of ``forward`` (the documented contract).

    A subclass lists what it reads in :meth:`_input_entries`; :meth:`validate_input`
    then refuses a missing entry (``KeyError``), a wrong dtype (``TypeError``), a
    wrong shape or an empty batch (``ValueError``) and, per :attr:`check_finite`,
    NaN or infinite values (``ValueError``); see :mod:`torchrl_svg.objectives`.

    Attributes:
        check_finite: ``None`` (default) checks finiteness when it costs no device
            synchronisation (CPU inputs, not under ``torch.compile``); ``True``
            always (eagerly); ``False`` never.

    """

    check_finite: bool | None = None
    _min_batch_ndim: int = 0

    def _input_entries(self) -> list[Entry]:
        raise NotImplementedError

    def set_keys(self, **kwargs) -> None:
        """As :meth:`LossModule.set_keys`; also forgets the cached input description."""
        self.__dict__.pop("_input_entries_cache", None)
        return super().set_keys(**kwargs)

    def _input_dtype(self) -> torch.dtype | None:
        """The dtype of the loss's parameters (cached; ``.to()``/``.double()`` reset it)."""
        dtype = self.__dict__.get("_param_dtype")
        if dtype is None:
            dtype = module_dtype(self)
            self.__dict__["_param_dtype"] = dtype
        return dtype

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_param_dtype", None)
        return super()._apply(fn, *args, **kwargs)

    def validate_input(self, tensordict: TensorDictBase) -> None:
        """Check ``tensordict`` against what the loss reads; raise with a message naming the entry.

        Raises:
            KeyError: a required entry is missing.
            TypeError: an entry has the wrong dtype.
            ValueError: an entry has the wrong shape, the batch is empty or has the
                wrong batch shape, or (per :attr:`check_finite`) an entry holds NaN or inf.

        """
        entries = self.__dict__.get("_input_entries_cache")
        if entries is None:
            entries = self.__dict__["_input_entries_cache"] = unique(self._input_entries())
        validate(
            type(self).__name__,
            tensordict,
            entries,
            dtype=self._input_dtype(),
            check_finite=self.check_finite,
            min_ndim=self._min_batch_ndim,
        )

    def check_losses(self, tensordict: TensorDictBase, losses: dict[str, Tensor]) -> None:
        """:func:`~torchrl_svg._validation.check_finite_losses` with this loss's ``check_finite``."""
        check_finite_losses(type(self).__name__, tensordict, losses, self.check_finite)


@contextmanager
def swapped(params: TensorDictBase | None, module) -> Iterator[None]:
    """Run ``module`` with ``params`` swapped in (``None``: with its current parameters).

    A plain generator context: tensordict's own ``to_module`` context returns a
    TensorDict from ``__exit__``, which :class:`contextlib.ExitStack` cannot use and
    which, when an exception leaves the block, Python tests for truth, replacing the
    exception by "Converting a tensordict to boolean value is not permitted". Here the
    parameters are put back and the original exception propagates.
    """
    if params is None:
        yield
        return
    context = params.to_module(module, preserve_module_state=False)
    context.__enter__()
    try:
        yield
    finally:
        context.__exit__(None, None, None)


# Plain wrappers whose forward only reads in_keys, calls .module and writes out_keys.
_PLAIN_MODULES = (TensorDictModule, ValueOperator)


def _is_plain(module) -> bool:
    return type(module) in _PLAIN_MODULES


def module_outputs(module: TensorDictModuleBase, tensordict: TensorDictBase) -> tuple[Tensor, ...]:
    """The outputs of a TensorDict module on ``tensordict``, in ``out_keys`` order.

    A plain :class:`~tensordict.nn.TensorDictModule` (or ``ValueOperator``) is
    called directly on the input tensors: the same computation without the
    per-call cost of writing a tensordict. Anything else runs as usual on a
    shallow copy of the input.
    """
    if _is_plain(module):
        out = module.module(*(tensordict.get(k) for k in module.in_keys))
        return out if isinstance(out, tuple) else (out,)
    td = module(tensordict.copy())
    return tuple(td.get(k) for k in module.out_keys)


def _actor_dist(actor: ProbabilisticTensorDictSequential, td: TensorDictBase) -> D.Distribution:
    """``actor.get_dist(td)``, with a fast path for ``ProbabilisticActor(plain module, dist)``."""
    parts = getattr(actor, "module", None)
    if (
        isinstance(actor, ProbabilisticTensorDictSequential)
        and len(parts) == 2
        and _is_plain(parts[0])
        and isinstance(parts[1], ProbabilisticTensorDictModule)
    ):
        outputs = module_outputs(parts[0], td)
        params = TensorDict(dict(zip(parts[0].out_keys, outputs, strict=True)), td.batch_size)
        return parts[1].get_dist(params)
    return actor.get_dist(td)


def policy_dist(
    actor: ProbabilisticTensorDictSequential,
    params: TensorDictBase | None,
    tensordict: TensorDictBase,
) -> D.Distribution:
    """The policy distribution at the states of ``tensordict``, computed with ``params``.

    The actor runs on a shallow selection of ``tensordict`` (the input is not
    modified). ``params=None`` uses the parameters currently in the module.
    """
    td = tensordict.select(*actor.in_keys, strict=False)
    with set_exploration_type(ExplorationType.RANDOM), swapped(params, actor):
        return _actor_dist(actor, td)


def policy_preimage(policy: LocationScale, action: Tensor, stored: Tensor | None) -> Tensor:
    r"""The pre-image :math:`u = g^{-1}(a)` of replayed actions, ``[*B, A]``.

    For a squashed (TanhNormal) policy this is the pre-tanh value stored at
    collection when there is one (exact), else the inverse of the action, clamped
    where tanh saturates. For an unsquashed policy it is the action itself.
    Check a stored pre-image with :func:`~torchrl_svg._validation.check_preimage`.
    """
    if not policy.squashed:
        return action
    return policy.unsquash(action) if stored is None else stored


def check_stored_preimage(
    reader: object,
    action: Tensor,
    stored: Tensor | None,
    action_key: NestedKey,
    preimage_key: NestedKey,
    log_prob_key: NestedKey | None = None,
) -> None:
    """Refuse stored pre-tanh values that do not reproduce their actions.

    :func:`~torchrl_svg._validation.check_preimage` for a loss or replay transform
    ``reader``: its class names it in the message, its ``_tanh_bounds`` are the
    squashing's and its ``check_finite`` says when the check runs. The keys name the
    entries in the message.
    """
    check_preimage(
        type(reader).__name__,
        reader._tanh_bounds,
        action,
        stored,
        action_key=action_key,
        preimage_key=preimage_key,
        log_prob_key=log_prob_key,
        mode=reader.check_finite,
    )


def replayed_preimage(
    reader: object,
    policy: LocationScale,
    tensordict: TensorDictBase,
    action_key: NestedKey,
    preimage_key: NestedKey,
    log_prob_key: NestedKey | None = None,
) -> Tensor:
    r"""The pre-image :math:`u` under ``policy`` of the actions replayed in ``tensordict``, ``[*B, A]``.

    The stored pre-tanh values (``preimage_key``, used when present) are checked
    first with :func:`check_stored_preimage`; then :func:`policy_preimage`.
    """
    action = tensordict.get(action_key)
    stored = tensordict.get(preimage_key, None)
    check_stored_preimage(reader, action, stored, action_key, preimage_key, log_prob_key)
    return policy_preimage(policy, action, stored)


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
    model: TensorDictModuleBase,
    params: TensorDictBase | None,
    tensordict: TensorDictBase,
    ensemble_reduction: str | None = None,
) -> D.Distribution:
    """The dynamics model's distribution over the next observation, computed with ``params``.

    ``ensemble_reduction`` (an ensemble :class:`~torchrl_svg.modules.GaussianDynamics`
    only) overrides how the members are combined for this call.
    """
    with swapped(params, model):
        if ensemble_reduction is None:
            return model.get_dist(tensordict.copy())
        return model.get_dist(tensordict.copy(), ensemble_reduction=ensemble_reduction)


def expected_reward(
    model: TensorDictModuleBase,
    params: TensorDictBase | None,
    tensordict: TensorDictBase,
    *,
    sample: bool = False,
) -> Tensor:
    """``E[r(s, a[, s'])]`` from a reward model: the mean of its ``get_dist``, or its output, ``[*B]``.

    A deterministic reward module (e.g. a known reward) is called on a shallow
    copy of ``tensordict`` and its last out key is read. ``sample=True`` draws
    ``r ~ p(r | s, a)`` (reparameterised) from a model with ``get_dist`` instead of
    taking its mean.
    """
    with swapped(params, model):
        if hasattr(model, "get_dist"):
            dist = model.get_dist(tensordict.copy())
            reward = dist.rsample() if sample else dist.mean
        else:
            reward = module_outputs(model, tensordict)[-1]
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
    with swapped(params, value_network):
        if _is_plain(value_network) and list(value_network.out_keys) == [value_key]:
            return module_outputs(value_network, td)[0].squeeze(-1)
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
    with swapped(params, termination):
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
    ensemble_reduction: str | None = None,
    bound: Callable[[Tensor], Tensor] | None = None,
) -> TensorDictBase:
    r"""Imagine ``steps`` transitions from ``start`` with the policy and the models (fresh noise).

    Each step draws :math:`a_k \sim \pi(s_k)`, :math:`s_{k+1} \sim \hat f(s_k, a_k)`,
    the expected reward :math:`\hat r(s_k, a_k, s_{k+1})` and the continuation
    :math:`1 - \hat d(s_{k+1})`. ``ensemble_reduction``: how an ensemble dynamics
    model combines its members here (``None``: as the model is configured). ``bound``:
    applied to every imagined next state (e.g. the clip of ``observation_bounds``).

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
        next_state = model_dist(dynamics, dynamics_params, step, ensemble_reduction).rsample()
        if bound is not None:
            next_state = bound(next_state)
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
