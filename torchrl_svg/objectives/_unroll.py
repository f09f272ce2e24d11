"""Re-building real (sub-)trajectories through the policy and the model with inferred noise.

The SVG(k) and SVG(inf) actor terms (SVG paper eqs 9-13, Algorithm 1) unroll the
policy and the dynamics model along replayed steps; with the noise inferred from the
real actions and next states the re-built trajectory equals the real one in value
while gradients flow through the policy and the model's Jacobians.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.objectives import LossModule

from torchrl_svg._validation import TERMINATED_HINT, Entry, terminated_flags
from torchrl_svg.objectives._base import PolicyNoiseKeys, detached
from torchrl_svg.objectives._common import (
    check_stored_preimage,
    expected_reward,
    model_dist,
    policy_dist,
    policy_preimage,
    swapped,
    transition,
)
from torchrl_svg.objectives.functional import episode_masks
from torchrl_svg.objectives.noise import location_scale

__all__ = ["UnrollKeys", "trajectory_entries", "trajectory_masks", "unroll_real"]


@dataclass
class UnrollKeys(PolicyNoiseKeys):
    """The keys :func:`unroll_real` reads: a transition's and its policy noise's, and these.

    Attributes:
        model_noise / model_member: the inferred model noise and the ensemble member
            that inferred it, written by the replay transforms (used when present).
            Defaults ``"model_noise"``, ``"ensemble_member"``.
    """

    model_noise: NestedKey = "model_noise"
    model_member: NestedKey = "ensemble_member"


def trajectory_entries(
    keys: UnrollKeys, obs: int | str, act: int | str, *, bootstrap: bool
) -> list[Entry]:
    """What :func:`unroll_real` and :func:`trajectory_masks` read from ``data [*B, T]``.

    The real steps (``("next", "done")`` included), the stored pre-tanh values and
    noises of the replay transforms (used when present) and TorchRL's padding mask.
    A loss that bootstraps after the last step (``bootstrap``) needs
    ``("next", "terminated")``; otherwise it is used when present.
    """
    return [
        Entry(keys.observation, obs),
        Entry(keys.action, act),
        Entry(("next", keys.observation), obs),
        Entry(("next", keys.reward), 1),
        Entry(("next", keys.done), 1, any_real=True),
        Entry(
            ("next", keys.terminated), 1, any_real=True, required=bootstrap, hint=TERMINATED_HINT
        ),
        Entry(keys.action_pre_tanh, act, required=False),
        Entry(keys.policy_noise, act, required=False),
        Entry(keys.model_noise, obs, required=False),
        Entry(keys.model_member, scalar=True, any_real=True, required=False),
        Entry(("collector", "mask"), scalar=True, any_real=True, required=False),
    ]


def unroll_real(
    loss: LossModule,
    data: TensorDictBase,
    steps: int,
    noise: str,
) -> dict[str, Tensor | list[Tensor]]:
    r"""Unroll the policy and the model along the first ``steps`` real steps of ``data [*B, T]``.

    With ``noise="inferred"`` the policy noise :math:`\eta_t` and model noise
    :math:`\xi_t` are inferred from the real actions (from their stored pre-tanh
    values when present) and next states (or read from the ``policy_noise`` /
    ``model_noise`` entries written by the replay transforms), so the re-built trajectory :math:`(\hat s_t, \tilde a_t)` equals
    the real one in value while gradients flow through the policy and the model's
    Jacobians. Each step's surrogate reward then has the value of the real reward
    and the gradient of the reward model: :math:`r_t + \hat r_t - \mathrm{sg}(\hat r_t)`.
    With ``noise="sampled"`` the noise is drawn afresh and the trajectory is
    simulated by the model from the real initial state (a planner), with model
    rewards.

    Returns:
        ``rewards`` (list of ``[*B]``), ``final_state`` ``[*B, D]``, and
        ``log_prob`` (list of detached ``log pi_theta(a_t|s_t)`` of the real
        actions, ``[*B]``; only with inferred noise).

    Raises:
        ValueError: a stored pre-tanh value does not reproduce its action (checked
            as ``loss.check_finite`` says; see :func:`~torchrl_svg._validation.check_preimage`).
    """
    keys = loss.tensor_keys
    obs_key, act_key = keys.observation, keys.action
    observations = data.get(obs_key)
    actions = data.get(act_key)
    next_observations = data.get(("next", obs_key))
    real_rewards = data.get(("next", keys.reward)).squeeze(-1)
    stored_policy_noise = data.get(keys.policy_noise, None)
    stored_model_noise = data.get(keys.model_noise, None)
    stored_preimage = data.get(keys.action_pre_tanh, None)
    stored_member = data.get(keys.model_member, None)
    if (
        noise == "inferred"
        and stored_model_noise is not None
        and stored_member is None
        and getattr(loss.dynamics_model, "samples_members", False)
    ):
        raise KeyError(
            f"{type(loss).__name__}: the entry {keys.model_noise!r} was inferred by one member of "
            f"an ensemble that draws a member per sample, but the entry {keys.model_member!r} "
            "saying which is missing, so the next states could not be rebuilt. Write both with "
            "torchrl_svg.data.ModelNoiseInference, or leave model_noise out (the loss then "
            "infers it itself)."
        )
    if noise == "inferred":
        check_stored_preimage(
            loss,
            actions[..., :steps, :],
            None if stored_preimage is None else stored_preimage[..., :steps, :],
            act_key,
            keys.action_pre_tanh,
            getattr(keys, "sample_log_prob", None),
        )
    state = observations[..., 0, :]
    rewards, log_probs = [], []
    with ExitStack() as stack:
        # swap the parameters in once for the whole unroll (detached for the models)
        stack.enter_context(swapped(loss.actor_network_params, loss.actor_network))
        stack.enter_context(swapped(loss._cached_detached_dynamics_params, loss.dynamics_model))
        stack.enter_context(swapped(loss._cached_detached_reward_params, loss.reward_model))
        for t in range(steps):
            state, step_reward, log_prob = _unroll_step(
                loss,
                state,
                t,
                actions,
                next_observations,
                real_rewards,
                stored_policy_noise,
                stored_model_noise,
                None if stored_preimage is None else stored_preimage[..., t, :],
                None if stored_member is None else stored_member[..., t],
                noise,
            )
            rewards.append(step_reward)
            if log_prob is not None:
                log_probs.append(log_prob)
    return {"rewards": rewards, "final_state": state, "log_prob": log_probs}


def _unroll_step(
    loss: LossModule,
    state: Tensor,
    t: int,
    actions: Tensor,
    next_observations: Tensor,
    real_rewards: Tensor,
    stored_policy_noise: Tensor | None,
    stored_model_noise: Tensor | None,
    preimage: Tensor | None,
    member: Tensor | None,
    noise: str,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One step of :func:`unroll_real` (parameters already swapped in): ``(s_{t+1}, r_t, log_pi_t)``.

    ``preimage`` is the stored pre-tanh value of step ``t`` (``[*B, A]``) and
    ``member`` the ensemble member that inferred the stored model noise (``[*B]``).
    """
    keys = loss.tensor_keys
    obs_key, act_key = keys.observation, keys.action
    log_prob = None
    td_state = TensorDict({obs_key: state}, state.shape[:-1])
    pol = location_scale(policy_dist(loss.actor_network, None, td_state))
    if noise == "inferred":
        frozen = detached(pol)
        # the behaviour scored this pre-image at collection: score the same one
        u = policy_preimage(frozen, actions[..., t, :], preimage)
        eta = (
            stored_policy_noise[..., t, :]
            if stored_policy_noise is not None
            else frozen.noise_of_preimage(u)
        )
        log_prob = frozen.log_prob_of_preimage(u)
    else:
        eta = torch.randn_like(pol.loc)
    action = pol.rebuild(eta)
    step = transition(obs_key, act_key, state, action)
    if noise == "inferred" and member is not None and stored_model_noise is not None:
        # the stored model noise belongs to this ensemble member: rebuild with the same one
        step.set(getattr(loss.dynamics_model, "member_key", keys.model_member), member)
    dyn = location_scale(model_dist(loss.dynamics_model, None, step))
    if noise == "inferred":
        xi = (
            stored_model_noise[..., t, :]
            if stored_model_noise is not None
            else detached(dyn).infer_noise(next_observations[..., t, :])
        )
    else:
        xi = torch.randn_like(dyn.loc)
    next_state = dyn.rebuild(xi)
    step.set(("next", obs_key), next_state)
    model_reward = expected_reward(loss.reward_model, None, step)
    if noise == "inferred":
        step_reward = real_rewards[..., t] + model_reward - model_reward.detach()
    else:
        step_reward = model_reward
    return next_state, step_reward, log_prob


def trajectory_masks(
    data: TensorDictBase, keys, steps: int, owner: str | None = None
) -> tuple[Tensor, Tensor]:
    """Per-step validity ``[*B, steps]`` and the bootstrap mask ``[*B]`` after ``steps`` steps.

    A step is valid while the (sub-)trajectory has not ended earlier (``done``) and,
    for padded slices, while TorchRL's ``("collector", "mask")`` marks it valid.
    Bootstrapping after the last step is allowed unless it terminated. A loss
    that bootstraps passes its name as ``owner``: ``("next", "terminated")`` is
    then required (a missing one raises ``KeyError``); without ``owner`` the
    bootstrap mask is not used and ``done`` may stand in for it.
    """
    done = data.get(("next", keys.done)).squeeze(-1)[..., :steps]
    if owner is not None:
        terminated = terminated_flags(owner, data, ("next", keys.terminated))
    else:
        terminated = data.get(("next", keys.terminated), None)
    terminated = None if terminated is None else terminated.squeeze(-1)[..., :steps]
    valid = data.get(("collector", "mask"), None)
    alive, bootstrap = episode_masks(
        done, terminated, None if valid is None else valid[..., :steps]
    )
    dtype = data.get(keys.observation).dtype
    return alive.to(dtype), bootstrap.to(dtype)
