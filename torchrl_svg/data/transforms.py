"""Replay-buffer transforms for the SVG family (applied by TorchRL buffers at sample or write time)."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler, TensorSpec
from torchrl.envs import Transform

from torchrl_svg._validation import (
    Entry,
    check_batch,
    check_policy,
    check_sizes,
    model_entries,
    module_dtype,
    require_get_dist,
    unique,
    validate,
)
from torchrl_svg.objectives._common import imagine_rollout, model_dist, policy_dist
from torchrl_svg.objectives.noise import location_scale

__all__ = [
    "ImportanceWeight",
    "ModelNoiseInference",
    "ModelRollout",
    "NormalizerUpdate",
    "PolicyNoiseInference",
    "UnflattenSlices",
    "slice_replay_buffer",
]


def _params(module: nn.Module) -> TensorDictBase:
    return TensorDict.from_module(module, as_module=True)


def _policy_entries(
    actor: nn.Module, action_key: NestedKey, action_dim: int | None, observation_dim: int | None
) -> list[Entry]:
    """The policy's inputs and the replayed action."""
    entries = [Entry(key, observation_dim) for key in getattr(actor, "in_keys", [])]
    return [*entries, Entry(action_key, action_dim if action_dim is not None else "action_dim")]


class _SampleTransform(Transform):
    """A transform that acts on sampled batches only (``forward``); writes pass through.

    Sampled batches are validated like a loss's input (see
    :mod:`torchrl_svg.objectives`): a missing entry raises ``KeyError``, a wrong
    dtype ``TypeError``, a wrong shape, an empty batch or (per ``check_finite``)
    a NaN/inf entry ``ValueError``, each naming the transform and the entry.
    """

    check_finite: bool | None = None

    def _entries(self) -> list[Entry]:
        raise NotImplementedError

    def _dtype_module(self) -> nn.Module:
        raise NotImplementedError

    def validate_input(self, tensordict: TensorDictBase) -> None:
        """Check a sampled batch against what the transform reads."""
        validate(
            type(self).__name__,
            tensordict,
            unique(self._entries()),
            dtype=module_dtype(self._dtype_module()),
            check_finite=self.check_finite,
        )

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self.forward(tensordict)

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return tensordict_reset


class ImportanceWeight(_SampleTransform):
    r"""Truncated importance weights of the current policy w.r.t. the behaviour policy.

    .. math:: w = \min\big(\pi_\theta(a|s) / \beta(a|s),\; w_{\max}\big)

    where :math:`\log\beta(a|s)` is the log-probability stored at collection
    (``"action_log_prob"`` by default; TorchRL actors write it with
    ``return_log_prob=True``). The current policy is evaluated without gradient
    at sample time. Actions on a tanh boundary are clamped inside it (finite weights).

    Args:
        actor: the current (location-scale) policy.

    Keyword Args:
        max_weight: :math:`w_{\max}` (5 by default, as in the SVG paper).
        action_key / log_prob_key / out_key: entries read and written.
        action_spec: the environment's action spec, checked against the actor's
            size and TanhNormal bounds.
        check_finite: refuse NaN/inf inputs (``None``: when it costs no device sync).

    Raises:
        TypeError: at construction, for a policy that is not location-scale.
        ValueError: at construction, for TanhNormal bounds that differ from ``action_spec``'s.
        KeyError / TypeError / ValueError: on a sampled batch with a missing entry, a
            wrong dtype, a wrong shape, an empty batch or (per ``check_finite``) a
            NaN/inf entry, naming it (the contract of :mod:`torchrl_svg.objectives`).

    Shapes:
        Reads ``action [*B, A]`` and ``log_prob [*B]``; writes ``out_key [*B]``.

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
        out_key: NestedKey = "importance_weight",
        action_spec: TensorSpec | None = None,
        check_finite: bool | None = None,
    ):
        if not max_weight > 0:
            raise ValueError(f"max_weight must be positive, got {max_weight}.")
        sizes = check_policy(
            "ImportanceWeight", actor, name="actor", action_spec=action_spec, action_key=action_key
        )
        super().__init__(in_keys=[action_key, log_prob_key], out_keys=[out_key])
        self.action_dim, self.observation_dim = check_sizes(sizes, {}, actor=actor)
        self.check_finite = check_finite
        self.actor = actor
        self.max_weight = float(max_weight)
        self.action_key = action_key
        self.log_prob_key = log_prob_key
        self.out_key = out_key

    def _entries(self) -> list[Entry]:
        return [
            *_policy_entries(self.actor, self.action_key, self.action_dim, self.observation_dim),
            Entry(self.log_prob_key, scalar=True),
        ]

    def _dtype_module(self) -> nn.Module:
        return self.actor

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the truncated weight of every sampled transition."""
        self.validate_input(tensordict)
        action = tensordict.get(self.action_key)
        behaviour = tensordict.get(self.log_prob_key).reshape(action.shape[:-1])
        policy = location_scale(policy_dist(self.actor, _params(self.actor), tensordict))
        log_ratio = policy.log_prob(action) - behaviour
        tensordict.set(self.out_key, log_ratio.exp().clamp_max(self.max_weight))
        return tensordict


class PolicyNoiseInference(_SampleTransform):
    r"""Infer the policy noise :math:`\eta = (g^{-1}(a) - \mu_\theta(s))/\sigma_\theta(s)` of replayed actions.

    Args:
        actor: the current location-scale policy.

    Keyword Args:
        action_key / out_key: entries read and written (``out_key [*B, A]``).
        action_spec: the environment's action spec, checked against the actor's
            size and TanhNormal bounds.
        check_finite: refuse NaN/inf inputs (``None``: when it costs no device sync).

    Raises:
        TypeError: at construction, for a policy that is not location-scale.
        ValueError: at construction, for TanhNormal bounds that differ from ``action_spec``'s.
        KeyError / TypeError / ValueError: on a sampled batch with a missing entry, a
            wrong dtype, a wrong shape, an empty batch or (per ``check_finite``) a
            NaN/inf entry, naming it (the contract of :mod:`torchrl_svg.objectives`).

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
        out_key: NestedKey = "policy_noise",
        action_spec: TensorSpec | None = None,
        check_finite: bool | None = None,
    ):
        sizes = check_policy(
            "PolicyNoiseInference",
            actor,
            name="actor",
            action_spec=action_spec,
            action_key=action_key,
        )
        super().__init__(in_keys=[action_key], out_keys=[out_key])
        self.action_dim, self.observation_dim = check_sizes(sizes, {}, actor=actor)
        self.check_finite = check_finite
        self.actor = actor
        self.action_key = action_key
        self.out_key = out_key

    def _entries(self) -> list[Entry]:
        return _policy_entries(self.actor, self.action_key, self.action_dim, self.observation_dim)

    def _dtype_module(self) -> nn.Module:
        return self.actor

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the inferred policy noise of every sampled transition."""
        self.validate_input(tensordict)
        action = tensordict.get(self.action_key)
        policy = location_scale(policy_dist(self.actor, _params(self.actor), tensordict))
        tensordict.set(self.out_key, policy.infer_noise(action))
        return tensordict


class ModelNoiseInference(_SampleTransform):
    r"""Infer the model noise :math:`\xi = (s' - \mu(s, a))/\sigma(s, a)` of replayed transitions.

    Args:
        dynamics_model: a location-scale dynamics model (e.g.
            :class:`~torchrl_svg.modules.GaussianDynamics`).

    Keyword Args:
        next_observation_key / out_key: entries read and written (``out_key [*B, D]``).
        check_finite: refuse NaN/inf inputs (``None``: when it costs no device sync).

    Raises:
        TypeError: at construction, for a model without ``get_dist``.
        KeyError / TypeError / ValueError: on a sampled batch with a missing entry, a
            wrong dtype, a wrong shape, an empty batch or (per ``check_finite``) a
            NaN/inf entry, naming it (the contract of :mod:`torchrl_svg.objectives`).

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
        model = location_scale(
            model_dist(self.dynamics_model, _params(self.dynamics_model), tensordict)
        )
        tensordict.set(self.out_key, model.infer_noise(next_obs))
        return tensordict


class ModelRollout(_SampleTransform):
    r"""Imagine ``steps`` model transitions after each sampled real transition (for value expansion).

    From the real next state :math:`s'` it draws :math:`a_k\sim\pi(s_k)`,
    :math:`s_{k+1}\sim\hat f(s_k, a_k)`, the expected reward and the continuation
    :math:`1-\hat d(s_{k+1})`, without gradient, and writes them under ``out_key``
    as a TensorDict of batch shape ``[*B, steps]`` — the layout
    :class:`~torchrl_svg.objectives.S2VGLoss` reads for ``horizon = steps + 1``.

    Args:
        actor, dynamics_model, reward_model: the current policy and models.
        termination_model: a :class:`~torchrl_svg.modules.Termination` or ``None``.

    Keyword Args:
        steps: number of imagined steps (``H - 1``).
        observation_key / action_key / out_key: entries read and written.
        action_spec: the environment's action spec, checked against the actor's
            and the models' sizes and the actor's TanhNormal bounds.
        check_finite: refuse NaN/inf inputs (``None``: when it costs no device sync).

    Raises:
        TypeError: at construction, for a policy that is not location-scale or a
            dynamics model without ``get_dist``.
        ValueError: at construction, for bounds or sizes that disagree.
        KeyError / TypeError / ValueError: on a sampled batch with a missing entry, a
            wrong dtype, a wrong shape, an empty batch or (per ``check_finite``) a
            NaN/inf entry, naming it (the contract of :mod:`torchrl_svg.objectives`).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor
        >>> from torchrl_svg.data import ModelRollout
        >>> rollout = ModelRollout(make_actor(3, Bounded(-1.0, 1.0, (1,)), hidden_sizes=(16,)),
        ...                        GaussianDynamics(3, 1, hidden_sizes=(16,)), RewardModel(3, 1, hidden_sizes=(16,)),
        ...                        steps=2)
        >>> td = rollout(TensorDict({("next", "observation"): torch.randn(5, 3)}, [5]))
        >>> td["imagined"].batch_size, td["imagined", "next", "reward"].shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    def __init__(
        self,
        actor: ProbabilisticTensorDictSequential,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase,
        termination_model: TensorDictModuleBase | None = None,
        *,
        steps: int,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        out_key: NestedKey = "imagined",
        action_spec: TensorSpec | None = None,
        check_finite: bool | None = None,
    ):
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
        require_get_dist("ModelRollout", "dynamics_model", dynamics_model)
        sizes = check_policy(
            "ModelRollout", actor, name="actor", action_spec=action_spec, action_key=action_key
        )
        _, observation_dim = check_sizes(
            sizes,
            {
                "dynamics_model": dynamics_model,
                "reward_model": reward_model,
                "termination_model": termination_model,
            },
            actor=actor,
        )
        super().__init__(in_keys=[("next", observation_key)], out_keys=[out_key])
        self.observation_dim = observation_dim
        self.check_finite = check_finite
        self.actor = actor
        self.dynamics_model = dynamics_model
        self.reward_model = reward_model
        self.termination_model = termination_model
        self.steps = int(steps)
        self.observation_key = observation_key
        self.action_key = action_key
        self.out_key = out_key

    def _entries(self) -> list[Entry]:
        return [Entry(("next", self.observation_key), self.observation_dim)]

    def _dtype_module(self) -> nn.Module:
        return self.actor

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the imagined continuation of every sampled transition."""
        self.validate_input(tensordict)
        start = tensordict.get(("next", self.observation_key))
        rollout = imagine_rollout(
            self.actor,
            _params(self.actor),
            self.dynamics_model,
            _params(self.dynamics_model),
            self.reward_model,
            _params(self.reward_model),
            self.termination_model,
            None if self.termination_model is None else _params(self.termination_model),
            start,
            self.steps,
            self.observation_key,
            self.action_key,
        )
        tensordict.set(self.out_key, rollout)
        return tensordict


class NormalizerUpdate(Transform):
    """Update the world models' running statistics with every batch written to the buffer.

    TorchRL buffers apply a transform's inverse on ``extend``; this one merges
    the written real transitions into each model's normaliser (see
    :meth:`~torchrl_svg.modules.GaussianDynamics.update_normalizer`) and leaves
    the data unchanged. Sampled batches pass through.

    Args:
        *models: modules with an ``update_normalizer(tensordict)`` method.

    Keyword Args:
        check_finite: refuse NaN/inf in written batches (``None``: when it costs no
            device sync). Running statistics are never updated with non-finite
            values: :class:`~torchrl_svg.modules.RunningNormalizer` refuses them too.

    Raises:
        TypeError: at construction, for a module without ``update_normalizer``; on
            write, for an entry that is not floating.
        KeyError / ValueError: on write, for a missing entry, a wrong shape or a
            NaN/inf entry, naming it. An empty write is a no-op.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl_svg.modules import GaussianDynamics
        >>> from torchrl_svg.data import NormalizerUpdate
        >>> model = GaussianDynamics(3, 1, hidden_sizes=(16,))
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), transform=NormalizerUpdate(model))
        >>> _ = rb.extend(TensorDict({"observation": torch.randn(10, 3), "action": torch.randn(10, 1),
        ...                           ("next", "observation"): torch.randn(10, 3)}, [10]))
        >>> model.input_normalizer.count.item()
        10.0
    """

    def __init__(self, *models: nn.Module, check_finite: bool | None = None):
        super().__init__()
        missing = [type(m).__name__ for m in models if not hasattr(m, "update_normalizer")]
        if missing:
            raise TypeError(f"NormalizerUpdate: {missing} have no update_normalizer method.")
        self.models = nn.ModuleList(models)
        self.check_finite = check_finite

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Sampled data passes through unchanged."""
        return tensordict

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_size.numel() == 0:  # an empty write: nothing to merge
            return tensordict
        entries = unique([e for m in self.models for e in model_entries(m, targets=True)])
        validate(type(self).__name__, tensordict, entries, check_finite=self.check_finite)
        for model in self.models:
            model.update_normalizer(tensordict)
        return tensordict


class UnflattenSlices(Transform):
    """Reshape a flat ``[B * T]`` slice sample (TorchRL's :class:`~torchrl.data.SliceSampler`) to ``[B, T]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> UnflattenSlices(4)(TensorDict({"x": torch.arange(8)}, [8]))["x"]
        tensor([[0, 1, 2, 3],
                [4, 5, 6, 7]])
    """

    def __init__(self, slice_len: int):
        super().__init__()
        if int(slice_len) != slice_len or slice_len < 1:
            raise ValueError(f"slice_len must be an integer >= 1, got {slice_len!r}.")
        self.slice_len = int(slice_len)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``[B * T] -> [B, T]``.

        Raises:
            ValueError: for an empty sample, or one that is not a whole number of slices.
        """
        check_batch(type(self).__name__, tensordict)
        if tensordict.numel() % self.slice_len:
            raise ValueError(
                f"UnflattenSlices: a sample of batch shape {tuple(tensordict.shape)} "
                f"({tensordict.numel()} transition(s)) is not a whole number of slices of "
                f"length {self.slice_len}."
            )
        return tensordict.reshape(-1, self.slice_len)

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict


def slice_replay_buffer(
    size: int,
    slice_len: int,
    num_slices: int | None = None,
    *,
    device: torch.device | str = "cpu",
    traj_key: NestedKey = ("collector", "traj_ids"),
    transforms: list[Transform] | None = None,
) -> ReplayBuffer:
    """A replay buffer that samples ``num_slices`` real sub-trajectories of ``slice_len`` steps.

    Uses TorchRL's :class:`~torchrl.data.SliceSampler` (slices never cross
    trajectory boundaries; ``strict_length``) and returns samples of shape
    ``[num_slices, slice_len]``, the input of ``SVGLoss(horizon=slice_len)``.
    Without ``num_slices``, pass the number of transitions (a multiple of
    ``slice_len``) to ``sample``.
    Extra ``transforms`` run before the reshape on the flat sample. (A plain
    :class:`~torchrl.data.ReplayBuffer`: a ``TensorDictReplayBuffer`` writes
    per-sample metadata after the transforms, which a reshape would break.)

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> rb = slice_replay_buffer(1000, slice_len=3, num_slices=4)
        >>> traj = torch.arange(2).repeat_interleave(50)
        >>> _ = rb.extend(TensorDict({"x": torch.arange(100), ("collector", "traj_ids"): traj}, [100]))
        >>> sample = rb.sample()
        >>> sample.shape, bool((sample["x"][:, 1:] - sample["x"][:, :-1] == 1).all())
        (torch.Size([4, 3]), True)
    """
    from torchrl.envs import Compose

    sampler = SliceSampler(slice_len=slice_len, traj_key=traj_key, strict_length=True)
    return ReplayBuffer(
        storage=LazyTensorStorage(size, device=device),
        sampler=sampler,
        batch_size=None if num_slices is None else slice_len * num_slices,
        transform=Compose(*(transforms or []), UnflattenSlices(slice_len)),
    )
