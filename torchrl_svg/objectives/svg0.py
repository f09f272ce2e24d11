"""SVG(0) with replay (SVG paper, Algorithm 3): the critic's action gradient through the policy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from torch import Tensor
from torchrl.objectives.utils import distance_loss

from torchrl_svg._validation import Entry, transition_entries
from torchrl_svg.objectives._base import (
    CriticLossOptions,
    LossBase,
    PolicyNoiseKeys,
    PriorityKeys,
    QValueKeys,
    Unpack,
    detached,
)
from torchrl_svg.objectives._common import policy_dist, policy_sample, replayed_preimage
from torchrl_svg.objectives.functional import td_target
from torchrl_svg.objectives.noise import location_scale

__all__ = ["SVG0Loss"]


class SVG0Loss(LossBase):
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
        noise: ``"inferred"`` (default) or ``"sampled"`` policy noise in the actor term.
        loss_function: critic distance, ``"l2"`` (default), ``"smooth_l1"`` or ``"l1"``.
        reduction: ``"mean"`` (default) | ``"sum"`` | ``"none"``.
        action_spec / check_finite: as :class:`~torchrl_svg.objectives.SVGLoss` (there
            is no model to check the spec against); default ``None``.

    Raises:
        TypeError / ValueError / KeyError: as :class:`~torchrl_svg.objectives.SVGLoss`
            documents, for inputs ``[*B]`` (one transition per sample) and without
            the checks of the models.

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
    class _AcceptedKeys(PriorityKeys, QValueKeys, PolicyNoiseKeys):
        """Configurable tensordict keys.

        A transition's and its replayed action's noise (``PolicyNoiseKeys``), the Q
        network's (``QValueKeys``) and the priority keys (``PriorityKeys``).
        """

    tensor_keys: _AcceptedKeys
    _options_type = CriticLossOptions

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule,
        *,
        num_qvalue_nets: int = 1,
        noise: str = "inferred",
        **options: Unpack[CriticLossOptions],
    ) -> None:
        super().__init__(options, noise=noise)
        self._check_networks(actor_network, {}, options.get("action_spec"))
        self.num_qvalue_nets = int(num_qvalue_nets)
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(
            qvalue_network, "qvalue_network", self.num_qvalue_nets, create_target_params=True
        )
        self._make_vmap()

    def _input_entries(self) -> list[Entry]:
        """What :meth:`forward` reads (``("next", "terminated")`` is required)."""
        keys = self.tensor_keys
        obs, act = self._size_names()
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
            reward = tensordict.get(("next", keys.reward)).squeeze(-1)
            target = td_target(reward, 1.0 - self._terminated(tensordict), next_q, self._gamma)
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
                frozen = detached(pol)
                u = replayed_preimage(self, frozen, tensordict, keys.action, keys.action_pre_tanh)
                eta = frozen.noise_of_preimage(u)
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
        self.check_losses(tensordict, out)
        if self.reduction == "none":
            return TensorDict(out, tensordict.batch_size)
        out["q"] = actor_meta["q"].mean()
        return TensorDict(out, [])
