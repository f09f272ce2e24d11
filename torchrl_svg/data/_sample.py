"""What the sample-time replay transforms share: the policy entries and the input check."""

from __future__ import annotations

from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs import Transform

from torchrl_svg._validation import Entry, module_dtype, unique, validate


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
