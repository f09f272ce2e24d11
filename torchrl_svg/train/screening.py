"""Screening collected transitions before they reach the replay buffer and the models' statistics.

A non-finite observation or reward is easy to spot. A finite outlier is not,
and does more harm: one observation of ``1e25`` passes every finiteness check,
makes the model normaliser's variance infinite (its square overflows float32)
and stays in every later checkpoint. :class:`TransitionScreen` keeps running
statistics of the data it let through and drops a transition with an
observation or reward entry

* larger than ``max_abs_value`` in magnitude, or
* (after ``warmup`` transitions) farther than ``max_deviation`` running
  standard deviations (floored at 1) from the running mean,

together with the rest of its episode (a simulator that produced such a state
does not produce a trustworthy continuation of it).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

__all__ = ["TransitionScreen", "finite_rows"]

OBSERVATION_KEYS = ("observation", ("next", "observation"))
REWARD_KEY = ("next", "reward")
TRAJ_KEY = ("collector", "traj_ids")


def finite_rows(data: TensorDictBase) -> torch.Tensor:
    """``[N]`` mask of the transitions whose observations and reward are all finite."""
    n = data.batch_size.numel()  # (TensorDict.numel() is 1 for an empty batch)
    ok = torch.ones(n, dtype=torch.bool, device=data.device)
    for key in (*OBSERVATION_KEYS, REWARD_KEY):
        value = data.get(key, None)
        if value is not None:
            ok &= torch.isfinite(value.reshape(n, -1)).all(-1)
    return ok


class _Running:
    """Exact running mean and variance (Chan et al.'s merge), in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).cpu()
        n = x.shape[0]
        if not n:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, batch_mean, batch_m2
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def deviation(self, x: torch.Tensor) -> torch.Tensor:
        """``[N]``: the largest ``|x - mean| / max(std, 1)`` over the features of each row."""
        assert self.mean is not None and self.m2 is not None
        std = (self.m2 / self.count).sqrt().clamp_min(1.0)
        return ((x.detach().to(torch.float64).cpu() - self.mean) / std).abs().amax(-1)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


class TransitionScreen:
    """Drops transitions with outlying observations or rewards, and the rest of their episodes.

    Args:
        max_abs_value: bound on the magnitude of every observation and reward entry
            (``None``: no bound).
        max_deviation: bound, in running standard deviations (floored at 1), on the
            distance of every entry from the running mean of the data kept so far
            (``None``: no bound).
        warmup: transitions kept before ``max_deviation`` applies.

    Examples:
        >>> from tensordict import TensorDict
        >>> screen = TransitionScreen(max_abs_value=1e9, max_deviation=100.0, warmup=4)
        >>> def batch(obs):
        ...     obs = torch.tensor(obs).unsqueeze(-1)
        ...     return TensorDict({"observation": obs, ("next", "observation"): obs}, [len(obs)])
        >>> screen(batch([0.0, 1.0, -1.0, 0.5])).tolist()  # kept, and now the statistics
        [True, True, True, True]
        >>> screen(batch([2.0, 1e25, 5e3])).tolist()  # too large; too far from the others
        [True, False, False]
    """

    def __init__(
        self,
        max_abs_value: float | None = 1e9,
        max_deviation: float | None = 1e4,
        warmup: int = 100,
    ):
        self.max_abs_value = max_abs_value
        self.max_deviation = max_deviation
        self.warmup = int(warmup)
        self.observation = _Running()
        self.reward = _Running()
        self.bad_trajectories: set[int] = set()

    def _values(self, data: TensorDictBase) -> list[tuple[_Running, torch.Tensor]]:
        n = data.batch_size.numel()  # (TensorDict.numel() is 1 for an empty batch)
        out: list[tuple[_Running, torch.Tensor]] = []
        if not n:
            return out
        for key in OBSERVATION_KEYS:
            value = data.get(key, None)
            if value is not None:
                out.append((self.observation, value.reshape(n, -1)))
        reward = data.get(REWARD_KEY, None)
        if reward is not None:
            out.append((self.reward, reward.reshape(n, -1)))
        return out

    def outliers(self, data: TensorDictBase) -> torch.Tensor:
        """``[N]`` mask of the transitions that are outliers (all entries must be finite)."""
        n = data.batch_size.numel()  # (TensorDict.numel() is 1 for an empty batch)
        bad = torch.zeros(n, dtype=torch.bool)
        for stats, value in self._values(data):
            if self.max_abs_value is not None:
                bad |= (value.detach().abs() > self.max_abs_value).any(-1).cpu()
            if self.max_deviation is not None and stats.count >= self.warmup:
                bad |= stats.deviation(value) > self.max_deviation
        return bad

    def __call__(self, data: TensorDictBase) -> torch.Tensor:
        """``[N]`` mask of the transitions of ``data`` (flat, finite) to keep; learns from them.

        A transition is dropped when it is an outlier, or when an earlier one of its
        trajectory (``("collector", "traj_ids")``) was.
        """
        bad = self.outliers(data)
        ids = data.get(TRAJ_KEY, None)
        if ids is not None and ids.numel() == bad.numel():
            ids = ids.reshape(-1).cpu()
            earlier = set(self.bad_trajectories)
            self.bad_trajectories.update(int(ids[i]) for i in torch.nonzero(bad).flatten())
            after = torch.zeros_like(bad)
            for traj in self.bad_trajectories:
                rows = torch.nonzero(ids == traj).flatten()
                first_bad = torch.nonzero(bad[rows]).flatten()
                start = 0 if traj in earlier or not first_bad.numel() else int(first_bad[0])
                after[rows[start:]] = True  # the rest of the episode, from its outlier on
            bad |= after
        keep = ~bad
        self.fit(data[keep.to(data.device)] if not keep.all() else data)
        return keep

    def fit(self, data: TensorDictBase) -> None:
        """Merge ``data`` (flat, kept transitions) into the running statistics."""
        for stats, value in self._values(data):
            stats.update(value)

    def state_dict(self) -> dict[str, Any]:
        """The running statistics (tensors and numbers)."""
        return {"observation": self.observation.state_dict(), "reward": self.reward.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.observation.load_state_dict(state["observation"])
        self.reward.load_state_dict(state["reward"])
