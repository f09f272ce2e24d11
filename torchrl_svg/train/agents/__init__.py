"""Algorithm bundles of the training recipe: one agent, in one module, per ``algorithm``."""

from __future__ import annotations

import torch
from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from torchrl_svg.train.agents.base import (
    Agent,
    GuardedUpdate,
    NonFiniteGuard,
    WorldModel,
    guarded_step,
)
from torchrl_svg.train.agents.s2vg import S2VGAgent
from torchrl_svg.train.agents.sac import SACAgent
from torchrl_svg.train.agents.svg import SVGAgent
from torchrl_svg.train.agents.svg0 import SVG0Agent
from torchrl_svg.train.agents.svg1 import SVG1Agent
from torchrl_svg.train.agents.svg1_er import SVG1ERAgent
from torchrl_svg.train.agents.svginf import SVGInfAgent
from torchrl_svg.train.agents.svgk import SVGkAgent
from torchrl_svg.train.config import Config

__all__ = [
    "AGENTS",
    "Agent",
    "GuardedUpdate",
    "NonFiniteGuard",
    "S2VGAgent",
    "SACAgent",
    "SVG0Agent",
    "SVG1Agent",
    "SVG1ERAgent",
    "SVGAgent",
    "SVGInfAgent",
    "SVGkAgent",
    "WorldModel",
    "guarded_step",
    "make_agent",
]

AGENTS: dict[str, type[Agent]] = {
    "s2vg": S2VGAgent,
    "svg0": SVG0Agent,
    "svg1": SVG1Agent,
    "svg1_er": SVG1ERAgent,
    "svgk": SVGkAgent,
    "svginf": SVGInfAgent,
    "sac": SACAgent,  # the TorchRL baseline of benchmarks/sample_efficiency.py
}


def make_agent(
    cfg: Config,
    observation_spec: TensorSpec,
    action_spec: TensorSpec,
    device: torch.device | str = "cpu",
    env: EnvBase | None = None,
) -> Agent:
    """The agent of ``cfg.algorithm``, built on the environment's specs."""
    return AGENTS[cfg.algorithm](cfg, observation_spec, action_spec, device, env)
