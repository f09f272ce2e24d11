"""SVG(1)-ER: SVG(1) with experience replay (SVG paper Algorithms 2 and 4, eq 13).

Run ``python examples/svg1_er.py [group.key=value ...]`` (or ``--config FILE``):
the configuration starts from ``examples/configs/svg1_er.yaml`` (the per-task preset,
``--config`` and overrides win over it); see
``--print-config`` for the resolved values. The recipe itself (factories,
collector, replay buffer, updates, evaluation, checkpoints) is
:class:`torchrl_svg.train.Trainer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torchrl_svg.train.__main__ import main

CONFIG = Path(__file__).with_name("configs") / "svg1_er.yaml"

if __name__ == "__main__":
    sys.exit(main(default_config=str(CONFIG), prog="python examples/svg1_er.py"))
