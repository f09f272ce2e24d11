"""Real sub-trajectories from a replay buffer: TorchRL's SliceSampler reshaped to ``[B, T]``."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler
from torchrl.envs import Transform

from torchrl_svg._validation import check_batch

__all__ = ["UnflattenSlices", "slice_replay_buffer"]


class UnflattenSlices(Transform):
    """Reshape a flat ``[B * T]`` slice sample (TorchRL's :class:`~torchrl.data.SliceSampler`) to ``[B, T]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> UnflattenSlices(4)(TensorDict({"x": torch.arange(8)}, [8]))["x"]
        tensor([[0, 1, 2, 3],
                [4, 5, 6, 7]])
    """

    def __init__(self, slice_len: int):
        super().__init__()
        if int(slice_len) != slice_len or slice_len < 1:
            raise ValueError(f"slice_len must be an integer >= 1, got {slice_len!r}.")
        self.slice_len = int(slice_len)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``[B * T] -> [B, T]``.

        Raises:
            ValueError: for an empty sample, or one that is not a whole number of slices.
        """
        check_batch(type(self).__name__, tensordict)
        if tensordict.numel() % self.slice_len:
            raise ValueError(
                f"UnflattenSlices: a sample of batch shape {tuple(tensordict.shape)} "
                f"({tensordict.numel()} transition(s)) is not a whole number of slices of "
                f"length {self.slice_len}."
            )
        return tensordict.reshape(-1, self.slice_len)

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict


def slice_replay_buffer(
    size: int,
    slice_len: int,
    num_slices: int | None = None,
    *,
    device: torch.device | str = "cpu",
    traj_key: NestedKey = ("collector", "traj_ids"),
    transforms: list[Transform] | None = None,
) -> ReplayBuffer:
    """A replay buffer that samples ``num_slices`` real sub-trajectories of ``slice_len`` steps.

    Uses TorchRL's :class:`~torchrl.data.SliceSampler` (slices never cross
    trajectory boundaries; ``strict_length``) and returns samples of shape
    ``[num_slices, slice_len]``, the input of ``SVGLoss(horizon=slice_len)``.
    Without ``num_slices``, pass the number of transitions (a multiple of
    ``slice_len``) to ``sample``.
    Extra ``transforms`` run before the reshape on the flat sample. (A plain
    :class:`~torchrl.data.ReplayBuffer`: a ``TensorDictReplayBuffer`` writes
    per-sample metadata after the transforms, which a reshape would break.)

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> rb = slice_replay_buffer(1000, slice_len=3, num_slices=4)
        >>> traj = torch.arange(2).repeat_interleave(50)
        >>> _ = rb.extend(TensorDict({"x": torch.arange(100), ("collector", "traj_ids"): traj}, [100]))
        >>> sample = rb.sample()
        >>> sample.shape, bool((sample["x"][:, 1:] - sample["x"][:, :-1] == 1).all())
        (torch.Size([4, 3]), True)
    """
    from torchrl.envs import Compose

    sampler = SliceSampler(slice_len=slice_len, traj_key=traj_key, strict_length=True)
    return ReplayBuffer(
        storage=LazyTensorStorage(size, device=device),
        sampler=sampler,
        batch_size=None if num_slices is None else slice_len * num_slices,
        transform=Compose(*(transforms or []), UnflattenSlices(slice_len)),
    )
