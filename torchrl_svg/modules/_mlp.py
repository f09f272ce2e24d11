"""A stack of independent MLPs evaluated together with :func:`torch.vmap`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["StackedMLP", "route_rows"]


def route_rows(
    x: torch.Tensor,
    member: torch.Tensor,
    num_members: int,
    forward_member: Callable[[int, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Each row of ``x`` ``[N, in]`` through its own member only: ``[N, out]``.

    Row ``i`` goes through member ``member[i]``; the rows are grouped by member
    (a stable sort), each group runs through ``forward_member(j, rows)`` in one
    call, and the outputs are put back in the rows' order. Only the chosen
    members' rows are computed: ``1/K`` of the work of evaluating every member on
    every row and keeping one. The group sizes are read on the host, so the
    shapes depend on the data (no CUDA-graph capture, no ``torch.compile``
    without graph breaks): callers use it on the CPU.

    Examples:
        >>> x, member = torch.arange(4.0).unsqueeze(-1), torch.tensor([1, 0, 1, 0])
        >>> route_rows(x, member, 2, lambda j, rows: rows + 10 * j).squeeze(-1)
        tensor([10.,  1., 12.,  3.])
    """
    member = member.reshape(-1)
    if member.numel() != x.shape[0]:
        raise ValueError(
            f"route_rows: {member.numel()} members for {x.shape[0]} rows; need one per row."
        )
    order = torch.argsort(member, stable=True)
    counts = torch.bincount(member, minlength=num_members).tolist()  # refuses negatives
    if len(counts) > num_members:
        raise IndexError(f"route_rows: member indices must lie in [0, {num_members}).")
    groups = x.index_select(0, order).split(counts)
    outs = [forward_member(j, rows) for j, rows in enumerate(groups) if rows.shape[0]]
    if not outs:  # no rows
        return forward_member(0, x)
    return torch.cat(outs).index_select(0, torch.argsort(order))


def _member_forward(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    biases: tuple[torch.Tensor, ...],
    activation: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One member: ``x`` ``[N, in]`` through its layers, ``[N, out]``."""
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = torch.addmm(b, x, w)
        if i < last:
            x = activation(x)
    return x


class StackedMLP(nn.Module):
    """``K`` independent MLPs of identical shape, evaluated in one :func:`torch.vmap` call.

    Used for model ensembles (``K`` = number of members) and for the SVG
    paper's "one sub-network per state dimension" models (App. C), and for both
    at once. Each member is initialised like a fresh :class:`torch.nn.Linear`
    stack, so members differ from the start.

    Args:
        num_members: ``K``.
        in_features: input size.
        out_features: output size of each member.
        hidden_sizes: hidden layer widths.
        activation_class: activation module class (instantiated once).

    Shapes:
        ``forward(x)`` takes ``x`` of shape ``[N, in]`` (shared by all members)
        or ``[K, N, in]`` (one input per member) and returns ``[K, N, out]``.

    Examples:
        >>> import torch
        >>> mlp = StackedMLP(3, in_features=4, out_features=2, hidden_sizes=(8,))
        >>> mlp(torch.randn(5, 4)).shape
        torch.Size([3, 5, 2])

    """

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int,
        hidden_sizes: Sequence[int] = (200, 200),
        activation_class: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}.")
        self.num_members = int(num_members)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        sizes = (self.in_features, *self.hidden_sizes, self.out_features)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_members, fan_in, fan_out))
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(num_members, fan_out)) for fan_out in sizes[1:]
        )
        self.activation = activation_class()
        self.reset_parameters()

    def _forward_one(self, x, weights, biases):
        return _member_forward(x, weights, biases, self.activation)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every member as :class:`torch.nn.Linear` would."""
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])
            # kaiming_uniform(a=sqrt(5)) on a Linear reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            w.uniform_(-bound, bound)
            b.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = tuple(self.weights)
        biases = tuple(self.biases)
        if self.num_members == 1 and (x.ndim == 2 or (x.ndim == 3 and x.shape[0] == 1)):
            # A single member needs no vmap: call it directly (same parameters, less overhead).
            x = x if x.ndim == 2 else x[0]
            w1 = tuple(w[0] for w in weights)
            b1 = tuple(b[0] for b in biases)
            return self._forward_one(x, w1, b1).unsqueeze(0)
        if x.ndim == 2:
            return torch.vmap(self._forward_one, in_dims=(None, 0, 0))(x, weights, biases)
        if x.ndim == 3 and x.shape[0] == self.num_members:
            return torch.vmap(self._forward_one, in_dims=(0, 0, 0))(x, weights, biases)
        raise ValueError(
            f"StackedMLP expects an input of shape [N, {self.in_features}] or "
            f"[{self.num_members}, N, {self.in_features}], got {tuple(x.shape)}."
        )

    def forward_members(self, x: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
        """Each row of ``x`` ``[N, in]`` through its own member ``member`` ``[N]``: ``[N, out]``.

        Equals ``self(x)[member, arange(N)]`` while computing only the chosen
        members' rows (see :func:`route_rows`).

        Examples:
            >>> _ = torch.manual_seed(0)
            >>> mlp = StackedMLP(3, in_features=4, out_features=2, hidden_sizes=(8,))
            >>> x, member = torch.randn(5, 4), torch.tensor([2, 0, 0, 1, 2])
            >>> routed, full = mlp.forward_members(x, member), mlp(x)[member, torch.arange(5)]
            >>> torch.allclose(routed, full, atol=1e-6)  # the same up to float32 rounding
            True
        """
        weights, biases = tuple(self.weights), tuple(self.biases)

        def one(j: int, rows: torch.Tensor) -> torch.Tensor:
            w = tuple(w[j] for w in weights)
            return self._forward_one(rows, w, tuple(b[j] for b in biases))

        return route_rows(x, member, self.num_members, one)

    def extra_repr(self) -> str:
        return (
            f"num_members={self.num_members}, in_features={self.in_features}, "
            f"out_features={self.out_features}, hidden_sizes={self.hidden_sizes}"
        )
