"""The plumbing every LossModule of the package shares: discount, detached parameters, checks."""

from __future__ import annotations

from tensordict import TensorDictBase
from torch import Tensor
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, _cache_values, _vmap_func
from torchrl.objectives.value import TD0Estimator

from torchrl_svg._validation import terminated_flags
from torchrl_svg.objectives._common import InputValidation
from torchrl_svg.objectives._groups import OwnKeysAndParameters
from torchrl_svg.objectives.noise import LocationScale

__all__ = [
    "NOISE_MODES",
    "LossBase",
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

    It holds what TorchRL's own losses each write again: the discount set the TorchRL
    way (``make_value_estimator(gamma=...)``, TD(0) only, kept as a Python float), the
    detached parameters the actor term calls the critics and models with (cached per
    call, as :class:`~torchrl.objectives.SACLoss` does), the vmapped Q networks, the
    real termination flags, and (from its mixins) the input check of ``forward``,
    ``in_keys``, ``out_keys`` and ``parameter_groups()``.
    """

    default_value_estimator = ValueEstimators.TD0
    # appended to the refusal of a value estimator other than TD(0)
    _td0_hint: str = ""

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
    @property
    @_cache_values
    def _cached_detached_qvalue_params(self) -> TensorDictBase:
        return self.qvalue_network_params.detach()

    @property
    @_cache_values
    def _cached_detached_value_params(self) -> TensorDictBase:
        return self.value_network_params.detach()

    @property
    @_cache_values
    def _cached_detached_dynamics_params(self) -> TensorDictBase:
        return self.dynamics_model_params.detach()

    @property
    @_cache_values
    def _cached_detached_reward_params(self) -> TensorDictBase:
        return self.reward_model_params.detach()

    @property
    @_cache_values
    def _cached_detached_termination_params(self) -> TensorDictBase | None:
        if self.termination_model is None:
            return None
        return self.termination_model_params.detach()

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
