"""Evaluation videos: one deterministic episode rendered off-screen and saved as a GIF."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch import nn
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.train.config import OWN_ENVS

__all__ = ["record_video"]

log = logging.getLogger(__name__)


def record_video(
    env_name: str,
    policy: nn.Module,
    path: str | Path,
    *,
    max_steps: int = 1000,
    seed: int = 0,
    fps: int = 30,
) -> Path | None:
    """Render one deterministic episode of ``policy`` on ``env_name`` to a GIF at ``path``.

    MuJoCo tasks render off-screen through EGL (``MUJOCO_GL=egl`` unless the user
    set another back-end). Where no renderer is available (the package's own
    ``Hand-v0`` / ``LQG-v0``, a task whose renderer needs a missing library, a
    machine without EGL) nothing is written, the reason is logged once per call, and
    ``None`` is returned: a video never stops a training run.

    Args:
        env_name: a Gymnasium task id.
        policy: the actor (its deterministic mode is used).
        path: the GIF file to write (parent folders are created).
        max_steps: longest episode rendered.
        seed: the episode's seed.
        fps: frames per second of the GIF.

    Returns:
        The path written, or ``None`` when the task could not be rendered.

    Examples:
        >>> import tempfile
        >>> from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
        >>> from torchrl_svg.modules import env_specs, make_actor
        >>> actor = make_actor(*env_specs(GymEnv("InvertedPendulum-v5")), hidden_sizes=[8])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = record_video("InvertedPendulum-v5", actor, f"{d}/eval.gif", max_steps=5)
        ...     out is None or out.stat().st_size > 0
        True
    """
    if env_name in OWN_ENVS:
        log.info("no renderer for %s: evaluation video skipped", env_name)
        return None
    os.environ.setdefault("MUJOCO_GL", "egl")
    path = Path(path)
    env = None
    try:
        import imageio.v3 as iio

        env = TransformedEnv(GymEnv(env_name, from_pixels=True, pixels_only=False), DoubleToFloat())
        env.set_seed(seed)
        actor = copy.deepcopy(policy).to("cpu")  # the training policy stays where it is
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = env.rollout(max_steps, actor)
        frames = rollout["pixels"].numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    except Exception as err:  # any renderer failure: report and carry on training
        log.info("evaluation video of %s skipped: %s: %s", env_name, type(err).__name__, err)
        return None
    finally:
        if env is not None:
            env.close()
    return path
