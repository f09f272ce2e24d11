"""Gymnasium tasks that misbehave on purpose, for the fault-handling tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv


class _Counting(PendulumEnv):
    """Pendulum that counts its steps across episodes (in one process)."""

    fail_at: int | None = None
    nan_every: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.total_steps = 0

    def step(self, action):
        self.total_steps += 1
        if self.fail_at is not None and self.total_steps == self.fail_at:
            raise RuntimeError(f"simulated physics failure at step {self.total_steps}")
        obs, reward, terminated, truncated, info = super().step(action)
        if self.nan_every is not None and self.total_steps % self.nan_every == 0:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


class CrashingPendulum(_Counting):
    """Raises on its 150th step."""

    fail_at = 150


class EarlyCrashingPendulum(_Counting):
    """Raises on its 30th step (each collector worker runs its own, counting from 0)."""

    fail_at = 30


class NaNPendulum(_Counting):
    """Returns a NaN observation every 50th step."""

    nan_every = 50


for _name, _cls in (
    ("CrashingPendulum-v0", CrashingPendulum),
    ("EarlyCrashingPendulum-v0", EarlyCrashingPendulum),
    ("NaNPendulum-v0", NaNPendulum),
):
    if _name not in gym.envs.registry:
        gym.register(id=_name, entry_point=f"{__name__}:{_cls.__name__}", max_episode_steps=200)
