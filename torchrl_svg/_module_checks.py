"""Constructor checks of the policy and the world models a loss or transform is built with.

They run once, when a loss or transform is made: the policy must be
location-scale (:func:`check_policy`), a TanhNormal's bounds must match the
action spec, and the sizes stated by the policy, the spec and the models must
agree (:func:`check_sizes`). The checks of each batch are in
:mod:`torchrl_svg._validation`, which re-exports these.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from tensordict.nn import ProbabilisticTensorDictModule
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.modules.distributions import IndependentNormal, TanhNormal

from torchrl_svg._utils import check_same_shape

__all__ = [
    "LOCATION_SCALE",
    "check_policy",
    "check_sizes",
    "policy_input_size",
    "require_get_dist",
    "tanh_bounds",
]

# Distribution classes whose samples are g(loc + scale * eps), i.e. invertible for eps.
LOCATION_SCALE = (D.Normal, IndependentNormal, TanhNormal)


def require_get_dist(owner: str, name: str, module: object) -> None:
    """Refuse a module without ``get_dist`` where a location-scale distribution is needed.

    Raises:
        TypeError: naming the argument and the module's type.

    """
    if not hasattr(module, "get_dist"):
        raise TypeError(
            f"{owner}: {name} must provide get_dist(tensordict) returning a location-scale "
            f"distribution; got {type(module).__name__}."
        )


def _distribution_module(actor: nn.Module) -> ProbabilisticTensorDictModule | None:
    found = None
    for module in actor.modules():
        if isinstance(module, ProbabilisticTensorDictModule):
            found = module
    return found


def _tanh_bounds(dist_module: ProbabilisticTensorDictModule) -> tuple[torch.Tensor, torch.Tensor]:
    params = inspect.signature(TanhNormal.__init__).parameters
    kwargs = dist_module.distribution_kwargs or {}
    low = kwargs.get("low", params["low"].default)
    high = kwargs.get("high", params["high"].default)
    return (
        torch.as_tensor(low, dtype=torch.float64).cpu(),
        torch.as_tensor(high, dtype=torch.float64).cpu(),
    )


def _leaf_spec(spec: TensorSpec | None, key: NestedKey) -> TensorSpec | None:
    if isinstance(spec, Composite):
        return spec.get(key, None)
    return spec


def _check_bounds(
    owner: str,
    name: str,
    dist_module: ProbabilisticTensorDictModule,
    spec: TensorSpec,
    spec_name: str,
) -> None:
    if not isinstance(spec, Bounded):
        return
    low, high = _tanh_bounds(dist_module)
    spec_low = spec.space.low.detach().to(torch.float64).cpu()
    spec_high = spec.space.high.detach().to(torch.float64).cpu()
    try:
        match = bool(
            torch.allclose(low.expand_as(spec_low), spec_low)
            and torch.allclose(high.expand_as(spec_high), spec_high)
        )
    except RuntimeError:  # shapes that do not broadcast: certainly different
        match = False
    if not match:
        raise ValueError(
            f"{owner}: the TanhNormal bounds of {name} (low={low.tolist()}, high={high.tolist()}) "
            f"do not match the {spec_name} (low={spec_low.tolist()}, high={spec_high.tolist()}); "
            "build the actor from that spec (e.g. torchrl_svg.modules.make_actor)."
        )


def policy_input_size(actor: nn.Module) -> int | None:
    """The feature size of a policy's observation, when its layout makes it certain.

    Known when the policy reads a single entry and its first parametrised layer
    is an ``nn.Linear`` (as in :func:`~torchrl_svg.modules.make_actor` and any
    MLP policy); ``None`` otherwise (then only consistency between entries is
    checked).
    """
    if len(getattr(actor, "in_keys", ())) != 1:
        return None
    for module in actor.modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        if isinstance(module, nn.Linear) and not isinstance(module, nn.LazyLinear):
            return int(module.in_features)
        return None
    return None


def check_policy(
    owner: str,
    actor: nn.Module,
    *,
    name: str = "actor_network",
    action_spec: TensorSpec | None = None,
    action_key: NestedKey = "action",
) -> list[tuple[str, int]]:
    """Refuse a policy that is not location-scale, or whose action bounds disagree with the spec.

    The policy must provide ``get_dist``; if it is a TorchRL
    ``ProbabilisticActor`` its ``distribution_class`` must be a Normal,
    IndependentNormal or TanhNormal (the losses infer the policy noise from
    replayed actions and re-parameterise through it). A TanhNormal's
    ``low``/``high`` must equal the bounds of ``action_spec`` (the
    environment's) when it is given and bounded, and otherwise those of the
    actor's own spec.

    Returns:
        ``(what, action size)`` pairs known from the actor's spec and ``action_spec``,
        for a size cross-check with the models.

    Raises:
        TypeError: the policy has no ``get_dist`` or draws from another distribution.
        ValueError: the TanhNormal bounds differ from the spec's.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import make_actor
        >>> actor = make_actor(3, Bounded(-2.0, 2.0, (1,)), hidden_sizes=(8,))
        >>> check_policy("MyLoss", actor, action_spec=Bounded(-2.0, 2.0, (1,)))
        [('actor action spec', 1), ('environment action spec', 1)]
        >>> check_policy("MyLoss", actor, action_spec=Bounded(-1.0, 1.0, (1,)))
        Traceback (most recent call last):
        ...
        ValueError: MyLoss: the TanhNormal bounds of actor_network (low=[-2.0], high=[2.0]) do not match the environment action spec (low=[-1.0], high=[1.0]); build the actor from that spec (e.g. torchrl_svg.modules.make_actor).

    """
    require_get_dist(owner, name, actor)
    actor_spec = _leaf_spec(getattr(actor, "spec", None), action_key)
    env_spec = _leaf_spec(action_spec, action_key)
    if action_spec is not None and env_spec is None:
        raise KeyError(f"{owner}: the action spec has no entry {action_key!r}.")
    sizes = []
    if actor_spec is not None and len(actor_spec.shape):
        sizes.append(("actor action spec", int(actor_spec.shape[-1])))
    if env_spec is not None and len(env_spec.shape):
        sizes.append(("environment action spec", int(env_spec.shape[-1])))
    for (name_a, a), (name_b, b) in zip(sizes[:-1], sizes[1:], strict=True):
        check_same_shape(name_a, (a,), name_b, (b,))

    dist_module = _distribution_module(actor)
    cls = getattr(dist_module, "distribution_class", None)
    if not isinstance(cls, type):  # a factory function: checked when the policy is inverted
        return sizes
    if not issubclass(cls, LOCATION_SCALE):
        raise TypeError(
            f"{owner}: {name} draws its actions from {cls.__name__}, which is not a "
            "location-scale distribution. SVG losses write a = g(loc + scale * eta), infer eta "
            "from replayed actions and differentiate through it, so the policy must be a Normal, "
            "IndependentNormal or TanhNormal."
        )
    if issubclass(cls, TanhNormal):
        if env_spec is not None:
            _check_bounds(owner, name, dist_module, env_spec, "environment action spec")
        elif actor_spec is not None:
            _check_bounds(owner, name, dist_module, actor_spec, "actor's own action spec")
    return sizes


def check_sizes(
    action_sizes: Sequence[tuple[str, int]],
    models: dict[str, nn.Module | None],
    *,
    actor: nn.Module | None = None,
) -> tuple[int | None, int | None]:
    """Cross-check the action and observation sizes of the policy, the spec and the models.

    Args:
        action_sizes: ``(what, size)`` pairs from :func:`check_policy`.
        models: the world models by argument name (``None`` entries are skipped);
            their ``action_dim`` and ``observation_dim`` attributes are compared.
        actor: the policy, whose observation size (:func:`policy_input_size`) is
            compared too when it is known.

    Returns:
        ``(action_dim, observation_dim)``, each ``None`` when nothing states it.

    Raises:
        ValueError: naming both sides of the first disagreement.

    """
    sizes = list(action_sizes)
    obs_sizes = []
    actor_obs = None if actor is None else policy_input_size(actor)
    if actor_obs is not None:
        obs_sizes.append(("actor observation", actor_obs))
    for name, model in models.items():
        dim = getattr(model, "action_dim", None)
        if dim is not None:
            sizes.append((f"{name} action", int(dim)))
        dim = getattr(model, "observation_dim", None)
        if dim is not None:
            obs_sizes.append((f"{name} observation", int(dim)))
    for pairs in (sizes, obs_sizes):
        for (name_a, a), (name_b, b) in zip(pairs[:-1], pairs[1:], strict=True):
            check_same_shape(name_a, (a,), name_b, (b,))
    return (sizes[0][1] if sizes else None, obs_sizes[0][1] if obs_sizes else None)


def tanh_bounds(actor: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(low, high)`` of a TanhNormal policy's squashing (float64, CPU); ``None`` for other policies."""
    dist_module = _distribution_module(actor)
    cls = getattr(dist_module, "distribution_class", None)
    if not (isinstance(cls, type) and issubclass(cls, TanhNormal)):
        return None
    return _tanh_bounds(dist_module)
