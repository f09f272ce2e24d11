r"""What :class:`~torchrl_svg.objectives.S2VGLoss` needs besides its equations.

* :func:`check_s2vg_options`: the constructor's checks of the options that are not
  networks (horizons, ensemble use, temperature, termination model);
* :class:`SoftTemperature`: the entropy temperature :math:`\alpha` as SAC keeps it
  (``log_alpha``, learned or fixed, optional bounds, the target entropy);
* :class:`ImaginedSteps`: the steps the loss imagines through the models with fresh
  noise: one model step, the actor's ``actor_horizon``-step rollout (with the
  ensemble's trust flags) and the critic's ``horizon - 1`` value-expansion steps.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from torchrl_svg.modules.bounds import BoundedObservations, checked_bounds
from torchrl_svg.modules.termination import Termination
from torchrl_svg.objectives._base import check_horizon
from torchrl_svg.objectives._common import (
    continuation,
    expected_reward,
    imagine_rollout,
    model_dist,
    policy_sample,
    swapped,
    transition,
)

__all__ = ["ImaginedSteps", "SoftTemperature", "check_s2vg_options"]

ENSEMBLE_MEMBERS = ("step", "rollout")


def check_s2vg_options(
    dynamics_model: object,
    termination_model: object,
    *,
    num_qvalue_nets: int,
    horizon: int,
    actor_horizon: int,
    alpha_init: float,
    disagreement_bound: float | None,
    ensemble_members: str,
    expansion_ensemble_mean: bool,
) -> None:
    """Refuse options of :class:`~torchrl_svg.objectives.S2VGLoss` that are out of range or need another model.

    Raises:
        ValueError: a horizon that is not an integer ``>= 1``, fewer than one Q network, a
            temperature or disagreement bound that is not positive, an unknown
            ``ensemble_members``, or an ensemble option without the ensemble it needs.
        TypeError: a termination model that is not a
            :class:`~torchrl_svg.modules.Termination`.

    """
    check_horizon("horizon", horizon)
    check_horizon("actor_horizon", actor_horizon)
    if disagreement_bound is not None and not disagreement_bound > 0:
        raise ValueError(f"disagreement_bound must be positive, got {disagreement_bound!r}.")
    if num_qvalue_nets < 1:
        raise ValueError(f"num_qvalue_nets must be >= 1, got {num_qvalue_nets}.")
    if alpha_init <= 0:
        raise ValueError(f"alpha_init must be positive, got {alpha_init}.")
    if ensemble_members not in ENSEMBLE_MEMBERS:
        raise ValueError(f"ensemble_members must be 'step' or 'rollout', got {ensemble_members!r}.")
    if ensemble_members == "rollout" and not getattr(dynamics_model, "samples_members", False):
        raise ValueError(
            "S2VGLoss: ensemble_members='rollout' needs a dynamics ensemble that draws one "
            "member per sample (GaussianDynamics(ensemble_size >= 2, "
            "ensemble_reduction='sample'))."
        )
    ensemble_size = getattr(dynamics_model, "ensemble_size", 1)
    if disagreement_bound is not None and ensemble_size < 2:
        raise ValueError(
            "S2VGLoss: disagreement_bound needs an ensemble dynamics model "
            "(GaussianDynamics(ensemble_size >= 2)) to measure disagreement."
        )
    if expansion_ensemble_mean and (ensemble_size < 2 or horizon < 2):
        raise ValueError(
            "S2VGLoss: expansion_ensemble_mean needs an ensemble dynamics model "
            "(GaussianDynamics(ensemble_size >= 2)) and horizon >= 2 (the critic targets "
            f"imagine horizon - 1 steps); got ensemble_size={ensemble_size}, horizon={horizon}."
        )
    if termination_model is not None and not isinstance(termination_model, Termination):
        raise TypeError(
            "S2VGLoss: termination_model must be a torchrl_svg.modules.Termination "
            "(KnownTermination or LearnedTermination) or None; "
            f"got {type(termination_model).__name__}."
        )


class SoftTemperature:
    r"""The entropy temperature :math:`\alpha = \exp(\log\alpha)` of a soft loss (mixin).

    ``log_alpha`` is a parameter, or a buffer when the temperature is fixed; it is
    clamped to ``[min_log_alpha, max_log_alpha]`` when those are set.
    ``target_entropy`` is a buffer.
    """

    log_alpha: Tensor
    target_entropy: Tensor
    fixed_alpha: bool
    min_log_alpha: float | None
    max_log_alpha: float | None

    def _init_temperature(
        self,
        alpha_init: float,
        *,
        fixed_alpha: bool,
        target_entropy: str | float,
        min_alpha: float | None,
        max_alpha: float | None,
        action_dim: int | None,
        like: Tensor,
    ) -> None:
        """Register ``log_alpha`` and ``target_entropy`` with the device and dtype of ``like``.

        ``target_entropy="auto"`` is ``-action_dim``.

        Raises:
            ValueError: ``target_entropy="auto"`` with a learned temperature and no known
                action size.

        """
        self.fixed_alpha = bool(fixed_alpha)
        log_alpha = torch.tensor(math.log(alpha_init), device=like.device, dtype=like.dtype)
        if self.fixed_alpha:
            self.register_buffer("log_alpha", log_alpha)
        else:
            self.register_parameter("log_alpha", torch.nn.Parameter(log_alpha))
        self.min_log_alpha = math.log(min_alpha) if min_alpha else None
        self.max_log_alpha = math.log(max_alpha) if max_alpha else None
        if target_entropy == "auto":
            if action_dim is None:
                if not self.fixed_alpha:
                    raise ValueError(
                        f"{type(self).__name__}: target_entropy='auto' needs the action size; "
                        "give the actor a spec or pass action_spec= or a numeric target_entropy."
                    )
                target_entropy = 0.0
            else:
                target_entropy = -float(action_dim)
        self.register_buffer(
            "target_entropy",
            torch.tensor(float(target_entropy), device=like.device, dtype=like.dtype),
        )

    @property
    def _alpha(self) -> Tensor:
        """The current temperature (detached), after clamping ``log_alpha`` to its bounds."""
        if self.min_log_alpha is not None or self.max_log_alpha is not None:
            self.log_alpha.data.clamp_(self.min_log_alpha, self.max_log_alpha)
        return self.log_alpha.detach().exp()


class ImaginedSteps(BoundedObservations):
    """The steps :class:`~torchrl_svg.objectives.S2VGLoss` imagines through its models (mixin).

    Every step draws fresh policy and model noise. The actor's steps call the models,
    the termination model and the critic with detached parameters, so that only the
    policy receives their gradient.
    """

    def _set_observation_bounds(self, bounds: tuple[Tensor, Tensor] | None) -> None:
        """Check ``observation_bounds`` and keep them as ``observation_low/high``."""
        self._register_observation_bounds(
            checked_bounds(bounds, self.observation_dim, type(self).__name__)
        )

    def _policy(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor]:
        """Reparameterised action and its log-probability at the states of ``tensordict``."""
        return policy_sample(self.actor_network, self.actor_network_params, tensordict)

    def _model_step(
        self, observation: Tensor, action: Tensor, member: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One step of the actor's return: ``(r_hat(s, a, s') [*B], s' [*B, obs_dim])``.

        ``s'`` is drawn from the dynamics model with fresh noise (its mean with
        ``actor_model_noise=False``) and clipped to ``observation_bounds``; ``member`` is
        the ensemble member of each sample (``None``: as the model draws it).
        """
        keys = self.tensor_keys
        step = transition(keys.observation, keys.action, observation, action)
        if member is not None:
            step.set(self.dynamics_model.member_key, member)
        dynamics_params = self._cached_detached_dynamics_params
        dist = model_dist(self.dynamics_model, dynamics_params, step)
        next_observation = self._bounded(dist.rsample() if self.actor_model_noise else dist.mean)
        if member is not None:
            step = step.exclude(self.dynamics_model.member_key)
        step.set(("next", keys.observation), next_observation)
        reward = expected_reward(self.reward_model, self._cached_detached_reward_params, step)
        return reward, next_observation

    def _continuation(self, next_observation: Tensor) -> Tensor:
        """``1 - p(terminated | s')``: ``[*B]`` (ones when there is no termination model)."""
        return continuation(
            self.termination_model,
            self._cached_detached_termination_params,
            next_observation,
            self.tensor_keys.observation,
        )

    def _trusted(self, state: Tensor, action: Tensor) -> Tensor:
        """1 where the ensemble's members agree on the step from ``state`` (``disagreement_bound``)."""
        keys = self.tensor_keys
        step = transition(keys.observation, keys.action, state, action)
        dynamics_params = self._cached_detached_dynamics_params
        with torch.no_grad(), swapped(dynamics_params, self.dynamics_model):
            loc, _ = self.dynamics_model.normalized_params(step)  # [E, *B, D]
        disagreement = loc.std(0, unbiased=False).mean(-1)
        return (disagreement <= self.disagreement_bound).to(state.dtype)

    def _actor_rollout(self, tensordict: TensorDictBase) -> dict[str, list[Tensor] | Tensor]:
        r"""The ``actor_horizon`` imagined steps of the actor's soft return from the real states.

        Step ``t`` draws :math:`\tilde a_t = \pi_\theta(\hat s_t, \eta_t)` (at the states
        of ``tensordict`` for ``t = 0``) and :math:`\hat s_{t+1}` from the models; with
        ``disagreement_bound`` it also records :math:`V(\hat s_t)` and whether the
        ensemble trusts the step. With ``ensemble_members="rollout"`` one member is drawn
        per sample and kept along the rollout.

        Returns:
            ``rewards``, ``log_probs``, ``continuations`` (``H`` tensors ``[*B]`` each),
            ``values`` and ``trusted`` (likewise, or empty without
            ``disagreement_bound``), ``final_state`` :math:`\hat s_H` ``[*B, obs_dim]``
            and ``action`` :math:`\tilde a_0` ``[*B, act_dim]``.
        """
        state = tensordict.get(self.tensor_keys.observation)
        action, log_prob = self._policy(tensordict)
        value_params = self._cached_detached_value_params
        out: dict[str, list[Tensor] | Tensor] = {"action": action}
        for name in ("rewards", "log_probs", "continuations", "values", "trusted"):
            out[name] = []
        member = None
        if self.ensemble_members == "rollout":  # one model per imagined rollout
            member = self.dynamics_model.draw_members(state.shape[:-1], state.device)
        for t in range(self.actor_horizon):
            if t > 0:  # a fresh action at the imagined state
                td_state = TensorDict({self.tensor_keys.observation: state}, state.shape[:-1])
                action, log_prob = self._policy(td_state)
            if self.disagreement_bound is not None:
                out["values"].append(self._state_value(state, value_params))
                out["trusted"].append(self._trusted(state, action))
            reward, next_state = self._model_step(state, action, member)
            out["rewards"].append(reward)
            out["log_probs"].append(log_prob)
            out["continuations"].append(self._continuation(next_state))
            state = next_state
        out["final_state"] = state
        return out

    def _imagined(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The ``horizon - 1`` imagined steps of the critic's targets, ``[*B, horizon - 1]``.

        Read from ``tensordict[imagined]`` when a :class:`~torchrl_svg.data.ModelRollout`
        replay transform wrote them at sample time, imagined here from the real next
        states otherwise.
        """
        keys = self.tensor_keys
        steps = self.horizon - 1
        stored = tensordict.get(keys.imagined, None)
        if stored is not None:
            if stored.shape[-1] != steps:
                raise ValueError(
                    f"S2VGLoss(horizon={self.horizon}) needs {steps} imagined steps under "
                    f"{keys.imagined!r}, got {stored.shape[-1]}."
                )
            return stored
        return imagine_rollout(
            self.actor_network,
            self.actor_network_params,
            self.dynamics_model,
            self.dynamics_model_params,
            self.reward_model,
            self.reward_model_params,
            self.termination_model,
            None if self.termination_model is None else self.termination_model_params,
            tensordict.get(("next", keys.observation)),
            steps,
            keys.observation,
            keys.action,
            ensemble_reduction="average" if self.expansion_ensemble_mean else None,
            bound=self._bounded,
        )
