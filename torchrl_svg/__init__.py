"""Stochastic Value Gradient methods as native TorchRL parts.

``import torchrl_svg`` is light (torch is imported on first use of what needs it);
the parts live in :mod:`torchrl_svg.modules`, :mod:`torchrl_svg.objectives`,
:mod:`torchrl_svg.data`, :mod:`torchrl_svg.envs` and :mod:`torchrl_svg.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchrl_svg._lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["NonFiniteLossError", "__version__", "load_policy"]

if TYPE_CHECKING:
    from torchrl_svg._utils import NonFiniteLossError
    from torchrl_svg.train.policy import load_policy

_LAZY = {
    "NonFiniteLossError": "torchrl_svg._utils",
    "load_policy": "torchrl_svg.train.policy",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
