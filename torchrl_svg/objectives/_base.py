"""What the package's LossModules share: options, keys, discount, detached parameters, checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from tensordict import TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torchrl.data import TensorSpec
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, _cache_values, _vmap_func
from torchrl.objectives.value import TD0Estimator

from torchrl_svg._utils import Unpack, keyword_options
from torchrl_svg._validation import (
    CHECK_DEFAULTS,
    CheckOptions,
    check_policy,
    check_sizes,
    require_get_dist,
    tanh_bounds,
    terminated_flags,
)
from torchrl_svg.objectives._common import InputValidation, state_value
from torchrl_svg.objectives._groups import OwnKeysAndParameters
from torchrl_svg.objectives.noise import LocationScale

__all__ = [
    "NOISE_MODES",
    "OPTION_DEFAULTS",
    "CriticLossOptions",
    "LossBase",
    "LossOptions",
    "PolicyNoiseKeys",
    "PriorityKeys",
    "PriorityWeightKeys",
    "QValueKeys",
    "TransitionKeys",
    "Unpack",
    "ValueKeys",
    "check_horizon",
    "check_noise",
    "check_reduction",
    "detached",
]

NOISE_MODES = ("inferred", "sampled")


def check_reduction(reduction: str) -> None:
    """Refuse a reduction other than ``"mean"``, ``"sum"`` or ``"none"``."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")


def check_noise(noise: str) -> None:
    """Refuse a noise mode other than ``"inferred"`` or ``"sampled"``."""
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}.")


def check_horizon(name: str, value: int) -> None:
    """Refuse a horizon that is not an integer ``>= 1``."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


@dataclass
class TransitionKeys:
    """The keys of a real transition, which every loss reads: each loss's ``_AcceptedKeys`` extend them.

    Attributes:
        observation: the state (also read under ``"next"``). Default ``"observation"``.
        action: the action taken. Default ``"action"``.
        reward / done / terminated: read under ``"next"``. Defaults ``"reward"``,
            ``"done"``, ``"terminated"``.
    """

    observation: NestedKey = "observation"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"


@dataclass
class PolicyNoiseKeys(TransitionKeys):
    """A transition's keys and those of its replayed action's noise, for a loss that infers it.

    Attributes:
        action_pre_tanh: the pre-tanh value of the action stored at collection
            (:class:`~torchrl_svg.modules.TanhNormalActor`; used when present).
            Default ``"action_pre_tanh"``.
        policy_noise: the inferred policy noise written by
            :class:`~torchrl_svg.data.PolicyNoiseInference` (used when present).
            Default ``"policy_noise"``.
    """

    action_pre_tanh: NestedKey = "action_pre_tanh"
    policy_noise: NestedKey = "policy_noise"


@dataclass
class QValueKeys:
    """The key of a loss with Q networks (:meth:`LossBase._qvalues` reads it).

    Attributes:
        state_action_value: written by the Q network. Default ``"state_action_value"``.
    """

    state_action_value: NestedKey = "state_action_value"


@dataclass
class ValueKeys:
    """The key of a loss with a state-value network (:meth:`LossBase._state_value` reads it).

    Attributes:
        value: written by the value network. Default ``"state_value"``.
    """

    value: NestedKey = "state_value"


@dataclass
class PriorityWeightKeys:
    """The key of a loss that weights its samples by a prioritized buffer's weights.

    Attributes:
        priority_weight: importance weights of a prioritized buffer (used when
            present). Default ``"priority_weight"``.
    """

    priority_weight: NestedKey = "priority_weight"


@dataclass
class PriorityKeys(PriorityWeightKeys):
    """The keys of a loss that also writes each sample's TD error, its new priority.

    Attributes:
        priority_weight: as :class:`PriorityWeightKeys`.
        priority: where the TD error is written. Default ``"td_error"``.
    """

    priority: NestedKey = "td_error"


class LossOptions(CheckOptions, total=False):
    """The keyword arguments every loss of the package takes; defaults in :data:`OPTION_DEFAULTS`.

    A loss's ``**options`` unpack this (or :class:`CriticLossOptions`) and its docstring
    documents each of them.

    Attributes:
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch. Default ``"mean"``.
        action_spec / check_finite: the input checks (:class:`~torchrl_svg._validation.CheckOptions`).
    """

    reduction: str


class CriticLossOptions(LossOptions, total=False):
    """:class:`LossOptions` and the distance of a loss that regresses a critic.

    Attributes:
        loss_function: ``"l2"`` (default), ``"smooth_l1"`` or ``"l1"``.
    """

    loss_function: str


#: The defaults of the keywords in :class:`LossOptions` and :class:`CriticLossOptions`.
OPTION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"reduction": "mean", **CHECK_DEFAULTS, "loss_function": "l2"}
)


def _detached_params(network: str) -> property:
    """The property ``_cached_detached_<name>_params``: ``<network>_params``, detached.

    Cached per call, as :class:`~torchrl.objectives.SACLoss` caches its own (TorchRL's
    ``_cache_values`` keys the cache by the function's name); ``None`` where the loss
    has no such network (the termination model is optional).
    """

    def params(self) -> TensorDictBase | None:
        if getattr(self, network, None) is None:
            return None
        return getattr(self, f"{network}_params").detach()

    params.__name__ = f"_cached_detached_{network.split('_')[0]}_params"
    return property(_cache_values(params))


def detached(ls: LocationScale) -> LocationScale:
    """``ls`` with every tensor detached: the noise it infers carries no gradient."""
    return LocationScale(
        ls.loc.detach(),
        ls.scale.detach(),
        None if ls.low is None else ls.low.detach(),
        None if ls.high is None else ls.high.detach(),
    )


class LossBase(OwnKeysAndParameters, InputValidation, LossModule):
    """The shared base of the package's actor-critic losses.

    It holds what TorchRL's own losses each write again: the options every loss takes
    (:class:`LossOptions` or :class:`CriticLossOptions`, checked and defaulted here, and,
    where it applies, ``noise``), ``default_keys`` (a subclass's own ``_AcceptedKeys``),
    the constructor checks of the policy and the world models, the discount set the TorchRL
    way (``make_value_estimator(gamma=...)``, TD(0) only, kept as a Python float), the
    detached parameters the actor term calls the critics and models with (cached per
    call, as :class:`~torchrl.objectives.SACLoss` does), the vmapped Q networks, the
    real termination flags, and (from its mixins) the input check of ``forward``,
    ``in_keys``, ``out_keys`` and ``parameter_groups()``.
    """

    # What a loss registers with ``convert_to_functional`` (each has some of these
    # networks), their parameters and the target copies.
    actor_network: ProbabilisticTensorDictSequential
    qvalue_network: TensorDictModule
    value_network: TensorDictModule
    dynamics_model: TensorDictModuleBase
    reward_model: TensorDictModuleBase
    termination_model: TensorDictModuleBase | None
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    value_network_params: TensorDictParams
    dynamics_model_params: TensorDictParams
    reward_model_params: TensorDictParams
    termination_model_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    target_value_network_params: TensorDictParams
    target_dynamics_model_params: TensorDictParams
    target_reward_model_params: TensorDictParams
    target_termination_model_params: TensorDictParams

    default_value_estimator = ValueEstimators.TD0
    # appended to the refusal of a value estimator other than TD(0)
    _td0_hint: str = ""
    # the keyword options a subclass's ``**options`` unpack (its annotation says the same)
    _options_type: ClassVar[type] = LossOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a loss TorchRL's ``default_keys``: its own ``_AcceptedKeys``."""
        super().__init_subclass__(**kwargs)
        if "_AcceptedKeys" in cls.__dict__ and "default_keys" not in cls.__dict__:
            cls.default_keys = cls._AcceptedKeys

    def __init__(self, options: CriticLossOptions, *, noise: str | None = None) -> None:
        """Check and store the options the losses share (``noise``: where the loss takes it).

        Args:
            options: the subclass's ``**options``, as given (defaults are filled in here).
            noise: the subclass's ``noise`` keyword, ``None`` where it takes none.

        Raises:
            TypeError: a keyword the loss does not take (not in its ``_options_type``).
        """
        accepted = self._options_type.__annotations__  # a TypedDict's own and inherited keys
        defaults = {name: OPTION_DEFAULTS[name] for name in accepted}
        options = keyword_options(type(self).__name__, options, defaults)
        check_reduction(options["reduction"])
        if noise is not None:
            check_noise(noise)
        super().__init__()
        self.reduction = options["reduction"]
        self.check_finite = options["check_finite"]
        if noise is not None:
            self.noise = noise
        if "loss_function" in options:
            self.loss_function = options["loss_function"]

    def _check_networks(
        self,
        actor_network: nn.Module,
        models: dict[str, nn.Module | None],
        action_spec: TensorSpec | None,
    ) -> None:
        """Refuse a policy that is not location-scale and sizes or bounds that disagree.

        Sets :attr:`action_dim` and :attr:`observation_dim` (``None`` when nothing
        states them) and the actor's TanhNormal bounds, which the checks of stored
        pre-tanh values use.

        Args:
            actor_network: the policy.
            models: the world models by argument name (``None`` entries are skipped); a
                ``"dynamics_model"`` must provide ``get_dist``.
            action_spec: the environment's action spec, or ``None``.

        Raises:
            TypeError: a policy that is not location-scale, or a dynamics model without
                ``get_dist``.
            ValueError: TanhNormal bounds or action/observation sizes that disagree with
                ``action_spec`` or the models (naming both sides).

        """
        owner = type(self).__name__
        if "dynamics_model" in models:
            require_get_dist(owner, "dynamics_model", models["dynamics_model"])
        sizes = check_policy(
            owner, actor_network, action_spec=action_spec, action_key=self.tensor_keys.action
        )
        self.action_dim, self.observation_dim = check_sizes(sizes, models, actor=actor_network)
        self._tanh_bounds = tanh_bounds(actor_network)

    # ------------------------------------------------------------ discount
    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams):
        """Set the discount ``gamma`` (only :attr:`ValueEstimators.TD0` is supported).

        The discount is kept as a Python float (exact in any dtype, a constant under
        compile).
        """
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:  # an estimator instance or class was given
            self.__dict__.pop("gamma", None)
            return self
        if value_type != ValueEstimators.TD0:
            raise NotImplementedError(
                f"{type(self).__name__} supports ValueEstimators.TD0 only{self._td0_hint}; "
                f"got {value_type}."
            )
        self._value_estimator = TD0Estimator(value_network=None, **hp)
        self._forward_value_estimator_keys()
        self.gamma = float(hp["gamma"])
        return self

    @property
    def _gamma(self) -> float:
        gamma = self.__dict__.get("gamma")
        if gamma is None:
            gamma = float(self.value_estimator.gamma)
            self.__dict__["gamma"] = gamma
        return gamma

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    # --------------------------------------------------- detached parameters
    # what the actor term calls the critics and the models with: no gradient reaches them
    _cached_detached_qvalue_params = _detached_params("qvalue_network")
    _cached_detached_value_params = _detached_params("value_network")
    _cached_detached_dynamics_params = _detached_params("dynamics_model")
    _cached_detached_reward_params = _detached_params("reward_model")
    _cached_detached_termination_params = _detached_params("termination_model")

    # ------------------------------------------------------------ critics
    def _make_vmap(self) -> None:
        self._vmap_qnetworkN0 = _vmap_func(
            self.qvalue_network,
            (None, 0),
            randomness=self.vmap_randomness,
            pseudo_vmap=getattr(self, "deactivate_vmap", False),
        )

    def _qvalues(
        self, tensordict: TensorDictBase, action: Tensor, params: TensorDictBase
    ) -> Tensor:
        """All Q networks at ``(s, action)``: ``[N_q, *B]``."""
        td = tensordict.select(*self.qvalue_network.in_keys, strict=False)
        td.set(self.tensor_keys.action, action)
        out = self._vmap_qnetworkN0(td, params)
        return out.get(self.tensor_keys.state_action_value).squeeze(-1)

    def _state_value(self, observation: Tensor, params: TensorDictBase) -> Tensor:
        """``V(observation)`` computed with ``params``: ``[*B]``."""
        keys = self.tensor_keys
        return state_value(self.value_network, params, observation, keys.observation, keys.value)

    # ------------------------------------------------------------- inputs
    def _terminated(self, tensordict: TensorDictBase) -> Tensor:
        """Real termination flags ``[*B]`` as floats (a batch without them is refused)."""
        keys = self.tensor_keys
        terminated = terminated_flags(type(self).__name__, tensordict, ("next", keys.terminated))
        return terminated.squeeze(-1).to(tensordict.get(keys.observation).dtype)

    def _size_names(self) -> tuple[int | str, int | str]:
        """The observation and action sizes the inputs are checked against (names if unknown)."""
        obs = self.observation_dim if self.observation_dim is not None else "obs_dim"
        act = self.action_dim if self.action_dim is not None else "action_dim"
        return obs, act
