"""S2VG with a multi-step actor: soft value gradients through H imagined steps of an ensemble.

Run ``python examples/s2vg_multistep.py [group.key=value ...]`` (or ``--config FILE``):
the configuration starts from ``examples/configs/s2vg_multistep.yaml`` (the per-task
preset, ``--config`` and overrides win over it), e.g. ``loss.actor_horizon=5`` or
``loss.disagreement_bound=1.0``; ``--print-config`` shows the resolved values. The
recipe itself is :class:`torchrl_svg.train.Trainer`; the actor's objective is
:class:`torchrl_svg.objectives.S2VGLoss` with ``actor_horizon=H``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torchrl_svg.train.__main__ import main

CONFIG = Path(__file__).with_name("configs") / "s2vg_multistep.yaml"

if __name__ == "__main__":
    sys.exit(main(default_config=str(CONFIG), prog="python examples/s2vg_multistep.py"))
