"""SVG(k) along real k-step sub-trajectories.

Run ``python examples/svgk.py [group.key=value ...]`` (or ``--config FILE``):
the configuration starts from ``examples/configs/svgk.yaml`` (the per-task preset,
``--config`` and overrides win over it); see
``--print-config`` for the resolved values. The recipe itself (factories,
collector, replay buffer, updates, evaluation, checkpoints) is
:class:`torchrl_svg.train.Trainer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torchrl_svg.train.__main__ import main

CONFIG = Path(__file__).with_name("configs") / "svgk.yaml"

if __name__ == "__main__":
    sys.exit(main(default_config=str(CONFIG), prog="python examples/svgk.py"))
