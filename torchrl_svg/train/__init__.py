"""The training recipe behind ``python -m torchrl_svg.train``.

The names below are imported on first use, so that the command line answers
``--help`` and ``--version`` without importing torch.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from torchrl_svg._lazy import lazy_exports


def _require_train_extra() -> None:
    """Refuse, with the install command, an environment without the recipe's libraries.

    They come with the ``train`` extra; the LossModules, models and transforms of the
    rest of the package do not need them.
    """
    missing = [name for name in ("gymnasium", "omegaconf", "tqdm") if not _find_spec(name)]
    if missing:
        raise ModuleNotFoundError(
            f"torchrl_svg.train needs {', '.join(missing)}: install the training extra, "
            "pip install 'torchrl_svg[train]' (pip install -e '.[train]' in a checkout).",
            name=missing[0],
        )


def _find_spec(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # a module set to None in sys.modules
        return False


_require_train_extra()

if TYPE_CHECKING:
    from torchrl_svg.train.agents import AGENTS, S2VGAgent, SACAgent, make_agent
    from torchrl_svg.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from torchrl_svg.train.config import PRESETS, Config, ConfigError, load_config
    from torchrl_svg.train.loop import (
        EnvironmentFailure,
        Trainer,
        TrainResult,
        evaluate,
        train,
    )
    from torchrl_svg.train.policy import evaluate_run, load_policy

_LAZY = {
    "AGENTS": "torchrl_svg.train.agents",
    "S2VGAgent": "torchrl_svg.train.agents",
    "SACAgent": "torchrl_svg.train.agents",
    "make_agent": "torchrl_svg.train.agents",
    "CheckpointError": "torchrl_svg.train.checkpoint",
    "load_checkpoint": "torchrl_svg.train.checkpoint",
    "save_checkpoint": "torchrl_svg.train.checkpoint",
    "PRESETS": "torchrl_svg.train.config",
    "Config": "torchrl_svg.train.config",
    "ConfigError": "torchrl_svg.train.config",
    "load_config": "torchrl_svg.train.config",
    "EnvironmentFailure": "torchrl_svg.train.loop",
    "Trainer": "torchrl_svg.train.loop",
    "TrainResult": "torchrl_svg.train.loop",
    "evaluate": "torchrl_svg.train.loop",
    "train": "torchrl_svg.train.loop",
    "evaluate_run": "torchrl_svg.train.policy",
    "load_policy": "torchrl_svg.train.policy",
}

__all__ = [
    "AGENTS",
    "CheckpointError",
    "Config",
    "ConfigError",
    "EnvironmentFailure",
    "PRESETS",
    "S2VGAgent",
    "SACAgent",
    "TrainResult",
    "Trainer",
    "evaluate",
    "evaluate_run",
    "load_checkpoint",
    "load_config",
    "load_policy",
    "make_agent",
    "save_checkpoint",
    "train",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
