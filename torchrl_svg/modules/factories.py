"""Factories for TorchRL actors and critics built from an environment's specs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import InteractionType, TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs import EnvBase
from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal, ValueOperator

from torchrl_svg.modules.actor import PRE_TANH_KEY, TanhNormalActor

__all__ = [
    "env_specs",
    "make_actor",
    "make_qvalue",
    "make_value",
]


def env_specs(
    env: EnvBase, observation_key: NestedKey = "observation"
) -> tuple[TensorSpec, TensorSpec]:
    """The observation and action leaf specs of an environment, checked to be flat vectors.

    Returns:
        ``(observation_spec, action_spec)`` with shapes ``[obs_dim]`` and ``[action_dim]``.

    Examples:
        >>> from torchrl.envs import GymEnv
        >>> obs_spec, act_spec = env_specs(GymEnv("Pendulum-v1"))
        >>> obs_spec.shape, act_spec.shape
        (torch.Size([3]), torch.Size([1]))

    """
    obs_spec = env.observation_spec.get(observation_key, None)
    if obs_spec is None:
        raise KeyError(
            f"The environment has no observation entry {observation_key!r}; its observation spec "
            f"has {list(env.observation_spec.keys(True, True))}."
        )
    action_spec = env.action_spec
    if isinstance(action_spec, Composite):
        action_spec = env.full_action_spec[env.action_key]
    batch = env.batch_size
    obs_spec = obs_spec[(0,) * len(batch)] if len(batch) else obs_spec
    action_spec = action_spec[(0,) * len(batch)] if len(batch) else action_spec
    for name, spec in (("observation", obs_spec), ("action", action_spec)):
        if len(spec.shape) != 1:
            raise ValueError(
                f"Only flat vector {name}s are supported: the environment's {name} spec has "
                f"shape {tuple(spec.shape)}."
            )
    return obs_spec, action_spec


def _dim(spec_or_dim: TensorSpec | int, what: str) -> int:
    if isinstance(spec_or_dim, int):
        return spec_or_dim
    if len(spec_or_dim.shape) != 1:
        raise ValueError(
            f"{what} spec must be a flat vector, got shape {tuple(spec_or_dim.shape)}."
        )
    return int(spec_or_dim.shape[-1])


def make_actor(
    observation_spec: TensorSpec | int,
    action_spec: TensorSpec,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation_class: type[nn.Module] = nn.ReLU,
    scale_lb: float = 1e-4,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
    return_log_prob: bool = True,
    pre_tanh_key: NestedKey | None = PRE_TANH_KEY,
    safe_tanh: bool = True,
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    r"""A TanhNormal :class:`~torchrl.modules.ProbabilisticActor` within the action bounds.

    :math:`a = g(\mu_\theta(s) + \sigma_\theta(s)\,\eta)` with
    :math:`g = ` tanh followed by the affine map onto ``[low, high]`` of the
    action spec: the location-scale policy every SVG loss can invert for
    :math:`\eta`. With ``return_log_prob=True`` the collector stores the
    behaviour log-probability (``"action_log_prob"``) that the importance
    weights of SVG(1)-ER need, and the pre-tanh value of each action
    (``"action_pre_tanh"``, see :class:`~torchrl_svg.modules.TanhNormalActor`)
    from which the losses re-score it exactly even where tanh saturates.

    Args:
        observation_spec: the observation spec (``[obs_dim]``) or its size.
        action_spec: a bounded action spec (``[action_dim]``).

    Keyword Args:
        hidden_sizes: hidden layer widths.
        activation_class: hidden activation.
        scale_lb: lower bound of the Normal scale.
        observation_key: the observation entry read.
        action_key: the action entry written.
        return_log_prob: write the log-probability of sampled actions.
        pre_tanh_key: where to write the pre-tanh value of each action (``None``: a
            plain :class:`~torchrl.modules.ProbabilisticActor` that does not store it).
        safe_tanh: TorchRL's overflow-safe tanh (turn off under ``torch.compile``).
        device: where to create the parameters.

    Examples:
        >>> from torchrl.envs import GymEnv
        >>> env = GymEnv("Pendulum-v1")
        >>> actor = make_actor(*env_specs(env), hidden_sizes=(64, 64))
        >>> td = actor(env.reset())
        >>> td["action"].shape, bool(td["action"].abs().max() <= 2.0)
        (torch.Size([1]), True)

    """
    if not isinstance(action_spec, Bounded):
        raise ValueError(
            "make_actor needs a bounded action spec (the policy is a TanhNormal within "
            f"[low, high]); got {type(action_spec).__name__}."
        )
    low, high = action_spec.space.low, action_spec.space.high
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
        raise ValueError(
            f"make_actor needs finite action bounds with high > low; got low={low.tolist()}, "
            f"high={high.tolist()}."
        )
    obs_dim = _dim(observation_spec, "observation")
    action_dim = _dim(action_spec, "action")
    net = nn.Sequential(
        MLP(
            in_features=obs_dim,
            out_features=2 * action_dim,
            num_cells=list(hidden_sizes),
            activation_class=activation_class,
            device=device,
        ),
        NormalParamExtractor(scale_mapping="biased_softplus_1.0", scale_lb=scale_lb),
    )
    module = TensorDictModule(net, in_keys=[observation_key], out_keys=["loc", "scale"])
    extra = {} if pre_tanh_key is None else {"pre_tanh_key": pre_tanh_key}
    actor_class = ProbabilisticActor if pre_tanh_key is None else TanhNormalActor
    return actor_class(
        module,
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        spec=action_spec.to(device) if device is not None else action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": low.to(device) if device is not None else low,
            "high": high.to(device) if device is not None else high,
            "tanh_loc": False,
            "safe_tanh": safe_tanh,
        },
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=return_log_prob,
        **extra,
    )


def _mlp_critic(
    in_features: int,
    in_keys: list[NestedKey],
    out_key: str,
    hidden_sizes: Sequence[int],
    activation_class: type[nn.Module],
    device: torch.device | str | None,
    layer_norm: bool = False,
) -> ValueOperator:
    """An MLP of the concatenated ``in_keys`` (``in_features`` in all) writing ``out_key`` ``[*B, 1]``.

    ``layer_norm``: a ``LayerNorm`` after each hidden layer's affine map, before its activation.
    """
    norm = {}
    if layer_norm:
        norm = {
            "norm_class": nn.LayerNorm,
            "norm_kwargs": [{"normalized_shape": n} for n in hidden_sizes],
        }
    net = MLP(
        in_features=in_features,
        out_features=1,
        num_cells=list(hidden_sizes),
        activation_class=activation_class,
        device=device,
        **norm,
    )
    return ValueOperator(net, in_keys=in_keys, out_keys=[out_key])


def make_qvalue(
    observation_spec: TensorSpec | int,
    action_spec: TensorSpec | int,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation_class: type[nn.Module] = nn.ReLU,
    observation_key: NestedKey = "observation",
    action_key: NestedKey = "action",
    device: torch.device | str | None = None,
    layer_norm: bool = False,
) -> ValueOperator:
    """A Q critic ``Q(s, a)`` writing ``"state_action_value"`` (``[*B, 1]``).

    ``layer_norm=True`` puts a ``LayerNorm`` after each hidden layer's affine map (before its
    activation), as critics trained with many updates per environment step often use.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> q = make_qvalue(3, 1, hidden_sizes=(32,))
        >>> q(TensorDict({"observation": torch.randn(5, 3), "action": torch.randn(5, 1)}, [5]))[
        ...     "state_action_value"].shape
        torch.Size([5, 1])

    """
    in_features = _dim(observation_spec, "observation") + _dim(action_spec, "action")
    in_keys = [observation_key, action_key]
    return _mlp_critic(
        in_features,
        in_keys,
        "state_action_value",
        hidden_sizes,
        activation_class,
        device,
        layer_norm,
    )


def make_value(
    observation_spec: TensorSpec | int,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation_class: type[nn.Module] = nn.ReLU,
    observation_key: NestedKey = "observation",
    device: torch.device | str | None = None,
    layer_norm: bool = False,
) -> ValueOperator:
    """A state-value critic ``V(s)`` writing ``"state_value"`` (``[*B, 1]``).

    ``layer_norm``: as in :func:`make_qvalue`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> v = make_value(3, hidden_sizes=(32,))
        >>> v(TensorDict({"observation": torch.randn(5, 3)}, [5]))["state_value"].shape
        torch.Size([5, 1])

    """
    in_features = _dim(observation_spec, "observation")
    return _mlp_critic(
        in_features,
        [observation_key],
        "state_value",
        hidden_sizes,
        activation_class,
        device,
        layer_norm,
    )
