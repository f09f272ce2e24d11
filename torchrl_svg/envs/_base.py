"""Shared machinery of the reference environments: a batch of episodes with a flat vector state."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase
from torchrl.modules.distributions import IndependentNormal

DEVICE = torch.device | str | int | None


def known_dynamics_model(
    transition: nn.Module,
    in_keys: list[NestedKey],
    loc_key: NestedKey,
    scale_key: NestedKey,
    next_observation_key: NestedKey,
) -> ProbabilisticTensorDictSequential:
    """A known transition ``(s, a) -> (loc, scale)`` in the location-scale model contract.

    ``get_dist(td)`` is ``Independent(Normal(loc, scale), 1)`` over
    ``next_observation_key``; ``forward`` writes a sample
    (``InteractionType.RANDOM``) or the mean under a deterministic exploration type.
    """
    module = TensorDictModule(transition, in_keys=in_keys, out_keys=[loc_key, scale_key])
    distribution = ProbabilisticTensorDictModule(
        in_keys={"loc": loc_key, "scale": scale_key},
        out_keys=[next_observation_key],
        distribution_class=IndependentNormal,
        default_interaction_type=InteractionType.RANDOM,
    )
    return ProbabilisticTensorDictSequential(module, distribution)


def done_spec(batch: torch.Size, device: DEVICE) -> Composite:
    """The boolean ``done``, ``terminated`` and ``truncated`` flags of an env, each ``[*batch, 1]``."""
    flag = {"n": 2, "shape": (*batch, 1), "dtype": torch.bool, "device": device}
    return Composite(
        done=Categorical(**flag),
        terminated=Categorical(**flag),
        truncated=Categorical(**flag),
        shape=batch,
        device=device,
    )


class _FlatStateEnv(EnvBase):
    """Shared machinery of the reference envs: a batch of episodes with a flat vector state.

    The state is held by the env (one row per episode) and equals the
    observation; subclasses provide ``_initial_state()`` and
    ``_transition(state, action) -> (next_state, reward)``. Episodes are
    truncated after ``max_steps`` steps; nothing terminates. Partial resets
    (a ``"_reset"`` mask) re-draw only the masked episodes. All randomness comes
    from the env's own ``torch.Generator`` (see :meth:`set_seed`).
    """

    def __init__(
        self,
        *,
        observation_dim: int,
        action_low: Tensor,
        action_high: Tensor,
        max_steps: int,
        dtype: torch.dtype,
        batch_size: Sequence[int] | torch.Size,
        device: DEVICE,
        seed: int | None,
    ):
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"{type(self).__name__}: dtype must be a floating dtype, got {dtype}.")
        super().__init__(device=device, batch_size=torch.Size(batch_size))
        self.dtype = dtype
        self.max_steps = int(max_steps)
        self.register_buffer("_state", None, persistent=False)
        self.register_buffer("_count", None, persistent=False)
        batch = self.batch_size
        kw = {"device": self.device}
        self.observation_spec = Composite(
            observation=Unbounded(shape=(*batch, observation_dim), dtype=dtype, **kw), shape=batch
        )
        action_dim = action_low.shape[-1]
        self.action_spec = Bounded(
            low=action_low.to(dtype).expand(*batch, action_dim),
            high=action_high.to(dtype).expand(*batch, action_dim),
            shape=(*batch, action_dim),
            dtype=dtype,
            **kw,
        )
        self.reward_spec = Unbounded(shape=(*batch, 1), dtype=dtype, **kw)
        self.full_done_spec = done_spec(batch, self.device)
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        self.set_seed(seed)

    @property
    def _device_or_cpu(self) -> torch.device:
        return self.device if self.device is not None else torch.device("cpu")

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        rng = torch.Generator(device=self._device_or_cpu)
        rng.manual_seed(int(seed))
        self._rng = rng

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(
            *self.batch_size,
            *shape,
            generator=self._rng,
            device=self._device_or_cpu,
            dtype=self.dtype,
        )

    def _initial_state(self) -> Tensor:
        raise NotImplementedError

    def _transition(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _output(self, state: Tensor, count: Tensor, reward: Tensor | None = None) -> TensorDict:
        truncated = (count >= self.max_steps).unsqueeze(-1)
        out = {
            "observation": state.clone(),
            "done": truncated.clone(),
            "terminated": torch.zeros_like(truncated),
            "truncated": truncated,
        }
        if reward is not None:
            out["reward"] = reward
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        fresh = self._initial_state()
        zeros = torch.zeros(self.batch_size, dtype=torch.int64, device=self._device_or_cpu)
        if mask is None or self._state is None:
            self._state, self._count = fresh, zeros
        else:
            mask = mask.reshape(self.batch_size).to(self._device_or_cpu)
            self._state = torch.where(mask.unsqueeze(-1), fresh, self._state)
            self._count = torch.where(mask, zeros, self._count)
        return self._output(self._state, self._count)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}.step() was called before reset().")
        action = tensordict.get("action")
        expected = (*self.batch_size, self.action_spec.shape[-1])
        if tuple(action.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: entry 'action' has shape {tuple(action.shape)}, "
                f"expected {expected} ([*batch_size, action_dim])."
            )
        next_state, reward = self._transition(self._state, action.to(self.dtype))
        self._state, self._count = next_state, self._count + 1
        return self._output(self._state, self._count, reward)

    def to(self, device: DEVICE) -> _FlatStateEnv:
        """Move the env (specs, state and generator) to ``device``."""
        out = super().to(device)
        if self._rng.device != self._device_or_cpu:
            seed = int(torch.randint(2**62, (), generator=self._rng, device=self._rng.device))
            self._set_seed(seed)
        return out
