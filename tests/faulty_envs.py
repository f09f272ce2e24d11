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


class OutlierPendulum(_Counting):
    """Returns one finite but absurd observation (1e25) at its 120th step, then goes on."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.total_steps == 120:
            obs = np.full_like(obs, 1e25)
        return obs, reward, terminated, truncated, info


class EvalCrashingPendulum(_Counting):
    """Raises on the 5th step after a reset with a seed of 10000 or more (an evaluation env)."""

    evaluation = False

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.evaluation = seed >= 10_000
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.evaluation and self.total_steps == 4:
            raise RuntimeError("simulated renderer failure in the evaluation env")
        return super().step(action)


class NaNRewardPendulum(_Counting):
    """Returns a NaN reward on the 3rd step of an evaluation env (seed 10000 or more)."""

    evaluation = False

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.evaluation = seed >= 10_000
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.evaluation and self.total_steps == 3:
            reward = float("nan")
        return obs, reward, terminated, truncated, info


for _name, _cls in (
    ("OutlierPendulum-v0", OutlierPendulum),
    ("EvalCrashingPendulum-v0", EvalCrashingPendulum),
    ("NaNRewardPendulum-v0", NaNRewardPendulum),
):
    if _name not in gym.envs.registry:
        gym.register(id=_name, entry_point=f"{__name__}:{_cls.__name__}", max_episode_steps=200)
