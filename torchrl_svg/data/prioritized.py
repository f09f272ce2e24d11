"""Prioritized replay without TorchRL's compiled extension.

TorchRL's :class:`~torchrl.data.PrioritizedSampler` keeps its priorities in
segment trees from ``torchrl._torchrl``, a compiled extension that does not
load when the installed torch is not the build TorchRL was compiled against
(``SumSegmentTreeFp32 is not available``). :class:`TensorPrioritizedSampler`
is that sampler with the two trees held as plain tensors: the same
proportional sampling, the same importance weights
``(p_i / min p) ** -beta`` written as ``"priority_weight"`` (which every loss
of this package reads) and the same ``td_error`` priority updates, on CPU or
on the storage's device. Sampling costs one prefix sum over the filled part of
the buffer (O(N) instead of O(log N) per draw).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torchrl.data import LazyTensorStorage, PrioritizedSampler, TensorDictReplayBuffer

__all__ = ["TensorPrioritizedSampler", "prioritized_replay_buffer"]


class _TensorSegmentTree:
    """The interface of TorchRL's ``Sum/MinSegmentTree`` over a flat tensor.

    ``query(left, right)`` reduces ``[left, right)``; never-written entries hold
    the reduction's neutral value (0 for a sum, +inf for a min).
    """

    def __init__(self, capacity: int, dtype: torch.dtype, device: torch.device | None, op: str):
        self.op = op
        neutral = 0.0 if op == "sum" else float("inf")
        self.values = torch.full((capacity,), neutral, dtype=dtype, device=device)
        self.filled = 0  # one past the highest index written

    @property
    def device(self) -> torch.device:
        return self.values.device

    def __len__(self) -> int:
        return self.values.numel()

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int):
            return float(self.values[index])
        return self.values[torch.as_tensor(index, device=self.device)]

    def __setitem__(self, index: Any, value: Any) -> None:
        index = torch.as_tensor(index, device=self.device, dtype=torch.long)
        self.values[index] = torch.as_tensor(value, dtype=self.values.dtype, device=self.device)
        if index.numel():
            self.filled = max(self.filled, int(index.max()) + 1)

    def query(self, left: Any, right: Any) -> Any:
        tensor_bounds = torch.is_tensor(left) or torch.is_tensor(right)
        part = self.values[int(left) : int(right)]
        if self.op == "sum":
            out = part.sum()
        else:
            out = part.min() if part.numel() else self.values.new_tensor(float("inf"))
        return out if tensor_bounds else float(out)

    def scan_lower_bound(self, mass: Any) -> torch.Tensor:
        """The smallest index whose inclusive prefix sum reaches ``mass`` (per element)."""
        prefix = self.values[: max(self.filled, 1)].double().cumsum(0)
        mass = torch.as_tensor(mass, dtype=torch.float64, device=self.device)
        return torch.searchsorted(prefix, mass, right=False)


class TensorPrioritizedSampler(PrioritizedSampler):
    """TorchRL's :class:`~torchrl.data.PrioritizedSampler` on tensor-held priority trees.

    Takes the same arguments and behaves the same (sampling proportional to
    ``(priority + eps) ** alpha``, importance weights ``(p_i / min p) ** -beta`` as
    ``"priority_weight"``, ``update_priority``, ``state_dict``), but needs no
    compiled extension; the trees live on the storage's device.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(
        ...     storage=LazyTensorStorage(100),
        ...     sampler=TensorPrioritizedSampler(100, alpha=0.7, beta=0.5),
        ...     priority_key="td_error",
        ...     batch_size=8,
        ... )
        >>> _ = rb.extend(TensorDict({"observation": torch.randn(20, 3)}, [20]))
        >>> sample = rb.sample()
        >>> sample["priority_weight"].shape
        torch.Size([8])
        >>> sample["td_error"] = torch.rand(8)
        >>> rb.update_tensordict_priority(sample)
    """

    def __init__(self, *args: Any, **kwargs: Any):
        # TorchRL's constructor warns that its compiled trees are missing: not ours to use
        torchrl_log = logging.getLogger("torchrl")
        level = torchrl_log.level
        torchrl_log.setLevel(logging.ERROR)
        try:
            super().__init__(*args, **kwargs)
        finally:
            torchrl_log.setLevel(level)

    def _init(self) -> None:
        device = getattr(self, "_device", None)
        if self.dtype in (torch.float, torch.float32):
            dtype = torch.float32
        elif self.dtype in (torch.double, torch.float64):
            dtype = torch.float64
        else:
            raise NotImplementedError(f"dtype {self.dtype} not supported by PrioritizedSampler")
        self._sum_tree = _TensorSegmentTree(self._max_capacity, dtype, device, "sum")
        self._min_tree = _TensorSegmentTree(self._max_capacity, dtype, device, "min")
        self._max_priority = None


def prioritized_replay_buffer(
    size: int,
    *,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-8,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    priority_key: str = "td_error",
) -> TensorDictReplayBuffer:
    """A prioritized ``TensorDictReplayBuffer`` as ``TensorDictPrioritizedReplayBuffer`` makes it.

    A :class:`~torchrl.data.LazyTensorStorage` of ``size`` transitions (on
    ``device``) sampled by :class:`TensorPrioritizedSampler`: samples carry
    ``"priority_weight"`` for the losses, which write ``td_error`` back into the
    sample; ``rb.update_tensordict_priority(sample)`` then updates the priorities.

    Args:
        size: capacity in transitions.

    Keyword Args:
        alpha: prioritization exponent (0: uniform).
        beta: importance-sampling exponent.
        eps: added to every priority.
        batch_size: default sample size.
        device: where the storage (and the priority trees) live.
        priority_key: the entry the priorities are read from.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> rb = prioritized_replay_buffer(1000, alpha=0.7, beta=0.5, batch_size=4)
        >>> _ = rb.extend(TensorDict({"observation": torch.randn(10, 3)}, [10]))
        >>> sorted(rb.sample().keys())
        ['index', 'observation', 'priority_weight']
    """
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(size, device=device),
        sampler=TensorPrioritizedSampler(size, alpha=alpha, beta=beta, eps=eps),
        priority_key=priority_key,
        batch_size=batch_size,
    )
