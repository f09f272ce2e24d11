"""The pieces of :class:`~torchrl_svg.envs.WorldModelEnv` below the environment itself.

The imagined transition it steps with (:class:`_ImaginedTransition`) and the
checks of the models and specs it is built from.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.data import Composite, TensorSpec
from torchrl.envs.utils import exploration_type

from torchrl_svg._utils import check_same_shape
from torchrl_svg.modules.bounds import BoundedObservations
from torchrl_svg.objectives.functional import expected_reward


def _model_device(*models: torch.nn.Module | None) -> torch.device | None:
    """The device of the first parameter or buffer of the models (``None`` if they have none)."""
    for model in models:
        if model is None:
            continue
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return None


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def _leaf_spec(spec: TensorSpec, name: str) -> TensorSpec:
    """A flat ``[D]`` leaf spec (a Composite or a batched spec is an error)."""
    if isinstance(spec, Composite) or len(spec.shape) != 1:
        raise ValueError(
            f"WorldModelEnv: {name} must be a flat vector leaf spec of shape [{name}_dim]; "
            f"got {type(spec).__name__} with shape {tuple(spec.shape)} "
            "(use WorldModelEnv.from_env to read the specs of a real environment)."
        )
    return spec


class _ImaginedTransition(BoundedObservations, TensorDictModuleBase):
    """One imagined transition of the models: ``(s, a) -> (s', r, terminated)`` under ``("next", ...)``.

    The ``world_model`` of :class:`~torchrl_svg.envs.WorldModelEnv` (see its docstring for the
    sampling rules). It holds the models as sub-modules and never changes them.
    """

    def __init__(
        self,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        termination_model: TensorDictModuleBase | None,
        *,
        observation_key: NestedKey,
        action_key: NestedKey,
        default_interaction_type: InteractionType,
        sample_reward: bool,
        sample_termination: bool,
        observation_bounds: tuple[Tensor, Tensor] | tuple[None, None] = (None, None),
    ):
        super().__init__()
        self.dynamics_model = dynamics_model
        self.reward_model = reward_model
        self.termination_model = termination_model
        self.observation_key = observation_key
        self.action_key = action_key
        self.default_interaction_type = default_interaction_type
        self.sample_reward = bool(sample_reward)
        self.sample_termination = bool(sample_termination)
        self._register_observation_bounds(observation_bounds)
        self.in_keys = [observation_key, action_key]
        self.out_keys = [("next", observation_key), ("next", "reward"), ("next", "terminated")]

    def _random(self) -> bool:
        mode = exploration_type()
        if mode is None:
            mode = self.default_interaction_type
        return mode == InteractionType.RANDOM

    def _reward(self, tensordict: TensorDictBase, random: bool) -> Tensor:
        sample = random and self.sample_reward
        return expected_reward(self.reward_model, None, tensordict, sample=sample).unsqueeze(-1)

    def _terminated(self, tensordict: TensorDictBase, next_obs: Tensor, random: bool) -> Tensor:
        batch = next_obs.shape[:-1]
        if self.termination_model is None:
            return torch.zeros(*batch, 1, dtype=torch.bool, device=next_obs.device)
        prob = self.termination_model.probability(tensordict).reshape(*batch, 1)
        if random and self.sample_termination:
            return torch.bernoulli(prob).bool()
        return prob > 0.5

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``("next", observation)``, ``("next", "reward")`` and ``("next", "terminated")``."""
        random = self._random()
        step = tensordict.exclude("next")
        dist = self.dynamics_model.get_dist(step.copy())
        next_obs = dist.rsample() if random else dist.mean
        next_obs = self._bounded(next_obs)
        step.set(("next", self.observation_key), next_obs)
        reward = self._reward(step, random)
        terminated = self._terminated(step, next_obs, random)
        tensordict.set(("next", self.observation_key), next_obs)
        tensordict.set(("next", "reward"), reward)
        tensordict.set(("next", "terminated"), terminated)
        return tensordict


def _check_models(dynamics_model, reward_model, termination_model) -> None:
    """Refuse models without the interface an imagined step calls."""
    if not hasattr(dynamics_model, "get_dist"):
        raise TypeError(
            "WorldModelEnv: the dynamics model must provide get_dist(tensordict) (a "
            "location-scale distribution over the next observation); got "
            f"{type(dynamics_model).__name__}."
        )
    if not (hasattr(reward_model, "get_dist") or getattr(reward_model, "out_keys", None)):
        raise TypeError(
            "WorldModelEnv: the reward model must provide get_dist(tensordict) or be a "
            f"TensorDict module with out_keys; got {type(reward_model).__name__}."
        )
    if termination_model is not None and not hasattr(termination_model, "probability"):
        raise TypeError(
            "WorldModelEnv: the termination model must provide probability(tensordict) "
            f"(a torchrl_svg.modules.Termination); got {type(termination_model).__name__}."
        )


def _check_dims(dynamics_model, reward_model, termination_model, obs_dim, action_dim) -> None:
    """Refuse models whose stated observation or action size differs from the specs'."""
    models = (
        ("dynamics_model", dynamics_model),
        ("reward_model", reward_model),
        ("termination_model", termination_model),
    )
    for name, model in models:
        if model is None:
            continue
        dim = getattr(model, "observation_dim", None)
        if dim is not None:
            check_same_shape(
                "the env's observation_spec",
                (obs_dim,),
                f"{name}.observation_dim",
                (int(dim),),
            )
        dim = getattr(model, "action_dim", None)
        if dim is not None:
            check_same_shape(
                "the env's action_spec", (action_dim,), f"{name}.action_dim", (int(dim),)
            )


def _check_device(device: torch.device, *models) -> None:
    """Refuse models that live on another device than the env."""
    names = ("dynamics_model", "reward_model", "termination_model")
    for name, model in zip(names, models, strict=True):
        model_device = _model_device(model)
        if model_device is not None and not _same_device(model_device, device):
            raise ValueError(
                f"WorldModelEnv: {name} is on {model_device} but the env device is {device}. "
                "Move the models first (the env does not move models it shares with their "
                "training loss)."
            )
