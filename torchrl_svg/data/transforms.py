"""Replay-buffer transforms for the SVG family (applied by TorchRL buffers at sample or write time)."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs import Transform

from torchrl_svg._utils import Unpack
from torchrl_svg._validation import (
    CheckOptions,
    Entry,
    check_batch,
    model_entries,
    preimage_mismatch,
    require_get_dist,
    tanh_bounds,
)
from torchrl_svg.data._sample import _params, _policy_entries, _PolicyTransform, _SampleTransform
from torchrl_svg.data.slices import UnflattenSlices, slice_replay_buffer
from torchrl_svg.data.world_model import ModelRollout, NormalizerUpdate
from torchrl_svg.objectives.functional import (
    model_dist,
    policy_dist,
    replayed_preimage,
    truncated_importance_weight,
)
from torchrl_svg.objectives.noise import LocationScale, location_scale

__all__ = [
    "ImportanceWeight",
    "ModelNoiseInference",
    "ModelRollout",
    "NormalizerUpdate",
    "PolicyNoiseInference",
    "RandomActionLogProb",
    "UnflattenSlices",
    "slice_replay_buffer",
    "uniform_log_prob",
]


class _ReplayedActionTransform(_PolicyTransform):
    """A sample-time transform that scores the replayed actions under the current policy.

    It holds the policy (checked at construction against ``action_spec``), reads
    the policy's inputs, the action and, when present, its stored pre-tanh value,
    and gives its subclasses the policy's distribution and the pre-image of each
    replayed action.
    """

    def __init__(
        self,
        owner: str,
        actor: ProbabilisticTensorDictSequential,
        *,
        pre_tanh_key: NestedKey,
        **policy_options: Any,
    ):
        """``policy_options``: the keywords of :class:`_PolicyTransform` (no world models)."""
        super().__init__(owner, actor, {}, **policy_options)
        self.pre_tanh_key = pre_tanh_key
        self._tanh_bounds = tanh_bounds(actor)

    def _own_entries(self) -> list[Entry]:
        """What a subclass reads besides the policy's inputs, the action and its pre-image."""
        return []

    def _entries(self) -> list[Entry]:
        act = self.action_dim if self.action_dim is not None else "action_dim"
        return [
            *_policy_entries(self.actor, self.action_key, self.action_dim, self.observation_dim),
            *self._own_entries(),
            Entry(self.pre_tanh_key, act, required=False),
        ]

    def _policy_and_preimage(
        self, tensordict: TensorDictBase, log_prob_key: NestedKey | None = None
    ) -> tuple[LocationScale, torch.Tensor]:
        """The current policy's distribution and the pre-tanh value of each replayed action.

        A stored pre-tanh value that does not reproduce its action is refused (see
        :func:`~torchrl_svg._validation.check_preimage`).
        """
        policy = location_scale(policy_dist(self.actor, _params(self.actor), tensordict))
        preimage = replayed_preimage(
            self, policy, tensordict, self.action_key, self.pre_tanh_key, log_prob_key
        )
        return policy, preimage


class ImportanceWeight(_ReplayedActionTransform):
    r"""Truncated importance weights of the current policy w.r.t. the behaviour policy.

    .. math:: w = \min\big(\pi_\theta(a|s) / \beta(a|s),\; w_{\max}\big)

    where :math:`\log\beta(a|s)` is the log-probability stored at collection
    (``"action_log_prob"`` by default; TorchRL actors write it with
    ``return_log_prob=True``). The current policy is evaluated without gradient
    at sample time.

    For a TanhNormal policy both densities must score the same pre-tanh value
    :math:`u` of the action. :class:`~torchrl_svg.modules.TanhNormalActor` (what
    :func:`~torchrl_svg.modules.make_actor` builds) stores it
    (``"action_pre_tanh"``), and the weight then scores that :math:`u`: on-policy
    weights are 1 even where the policy saturates. Without it, :math:`u` is the
    inverse tanh of the stored action, clamped just inside the bounds; in float32
    that loses :math:`u` beyond about 8, and on-policy weights of saturated
    actions fall towards 0.

    Random warm-up steps: a TorchRL collector with ``init_random_frames`` does not
    run the policy for them, so their stored log-probability and pre-tanh value
    are 0. A stored pre-tanh value that does not reproduce its action is refused
    (``ValueError``, when checks run: see ``check_finite``); give those steps
    their uniform log-density with :class:`RandomActionLogProb` first.

    Args:
        actor: the current (location-scale) policy.

    Keyword Args:
        max_weight: :math:`w_{\max}` (5 by default, as in the SVG paper).
        action_key / log_prob_key / pre_tanh_key / out_key: entries read and written.
        action_spec: the environment's action spec, checked against the actor's
            size and TanhNormal bounds.
        check_finite: refuse NaN/inf inputs and pre-tanh values that do not
            reproduce their actions (``None``: when it costs no device sync).

    Raises:
        KeyError / TypeError / ValueError: on a sampled batch that breaks the input
            contract of :mod:`torchrl_svg.objectives`; ``ValueError`` also for a stored
            pre-tanh value that does not reproduce its action.
        TypeError: at construction, for a policy that is not location-scale.
        ValueError: at construction, for TanhNormal bounds that differ from ``action_spec``'s.

    Shapes:
        Reads ``action [*B, A]``, ``log_prob [*B]`` and, when present,
        ``pre_tanh [*B, A]``; writes ``out_key [*B]``.

    Examples:
        >>> import torch
        >>> from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import make_actor
        >>> from torchrl_svg.data import ImportanceWeight
        >>> actor = make_actor(3, Bounded(-1.0, 1.0, (1,)), hidden_sizes=(16,))
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=8,
        ...                             transform=ImportanceWeight(actor, max_weight=5.0))
        >>> data = actor(TensorDict({"observation": torch.randn(20, 3)}, [20]))
        >>> _ = rb.extend(data)
        >>> w = rb.sample()["importance_weight"]
        >>> w.shape, bool(torch.allclose(w, torch.ones(8), atol=1e-4))  # on-policy data: w = 1
        (torch.Size([8]), True)
    """

    def __init__(
        self,
        actor: ProbabilisticTensorDictSequential,
        *,
        max_weight: float = 5.0,
        action_key: NestedKey = "action",
        log_prob_key: NestedKey = "action_log_prob",
        pre_tanh_key: NestedKey = "action_pre_tanh",
        out_key: NestedKey = "importance_weight",
        **options: Unpack[CheckOptions],
    ):
        if not max_weight > 0:
            raise ValueError(f"max_weight must be positive, got {max_weight}.")
        super().__init__(
            "ImportanceWeight",
            actor,
            in_keys=[action_key, log_prob_key],
            action_key=action_key,
            pre_tanh_key=pre_tanh_key,
            out_key=out_key,
            options=options,
        )
        self.max_weight = float(max_weight)
        self.log_prob_key = log_prob_key

    def _own_entries(self) -> list[Entry]:
        return [Entry(self.log_prob_key, scalar=True)]

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the truncated weight of every sampled transition."""
        self.validate_input(tensordict)
        policy, preimage = self._policy_and_preimage(tensordict, self.log_prob_key)
        batch = tensordict.get(self.action_key).shape[:-1]
        behaviour = tensordict.get(self.log_prob_key).reshape(batch)
        log_prob = policy.log_prob_of_preimage(preimage)
        tensordict.set(
            self.out_key, truncated_importance_weight(log_prob, behaviour, self.max_weight)
        )
        return tensordict


def _box(action_spec: TensorSpec, action_key: NestedKey) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` of a bounded action spec, ``[A]`` (a batched env's spec: its first row)."""
    spec = action_spec.get(action_key, None) if isinstance(action_spec, Composite) else action_spec
    if not isinstance(spec, Bounded):
        raise TypeError(
            f"a bounded action spec (the box a uniformly random action is drawn from) is needed; "
            f"got {type(spec).__name__} for {action_key!r}."
        )
    low, high = spec.space.low, spec.space.high
    size = low.shape[-1] if low.ndim else 1
    return low.reshape(-1, size)[0], high.reshape(-1, size)[0]


def uniform_log_prob(action_spec: TensorSpec, *, action_key: NestedKey = "action") -> torch.Tensor:
    r"""The log-density of a uniformly random action in a box: :math:`-\sum_i \log(h_i - l_i)`.

    The behaviour log-probability of a TorchRL collector's random warm-up steps
    (``init_random_frames``: actions from ``env.rand_action``, uniform in the box).

    Args:
        action_spec: a bounded action spec (or a composite holding one).

    Keyword Args:
        action_key: the action's entry in a composite spec.

    Returns:
        A scalar tensor in the spec's dtype.

    Examples:
        >>> from torchrl.data import Bounded
        >>> uniform_log_prob(Bounded(-2.0, 2.0, (3,)))
        tensor(-4.1589)
    """
    low, high = _box(action_spec, action_key)
    return -torch.log(high - low).sum()


class RandomActionLogProb(Transform):
    r"""Give the random warm-up steps of a TorchRL collector their behaviour log-density and pre-tanh value.

    ``Collector(..., init_random_frames=N)`` takes its first ``N`` actions from
    ``env.rand_action`` (uniform in the action box) without running the policy,
    so the policy's own outputs stay at 0 for those steps: ``"action_log_prob"``
    is 0 where it should be the uniform log-density
    :math:`\log\beta(a) = -\sum_i\log(h_i - l_i)` (:func:`uniform_log_prob`), and
    ``"action_pre_tanh"`` is 0 where it should be :math:`g^{-1}(a)`. Importance
    weights computed from them are wrong (the SVG losses and
    :class:`ImportanceWeight` refuse pre-tanh values that do not reproduce their
    actions). This transform finds those steps and writes both entries:

    * with a pre-tanh entry (:class:`~torchrl_svg.modules.TanhNormalActor`, the
      package's actor): the rows whose stored pre-tanh value does not reproduce
      the action (the policy did not draw it);
    * without one (another actor): the rows whose stored log-probability is
      exactly 0, the value the collector leaves (a policy's log-density of a
      drawn action is never exactly 0 in practice).

    Rows drawn by the policy are left as they are; applying it twice changes nothing.

    Use it as the collector's ``postproc`` or in the replay buffer's transform
    (it acts on written batches and on sampled ones):

    .. code-block:: python

        collector = Collector(env, actor, frames_per_batch=200, total_frames=10_000,
                              init_random_frames=1_000,
                              postproc=RandomActionLogProb(env.action_spec))

    Args:
        action_spec: the environment's bounded action spec.

    Keyword Args:
        action_key / log_prob_key / pre_tanh_key: the entries read and written.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> spec = Bounded(-2.0, 2.0, (1,))
        >>> warm_up = TensorDict({"action": torch.tensor([[1.5], [-0.3]]),
        ...     "action_log_prob": torch.zeros(2), "action_pre_tanh": torch.zeros(2, 1)}, [2])
        >>> fixed = RandomActionLogProb(spec)(warm_up)
        >>> fixed["action_log_prob"]
        tensor([-1.3863, -1.3863])
        >>> torch.allclose(2.0 * torch.tanh(fixed["action_pre_tanh"]), fixed["action"])
        True
    """

    def __init__(
        self,
        action_spec: TensorSpec,
        *,
        action_key: NestedKey = "action",
        log_prob_key: NestedKey = "action_log_prob",
        pre_tanh_key: NestedKey = "action_pre_tanh",
    ):
        super().__init__(in_keys=[action_key], out_keys=[log_prob_key, pre_tanh_key])
        low, high = _box(action_spec, action_key)
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())
        self.action_key = action_key
        self.log_prob_key = log_prob_key
        self.pre_tanh_key = pre_tanh_key

    @torch.no_grad()
    def random_steps(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The rows ``[*B]`` that were not drawn by the policy (see the class docstring)."""
        action = tensordict.get(self.action_key)
        preimage = tensordict.get(self.pre_tanh_key, None)
        if preimage is not None:
            return preimage_mismatch((self.low, self.high), action, preimage)
        log_prob = tensordict.get(self.log_prob_key, None)
        if log_prob is None:
            return torch.ones(action.shape[:-1], dtype=torch.bool, device=action.device)
        return log_prob.reshape(action.shape[:-1]) == 0

    @torch.no_grad()
    def _fill(self, tensordict: TensorDictBase) -> TensorDictBase:
        check_batch(type(self).__name__, tensordict)
        action = tensordict.get(self.action_key, None)
        if action is None:
            raise KeyError(f"{type(self).__name__} needs the entry {self.action_key!r}.")
        random = self.random_steps(tensordict)
        low = self.low.to(device=action.device, dtype=action.dtype)
        high = self.high.to(device=action.device, dtype=action.dtype)
        box = LocationScale(torch.zeros_like(action), torch.ones_like(action), low, high)
        log_prob = tensordict.get(self.log_prob_key, None)
        if log_prob is None:
            log_prob = action.new_zeros(action.shape[:-1])
        uniform = -torch.log(high - low).sum().expand(action.shape[:-1])
        tensordict.set(
            self.log_prob_key,
            torch.where(random, uniform, log_prob.reshape(action.shape[:-1])).reshape(
                log_prob.shape
            ),
        )
        preimage = tensordict.get(self.pre_tanh_key, None)
        inverse = box.unsquash(action)
        if preimage is None:
            preimage = inverse
        tensordict.set(self.pre_tanh_key, torch.where(random.unsqueeze(-1), inverse, preimage))
        return tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Fill in the random steps of a batch (as a collector's ``postproc``, or on sampling)."""
        return self._fill(tensordict)

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._fill(tensordict)

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._fill(tensordict)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return tensordict_reset


class PolicyNoiseInference(_ReplayedActionTransform):
    r"""Infer the policy noise :math:`\eta = (g^{-1}(a) - \mu_\theta(s))/\sigma_\theta(s)` of replayed actions.

    :math:`g^{-1}(a)` is the pre-tanh value stored with the action when there is
    one (``"action_pre_tanh"``, exact; see :class:`ImportanceWeight`), else the
    inverse tanh of the action, clamped inside the bounds.

    Args:
        actor: the current location-scale policy.

    Keyword Args:
        action_key / pre_tanh_key / out_key: entries read and written (``out_key [*B, A]``).
        action_spec: the environment's action spec, checked against the actor's
            size and TanhNormal bounds.
        check_finite: refuse NaN/inf inputs (``None``: when it costs no device sync).

    Raises:
        KeyError / TypeError / ValueError: on a sampled batch that breaks the input
            contract of :mod:`torchrl_svg.objectives`.
        TypeError: at construction, for a policy that is not location-scale.
        ValueError: at construction, for TanhNormal bounds that differ from ``action_spec``'s.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import make_actor
        >>> from torchrl_svg.data import PolicyNoiseInference
        >>> actor = make_actor(3, Bounded(-2.0, 2.0, (1,)), hidden_sizes=(16,))
        >>> td = TensorDict({"observation": torch.randn(5, 3), "action": torch.tensor([[-2.0], [0.0], [1.0], [2.0], [0.5]])}, [5])
        >>> bool(torch.isfinite(PolicyNoiseInference(actor)(td)["policy_noise"]).all())
        True
    """

    def __init__(
        self,
        actor: ProbabilisticTensorDictSequential,
        *,
        action_key: NestedKey = "action",
        pre_tanh_key: NestedKey = "action_pre_tanh",
        out_key: NestedKey = "policy_noise",
        **options: Unpack[CheckOptions],
    ):
        super().__init__(
            "PolicyNoiseInference",
            actor,
            in_keys=[action_key],
            action_key=action_key,
            pre_tanh_key=pre_tanh_key,
            out_key=out_key,
            options=options,
        )

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the inferred policy noise of every sampled transition."""
        self.validate_input(tensordict)
        policy, preimage = self._policy_and_preimage(tensordict)
        tensordict.set(self.out_key, policy.noise_of_preimage(preimage))
        return tensordict


class ModelNoiseInference(_SampleTransform):
    r"""Infer the model noise :math:`\xi = (s' - \mu(s, a))/\sigma(s, a)` of replayed transitions.

    For an ensemble that uses one member per sample
    (``GaussianDynamics(ensemble_size=E, ensemble_reduction="sample")``) the noise
    is that of one member, drawn here per sample and written too (under the
    model's ``member_key``, ``"ensemble_member"`` ``[*B]``; an input that already
    has it keeps it): the SVG losses read it and rebuild the next state with the
    same member, so :math:`\hat f(s, a, \xi) = s'`.

    Args:
        dynamics_model: a location-scale dynamics model (e.g.
            :class:`~torchrl_svg.modules.GaussianDynamics`).

    Keyword Args:
        next_observation_key / out_key: entries read and written (``out_key [*B, D]``).
        check_finite: refuse NaN/inf inputs (``None``: when it costs no device sync).

    Raises:
        KeyError / TypeError / ValueError: on a sampled batch that breaks the input
            contract of :mod:`torchrl_svg.objectives`.
        TypeError: at construction, for a model without ``get_dist``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import GaussianDynamics
        >>> from torchrl_svg.data import ModelNoiseInference
        >>> model = GaussianDynamics(3, 1, hidden_sizes=(16,))
        >>> td = TensorDict({"observation": torch.randn(5, 3), "action": torch.randn(5, 1),
        ...                  ("next", "observation"): torch.randn(5, 3)}, [5])
        >>> ModelNoiseInference(model)(td)["model_noise"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        dynamics_model: TensorDictModuleBase,
        *,
        next_observation_key: NestedKey = ("next", "observation"),
        out_key: NestedKey = "model_noise",
        check_finite: bool | None = None,
    ):
        require_get_dist("ModelNoiseInference", "dynamics_model", dynamics_model)
        super().__init__(in_keys=[next_observation_key], out_keys=[out_key])
        self.check_finite = check_finite
        self.dynamics_model = dynamics_model
        self.next_observation_key = next_observation_key
        self.out_key = out_key

    def _entries(self) -> list[Entry]:
        size = getattr(self.dynamics_model, "observation_dim", None)
        return [
            *model_entries(self.dynamics_model),
            Entry(self.next_observation_key, size if size is not None else None),
        ]

    def _dtype_module(self) -> nn.Module:
        return self.dynamics_model

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the inferred model noise of every sampled transition."""
        self.validate_input(tensordict)
        next_obs = tensordict.get(self.next_observation_key)
        member_key = getattr(self.dynamics_model, "member_key", None)
        if getattr(self.dynamics_model, "samples_members", False) and (
            tensordict.get(member_key, None) is None
        ):
            members = self.dynamics_model.draw_members(tensordict.batch_size, next_obs.device)
            tensordict.set(member_key, members)
        model = location_scale(
            model_dist(self.dynamics_model, _params(self.dynamics_model), tensordict)
        )
        tensordict.set(self.out_key, model.infer_noise(next_obs))
        return tensordict
