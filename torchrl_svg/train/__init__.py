"""The training recipe behind ``python -m torchrl_svg.train``."""

from torchrl_svg.train.agents import AGENTS, S2VGAgent, make_agent
from torchrl_svg.train.config import PRESETS, Config, ConfigError, load_config
from torchrl_svg.train.loop import TrainResult, evaluate, train

__all__ = [
    "AGENTS",
    "PRESETS",
    "Config",
    "ConfigError",
    "S2VGAgent",
    "TrainResult",
    "evaluate",
    "load_config",
    "make_agent",
    "train",
]
