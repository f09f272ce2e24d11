"""The SVG family of Heess et al. 2015: SVG(0), SVG(1), SVG(1)-ER, SVG(k) and SVG(inf)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torch import distributions as D
from torchrl.data import TensorSpec
from torchrl.objectives import LossModule
from torchrl.objectives.common import _make_target_param
from torchrl.objectives.utils import ValueEstimators, _cache_values, _vmap_func, distance_loss
from torchrl.objectives.value import TD0Estimator

from torchrl_svg._validation import (
    TERMINATED_HINT,
    Entry,
    check_policy,
    check_preimage,
    check_sizes,
    require_get_dist,
    tanh_bounds,
    terminated_flags,
    transition_entries,
)
from torchrl_svg.objectives._common import (
    InputValidation,
    expected_reward,
    model_dist,
    policy_dist,
    policy_preimage,
    policy_sample,
    state_value,
    swapped,
    transition,
)
from torchrl_svg.objectives._groups import OwnKeysAndParameters
from torchrl_svg.objectives.functional import episode_masks
from torchrl_svg.objectives.noise import LocationScale, location_scale

__all__ = ["SVG0Loss", "SVG1Loss", "SVGInfLoss", "SVGLoss"]

NOISE_MODES = ("inferred", "sampled")
KL_DIRECTIONS = ("current_reference", "reference_current")


def _detached(ls: LocationScale) -> LocationScale:
    return LocationScale(
        ls.loc.detach(),
        ls.scale.detach(),
        None if ls.low is None else ls.low.detach(),
        None if ls.high is None else ls.high.detach(),
    )


class _DiscountMixin:
    """The TorchRL way of setting the discount: ``make_value_estimator(gamma=...)``."""

    default_value_estimator = ValueEstimators.TD0

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams):
        """Set the discount ``gamma`` (only :attr:`ValueEstimators.TD0` is supported)."""
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:
            self.__dict__.pop("gamma", None)
            return self
        if value_type != ValueEstimators.TD0:
            raise NotImplementedError(
                f"{type(self).__name__} supports ValueEstimators.TD0 only; got {value_type}."
            )
        self._value_estimator = TD0Estimator(value_network=None, **hp)
        self.gamma = float(hp["gamma"])
        return self

    @property
    def _gamma(self) -> float:
        gamma = self.__dict__.get("gamma")
        if gamma is None:
            gamma = float(self.value_estimator.gamma)
            self.__dict__["gamma"] = gamma
        return gamma

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass


def _unroll_real(
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
        check_preimage(
            type(loss).__name__,
            loss._tanh_bounds,
            actions[..., :steps, :],
            None if stored_preimage is None else stored_preimage[..., :steps, :],
            action_key=act_key,
            preimage_key=keys.action_pre_tanh,
            log_prob_key=getattr(keys, "sample_log_prob", None),
            mode=loss.check_finite,
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
    """One step of :func:`_unroll_real` (parameters already swapped in): ``(s_{t+1}, r_t, log_pi_t)``.

    ``preimage`` is the stored pre-tanh value of step ``t`` (``[*B, A]``) and
    ``member`` the ensemble member that inferred the stored model noise (``[*B]``).
    """
    keys = loss.tensor_keys
    obs_key, act_key = keys.observation, keys.action
    log_prob = None
    td_state = TensorDict({obs_key: state}, state.shape[:-1])
    pol = location_scale(policy_dist(loss.actor_network, None, td_state))
    if noise == "inferred":
        frozen = _detached(pol)
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
            else _detached(dyn).infer_noise(next_observations[..., t, :])
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


def _episode_masks(
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


class SVG0Loss(OwnKeysAndParameters, InputValidation, _DiscountMixin, LossModule):
    r"""SVG(0) with replay (SVG paper, Algorithm 3): a stochastic analogue of DPG.

    * ``loss_qvalue``: TD regression of :math:`Q_\phi(s, a)` on real transitions,

      .. math:: y = r + \gamma\,(1 - d)\,\min_i Q_{\bar\phi_i}(s', a'),\quad a' \sim \pi_\theta(s')

      with target parameters :math:`\bar\phi` (move them with
      :class:`~torchrl.objectives.SoftUpdate` or :class:`~torchrl.objectives.HardUpdate`).
    * ``loss_actor``: :math:`-Q_\phi(s, \pi_\theta(s, \eta))` with :math:`\eta`
      inferred from the replayed action (``noise="inferred"``, Alg. 3 line 10)
      or drawn afresh (``noise="sampled"``); the critic parameters get no gradient.

    Args:
        actor_network: a location-scale policy (Normal, IndependentNormal, TanhNormal).
        qvalue_network: ``Q(s, a)`` writing ``"state_action_value"``.

    Keyword Args:
        num_qvalue_nets: number of Q networks (the actor uses their mean). Default 1.
        noise: ``"inferred"`` or ``"sampled"`` policy noise in the actor term.
        loss_function: critic distance. ``reduction``: ``"mean"`` | ``"sum"`` | ``"none"``.
        action_spec: the environment's action spec, checked against the actor's
            size and TanhNormal bounds.
        check_finite: refuse NaN/inf inputs: ``None`` (default) when it costs no
            device synchronisation (CPU inputs, eager), ``True`` always, ``False`` never.

    Inputs are checked by :meth:`validate_input` as :mod:`torchrl_svg.objectives` documents.

    Raises:
        TypeError: at construction, for a policy that is not location-scale; in
            ``forward``, for an entry of the wrong dtype.
        ValueError: at construction, for TanhNormal bounds that differ from
            ``action_spec``'s; in ``forward``, for a wrong shape, an empty batch or
            (per ``check_finite``) a NaN/inf entry.
        KeyError: in ``forward``, for a missing entry.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_svg.modules import make_actor, make_qvalue
        >>> from torchrl_svg.objectives import SVG0Loss
        >>> spec = Bounded(-1.0, 1.0, (2,))
        >>> loss = SVG0Loss(make_actor(3, spec, hidden_sizes=(16,)), make_qvalue(3, 2, hidden_sizes=(16,)))
        >>> _ = loss.make_value_estimator(gamma=0.99)
        >>> updater = SoftUpdate(loss, tau=0.01)
        >>> data = TensorDict({"observation": torch.randn(8, 3), "action": spec.rand((8,)),
        ...     ("next", "observation"): torch.randn(8, 3), ("next", "reward"): torch.randn(8, 1),
        ...     ("next", "done"): torch.zeros(8, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool)}, [8])
        >>> out = loss(data)
        >>> (out["loss_actor"] + out["loss_qvalue"]).backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            observation: read by the critic. Default ``"observation"``.
            action: the replayed action. Default ``"action"``.
            state_action_value: written by the Q network. Default ``"state_action_value"``.
            reward / done / terminated: read under ``"next"`` (``terminated`` is required).
            action_pre_tanh: the pre-tanh value of the replayed action, stored by
                :class:`~torchrl_svg.modules.TanhNormalActor` (used when present).
            policy_noise: inferred policy noise written by
                :class:`~torchrl_svg.data.PolicyNoiseInference` (used when present).
            priority: where the TD error is written. Default ``"td_error"``.
            priority_weight: weights of a prioritized buffer. Default ``"priority_weight"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        action_pre_tanh: NestedKey = "action_pre_tanh"
        policy_noise: NestedKey = "policy_noise"
        priority: NestedKey = "td_error"
        priority_weight: NestedKey = "priority_weight"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    actor_network: ProbabilisticTensorDictSequential
    qvalue_network: TensorDictModule
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule,
        *,
        num_qvalue_nets: int = 1,
        noise: str = "inferred",
        loss_function: str = "l2",
        reduction: str = "mean",
        action_spec: TensorSpec | None = None,
        check_finite: bool | None = None,
    ) -> None:
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        sizes = check_policy(
            "SVG0Loss", actor_network, action_spec=action_spec, action_key=self.tensor_keys.action
        )
        self.action_dim, self.observation_dim = check_sizes(sizes, {}, actor=actor_network)
        self._tanh_bounds = tanh_bounds(actor_network)
        self.noise = noise
        self.loss_function = loss_function
        self.reduction = reduction
        self.check_finite = check_finite
        self.num_qvalue_nets = int(num_qvalue_nets)
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(
            qvalue_network, "qvalue_network", self.num_qvalue_nets, create_target_params=True
        )
        self._make_vmap()

    def _make_vmap(self) -> None:
        self._vmap_qnetworkN0 = _vmap_func(
            self.qvalue_network, (None, 0), randomness=self.vmap_randomness
        )

    @property
    @_cache_values
    def _cached_detached_qvalue_params(self) -> TensorDictBase:
        return self.qvalue_network_params.detach()

    def _qvalues(
        self, tensordict: TensorDictBase, action: Tensor, params: TensorDictBase
    ) -> Tensor:
        td = tensordict.select(*self.qvalue_network.in_keys, strict=False)
        td.set(self.tensor_keys.action, action)
        return (
            self._vmap_qnetworkN0(td, params).get(self.tensor_keys.state_action_value).squeeze(-1)
        )

    def _input_entries(self) -> list[Entry]:
        """What :meth:`forward` reads (``("next", "terminated")`` is required)."""
        keys = self.tensor_keys
        obs = self.observation_dim if self.observation_dim is not None else "obs_dim"
        act = self.action_dim if self.action_dim is not None else "action_dim"
        return [
            *transition_entries(keys, obs, act),
            Entry(keys.action_pre_tanh, act, required=False),
            Entry(keys.policy_noise, act, required=False),
            Entry(keys.priority_weight, scalar=True, any_real=True, required=False),
        ]

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """TD regression of the Q networks on real transitions."""
        keys = self.tensor_keys
        weights = self._maybe_get_priority_weight(tensordict)
        with torch.no_grad():
            next_td = tensordict.get("next").select(keys.observation)
            next_action, _ = policy_sample(self.actor_network, self.actor_network_params, next_td)
            next_q = (
                self._qvalues(next_td, next_action, self.target_qvalue_network_params).min(0).values
            )
            terminated = terminated_flags(
                type(self).__name__, tensordict, ("next", keys.terminated)
            )
            reward = tensordict.get(("next", keys.reward)).squeeze(-1)
            target = reward + self._gamma * (1.0 - terminated.squeeze(-1).to(reward.dtype)) * next_q
        pred = self._qvalues(tensordict, tensordict.get(keys.action), self.qvalue_network_params)
        loss = distance_loss(pred, target.expand_as(pred), loss_function=self.loss_function).sum(0)
        td_error = (pred - target).abs().max(0).values.detach()
        return self._reduce_loss(loss, tensordict, weights=weights), {"td_error": td_error}

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        r"""The SVG(0) surrogate :math:`-Q(s, \pi_\theta(s, \eta))`."""
        keys = self.tensor_keys
        weights = self._maybe_get_priority_weight(tensordict)
        pol = location_scale(policy_dist(self.actor_network, self.actor_network_params, tensordict))
        if self.noise == "inferred":
            eta = tensordict.get(keys.policy_noise, None)
            if eta is None:
                action = tensordict.get(keys.action)
                preimage = tensordict.get(keys.action_pre_tanh, None)
                check_preimage(
                    type(self).__name__,
                    self._tanh_bounds,
                    action,
                    preimage,
                    action_key=keys.action,
                    preimage_key=keys.action_pre_tanh,
                    mode=self.check_finite,
                )
                frozen = _detached(pol)
                eta = frozen.noise_of_preimage(policy_preimage(frozen, action, preimage))
        else:
            eta = torch.randn_like(pol.loc)
        action = pol.rebuild(eta)
        q = self._qvalues(tensordict, action, self._cached_detached_qvalue_params).mean(0)
        return self._reduce_loss(-q, tensordict, weights=weights), {"q": q.detach()}

    _trained_networks = {"actor": "actor_network", "qvalue": "qvalue_network"}

    def _default_out_keys(self) -> list[str]:
        return ["loss_actor", "loss_qvalue"] + (["q"] if self.reduction != "none" else [])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_actor`` and ``loss_qvalue`` on a replay batch ``[*B]``."""
        keys = self.tensor_keys
        self.validate_input(tensordict)
        loss_qvalue, meta = self.qvalue_loss(tensordict)
        loss_actor, actor_meta = self.actor_loss(tensordict)
        tensordict.set(keys.priority, meta["td_error"])
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue}
        if self.reduction == "none":
            return TensorDict(out, tensordict.batch_size)
        out["q"] = actor_meta["q"].mean()
        return TensorDict(out, [])


class SVGLoss(OwnKeysAndParameters, InputValidation, _DiscountMixin, LossModule):
    r"""SVG(k) along real (sub-)trajectories; ``horizon=1`` is SVG(1) / SVG(1)-ER (SVG paper eq 13, Alg. 2, 4).

    Inputs are real transitions ``[*B]`` (``horizon=1``) or sub-trajectories
    ``[*B, T]`` with ``T == horizon`` (e.g. from TorchRL's
    :class:`~torchrl.data.SliceSampler` with ``slice_len=horizon``). Terms:

    * ``loss_actor`` (eq 13 extended to k steps): with the policy noise
      :math:`\eta_t` and model noise :math:`\xi_t` inferred from the real data,
      :math:`\tilde a_t = \pi_\theta(\hat s_t, \eta_t)`,
      :math:`\hat s_{t+1} = \hat f(\hat s_t, \tilde a_t, \xi_t)`, :math:`\hat s_0 = s_0`:

      .. math::

          \mathcal L_\pi = -w\Big[\sum_{t<k}\gamma^t \hat r(\hat s_t, \tilde a_t)
          + \gamma^k V(\hat s_k)\Big],\qquad
          w = \min\Big(\prod_{t<k}\frac{\pi_\theta(a_t|s_t)}{\beta(a_t|s_t)},\, w_{\max}\Big)

      where :math:`\beta` is the behaviour log-probability stored at collection.
      Both :math:`\pi_\theta` and :math:`\beta` score the same pre-tanh value
      :math:`u_t` of the action: the one stored at collection
      (``"action_pre_tanh"``, written by
      :class:`~torchrl_svg.modules.TanhNormalActor`), else the inverse tanh of the
      stored action, which in float32 is clamped once the policy saturates
      (:math:`|u| \gtrsim 8`) and then makes on-policy weights fall below 1.
      The value of each reward term is the real reward; its gradient is the
      reward model's. Model and critic parameters get no gradient.
    * ``loss_value`` (Alg. 4, fitted policy evaluation):
      :math:`\tfrac{w_t}{2}\big(V_\nu(s_t) - [r_t + \gamma(1-d_t)V_{\bar\nu}(s_{t+1})]\big)^2`
      on every real transition, with the per-step truncated weight :math:`w_t`;
      copy :math:`\bar\nu \leftarrow \nu` every ``C = 50`` updates with
      :class:`torchrl_svg.objectives.HardUpdate` ``(loss, value_network_update_interval=50)``
      (TorchRL's own ``HardUpdate`` copies every ``C + 1``).
    * ``loss_kl`` (App. D, optional, ``kl_coef > 0``): on replay states, with
      :math:`\pi_{\text{ref}}` the policy stored by :meth:`update_reference_policy`
      (call it at the start of each round of replay steps) and :math:`\pi_\theta`
      the policy being updated (after :math:`k-1` replay steps), by default
      (``kl_direction="current_reference"``, the paper's
      :math:`\mathrm{KL}[\pi_{\theta^{k-1}}\,\|\,\pi_\theta]` with its
      :math:`\pi_\theta` the policy at the start of the update)

      .. math:: \mathrm{KL}\big(\pi_\theta(\cdot|s)\,\|\,\pi_{\text{ref}}(\cdot|s)\big),

      or the other direction :math:`\mathrm{KL}(\pi_{\text{ref}}\,\|\,\pi_\theta)`
      with ``kl_direction="reference_current"``. For a squashed policy the KL of
      the underlying Normals is exact (KL is invariant under the bijection).

    With ``importance_weights=False`` all weights are 1 (on-policy data, SVG(1)
    without replay). Policy-gradient norm clipping (App. D) belongs to the
    optimiser step (``torch.nn.utils.clip_grad_norm_`` on the actor parameters;
    the training recipe's ``optim.actor_max_grad_norm``).

    Args:
        actor_network: a location-scale policy.
        value_network: ``V(s)`` writing ``"state_value"``.
        dynamics_model: location-scale model over the next observation
            (:class:`~torchrl_svg.modules.GaussianDynamics`, or a known one).
        reward_model: reward module (``get_dist`` mean, or deterministic output);
            it may read ``("next", "observation")``.

    Keyword Args:
        horizon: ``k >= 1``.
        max_importance_weight: truncation ``w_max`` (5 by default; the paper used 20 for two tasks).
        importance_weights: use truncated importance weights.
        noise: ``"inferred"`` (gradients along real trajectories) or ``"sampled"``.
        kl_coef: weight of the KL penalty (0: off).
        kl_direction: ``"current_reference"`` (default, App. D:
            :math:`\mathrm{KL}(\pi_\theta\|\pi_{\text{ref}})`) or ``"reference_current"``
            (:math:`\mathrm{KL}(\pi_{\text{ref}}\|\pi_\theta)`).
        loss_function / reduction: as usual.
        action_spec: the environment's action spec, checked against the actor's
            and the models' sizes and the actor's TanhNormal bounds.
        check_finite: refuse NaN/inf inputs: ``None`` (default) when it costs no
            device synchronisation (CPU inputs, eager), ``True`` always, ``False`` never.

    Inputs are checked by :meth:`validate_input` as :mod:`torchrl_svg.objectives` documents.

    Raises:
        TypeError: at construction, for a policy that is not location-scale or a
            dynamics model without ``get_dist``; in ``forward``, for an entry of the
            wrong dtype.
        ValueError: at construction, for bounds or sizes that disagree with
            ``action_spec`` or the models; in ``forward``, for a wrong shape, a batch
            that is not ``[*B, horizon]`` (``horizon > 1``), an empty batch or (per
            ``check_finite``) a NaN/inf entry.
        KeyError: in ``forward``, for a missing entry (``action_log_prob`` is needed
            for the importance weights unless ``importance_weight`` is stored;
            ``("next", "terminated")`` is always needed: ``done`` does not stand in
            for it, as it would turn time-limit truncations into terminals).
        ValueError: in ``forward``, also for a stored ``action_pre_tanh`` that does
            not reproduce its action (random warm-up steps whose behaviour
            log-probability is 0; see :class:`~torchrl_svg.data.RandomActionLogProb`),
            checked as ``check_finite`` says.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value
        >>> from torchrl_svg.objectives import HardUpdate, SVGLoss
        >>> spec = Bounded(-1.0, 1.0, (1,))
        >>> loss = SVGLoss(make_actor(3, spec, hidden_sizes=(16,)), make_value(3, hidden_sizes=(16,)),
        ...                GaussianDynamics(3, 1, hidden_sizes=(16,)), RewardModel(3, 1, hidden_sizes=(16,)))
        >>> _ = loss.make_value_estimator(gamma=0.99)
        >>> updater = HardUpdate(loss, value_network_update_interval=50)
        >>> data = TensorDict({"observation": torch.randn(8, 3), "action": spec.rand((8,)) * 0.9,
        ...     "action_log_prob": torch.zeros(8), ("next", "observation"): torch.randn(8, 3),
        ...     ("next", "reward"): torch.randn(8, 1), ("next", "done"): torch.zeros(8, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool)}, [8])
        >>> out = loss(data)
        >>> (out["loss_actor"] + out["loss_value"]).backward()
        >>> bool(out["importance_weight"] <= 5.0)
        True
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            observation / action: the real state and action.
            value: written by the value network. Default ``"state_value"``.
            reward / done / terminated: read under ``"next"`` (``terminated`` is required).
            sample_log_prob: behaviour log-probability stored at collection.
                Default ``"action_log_prob"``.
            action_pre_tanh: the pre-tanh value of the action stored at collection
                (:class:`~torchrl_svg.modules.TanhNormalActor`; used when present).
            importance_weight / policy_noise / model_noise / model_member: entries
                written by the replay transforms (used when present).
            priority_weight: weights of a prioritized buffer.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        value: NestedKey = "state_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        sample_log_prob: NestedKey = "action_log_prob"
        action_pre_tanh: NestedKey = "action_pre_tanh"
        importance_weight: NestedKey = "importance_weight"
        policy_noise: NestedKey = "policy_noise"
        model_noise: NestedKey = "model_noise"
        model_member: NestedKey = "ensemble_member"
        priority_weight: NestedKey = "priority_weight"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    actor_network: ProbabilisticTensorDictSequential
    value_network: TensorDictModule
    dynamics_model: TensorDictModuleBase
    reward_model: TensorDictModuleBase
    actor_network_params: TensorDictParams
    value_network_params: TensorDictParams
    dynamics_model_params: TensorDictParams
    reward_model_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_value_network_params: TensorDictParams
    target_dynamics_model_params: TensorDictParams
    target_reward_model_params: TensorDictParams

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        value_network: TensorDictModule,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        *,
        horizon: int = 1,
        max_importance_weight: float = 5.0,
        importance_weights: bool = True,
        noise: str = "inferred",
        kl_coef: float = 0.0,
        kl_direction: str = "current_reference",
        loss_function: str = "l2",
        reduction: str = "mean",
        action_spec: TensorSpec | None = None,
        check_finite: bool | None = None,
    ) -> None:
        super().__init__()
        if kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {kl_direction!r}.")
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}.")
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}.")
        if not max_importance_weight > 0:
            raise ValueError(
                f"max_importance_weight must be positive, got {max_importance_weight}."
            )
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        owner = type(self).__name__
        require_get_dist(owner, "dynamics_model", dynamics_model)
        action_sizes = check_policy(
            owner, actor_network, action_spec=action_spec, action_key=self.tensor_keys.action
        )
        self.action_dim, self.observation_dim = check_sizes(
            action_sizes,
            {"dynamics_model": dynamics_model, "reward_model": reward_model},
            actor=actor_network,
        )
        self._tanh_bounds = tanh_bounds(actor_network)
        self.check_finite = check_finite
        self._min_batch_ndim = 0 if horizon == 1 else 1
        self.horizon = int(horizon)
        self.max_importance_weight = float(max_importance_weight)
        self.importance_weights = bool(importance_weights)
        self.noise = noise
        self.kl_coef = float(kl_coef)
        self.kl_direction = kl_direction
        self.loss_function = loss_function
        self.reduction = reduction
        self.convert_to_functional(actor_network, "actor_network")
        # a known (fixed) value function needs no target copy
        trainable_value = any(p.requires_grad for p in value_network.parameters())
        self.convert_to_functional(
            value_network, "value_network", create_target_params=trainable_value
        )
        self.convert_to_functional(dynamics_model, "dynamics_model")
        self.convert_to_functional(reward_model, "reward_model")
        if self.kl_coef > 0:
            self.kl_reference_params = TensorDictParams(
                self.actor_network_params.apply(_make_target_param(clone=True), filter_empty=False),
                no_convert=True,
            )

    @property
    @_cache_values
    def _cached_detached_value_params(self) -> TensorDictBase:
        return self.value_network_params.detach()

    @property
    @_cache_values
    def _cached_detached_dynamics_params(self) -> TensorDictBase:
        return self.dynamics_model_params.detach()

    @property
    @_cache_values
    def _cached_detached_reward_params(self) -> TensorDictBase:
        return self.reward_model_params.detach()

    @torch.no_grad()
    def update_reference_policy(self) -> None:
        """Store the current policy as the reference of the KL penalty (start of a replay round)."""
        if self.kl_coef <= 0:
            raise RuntimeError("update_reference_policy needs kl_coef > 0.")
        self.kl_reference_params.update_(self.actor_network_params.data)

    # ----------------------------------------------------------------- data
    def _input_entries(self) -> list[Entry]:
        """What the loss reads, ``[*B]`` (``horizon=1``) or ``[*B, horizon]``."""
        keys = self.tensor_keys
        obs = self.observation_dim if self.observation_dim is not None else "obs_dim"
        act = self.action_dim if self.action_dim is not None else "action_dim"
        return [
            Entry(keys.observation, obs),
            Entry(keys.action, act),
            Entry(("next", keys.observation), obs),
            Entry(("next", keys.reward), 1),
            Entry(("next", keys.done), 1, any_real=True),
            Entry(("next", keys.terminated), 1, any_real=True, hint=TERMINATED_HINT),
            Entry(
                keys.sample_log_prob,
                scalar=True,
                required=self.importance_weights,
                unless=keys.importance_weight,
            ),
            Entry(keys.importance_weight, scalar=True, required=False),
            Entry(keys.action_pre_tanh, act, required=False),
            Entry(keys.policy_noise, act, required=False),
            Entry(keys.model_noise, obs, required=False),
            Entry(keys.model_member, scalar=True, any_real=True, required=False),
            Entry(("collector", "mask"), scalar=True, any_real=True, required=False),
            Entry(keys.priority_weight, scalar=True, any_real=True, required=False),
        ]

    def _as_sequence(self, tensordict: TensorDictBase) -> TensorDictBase:
        """View the input as ``[*B, T]`` with ``T == horizon`` (``horizon=1`` accepts ``[*B]``)."""
        if self.horizon == 1:
            return tensordict.unsqueeze(-1)
        if tensordict.ndim < 1 or tensordict.shape[-1] != self.horizon:
            owner = type(self).__name__
            raise ValueError(
                f"{owner}(horizon={self.horizon}) needs sub-trajectories of batch shape "
                f"[*B, {self.horizon}] (e.g. SliceSampler(slice_len={self.horizon})); got batch "
                f"shape {tuple(tensordict.shape)}."
            )
        return tensordict

    def _importance_weights(
        self, seq: TensorDictBase, log_probs: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Truncated weights: per sub-trajectory ``[*B]`` (product) and per transition ``[*B, T]``."""
        keys = self.tensor_keys
        stored = seq.get(keys.importance_weight, None)
        if not self.importance_weights:
            ones = torch.ones(seq.shape, dtype=seq.get(keys.observation).dtype, device=seq.device)
            return ones[..., 0], ones
        if stored is not None:
            per_step = stored.reshape(seq.shape)
            return per_step.prod(-1).clamp_max(self.max_importance_weight), per_step
        behaviour = seq.get(keys.sample_log_prob).reshape(seq.shape)
        log_ratio = torch.stack(log_probs, -1) - behaviour
        per_step = log_ratio.exp().clamp_max(self.max_importance_weight)
        per_trajectory = log_ratio.sum(-1).exp().clamp_max(self.max_importance_weight)
        return per_trajectory.detach(), per_step.detach()

    # ------------------------------------------------------------ equations
    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The SVG(k) surrogate along real trajectories (eq 13 for k = 1)."""
        seq = self._as_sequence(tensordict)
        unroll = _unroll_real(self, seq, self.horizon, self.noise)
        alive, bootstrap = _episode_masks(seq, self.tensor_keys, self.horizon, type(self).__name__)
        gamma = self._gamma
        surrogate = sum(gamma**t * alive[..., t] * r for t, r in enumerate(unroll["rewards"]))
        final_value = state_value(
            self.value_network,
            self._cached_detached_value_params,
            unroll["final_state"],
            self.tensor_keys.observation,
            self.tensor_keys.value,
        )
        surrogate = surrogate + gamma**self.horizon * bootstrap * final_value
        if self.noise == "inferred":
            weight, per_step = self._importance_weights(seq, unroll["log_prob"])
        else:
            weight = torch.ones_like(surrogate)
            per_step = torch.ones(seq.shape, dtype=surrogate.dtype, device=surrogate.device)
        loss = self._reduce_loss(
            -weight * surrogate, tensordict, weights=self._maybe_get_priority_weight(tensordict)
        )
        return loss, {
            "importance_weight": weight,
            "step_weights": per_step,
            "surrogate": surrogate.detach(),
        }

    def value_loss(
        self, tensordict: TensorDictBase, step_weights: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Fitted policy evaluation (Alg. 4) on every real transition, importance-weighted."""
        keys = self.tensor_keys
        seq = self._as_sequence(tensordict)
        owner = type(self).__name__
        if step_weights is None:
            with torch.no_grad():
                actions = seq.get(keys.action)
                preimages = seq.get(keys.action_pre_tanh, None)
                check_preimage(
                    owner,
                    self._tanh_bounds,
                    actions,
                    preimages,
                    action_key=keys.action,
                    preimage_key=keys.action_pre_tanh,
                    log_prob_key=keys.sample_log_prob,
                    mode=self.check_finite,
                )
                log_probs = []
                for t in range(seq.shape[-1]):
                    pol = location_scale(
                        policy_dist(self.actor_network, self.actor_network_params, seq[..., t])
                    )
                    u = policy_preimage(
                        pol, actions[..., t, :], None if preimages is None else preimages[..., t, :]
                    )
                    log_probs.append(pol.log_prob_of_preimage(u))
                _, step_weights = self._importance_weights(seq, log_probs)
        with torch.no_grad():
            reward = seq.get(("next", keys.reward)).squeeze(-1)
            terminated = terminated_flags(owner, seq, ("next", keys.terminated))
            next_value = state_value(
                self.value_network,
                self.target_value_network_params,
                seq.get(("next", keys.observation)),
                keys.observation,
                keys.value,
            )
            target = (
                reward + self._gamma * (1.0 - terminated.squeeze(-1).to(reward.dtype)) * next_value
            )
        pred = state_value(
            self.value_network,
            self.value_network_params,
            seq.get(keys.observation),
            keys.observation,
            keys.value,
        )
        loss = 0.5 * step_weights * distance_loss(pred, target, loss_function=self.loss_function)
        loss = loss.mean(-1)  # over the T transitions of each sub-trajectory
        return self._reduce_loss(
            loss, tensordict, weights=self._maybe_get_priority_weight(tensordict)
        ), {}

    def kl_loss(self, tensordict: TensorDictBase) -> Tensor:
        r"""The App. D penalty ``kl_coef * KL`` on the first state of each sample.

        .. math::

            \mathrm{KL}\big(\pi_\theta(\cdot|s)\,\|\,\pi_{\text{ref}}(\cdot|s)\big)
            \quad\text{(``kl_direction="current_reference"``, the paper's)}

        with :math:`\pi_\theta` the policy being updated and :math:`\pi_{\text{ref}}`
        the one stored by :meth:`update_reference_policy` (no gradient);
        ``kl_direction="reference_current"`` swaps the arguments.
        """
        seq = self._as_sequence(tensordict)
        states = seq[..., 0]
        current = location_scale(policy_dist(self.actor_network, self.actor_network_params, states))
        with torch.no_grad():
            reference = location_scale(
                policy_dist(self.actor_network, self.kl_reference_params, states)
            )
        current = D.Normal(current.loc, current.scale, validate_args=False)
        reference = D.Normal(reference.loc, reference.scale, validate_args=False)
        if self.kl_direction == "current_reference":
            kl = D.kl_divergence(current, reference).sum(-1)
        else:
            kl = D.kl_divergence(reference, current).sum(-1)
        return self._reduce_loss(self.kl_coef * kl, tensordict)

    _trained_networks = {"actor": "actor_network", "value": "value_network"}

    def _default_out_keys(self) -> list[str]:
        keys = ["loss_actor", "loss_value"] + (["loss_kl"] if self.kl_coef > 0 else [])
        return keys + (["importance_weight", "surrogate"] if self.reduction != "none" else [])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_actor``, ``loss_value`` (and ``loss_kl``) plus detached diagnostics."""
        self.validate_input(tensordict)
        self._as_sequence(tensordict)  # the batch shape, before any computation
        loss_actor, meta = self.actor_loss(tensordict)
        loss_value, _ = self.value_loss(tensordict, step_weights=meta["step_weights"])
        out = {"loss_actor": loss_actor, "loss_value": loss_value}
        if self.kl_coef > 0:
            out["loss_kl"] = self.kl_loss(tensordict)
        if self.reduction == "none":
            # one entry per transition (horizon 1) or per sub-trajectory [*B, k] -> [*B]
            batch = tensordict.batch_size if self.horizon == 1 else tensordict.batch_size[:-1]
            return TensorDict(out, batch)
        out["importance_weight"] = meta["importance_weight"].mean()
        out["surrogate"] = meta["surrogate"].mean()
        return TensorDict(out, [])


class SVG1Loss(SVGLoss):
    """SVG(1) / SVG(1)-ER: :class:`SVGLoss` with ``horizon=1`` (SVG paper eq 13, Algorithm 2).

    Use ``importance_weights=False`` for SVG(1) on fresh on-policy data and the
    default truncated importance weights for SVG(1)-ER on replay.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value
        >>> loss = SVG1Loss(make_actor(3, Bounded(-1.0, 1.0, (1,))), make_value(3),
        ...                 GaussianDynamics(3, 1), RewardModel(3, 1))
        >>> loss.horizon
        1
    """

    def __init__(self, *args, **kwargs) -> None:
        if "horizon" in kwargs:
            raise TypeError("SVG1Loss has horizon 1; use SVGLoss(horizon=k) for k > 1.")
        super().__init__(*args, horizon=1, **kwargs)


class SVGInfLoss(OwnKeysAndParameters, InputValidation, _DiscountMixin, LossModule):
    r"""SVG(:math:`\infty`) (SVG paper, Algorithm 1): back-propagation through whole real episodes, no critic.

    Input: whole episodes ``[*B, T]`` (padded ones marked by ``("collector", "mask")``).
    With inferred noise the episode is re-built through the policy and the model
    (its value equals the real trajectory) and

    .. math:: \mathcal L_\pi = -\sum_{t<T}\gamma^t\,\hat r(\hat s_t, \tilde a_t)

    whose gradient is the backward recursion of Algorithm 1 (lines 10-14),
    computed by autograd. ``noise="sampled"`` gives the planner of §6.1: the same
    objective on a trajectory simulated by the model from the real initial state
    with fresh noise. Clip the policy-gradient norm in the optimiser step (App. D).

    Args:
        actor_network: a location-scale policy.
        dynamics_model: location-scale model over the next observation.
        reward_model: reward module (may read ``("next", "observation")``).

    Keyword Args:
        noise: ``"inferred"`` or ``"sampled"``.
        reduction: over the episodes ``[*B]``.
        action_spec: the environment's action spec, checked against the actor's
            and the models' sizes and the actor's TanhNormal bounds.
        check_finite: refuse NaN/inf inputs: ``None`` (default) when it costs no
            device synchronisation (CPU inputs, eager), ``True`` always, ``False`` never.

    Inputs are checked by :meth:`validate_input` as :mod:`torchrl_svg.objectives` documents.

    Raises:
        TypeError: at construction, for a policy that is not location-scale or a
            dynamics model without ``get_dist``; in ``forward``, for an entry of the
            wrong dtype.
        ValueError: at construction, for bounds or sizes that disagree with
            ``action_spec`` or the models; in ``forward``, for a wrong shape, a batch
            without a time dimension, an empty batch or (per ``check_finite``) a
            NaN/inf entry.
        KeyError: in ``forward``, for a missing entry.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor
        >>> from torchrl_svg.objectives import SVGInfLoss
        >>> spec = Bounded(-1.0, 1.0, (1,))
        >>> loss = SVGInfLoss(make_actor(3, spec, hidden_sizes=(16,)), GaussianDynamics(3, 1, hidden_sizes=(16,)),
        ...                   RewardModel(3, 1, hidden_sizes=(16,)))
        >>> _ = loss.make_value_estimator(gamma=1.0)
        >>> episodes = TensorDict({"observation": torch.randn(4, 10, 3), "action": spec.rand((4, 10)) * 0.9,
        ...     ("next", "observation"): torch.randn(4, 10, 3), ("next", "reward"): torch.randn(4, 10, 1),
        ...     ("next", "done"): torch.zeros(4, 10, 1, dtype=torch.bool)}, [4, 10])
        >>> loss(episodes)["loss_actor"].backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (as :class:`SVGLoss`)."""

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        action_pre_tanh: NestedKey = "action_pre_tanh"
        policy_noise: NestedKey = "policy_noise"
        model_noise: NestedKey = "model_noise"
        model_member: NestedKey = "ensemble_member"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    _min_batch_ndim = 1  # whole episodes [*B, T]
    actor_network: ProbabilisticTensorDictSequential
    dynamics_model: TensorDictModuleBase
    reward_model: TensorDictModuleBase
    actor_network_params: TensorDictParams
    dynamics_model_params: TensorDictParams
    reward_model_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_dynamics_model_params: TensorDictParams
    target_reward_model_params: TensorDictParams

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        *,
        noise: str = "inferred",
        reduction: str = "mean",
        action_spec: TensorSpec | None = None,
        check_finite: bool | None = None,
    ) -> None:
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        require_get_dist("SVGInfLoss", "dynamics_model", dynamics_model)
        action_sizes = check_policy(
            "SVGInfLoss", actor_network, action_spec=action_spec, action_key=self.tensor_keys.action
        )
        self.action_dim, self.observation_dim = check_sizes(
            action_sizes,
            {"dynamics_model": dynamics_model, "reward_model": reward_model},
            actor=actor_network,
        )
        self._tanh_bounds = tanh_bounds(actor_network)
        self.check_finite = check_finite
        self.noise = noise
        self.reduction = reduction
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(dynamics_model, "dynamics_model")
        self.convert_to_functional(reward_model, "reward_model")

    @property
    @_cache_values
    def _cached_detached_dynamics_params(self) -> TensorDictBase:
        return self.dynamics_model_params.detach()

    @property
    @_cache_values
    def _cached_detached_reward_params(self) -> TensorDictBase:
        return self.reward_model_params.detach()

    def _input_entries(self) -> list[Entry]:
        """What the loss reads from whole episodes ``[*B, T]``."""
        keys = self.tensor_keys
        obs = self.observation_dim if self.observation_dim is not None else "obs_dim"
        act = self.action_dim if self.action_dim is not None else "action_dim"
        return [
            Entry(keys.observation, obs),
            Entry(keys.action, act),
            Entry(("next", keys.observation), obs),
            Entry(("next", keys.reward), 1),
            Entry(("next", keys.done), 1, any_real=True),
            Entry(("next", keys.terminated), 1, any_real=True, required=False),
            Entry(keys.action_pre_tanh, act, required=False),
            Entry(keys.policy_noise, act, required=False),
            Entry(keys.model_noise, obs, required=False),
            Entry(keys.model_member, scalar=True, any_real=True, required=False),
            Entry(("collector", "mask"), scalar=True, any_real=True, required=False),
        ]

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Minus the (re-built or simulated) discounted episode return, ``[*B]`` before reduction."""
        keys = self.tensor_keys
        steps = tensordict.shape[-1]
        unroll = _unroll_real(self, tensordict, steps, self.noise)
        alive, _ = _episode_masks(tensordict, keys, steps)
        gamma = self._gamma
        ret = sum(gamma**t * alive[..., t] * r for t, r in enumerate(unroll["rewards"]))
        return self._reduce_loss(-ret, None), {"return": ret.detach()}

    _trained_networks = {"actor": "actor_network"}

    def _default_out_keys(self) -> list[str]:
        return ["loss_actor"] + (["episode_return"] if self.reduction != "none" else [])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``loss_actor`` on whole episodes ``[*B, T]``."""
        self.validate_input(tensordict)
        loss, meta = self.actor_loss(tensordict)
        if self.reduction == "none":
            return TensorDict({"loss_actor": loss}, tensordict.batch_size[:-1])
        return TensorDict({"loss_actor": loss, "episode_return": meta["return"].mean()}, [])
