"""Known bounds of a task's observations: what the environment clips before it observes."""

from __future__ import annotations

import torch

__all__ = ["KNOWN_OBSERVATION_BOUNDS_ENVS", "observation_bounds_for_env"]

# task id -> (observation size, how many trailing entries are clipped, the clip)
_CLIPPED_ENTRIES: dict[str, tuple[int, int, float]] = {
    # Gymnasium's Hopper and Walker2d observe np.clip(qvel, -10, 10): the last nv entries
    "Hopper-v4": (11, 6, 10.0),
    "Hopper-v5": (11, 6, 10.0),
    "Walker2d-v4": (17, 9, 10.0),
    "Walker2d-v5": (17, 9, 10.0),
    # Ant-v5 ends with the contact forces of its 13 bodies, 6 each, clipped to
    # contact_force_range = (-1, 1) (Ant-v4 leaves them out by default)
    "Ant-v5": (105, 78, 1.0),
    # InvertedDoublePendulum ends with np.clip(qvel, -10, 10) and the clipped constraint
    # forces (all three in v4, the first in v5)
    "InvertedDoublePendulum-v4": (11, 6, 10.0),
    "InvertedDoublePendulum-v5": (9, 4, 10.0),
}

#: The task ids :func:`observation_bounds_for_env` knows the observation clipping of.
KNOWN_OBSERVATION_BOUNDS_ENVS = frozenset(_CLIPPED_ENTRIES)


def observation_bounds_for_env(
    env_name: str, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The box ``(low, high)`` a task's observations are clipped to, ``[obs_dim]`` each.

    Gymnasium's ``Hopper`` and ``Walker2d`` (v4 and v5, default arguments) observe the
    joint velocities through ``np.clip(qvel, -10, 10)``, and a learning run's replay holds
    many states on that clip. A learned dynamics model fitted to those observations does not
    know the clip and predicts velocities beyond it, and a state predicted there is one no
    critic, reward or dynamics network has seen. ``Ant-v5`` clips the contact forces it
    observes to ``[-1, 1]`` and ``InvertedDoublePendulum`` (v4 and v5) its velocities and
    constraint forces to ``[-10, 10]``, in the same way. Passing these bounds to
    :class:`~torchrl_svg.objectives.S2VGLoss` (``observation_bounds=``) clips the imagined
    states as the environment clips its own. Unclipped entries are :math:`\pm\infty`.

    Raises:
        ValueError: for a task whose observation clipping is not known (see
            :data:`KNOWN_OBSERVATION_BOUNDS_ENVS`); build the two tensors yourself.

    Examples:
        >>> low, high = observation_bounds_for_env("Walker2d-v5")
        >>> low.shape, high[:8].isinf().all().item(), high[8:].tolist() == [10.0] * 9
        (torch.Size([17]), True, True)
        >>> observation_bounds_for_env("HalfCheetah-v5")
        Traceback (most recent call last):
        ...
        ValueError: No known observation bounds for 'HalfCheetah-v5' ...

    """
    if env_name not in _CLIPPED_ENTRIES:
        raise ValueError(
            f"No known observation bounds for {env_name!r} (known: "
            f"{sorted(_CLIPPED_ENTRIES)}). Pass observation_bounds=(low, high) tensors of "
            "your own, or none."
        )
    size, clipped, clip = _CLIPPED_ENTRIES[env_name]
    high = torch.full((size,), float("inf"), dtype=dtype, device=device)
    high[size - clipped :] = clip
    return -high, high


def checked_bounds(
    bounds: tuple[torch.Tensor, torch.Tensor] | None, size: int | None, owner: str
) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """``observation_bounds`` as two ``[size]`` tensors, checked (``(None, None)`` for ``None``).

    Raises:
        ValueError: bounds that are not a ``(low, high)`` pair of ``[size]`` tensors with
            ``low <= high`` and no NaN, naming ``owner`` and the shapes.
    """
    if bounds is None:
        return None, None
    if len(bounds) != 2:
        raise ValueError(
            f"{owner}: observation_bounds must be a (low, high) pair, got {len(bounds)} items."
        )
    low, high = (torch.as_tensor(b, dtype=torch.get_default_dtype()) for b in bounds)
    for name, b in (("low", low), ("high", high)):
        if b.ndim != 1 or (size is not None and b.shape[0] != size):
            raise ValueError(
                f"{owner}: observation_bounds {name} must have shape [{size or 'obs_dim'}], "
                f"got {tuple(b.shape)}."
            )
    if low.shape != high.shape:
        raise ValueError(
            f"{owner}: observation_bounds low {tuple(low.shape)} and high {tuple(high.shape)} "
            "differ in shape."
        )
    if low.isnan().any() or high.isnan().any() or (low > high).any():
        raise ValueError(f"{owner}: observation_bounds need low <= high everywhere, with no NaN.")
    return low, high


def clip_to_bounds(
    observation: torch.Tensor, low: torch.Tensor | None, high: torch.Tensor | None
) -> torch.Tensor:
    """``observation`` clipped to ``[low, high]`` (itself when there are no bounds)."""
    if low is None or high is None:
        return observation
    return torch.clamp(observation, low.to(observation), high.to(observation))


class BoundedObservations:
    """Mixin for a module that clips the observations it imagines to ``observation_bounds``.

    The bounds live in the non-persistent buffers ``observation_low`` and
    ``observation_high`` (``None`` without bounds): they follow the module's device and
    dtype but are not saved in its ``state_dict``, since they come from its constructor.
    """

    observation_low: torch.Tensor | None
    observation_high: torch.Tensor | None

    def _register_observation_bounds(
        self, bounds: tuple[torch.Tensor, torch.Tensor] | tuple[None, None]
    ) -> None:
        """Keep checked ``(low, high)`` (see :func:`checked_bounds`) as the two buffers."""
        low, high = bounds
        self.register_buffer("observation_low", low, persistent=False)  # type: ignore[attr-defined]
        self.register_buffer("observation_high", high, persistent=False)  # type: ignore[attr-defined]

    def _bounded(self, observation: torch.Tensor) -> torch.Tensor:
        """An imagined observation clipped to the bounds (itself without them)."""
        return clip_to_bounds(observation, self.observation_low, self.observation_high)
