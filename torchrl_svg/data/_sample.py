"""What the sample-time replay transforms share: the policy entries and the input check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs import Transform

from torchrl_svg._utils import keyword_options
from torchrl_svg._validation import (
    CHECK_DEFAULTS,
    Entry,
    check_policy,
    check_sizes,
    module_dtype,
    unique,
    validate,
)


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


class _PolicyTransform(_SampleTransform):
    """A sample-time transform that calls the policy (and, for some, world models).

    The construction they share: the policy is checked against the action spec and the
    models' stated sizes (:func:`~torchrl_svg._validation.check_policy`,
    :func:`~torchrl_svg._validation.check_sizes`), and the policy, its action entry, the
    entry written and ``check_finite`` are kept. Sets :attr:`action_dim` and
    :attr:`observation_dim` (``None`` where nothing states them).
    """

    def __init__(
        self,
        owner: str,
        actor: nn.Module,
        models: dict[str, nn.Module | None],
        *,
        in_keys: list[NestedKey],
        action_key: NestedKey,
        out_key: NestedKey,
        options: Mapping[str, Any],
    ):
        """``options``: the subclass's ``**options`` (:class:`CheckOptions`), as given."""
        options = keyword_options(owner, options, CHECK_DEFAULTS)
        sizes = check_policy(
            owner, actor, name="actor", action_spec=options["action_spec"], action_key=action_key
        )
        dims = check_sizes(sizes, models, actor=actor)
        super().__init__(in_keys=in_keys, out_keys=[out_key])
        self.action_dim, self.observation_dim = dims
        self.check_finite = options["check_finite"]
        self.actor = actor
        self.action_key = action_key
        self.out_key = out_key

    def _dtype_module(self) -> nn.Module:
        return self.actor
