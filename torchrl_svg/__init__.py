"""Stochastic Value Gradient methods as native TorchRL parts."""

from torchrl_svg._utils import NonFiniteLossError

__version__ = "0.1.0"

__all__ = ["NonFiniteLossError", "__version__"]
