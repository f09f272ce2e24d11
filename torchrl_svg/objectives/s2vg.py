"""S2VG: Soft Stochastic Value Gradient (max-entropy SVG(1) with learned models)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.objectives.utils import distance_loss

from torchrl_svg._validation import Entry, transition_entries
from torchrl_svg.modules.termination import Termination
from torchrl_svg.objectives._base import (
    CriticLossOptions,
    LossBase,
    PriorityKeys,
    QValueKeys,
    TransitionKeys,
    Unpack,
    ValueKeys,
)
from torchrl_svg.objectives._common import swapped
from torchrl_svg.objectives._groups import trainable
from torchrl_svg.objectives._s2vg_parts import ImaginedSteps, SoftTemperature, check_s2vg_options
from torchrl_svg.objectives.functional import (
    soft_model_return,
    soft_state_value_target,
    temperature_loss,
    value_expansion_targets,
)

__all__ = ["S2VGLoss"]


class S2VGLoss(ImaginedSteps, SoftTemperature, LossBase):
    r"""The S2VG loss: soft SVG(1) through learned dynamics and reward models.

    Paper: *S2VG: Soft Stochastic Value Gradient* (Algorithm 1, eqs 7, 8, 10, 11).
    Real transitions :math:`(s, a, r, s', d)` come from replay; the models
    :math:`\hat f, \hat r` are fitted separately (see
    :class:`~torchrl_svg.objectives.GaussianWorldModelLoss`) and enter here
    with detached parameters. Four terms, each its own method:

    * ``loss_actor`` (eq 10/11): real states, fresh policy noise :math:`\eta`
      and model noise :math:`\zeta`, one model step,

      .. math::

          \mathcal L_\pi = -\Big[\hat r(s, \tilde a) - \alpha\log\pi_\theta(\tilde a|s)
          + \gamma\,(1-\hat d(\hat s'))\,V_\psi(\hat s')\Big],\quad
          \tilde a = \pi_\theta(s, \eta),\;\hat s' = \hat f(s, \tilde a, \zeta)

      The gradient flows through the reward and dynamics models' Jacobians with
      respect to the action, but the model, termination and critic parameters
      receive none (they are called with detached parameters). With
      ``actor_horizon=H`` the return runs through ``H`` imagined steps,

      .. math::

          \mathcal L_\pi = -\Big[\sum_{t=0}^{H-1}\gamma^t c_t\big(\hat r_t
          - \alpha\log\pi_\theta(\tilde a_t|\hat s_t)\big) + \gamma^H c_H V_\psi(\hat s_H)\Big],
          \quad c_{t+1} = c_t\,(1 - \hat d(\hat s_{t+1}))

      with :math:`\hat s_0 = s` and :math:`\tilde a_t = \pi_\theta(\hat s_t, \eta_t)`,
      :math:`\hat s_{t+1} = \hat f(\hat s_t, \tilde a_t, \zeta_t)`: back-propagation
      through the whole chain (the soft SVG(k) of SAC-SVG(H) and MAAC). With
      ``actor_model_noise=False`` the imagined steps follow the model's mean,
      :math:`\hat s_{t+1} = \mathbb E[\hat f(\hat s_t, \tilde a_t, \zeta)]`
      (:math:`\zeta_t = 0`), and the policy's draws are the rollout's only noise.
      With ``observation_bounds=(l, u)`` every imagined state is clipped to the box
      the environment clips its observations to,
      :math:`\hat s_{t+1} = \min(\max(\hat f(\cdot), l), u)` (zero gradient through
      a clipped entry, as in the environment).
    * ``loss_qvalue`` (eq 7), twin Q by vmap, mean over the ``H`` expansion steps:

      .. math::

          \mathcal L_Q = \sum_{i=1}^{2}\frac1H\sum_{t=0}^{H-1} w_t\,
          \big(Q_{\phi_i}(\hat s_t, \hat a_t) - y_t\big)^2,\quad
          y_t = \hat r_t + \gamma\,c_{t+1}\,G_{t+1}

      with :math:`(\hat s_0, \hat a_0, \hat r_0, \hat s_1, c_1)` the real
      transition (:math:`c = 1 -` terminated), later steps imagined with the
      current policy and the models, :math:`G_H = \bar V(\hat s_H)` the Polyak
      target value and, for :math:`t \ge 1`,
      :math:`G_t = y_t - \alpha\log\pi(\hat a_t|\hat s_t)` (the soft value;
      ``expansion_entropy=False`` drops the entropy bonus, as eq 7 is written).
      :math:`w_t = \prod_{j\le t} c_j` masks steps after an (imagined)
      termination. ``horizon=1`` is :math:`y = r + \gamma(1-d)\bar V(s')` on
      real data only.
    * ``loss_value`` (eq 8), on real states with fresh actions:

      .. math::

          \mathcal L_V = \tfrac12\big(V_\psi(s) - [\min_i Q_{\phi_i}(s, \tilde a)
          - \alpha\log\pi(\tilde a|s)]\big)^2

    * ``loss_alpha``: :math:`-\log\alpha\,(\log\pi(\tilde a|s) + \bar{\mathcal H})`
      when ``fixed_alpha=False``.

    The Polyak copy :math:`\bar V` lives in ``target_value_network_params``;
    move it with :class:`~torchrl.objectives.SoftUpdate`. The discount is set
    the TorchRL way, ``loss.make_value_estimator(gamma=0.99)``.

    Args:
        actor_network: a location-scale :class:`~torchrl.modules.ProbabilisticActor`
            (e.g. TanhNormal, see :func:`~torchrl_svg.modules.make_actor`).
        qvalue_network: ``Q(s, a)`` writing ``"state_action_value"``; copied
            ``num_qvalue_nets`` times with fresh parameters.
        value_network: ``V(s)`` writing ``"state_value"``.
        dynamics_model: reads ``observation``/``action``; ``get_dist`` is a
            location-scale distribution over the next observation
            (:class:`~torchrl_svg.modules.GaussianDynamics` or a user's own,
            including a known analytic model).
        reward_model: a module with ``get_dist`` over the reward (its mean is
            used), or a deterministic TensorDict module writing
            ``("next", "reward")`` (e.g. a known differentiable reward).
        termination_model: a :class:`~torchrl_svg.modules.Termination`, or
            ``None`` for tasks that never terminate.

    Keyword Args:
        num_qvalue_nets: number of Q networks (min over them). Default 2.
        horizon: value-expansion horizon ``H >= 1``. Default 1 (the paper's choice).
        alpha_init: initial entropy coefficient. Default 0.2.
        fixed_alpha: keep alpha fixed (the paper) instead of learning it. Default ``False``.
        target_entropy: ``"auto"`` (``-action_dim``) or a float.
        min_alpha / max_alpha: optional bounds on alpha.
        action_spec: the environment's action spec; checked against the
            actor's and the models' action sizes and the actor's TanhNormal bounds.
            Default ``None``.
        loss_function: distance for the critics (``"l2"``, the default, ``"smooth_l1"``, ``"l1"``).
        expansion_entropy: include :math:`-\alpha\log\pi` of imagined steps in the
            expansion target (soft-consistent). Default ``True``.
        actor_horizon: imagined steps ``H`` of the actor's soft return (default 1:
            eq 11). For ``H > 1`` the current policy is rolled through ``H`` steps of
            the models with fresh noise and the return ends in :math:`V(\hat s_H)`
            (SVG(k) made soft, on imagined trajectories; see
            :func:`~torchrl_svg.objectives.functional.soft_model_return`).
        actor_model_noise: draw the actor's imagined next states with fresh model noise
            :math:`\zeta_t` (default ``True``, eq 11) or take the model's mean next state
            (``False``): the model noise is then absent from the actor's gradient, whose
            variance between batches it dominates through several imagined steps; the
            objective leaves out the spread of the next state (:math:`V` of the mean instead
            of the mean of :math:`V`). The critic's imagined steps are not affected.
        observation_bounds: ``(low, high)``, each ``[obs_dim]`` (:math:`\pm\infty` where
            unbounded): clip every imagined state (the actor's and the critic targets')
            to this box, as the environment clips its observations (e.g. Hopper's and
            Walker2d's joint velocities at 10: see
            :func:`~torchrl_svg.modules.observation_bounds_for_env`). A learned model does
            not know the clip and imagines states beyond it, which nothing has been fitted
            on. Imagined steps a :class:`~torchrl_svg.data.ModelRollout` transform stored
            are read as they are. ``None`` (default): no clipping.
        disagreement_bound: with an ensemble dynamics model, stop an imagined
            rollout (and bootstrap with :math:`V`) at the first state where the
            members' predicted means disagree by more than this (standard deviation
            across members, in the model's normalised units, averaged over
            dimensions). ``None`` (default): never stop.
        ensemble_members: with a sampling dynamics ensemble, ``"step"`` (default)
            draws a member for every sample at every imagined step; ``"rollout"``
            draws one per sample and keeps it along the actor's rollout.
        expansion_ensemble_mean: with an ensemble dynamics model and ``horizon >= 2``,
            imagine the critic's value-expansion steps (eq 7) from the members'
            average prediction (mean location, mean variance; their disagreement
            left out) instead of one member per sample, so that no single member's
            error enters the critic targets. Applies to the rollouts the loss makes;
            a :class:`~torchrl_svg.data.ModelRollout` transform takes
            ``ensemble_reduction="average"`` for the same. Default ``False``.
        reduction: ``"mean"`` (default) | ``"sum"`` | ``"none"``.
        deactivate_vmap: replace vmap by a loop over the Q networks. Default ``False``.
        check_finite: refuse NaN/inf inputs: ``None`` (default) when it costs no
            device synchronisation (CPU inputs, eager), ``True`` always, ``False`` never.

    Inputs are checked by :meth:`validate_input` as :mod:`torchrl_svg.objectives` documents.

    Raises:
        TypeError: at construction, for an actor that is not location-scale (e.g. a
            Categorical, OneHot or Delta policy) or a dynamics model without ``get_dist``;
            in ``forward``, for an entry of the wrong dtype (naming it and both dtypes).
        ValueError: at construction, for TanhNormal bounds or action/observation sizes
            that disagree with the action spec or the models (naming both); in
            ``forward``, for a wrong shape (naming the entry and both shapes), an
            empty batch or, per ``check_finite``, a NaN/inf entry (naming it).
        KeyError: in ``forward``, for a missing entry (naming it and the loss).

    Shapes:
        Input ``[*B]`` or ``[*B, T]``: ``observation [*B, obs_dim]``,
        ``action [*B, act_dim]``, ``("next", "observation")``,
        ``("next", "reward") [*B, 1]``, ``("next", "terminated") [*B, 1]``
        (required: ``"done"`` alone would turn truncations into terminals). With
        ``reduction="none"`` each ``loss_*`` has shape ``[*B]``.
        The loss writes the TD error of each sample under ``"td_error"``
        (priority key, as TorchRL losses do) and changes nothing else.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_qvalue, make_value
        >>> from torchrl_svg.objectives import S2VGLoss
        >>> action_spec = Bounded(-2.0, 2.0, (1,))
        >>> loss = S2VGLoss(
        ...     make_actor(3, action_spec, hidden_sizes=(32,)),
        ...     make_qvalue(3, 1, hidden_sizes=(32,)),
        ...     make_value(3, hidden_sizes=(32,)),
        ...     GaussianDynamics(3, 1, hidden_sizes=(32,)),
        ...     RewardModel(3, 1, hidden_sizes=(32,)),
        ... )
        >>> _ = loss.make_value_estimator(gamma=0.99)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> data = TensorDict({
        ...     "observation": torch.randn(16, 3), "action": action_spec.rand((16,)),
        ...     ("next", "observation"): torch.randn(16, 3), ("next", "reward"): torch.randn(16, 1),
        ...     ("next", "done"): torch.zeros(16, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(16, 1, dtype=torch.bool)}, [16])
        >>> out = loss(data)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_alpha', 'loss_qvalue', 'loss_value']
        >>> sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        >>> updater.step()

    """

    @dataclass
    class _AcceptedKeys(PriorityKeys, QValueKeys, ValueKeys, TransitionKeys):
        """Configurable tensordict keys.

        A transition's (``TransitionKeys``), the value and Q networks' (``ValueKeys``,
        ``QValueKeys``), the priority keys (``PriorityKeys``) and these. The
        observation key also names the imagined states.

        Attributes:
            imagined: the imagined steps a :class:`~torchrl_svg.data.ModelRollout`
                transform wrote (used when present). Defaults to ``"imagined"``.

        """

        imagined: NestedKey = "imagined"

    tensor_keys: _AcceptedKeys
    _options_type = CriticLossOptions
    _td0_hint = " (use horizon= for the model-based value expansion)"
    _trained_networks = {
        "actor": "actor_network",
        "qvalue": "qvalue_network",
        "value": "value_network",
    }
    _schedulable_buffers = frozenset({"log_alpha"})

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule,
        value_network: TensorDictModule,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        termination_model: Termination | None = None,
        *,
        num_qvalue_nets: int = 2,
        horizon: int = 1,
        alpha_init: float = 0.2,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        expansion_entropy: bool = True,
        actor_horizon: int = 1,
        actor_model_noise: bool = True,
        observation_bounds: tuple[Tensor, Tensor] | None = None,
        disagreement_bound: float | None = None,
        ensemble_members: str = "step",
        expansion_ensemble_mean: bool = False,
        deactivate_vmap: bool = False,
        **options: Unpack[CriticLossOptions],
    ) -> None:
        super().__init__(options)
        check_s2vg_options(
            dynamics_model,
            termination_model,
            num_qvalue_nets=num_qvalue_nets,
            horizon=horizon,
            actor_horizon=actor_horizon,
            alpha_init=alpha_init,
            disagreement_bound=disagreement_bound,
            ensemble_members=ensemble_members,
            expansion_ensemble_mean=expansion_ensemble_mean,
        )
        models = {
            "dynamics_model": dynamics_model,
            "reward_model": reward_model,
            "termination_model": termination_model,
        }
        self._check_networks(actor_network, models, options.get("action_spec"))
        self.horizon = int(horizon)
        self.actor_horizon = int(actor_horizon)
        self.actor_model_noise = bool(actor_model_noise)
        self.disagreement_bound = disagreement_bound
        self.ensemble_members = ensemble_members
        self.expansion_ensemble_mean = bool(expansion_ensemble_mean)
        self.num_qvalue_nets = int(num_qvalue_nets)
        self.expansion_entropy = bool(expansion_entropy)
        self.deactivate_vmap = deactivate_vmap
        self._set_observation_bounds(observation_bounds)

        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets)
        self.convert_to_functional(value_network, "value_network", create_target_params=True)
        self.convert_to_functional(dynamics_model, "dynamics_model")
        self.convert_to_functional(reward_model, "reward_model")
        if termination_model is not None:
            self.convert_to_functional(termination_model, "termination_model")
        else:
            self.__dict__["termination_model"] = None
        self._out_keys: list[str] | None = None
        self._init_temperature(
            alpha_init,
            fixed_alpha=fixed_alpha,
            target_entropy=target_entropy,
            min_alpha=min_alpha,
            max_alpha=max_alpha,
            action_dim=self.action_dim,
            like=next(iter(self.actor_network_params.values(True, True))),
        )
        self._make_vmap()

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        if self._value_estimator is not None:
            self._value_estimator.set_keys(
                value=self.tensor_keys.value,
                reward=self.tensor_keys.reward,
                done=self.tensor_keys.done,
                terminated=self.tensor_keys.terminated,
            )

    @property
    def in_keys(self) -> list[NestedKey]:
        """The entries the loss reads."""
        keys = [
            self.tensor_keys.observation,
            self.tensor_keys.action,
            ("next", self.tensor_keys.observation),
            ("next", self.tensor_keys.reward),
            ("next", self.tensor_keys.done),
            ("next", self.tensor_keys.terminated),
        ]
        return list(dict.fromkeys(keys))

    def _default_out_keys(self) -> list[str]:
        """What :meth:`forward` writes: the four ``loss_*`` terms and diagnostics.

        ``loss_actor``, ``loss_qvalue``, ``loss_value``, ``loss_alpha`` and, unless
        ``reduction="none"``, the detached diagnostics ``alpha``, ``entropy`` and
        ``model_return`` (the mean soft model return of the actor term).
        """
        keys = ["loss_actor", "loss_qvalue", "loss_value", "loss_alpha"]
        if self.reduction != "none":
            keys += ["alpha", "entropy", "model_return"]
        return keys

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameters this loss trains, by network: what its optimiser should step.

        ``actor``, ``qvalue`` and ``value`` (twin Q stacked), and ``alpha`` when it is
        learned. The dynamics, reward and termination models enter this loss with
        detached parameters and are trained by
        :class:`~torchrl_svg.objectives.GaussianWorldModelLoss` instead: they are in
        ``loss.parameters()`` (as the networks of any ``LossModule`` are) but not
        here, and neither are the target value parameters. Give each group its own
        learning rate, as the S2VG paper's "policy" and "value" rates.

        Examples:
            >>> import torch
            >>> from torchrl.data import Bounded
            >>> from torchrl_svg.modules import (
            ...     GaussianDynamics, RewardModel, make_actor, make_qvalue, make_value)
            >>> spec = Bounded(-1.0, 1.0, (1,))
            >>> loss = S2VGLoss(make_actor(3, spec, hidden_sizes=(8,)), make_qvalue(3, 1),
            ...     make_value(3), GaussianDynamics(3, 1), RewardModel(3, 1), fixed_alpha=False)
            >>> groups = loss.parameter_groups()
            >>> list(groups)
            ['actor', 'qvalue', 'value', 'alpha']
            >>> optim = torch.optim.Adam(
            ...     [{"params": p, "lr": 1e-3 if name == "qvalue" else 3e-4}
            ...      for name, p in groups.items()])
        """
        groups = super().parameter_groups()
        alpha = trainable([self.log_alpha])
        if alpha:
            groups["alpha"] = alpha
        return groups

    # ------------------------------------------------------------ pieces
    def _input_entries(self) -> list[Entry]:
        """What :meth:`forward` reads (``("next", "terminated")`` is required)."""
        keys = self.tensor_keys
        obs, act = self._size_names()
        return [
            *transition_entries(keys, obs, act),
            Entry(keys.priority_weight, scalar=True, any_real=True, required=False),
        ]

    # -------------------------------------------------------- equations
    @torch.no_grad()
    def value_expansion(self, tensordict: TensorDictBase) -> TensorDictBase:
        r"""Critic targets of eq 7 over ``H = horizon`` steps.

        Step 0 is the real replay transition; steps ``1..H-1`` are imagined
        with the current policy, the expected model reward and a sampled model
        transition. Computed without gradients.

        Returns:
            A TensorDict of batch shape ``[H, *B]`` with the states
            (``observation``), actions (``action``), the targets
            ``"value_target"`` :math:`y_t` and the masks ``"weight"`` :math:`w_t`.
        """
        keys = self.tensor_keys
        alpha, gamma = self._alpha, self._gamma
        # step 0: the real transition, [1, *B]
        states = tensordict.get(keys.observation).unsqueeze(0)
        actions = tensordict.get(keys.action).unsqueeze(0)
        rewards = tensordict.get(("next", keys.reward)).squeeze(-1).unsqueeze(0)
        continuations = (1.0 - self._terminated(tensordict)).unsqueeze(0)
        final = tensordict.get(("next", keys.observation))
        log_probs = ()
        if self.horizon > 1:  # steps 1..H-1: imagined, [*B, H-1] moved to [H-1, *B]
            imagined = self._imagined(tensordict)
            states = torch.cat([states, imagined.get(keys.observation).movedim(-2, 0)])
            actions = torch.cat([actions, imagined.get(keys.action).movedim(-2, 0)])
            rewards = torch.cat([rewards, imagined.get(("next", "reward")).movedim(-1, 0)])
            continuations = torch.cat([continuations, imagined.get("continuation").movedim(-1, 0)])
            log_probs = imagined.get("log_prob").movedim(-1, 0)
            final = imagined.get(("next", keys.observation))[..., -1, :]
        future = self._state_value(final, self.target_value_network_params)  # G_H
        targets, weights = value_expansion_targets(
            rewards, continuations, log_probs, future, alpha, gamma, self.expansion_entropy
        )
        return TensorDict(
            {
                keys.observation: states,
                keys.action: actions,
                "value_target": targets,
                "weight": weights,
            },
            [self.horizon, *tensordict.batch_size],
        )

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Twin soft-Q regression onto the value-expansion targets (eq 7)."""
        priority_weight = self._maybe_get_priority_weight(tensordict)
        expansion = self.value_expansion(tensordict)
        pred = self._qvalues(
            expansion, expansion.get(self.tensor_keys.action), self.qvalue_network_params
        )  # [N_q, H, *B]
        target = expansion.get("value_target")
        error = distance_loss(pred, target.expand_as(pred), loss_function=self.loss_function)
        loss = (error * expansion.get("weight")).mean(1).sum(0)  # [*B]
        loss = self._reduce_loss(loss, tensordict, weights=priority_weight)
        td_error = (pred[:, 0] - target[0]).abs().max(0).values.detach()
        return loss, {"td_error": td_error}

    def value_loss(
        self,
        tensordict: TensorDictBase,
        policy_sample: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Soft state-value regression on real states with fresh actions (eq 8).

        Args:
            tensordict: the replay batch.
            policy_sample: an ``(action, log_prob)`` pair drawn from the current
                policy at these states (re-used from the actor term by
                :meth:`forward`); drawn here if omitted.

        """
        priority_weight = self._maybe_get_priority_weight(tensordict)
        with torch.no_grad():
            if policy_sample is None:
                policy_sample = self._policy(tensordict)
            action, log_prob = (x.detach() for x in policy_sample)
            q = self._qvalues(tensordict, action, self._cached_detached_qvalue_params)
            target = soft_state_value_target(q, log_prob, self._alpha)
        td = tensordict.select(*self.value_network.in_keys, strict=False)
        with swapped(self.value_network_params, self.value_network):
            self.value_network(td)
        pred = td.get(self.tensor_keys.value).squeeze(-1)
        loss = 0.5 * distance_loss(pred, target, loss_function=self.loss_function)
        return self._reduce_loss(loss, tensordict, weights=priority_weight), {}

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """The S2VG policy surrogate (eqs 10-11): minus the soft model return.

        One model step (``actor_horizon=1``, the paper), or ``actor_horizon``
        imagined steps with fresh noise ending in :math:`V` (see
        :func:`~torchrl_svg.objectives.functional.soft_model_return`); the
        models, termination and critic enter with detached parameters.
        """
        priority_weight = self._maybe_get_priority_weight(tensordict)
        rollout = self._actor_rollout(tensordict)
        soft_return = soft_model_return(
            rollout["rewards"],
            rollout["log_probs"],
            rollout["continuations"],
            self._state_value(rollout["final_state"], self._cached_detached_value_params),
            self._alpha,
            self._gamma,
            bootstrap_values=rollout["values"] or None,
            trusted=rollout["trusted"] or None,
        )
        loss = self._reduce_loss(-soft_return, tensordict, weights=priority_weight)
        first = {"action": rollout["action"], "log_prob": rollout["log_probs"][0]}
        return loss, {**first, "model_return": soft_return.detach()}

    def alpha_loss(self, log_prob: Tensor) -> Tensor:
        """Temperature loss ``-log(alpha) * (log_pi + target_entropy)``, ``[*B]`` before reduction."""
        return temperature_loss(self.log_alpha, log_prob, self.target_entropy)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All four terms on a replay batch; the actor's policy draw is re-used for eq 8."""
        self.validate_input(tensordict)
        loss_qvalue, meta_q = self.qvalue_loss(tensordict)
        loss_actor, meta_actor = self.actor_loss(tensordict)
        policy = (meta_actor["action"], meta_actor["log_prob"])
        loss_value, _ = self.value_loss(tensordict, policy_sample=policy)
        loss_alpha = self._reduce_loss(
            self.alpha_loss(meta_actor["log_prob"]),
            tensordict,
            weights=self._maybe_get_priority_weight(tensordict),
        )
        tensordict.set(self.tensor_keys.priority, meta_q["td_error"])
        out = {
            "loss_actor": loss_actor,
            "loss_qvalue": loss_qvalue,
            "loss_value": loss_value,
            "loss_alpha": loss_alpha,
        }
        self.check_losses(tensordict, out)
        if self.reduction == "none":
            td_out = TensorDict(out, tensordict.batch_size)
        else:
            out["alpha"] = self._alpha
            out["entropy"] = -meta_actor["log_prob"].detach().mean()
            out["model_return"] = meta_actor["model_return"].mean()
            td_out = TensorDict(out, [])
        self._clear_weakrefs(
            tensordict,
            td_out,
            "actor_network_params",
            "qvalue_network_params",
            "value_network_params",
            "target_value_network_params",
            "dynamics_model_params",
            "reward_model_params",
        )
        return td_out
