"""Running input/target statistics kept in module buffers."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RunningNormalizer"]


class RunningNormalizer(nn.Module):
    """Running mean and variance of a feature vector, stored in buffers.

    The statistics live in ``count``, ``mean`` and ``var`` buffers so they are
    saved in the ``state_dict``, follow ``.to(device)`` and are shared with any
    :class:`~torchrl.objectives.LossModule` that holds the owning module (the
    buffers are updated in place, never re-assigned). Batches are merged with
    Chan et al.'s parallel update, so calling :meth:`update` on every collected
    batch gives the exact statistics of all data seen.

    Before the first update the normaliser is the identity (mean 0, var 1).

    Args:
        size: the feature size ``F``; inputs are ``[*B, F]``.
        min_std: floor on the standard deviation used to normalise (features
            that never vary would otherwise divide by zero).
        dtype: dtype of the ``mean``/``var`` buffers.

    Examples:
        >>> import torch
        >>> norm = RunningNormalizer(2)
        >>> norm.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> norm.mean
        tensor([ 1., 20.])
        >>> norm.normalize(torch.tensor([[1.0, 20.0]]))
        tensor([[0., 0.]])

    """

    count: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor

    def __init__(self, size: int, *, min_std: float = 1e-6, dtype: torch.dtype | None = None):
        super().__init__()
        if size <= 0:
            raise ValueError(f"RunningNormalizer size must be positive, got {size}.")
        self.size = int(size)
        self.min_std = float(min_std)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(size, dtype=dtype))
        self.register_buffer("var", torch.ones(size, dtype=dtype))

    @property
    def std(self) -> torch.Tensor:
        """Standard deviation used for normalisation, ``[F]``."""
        return self.var.sqrt().clamp_min(self.min_std)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``x`` of shape ``[*B, F]`` into the running statistics.

        Raises:
            ValueError: if ``x`` has the wrong feature size or holds NaN/inf
                (the statistics are left untouched).

        """
        if x.ndim == 0 or x.shape[-1] != self.size:
            raise ValueError(
                f"RunningNormalizer.update expects shape [*B, {self.size}], got {tuple(x.shape)}."
            )
        x = x.reshape(-1, self.size).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        if not torch.isfinite(x).all():
            raise ValueError(
                "RunningNormalizer.update received non-finite values; statistics were not updated."
            )
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        count = self.count
        mean = self.mean.to(torch.float64)
        var = self.var.to(torch.float64)
        total = count + n
        delta = batch_mean - mean
        new_mean = mean + delta * (n / total)
        # Before any data the prior (0, 1) carries zero weight.
        m2 = var * count + batch_var * n + delta.pow(2) * (count * n / total)
        new_var = m2 / total
        self.mean.copy_(new_mean)
        self.var.copy_(new_var)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` (``[*B, F]``) to zero mean and unit variance."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        return x * self.std + self.mean

    def extra_repr(self) -> str:
        """Size and floor, shown in ``repr``."""
        return f"size={self.size}, min_std={self.min_std}"
