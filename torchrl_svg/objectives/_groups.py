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


class OwnKeysAndParameters:
    """``in_keys``, ``out_keys`` (so ``select_out_keys`` works) and ``parameter_groups()``.

    For a loss built on :class:`~torchrl_svg.objectives._common.InputValidation`: its
    ``in_keys`` are the entries it validates; a subclass says what its ``forward``
    writes (:meth:`_default_out_keys`) and which of its networks it trains
    (:attr:`_trained_networks`, group name -> the ``<name>_params`` it registered with
    ``convert_to_functional``).
    """

    _trained_networks: dict[str, str] = {}
    _out_keys: list[str] | None = None

    @property
    def in_keys(self) -> list:
        """The entries the loss requires (optional ones, e.g. importance weights, are not listed)."""
        entries = self._input_entries()  # type: ignore[attr-defined]
        return list(dict.fromkeys(entry.key for entry in entries if entry.required))

    def _default_out_keys(self) -> list[str]:
        raise NotImplementedError

    @property
    def out_keys(self) -> list[str]:
        """The entries of the output tensordict (:meth:`select_out_keys` narrows them)."""
        return self._out_keys if self._out_keys is not None else self._default_out_keys()

    @out_keys.setter
    def out_keys(self, values: list[str]) -> None:
        self._out_keys = list(values)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters this loss trains, by network: what its optimiser should step.

        Models that enter the loss with detached parameters (dynamics, reward) and
        target copies are in no group; a network without trainable parameters (a
        known value function) is left out.
        """
        groups = {
            name: trainable(getattr(self, f"{attr}_params"))
            for name, attr in self._trained_networks.items()
        }
        return {name: params for name, params in groups.items() if params}
