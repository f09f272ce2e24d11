r"""The learned world model as a TorchRL environment, for imagined (model-based) rollouts.

:class:`WorldModelEnv` is a :class:`~torchrl.envs.model_based.ModelBasedEnvBase`
whose ``step`` is one imagined transition of the learned models,

.. math::

    s' \sim \hat f(s, a),\qquad r = \mathbb E[\hat r(s, a)],\qquad
    \text{terminated} = [\hat d(s') > 1/2],

so that imagined data is produced with the same tools as real data:
:meth:`~torchrl.envs.EnvBase.rollout`, TorchRL collectors, replay buffers.
Rollouts start from real observations (e.g. states drawn from the replay
buffer, as in MBPO).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.data import Composite, ReplayBuffer, TensorSpec, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.model_based import ModelBasedEnvBase

from torchrl_svg._utils import get_key
from torchrl_svg.envs._base import done_spec
from torchrl_svg.envs._imagined import (
    _check_device,
    _check_dims,
    _check_models,
    _ImaginedTransition,
    _leaf_spec,
    _model_device,
)
from torchrl_svg.modules.bounds import checked_bounds
from torchrl_svg.modules.factories import env_specs

__all__ = ["InitialObservations", "WorldModelEnv"]

InitialObservations = Tensor | TensorDictBase | ReplayBuffer | Callable[[torch.Size], Tensor]
"""Where imagined episodes start: a pool of observations, a replay buffer, or a sampler."""

_STEP_COUNT = "step_count"


class WorldModelEnv(ModelBasedEnvBase):
    r"""An environment whose step is one imagined transition of learned (or known) models.

    From the current observation :math:`s` and the action :math:`a` written by
    the policy, one step draws

    .. math::

        s' \sim \hat f(s, a),\qquad
        r = \mathbb E\,\hat r(s, a, s'),\qquad
        \text{terminated} = \big[\hat p_{\text{term}}(s') > \tfrac12\big],\qquad
        \text{done} = \text{terminated} \lor \text{truncated}

    **Sampling** follows TorchRL's exploration type
    (:func:`~torchrl.envs.utils.set_exploration_type`, as
    :class:`~torchrl_svg.modules.GaussianDynamics` does): under
    ``RANDOM`` the next observation is ``dynamics_model.get_dist(td).rsample()``;
    under ``DETERMINISTIC``, ``MEAN`` or ``MODE`` it is the distribution's mean.
    Without an exploration type set (a bare :meth:`rollout`) the env uses
    ``default_interaction_type``, ``RANDOM``: an environment simulates the
    stochastic transition. Collectors set ``RANDOM`` themselves. The reward is
    the reward model's mean (``sample_reward=True`` samples it under
    ``RANDOM``); a deterministic reward module is used as is. Termination is
    the probability of the termination model thresholded at one half
    (``sample_termination=True`` draws a Bernoulli under ``RANDOM``); known
    terminations give 0/1 probabilities, so both agree for them. With an
    ensemble model whose ``ensemble_reduction="sample"`` a member is drawn per
    sample in every mode; use ``"mean"`` for reproducible deterministic rollouts.
    Model noise comes from torch's global RNG.

    **Start states**: the env is stateless (the observation is the state, as in
    TorchRL's ``PendulumEnv``), so every reset draws fresh start observations
    from ``initial_observations``:

    * a tensor ``[M, obs_dim]`` (or any ``[..., obs_dim]``): a pool of
      observations, drawn uniformly with replacement (``[obs_dim]``: one start
      for every episode);
    * a :class:`~tensordict.TensorDictBase` of real transitions: its
      ``observation_key`` entries form the pool;
    * a :class:`~torchrl.data.ReplayBuffer` of real transitions: observations
      drawn uniformly from what its storage holds *at reset time* (MBPO-style
      branched rollouts from real replay states); the buffer's sampler and
      transforms are not used;
    * a callable ``fn(batch_size) -> Tensor [*batch_size, obs_dim]``, e.g. a
      known start-state distribution.

    Pool and buffer draws use the env's own generator (:meth:`set_seed`).
    Explicit starts are given like to any stateless TorchRL env:
    ``env.reset(TensorDict({"observation": obs}, batch_size), set_state=True)``
    or ``env.rollout(H, policy, tensordict=..., set_state=True)`` (without
    ``set_state``, TorchRL 0.14 honours the state but warns that it will
    not from 0.15). Partial resets (collectors) draw new starts for the reset
    episodes only.

    **Horizon**: ``max_steps=H`` adds a ``"step_count"`` entry (as TorchRL's
    :class:`~torchrl.envs.transforms.StepCounter` does) and sets ``truncated``
    after ``H`` steps. Without it the env never truncates (pass ``max_steps``
    to :meth:`rollout`, or append a ``StepCounter``), which a collector needs
    to restart imagined episodes. Nothing guards against a model that
    diverges: keep imagined horizons short, as MBPO does.

    **Gradients**: the models are only evaluated, never trained or moved;
    by default each step runs under :func:`torch.no_grad` (imagined data for a
    replay buffer). ``differentiable=True`` keeps the autograd graph through
    the reparameterised samples, so that a return computed from
    ``env.rollout(...)`` can be backpropagated to the policy and models;
    gradient estimators along *real* trajectories are the losses' job
    (:mod:`torchrl_svg.objectives`), not this env's.

    Args:
        dynamics_model: a module in the dynamics contract: reads
            ``observation`` and ``action``; ``get_dist(td)`` is a
            location-scale distribution over ``("next", "observation")``
            (e.g. :class:`~torchrl_svg.modules.GaussianDynamics`, or a known model).
        reward_model: a module whose ``get_dist(td)`` is over ``("next", "reward")``
            (e.g. :class:`~torchrl_svg.modules.RewardModel`), or a deterministic
            TensorDict module whose last out key is the reward. It sees
            ``observation``, ``action`` and ``("next", "observation")``.
        termination_model: a :class:`~torchrl_svg.modules.Termination`
            (``probability(td)`` of ``("next", "observation")``), or ``None``
            (never terminates).

    Keyword Args:
        observation_spec: the leaf observation spec, shape ``[obs_dim]``. Its
            shape and dtype are kept, but the env's observation spec is
            ``Unbounded``: model predictions are not confined to the real
            env's bounds (nor clipped to them: see ``observation_bounds``).
        action_spec: the leaf action spec, shape ``[action_dim]`` (kept as is;
            actions reach the models unclipped, as they were stored in the
            replay data the models were fitted on).
        reward_spec: the leaf reward spec (default ``[1]`` in the observation
            dtype); made ``Unbounded`` like the observation spec.
        initial_observations: where episodes start (see above); ``None``
            requires explicit starts at every reset.
        batch_size: number of parallel imagined episodes, e.g. ``[N]``.
        device: the env's device (default: the models' device, else CPU). The
            models must already be there: they are shared with their training
            loss, so the env does not move them.
        max_steps: truncation horizon (``None``: no truncation).
        default_interaction_type: sampling mode when no exploration type is set.
        sample_reward: sample the reward under ``RANDOM`` instead of its mean.
        sample_termination: Bernoulli termination under ``RANDOM`` instead of ``p > 1/2``.
        differentiable: keep gradients through the steps (default ``False``: no_grad).
        observation_key / action_key: the entries fed to the models.
        seed: seed of the generator of start-state draws (``None``: torch's global RNG).
        observation_bounds: ``(low, high)``, each ``[obs_dim]``: clip every next observation
            to this box, as the real environment clips its observations (see
            :func:`~torchrl_svg.modules.observation_bounds_for_env`); ``None``: no clipping.

    Raises:
        ValueError: at construction, if a model's ``observation_dim`` or
            ``action_dim`` differs from the specs (both shapes are named), or
            a model is not on the env's device.
        TypeError: if a model does not provide the interface above.

    Shapes:
        Steps read ``observation [*B, obs_dim]`` and ``action [*B, action_dim]``
        and write ``observation [*B, obs_dim]``, ``reward [*B, 1]``,
        ``done``/``terminated``/``truncated [*B, 1]`` (and ``step_count
        [*B, 1]`` with ``max_steps``), where ``*B`` is ``batch_size``.

    Examples:
        >>> import torch
        >>> from torchrl.envs import GymEnv
        >>> from torchrl.envs.utils import check_env_specs
        >>> from torchrl_svg.envs import WorldModelEnv
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, env_specs, make_actor
        >>> real_env = GymEnv("Pendulum-v1")
        >>> real_data = real_env.rollout(50)  # e.g. replay-buffer contents
        >>> dynamics = GaussianDynamics(3, 1, hidden_sizes=(32,))
        >>> reward = RewardModel(3, 1, hidden_sizes=(32,))
        >>> env = WorldModelEnv.from_env(
        ...     real_env, dynamics, reward, initial_observations=real_data,
        ...     batch_size=[8], max_steps=10, seed=0)
        >>> check_env_specs(env)
        >>> actor = make_actor(*env_specs(real_env), hidden_sizes=(32,))
        >>> imagined = env.rollout(100, actor)
        >>> imagined.shape, imagined["next", "reward"].shape
        (torch.Size([8, 10]), torch.Size([8, 10, 1]))
        >>> bool(imagined["next", "truncated"][:, -1].all())
        True

    """

    _supports_set_state = True

    def __init__(
        self,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        termination_model: TensorDictModuleBase | None = None,
        *,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        reward_spec: TensorSpec | None = None,
        initial_observations: InitialObservations | None = None,
        batch_size: Sequence[int] | torch.Size = (),
        device: torch.device | str | None = None,
        max_steps: int | None = None,
        default_interaction_type: InteractionType = InteractionType.RANDOM,
        sample_reward: bool = False,
        sample_termination: bool = False,
        differentiable: bool = False,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        seed: int | None = None,
        observation_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        observation_spec = _leaf_spec(observation_spec, "observation")
        action_spec = _leaf_spec(action_spec, "action")
        if reward_spec is None:
            reward_spec = Unbounded(shape=(1,), dtype=observation_spec.dtype)
        _check_models(dynamics_model, reward_model, termination_model)
        obs_dim, action_dim = int(observation_spec.shape[-1]), int(action_spec.shape[-1])
        _check_dims(dynamics_model, reward_model, termination_model, obs_dim, action_dim)
        if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
            raise ValueError(
                f"WorldModelEnv: max_steps must be an integer >= 1, got {max_steps!r}."
            )
        if device is None:
            device = _model_device(dynamics_model, reward_model, termination_model)
        device = torch.device("cpu") if device is None else torch.device(device)
        _check_device(device, dynamics_model, reward_model, termination_model)

        transition = _ImaginedTransition(
            dynamics_model,
            reward_model,
            termination_model,
            observation_key=observation_key,
            action_key=action_key,
            default_interaction_type=default_interaction_type,
            sample_reward=sample_reward,
            sample_termination=sample_termination,
            observation_bounds=checked_bounds(observation_bounds, obs_dim, "WorldModelEnv"),
        )
        super().__init__(transition, device=device, batch_size=torch.Size(batch_size))
        self.observation_key = observation_key
        self.observation_dim = obs_dim
        self.action_dim = action_dim
        self.max_steps = None if max_steps is None else int(max_steps)
        self.differentiable = bool(differentiable)
        self._make_specs(observation_spec, action_spec, reward_spec, action_key)
        self._initial = self._check_initial(initial_observations)
        self._rng: torch.Generator | None = None
        if seed is not None:
            self.set_seed(seed)

    # ----------------------------------------------------------- construction
    @classmethod
    def from_env(
        cls,
        env: EnvBase,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        termination_model: TensorDictModuleBase | None = None,
        **kwargs,
    ) -> WorldModelEnv:
        """An imagined twin of ``env``: its observation, action and reward specs.

        ``env`` is only read (never stepped). ``batch_size`` defaults to
        ``env.batch_size``; every other keyword is passed to the constructor.

        Examples:
            >>> import torch
            >>> from torchrl_svg.envs import LQGEnv, lqg_dynamics_model, lqg_reward_module
            >>> real = LQGEnv(dtype=torch.float64, seed=0)
            >>> env = WorldModelEnv.from_env(real, lqg_dynamics_model(real), lqg_reward_module(real),
            ...                              initial_observations=real.init_mean, batch_size=[3])
            >>> env.observation_spec["observation"].shape, env.action_spec.shape
            (torch.Size([3, 2]), torch.Size([3, 1]))

        """
        observation_key = kwargs.get("observation_key", "observation")
        observation_spec, action_spec = env_specs(env, observation_key)
        reward_spec = env.full_reward_spec[env.reward_key]
        if len(env.batch_size):
            reward_spec = reward_spec[(0,) * len(env.batch_size)]
        kwargs.setdefault("batch_size", env.batch_size)
        return cls(
            dynamics_model,
            reward_model,
            termination_model,
            observation_spec=observation_spec.clone(),
            action_spec=action_spec.clone(),
            reward_spec=reward_spec.clone(),
            **kwargs,
        )

    def _make_specs(
        self,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        reward_spec: TensorSpec,
        action_key: NestedKey,
    ) -> None:
        batch, kw = self.batch_size, {"device": self.device}
        # What the models predict is not confined to the real env's bounds.
        obs = Unbounded(shape=observation_spec.shape, dtype=observation_spec.dtype, **kw)
        observation = {self.observation_key: obs.expand(*batch, *obs.shape)}
        if self.max_steps is not None:
            observation[_STEP_COUNT] = Unbounded(shape=(*batch, 1), dtype=torch.int64, **kw)
        self.observation_spec = Composite(observation, shape=batch, **kw)
        # Stateless: the state is the observation (and step count) carried by the tensordict.
        self.state_spec = self.observation_spec.clone()
        action = action_spec.to(self.device)
        self.full_action_spec = Composite(
            {action_key: action.expand(*batch, *action.shape)}, shape=batch, **kw
        )
        self.reward_spec = Unbounded(
            shape=(*batch, *reward_spec.shape), dtype=reward_spec.dtype, **kw
        )
        self.full_done_spec = done_spec(batch, self.device)

    def _check_initial(self, initial: InitialObservations | None):
        if isinstance(initial, TensorDictBase):
            initial = get_key(type(self).__name__, initial, self.observation_key)
        if initial is None or isinstance(initial, ReplayBuffer):
            return initial
        if isinstance(initial, Tensor):
            if (
                initial.ndim == 0
                or initial.shape[-1] != self.observation_dim
                or not initial.numel()
            ):
                raise ValueError(
                    f"WorldModelEnv: initial_observations has shape {tuple(initial.shape)}, "
                    f"expected a non-empty [..., {self.observation_dim}] (the observation_spec's "
                    "feature size)."
                )
            return initial.detach().reshape(-1, self.observation_dim)
        if callable(initial):
            return initial
        raise TypeError(
            "WorldModelEnv: initial_observations must be a tensor, a TensorDict, a ReplayBuffer, "
            f"a callable or None; got {type(initial).__name__}."
        )

    # -------------------------------------------------------------- models
    @property
    def dynamics_model(self) -> TensorDictModuleBase:
        """The dynamics model (shared, not copied)."""
        return self.world_model.dynamics_model

    @property
    def reward_model(self) -> TensorDictModuleBase:
        """The reward model (shared, not copied)."""
        return self.world_model.reward_model

    @property
    def termination_model(self) -> TensorDictModuleBase | None:
        """The termination model, or ``None``."""
        return self.world_model.termination_model

    # ---------------------------------------------------------------- starts
    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._rng = None
            return
        rng = torch.Generator()
        rng.manual_seed(int(seed))
        self._rng = rng

    def initial_observations(self, batch_size: Sequence[int] | torch.Size | None = None) -> Tensor:
        """Draw start observations ``[*batch_size, obs_dim]`` from ``initial_observations``.

        Args:
            batch_size: the batch shape (default: the env's).

        Raises:
            RuntimeError: without a source of start states, or from an empty replay buffer.

        """
        shape = self.batch_size if batch_size is None else torch.Size(batch_size)
        n = math.prod(shape)
        source = self._initial
        if source is None:
            raise RuntimeError(
                "WorldModelEnv has no initial_observations: pass them at construction, or give "
                "explicit starts with env.reset(TensorDict({'observation': obs}, batch_size), "
                "set_state=True)."
            )
        if isinstance(source, ReplayBuffer):
            storage = source.storage
            count = len(storage)
            if count == 0:
                raise RuntimeError("WorldModelEnv: the replay buffer of start states is empty.")
            rows = torch.randint(count, (n,), generator=self._rng)
            stored_shape = getattr(storage, "shape", None)
            index = rows if stored_shape is None else torch.unravel_index(rows, stored_shape)
            obs = get_key(type(self).__name__, storage[index], self.observation_key)
        elif isinstance(source, Tensor):
            rows = torch.randint(source.shape[0], (n,), generator=self._rng)
            obs = source[rows.to(source.device)]
        else:
            obs = source(shape)
        if obs.shape[-1:] != (self.observation_dim,) or obs.numel() != n * self.observation_dim:
            raise ValueError(
                f"WorldModelEnv: initial observations have shape {tuple(obs.shape)}, expected "
                f"{(*shape, self.observation_dim)}."
            )
        dtype = self.observation_spec[self.observation_key].dtype
        return obs.reshape(*shape, self.observation_dim).to(device=self.device, dtype=dtype)

    # ------------------------------------------------------------- env API
    def _done_flags(self, batch: torch.Size) -> dict[str, Tensor]:
        flag = torch.zeros(*batch, 1, dtype=torch.bool, device=self.device)
        return {"done": flag, "terminated": flag.clone(), "truncated": flag.clone()}

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        batch = self.batch_size if tensordict is None else tensordict.batch_size
        set_state = bool(kwargs.get("set_state"))
        obs = None if tensordict is None else tensordict.get(self.observation_key, None)
        if set_state and obs is not None:
            expected = (*batch, self.observation_dim)
            if tuple(obs.shape) != expected:
                raise ValueError(
                    f"WorldModelEnv: the reset entry {self.observation_key!r} has shape "
                    f"{tuple(obs.shape)}, expected {expected} ([*batch_size, obs_dim])."
                )
            dtype = self.observation_spec[self.observation_key].dtype
            obs = obs.to(device=self.device, dtype=dtype)
            count = tensordict.get(_STEP_COUNT, None)
        else:
            obs, count = self.initial_observations(batch), None
        out = {self.observation_key: obs, **self._done_flags(batch)}
        if self.max_steps is not None:
            if count is None:
                count = torch.zeros(*batch, 1, dtype=torch.int64, device=self.device)
            out[_STEP_COUNT] = count
        return TensorDict(out, batch_size=batch, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch = tensordict.batch_size
        grad = contextlib.nullcontext() if self.differentiable else torch.no_grad()
        with grad:
            predicted = self.world_model(tensordict.exclude("next"))
        obs_spec = self.observation_spec[self.observation_key]
        next_obs = predicted.get(("next", self.observation_key))
        expected = (*batch, self.observation_dim)
        if tuple(next_obs.shape) != expected:
            raise ValueError(
                f"WorldModelEnv: the dynamics model predicted {('next', self.observation_key)!r} "
                f"of shape {tuple(next_obs.shape)}, expected {expected}."
            )
        reward_spec = self.reward_spec
        reward_shape = reward_spec.shape[len(self.batch_size) :]
        reward = predicted.get(("next", "reward")).reshape(*batch, *reward_shape)
        terminated = predicted.get(("next", "terminated"))
        out = {
            self.observation_key: next_obs.to(obs_spec.dtype),
            "reward": reward.to(reward_spec.dtype),
            "terminated": terminated,
        }
        if self.max_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            count = tensordict.get(_STEP_COUNT) + 1
            truncated = count >= self.max_steps
            out[_STEP_COUNT] = count
        out["truncated"] = truncated
        out["done"] = terminated | truncated
        return TensorDict(out, batch_size=batch, device=self.device)
