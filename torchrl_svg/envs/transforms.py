"""Environment transforms of the training recipe."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs import Transform

__all__ = ["EndOnNonFinite"]


class EndOnNonFinite(Transform):
    """End (truncate) an episode whose new observation or reward is NaN or infinite.

    A simulator that returns a non-finite observation is in a state that cannot
    be trusted: fed back to the policy it turns into non-finite actions and
    poisons every later step. This transform marks such a step ``truncated``
    (and ``done``), so the collector resets that episode. The bad transition
    itself still carries its non-finite values, for the trainer to drop and
    report before it reaches the replay buffer.

    Keyword Args:
        keys: entries checked (under ``"next"`` after a step). Default:
            ``"observation"`` and ``"reward"``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> t = EndOnNonFinite()
        >>> nxt = TensorDict({"observation": torch.tensor([[0.0], [float("nan")]]),
        ...                   "reward": torch.zeros(2, 1), "done": torch.zeros(2, 1, dtype=torch.bool),
        ...                   "truncated": torch.zeros(2, 1, dtype=torch.bool)}, [2])
        >>> t._step(TensorDict({}, [2]), nxt)["truncated"].squeeze(-1).tolist()
        [False, True]
    """

    def __init__(self, keys: tuple[NestedKey, ...] = ("observation", "reward")):
        super().__init__(in_keys=list(keys), out_keys=["truncated", "done"])
        self.keys = tuple(keys)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        batch = next_tensordict.batch_size
        bad = torch.zeros(batch, dtype=torch.bool, device=next_tensordict.device)
        for key in self.keys:
            value = next_tensordict.get(key, None)
            if value is not None:
                bad |= ~torch.isfinite(value.reshape(*batch, -1)).all(-1)
        for flag in ("truncated", "done"):
            value = next_tensordict.get(flag, None)
            if value is not None:
                next_tensordict.set(flag, value | bad.reshape(value.shape))
        return next_tensordict

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return tensordict_reset

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Not a replay-buffer transform: data passes through."""
        return tensordict
