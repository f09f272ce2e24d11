"""Each loss's own parameters, by network: what its optimiser should step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tensordict import TensorDictBase
from torch import nn

__all__ = ["trainable"]


def trainable(params: TensorDictBase | nn.Module | Iterable[torch.Tensor]) -> list[nn.Parameter]:
    """The trainable parameters (``nn.Parameter`` with ``requires_grad``) of a network.

    Args:
        params: a loss's ``*_params`` TensorDict, a module, or tensors.
    """
    if isinstance(params, TensorDictBase):
        params = params.values(True, True)
    elif isinstance(params, nn.Module):
        params = params.parameters()
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in params:
        if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
