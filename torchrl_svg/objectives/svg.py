"""SVG(1), SVG(1)-ER and SVG(k) of Heess et al. 2015 (eq 13, Algorithms 2 and 4).

SVG(0) and SVG(inf) live in :mod:`~torchrl_svg.objectives.svg0` and
:mod:`~torchrl_svg.objectives.svginf`; they are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torch import distributions as D
from torchrl.objectives.common import _make_target_param
from torchrl.objectives.utils import distance_loss

from torchrl_svg._validation import Entry
from torchrl_svg.objectives._base import (
    CriticLossOptions,
    LossBase,
    PriorityWeightKeys,
    Unpack,
    ValueKeys,
    check_horizon,
)
from torchrl_svg.objectives._common import check_stored_preimage, policy_dist, policy_preimage
from torchrl_svg.objectives._unroll import (
    UnrollKeys,
    trajectory_entries,
    trajectory_masks,
    unroll_real,
)
from torchrl_svg.objectives.functional import td_target, truncated_importance_weight
from torchrl_svg.objectives.noise import location_scale
from torchrl_svg.objectives.svg0 import SVG0Loss
from torchrl_svg.objectives.svginf import SVGInfLoss

__all__ = ["SVG0Loss", "SVG1Loss", "SVGInfLoss", "SVGLoss"]

KL_DIRECTIONS = ("current_reference", "reference_current")


class SVGLoss(LossBase):
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
        horizon: ``k >= 1``. Default 1.
        max_importance_weight: truncation ``w_max`` (5 by default; the paper used 20 for two tasks).
        importance_weights: use truncated importance weights. Default ``True``.
        noise: ``"inferred"`` (default; gradients along real trajectories) or ``"sampled"``.
        kl_coef: weight of the KL penalty (0, the default: off).
        kl_direction: ``"current_reference"`` (default, App. D:
            :math:`\mathrm{KL}(\pi_\theta\|\pi_{\text{ref}})`) or ``"reference_current"``
            (:math:`\mathrm{KL}(\pi_{\text{ref}}\|\pi_\theta)`).
        loss_function: value distance, ``"l2"`` (default), ``"smooth_l1"`` or ``"l1"``.
        reduction: ``"mean"`` (default) | ``"sum"`` | ``"none"``.
        action_spec: the environment's action spec, checked against the actor's
            and the models' sizes and the actor's TanhNormal bounds. Default ``None``.
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
    class _AcceptedKeys(PriorityWeightKeys, ValueKeys, UnrollKeys):
        """Configurable tensordict keys.

        Those of the re-built steps (``UnrollKeys``), the value network's
        (``ValueKeys``), the prioritized buffer's weights (``PriorityWeightKeys``) and these.

        Attributes:
            sample_log_prob: behaviour log-probability stored at collection.
                Default ``"action_log_prob"``.
            importance_weight: written by :class:`~torchrl_svg.data.ImportanceWeight`
                (used when present). Default ``"importance_weight"``.
        """

        sample_log_prob: NestedKey = "action_log_prob"
        importance_weight: NestedKey = "importance_weight"

    tensor_keys: _AcceptedKeys
    _options_type = CriticLossOptions

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
        **options: Unpack[CriticLossOptions],
    ) -> None:
        super().__init__(options, noise=noise)
        if kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {kl_direction!r}.")
        check_horizon("horizon", horizon)
        if not max_importance_weight > 0:
            raise ValueError(
                f"max_importance_weight must be positive, got {max_importance_weight}."
            )
        models = {"dynamics_model": dynamics_model, "reward_model": reward_model}
        self._check_networks(actor_network, models, options.get("action_spec"))
        self._min_batch_ndim = 0 if horizon == 1 else 1
        self.horizon = int(horizon)
        self.max_importance_weight = float(max_importance_weight)
        self.importance_weights = bool(importance_weights)
        self.kl_coef = float(kl_coef)
        self.kl_direction = kl_direction
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
        obs, act = self._size_names()
        return [
            *trajectory_entries(keys, obs, act, bootstrap=True),
            Entry(
                keys.sample_log_prob,
                scalar=True,
                required=self.importance_weights,
                unless=keys.importance_weight,
            ),
            Entry(keys.importance_weight, scalar=True, required=False),
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
        log_prob = torch.stack(log_probs, -1)
        truncation = self.max_importance_weight
        per_step = truncated_importance_weight(log_prob, behaviour, truncation)
        per_trajectory = truncated_importance_weight(
            log_prob.sum(-1), behaviour.sum(-1), truncation
        )
        return per_trajectory.detach(), per_step.detach()

    # ------------------------------------------------------------ equations
    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The SVG(k) surrogate along real trajectories (eq 13 for k = 1)."""
        seq = self._as_sequence(tensordict)
        unroll = unroll_real(self, seq, self.horizon, self.noise)
        alive, bootstrap = trajectory_masks(
            seq, self.tensor_keys, self.horizon, type(self).__name__
        )
        gamma = self._gamma
        surrogate = sum(gamma**t * alive[..., t] * r for t, r in enumerate(unroll["rewards"]))
        final_value = self._state_value(unroll["final_state"], self._cached_detached_value_params)
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
        if step_weights is None:
            with torch.no_grad():
                actions = seq.get(keys.action)
                preimages = seq.get(keys.action_pre_tanh, None)
                check_stored_preimage(
                    self,
                    actions,
                    preimages,
                    keys.action,
                    keys.action_pre_tanh,
                    keys.sample_log_prob,
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
            continuation = 1.0 - self._terminated(seq)
            next_value = self._state_value(
                seq.get(("next", keys.observation)), self.target_value_network_params
            )
            target = td_target(reward, continuation, next_value, self._gamma)
        pred = self._state_value(seq.get(keys.observation), self.value_network_params)
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
        self.check_losses(tensordict, out)
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
