"""Replay transforms that use the world model: imagined rollouts (value expansion) and normalisation statistics."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs import Transform

from torchrl_svg._utils import Unpack
from torchrl_svg._validation import (
    CheckOptions,
    Entry,
    model_entries,
    require_get_dist,
    unique,
    validate,
)
from torchrl_svg.data._sample import _params, _PolicyTransform
from torchrl_svg.modules.bounds import BoundedObservations, checked_bounds
from torchrl_svg.objectives.functional import imagine_rollout

__all__ = ["ModelRollout", "NormalizerUpdate"]


class ModelRollout(BoundedObservations, _PolicyTransform):
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
        ensemble_reduction: how an ensemble dynamics model combines its members in
            these rollouts (``"sample"``, ``"mean"``, ``"average"``; ``None``: as the
            model is configured).
        observation_bounds: ``(low, high)``, each ``[obs_dim]``: clip every imagined state
            to this box, as the environment clips its observations (see
            :func:`~torchrl_svg.modules.observation_bounds_for_env`); ``None``: no clipping.

    Raises:
        KeyError / TypeError / ValueError: on a sampled batch that breaks the input
            contract of :mod:`torchrl_svg.objectives`.
        TypeError: at construction, for a policy that is not location-scale or a
            dynamics model without ``get_dist``.
        ValueError: at construction, for bounds or sizes that disagree.

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
        ensemble_reduction: str | None = None,
        observation_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        **options: Unpack[CheckOptions],
    ):
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
        require_get_dist("ModelRollout", "dynamics_model", dynamics_model)
        if ensemble_reduction is not None and not hasattr(dynamics_model, "ensemble_size"):
            raise TypeError(
                "ModelRollout: ensemble_reduction needs an ensemble dynamics model "
                f"(GaussianDynamics), got {type(dynamics_model).__name__}."
            )
        super().__init__(
            "ModelRollout",
            actor,
            {
                "dynamics_model": dynamics_model,
                "reward_model": reward_model,
                "termination_model": termination_model,
            },
            in_keys=[("next", observation_key)],
            action_key=action_key,
            out_key=out_key,
            options=options,
        )
        self.dynamics_model = dynamics_model
        self.reward_model = reward_model
        self.termination_model = termination_model
        self.steps = int(steps)
        self.observation_key = observation_key
        self.ensemble_reduction = ensemble_reduction
        self._register_observation_bounds(
            checked_bounds(observation_bounds, self.observation_dim, "ModelRollout")
        )

    def _entries(self) -> list[Entry]:
        return [Entry(("next", self.observation_key), self.observation_dim)]

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
            ensemble_reduction=self.ensemble_reduction,
            bound=self._bounded,
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
