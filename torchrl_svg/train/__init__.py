"""The training recipe behind ``python -m torchrl_svg.train``."""

from torchrl_svg.train.agents import AGENTS, S2VGAgent, SACAgent, make_agent
from torchrl_svg.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchrl_svg.train.config import PRESETS, Config, ConfigError, load_config
from torchrl_svg.train.loop import EnvironmentFailure, Trainer, TrainResult, evaluate, train

__all__ = [
    "AGENTS",
    "CheckpointError",
    "EnvironmentFailure",
    "PRESETS",
    "Config",
    "ConfigError",
    "S2VGAgent",
    "SACAgent",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "load_config",
    "make_agent",
    "save_checkpoint",
    "train",
]
