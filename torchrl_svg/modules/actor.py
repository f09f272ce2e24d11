r"""A TorchRL TanhNormal actor that also stores the pre-tanh value of each action it draws.

A TanhNormal action is :math:`a = g(u)` with :math:`u = \mu + \sigma\,\eta` and
:math:`g` = tanh followed by the affine map onto ``[low, high]``. In float32 the
tanh of :math:`|u| \gtrsim 8` rounds to the bound, so the stored action no longer
determines :math:`u`: inverting it gives a clamped :math:`u` whose density differs
from the one the behaviour policy scored. Importance weights
:math:`\pi_\theta(a|s)/\beta(a|s)` computed that way collapse where the policy
saturates, even on-policy. :class:`TanhNormalActor` writes :math:`u` next to the
action (``"action_pre_tanh"``), so that the behaviour log-probability and every
later re-scoring (losses, :class:`~torchrl_svg.data.ImportanceWeight`,
:class:`~torchrl_svg.data.PolicyNoiseInference`) start from the same number.
"""

from __future__ import annotations

from collections.abc import Sequence

from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModule
from tensordict.utils import NestedKey
from torch.distributions.utils import _sum_rightmost
from torchrl.data import Composite, TensorSpec
from torchrl.envs.utils import exploration_type
from torchrl.modules import ProbabilisticActor, SafeProbabilisticModule, TanhNormal
from torchrl.modules.tensordict_module.probabilistic import (
    SafeProbabilisticTensorDictSequential,
)

__all__ = ["PRE_TANH_KEY", "PreTanhProbabilisticModule", "TanhNormalActor"]

#: Where :class:`TanhNormalActor` writes the pre-tanh value of its actions.
PRE_TANH_KEY = "action_pre_tanh"


class PreTanhProbabilisticModule(SafeProbabilisticModule):
    """TorchRL's ``SafeProbabilisticModule`` that also writes the pre-tanh value of a TanhNormal draw.

    When sampling (``ExplorationType.RANDOM``) it draws :math:`u` from the
    TanhNormal's Normal, writes ``a = g(u)``, the pre-image ``u`` under
    ``pre_tanh_key`` and (with ``return_log_prob``) the log-density of the same
    :math:`u` — the computation of TorchRL's ``TanhNormal.rsample_and_log_prob``.
    Acting deterministically it writes ``a = g(loc)`` and ``u = loc``. Any other
    distribution, mode, or ``num_samples`` falls back to the parent class (no
    pre-tanh entry).

    Keyword Args:
        pre_tanh_key: the entry written (``[*B, A]``). Default ``"action_pre_tanh"``.
        **kwargs: as :class:`~torchrl.modules.SafeProbabilisticModule`.
    """

    def __init__(self, *args, pre_tanh_key: NestedKey = PRE_TANH_KEY, **kwargs):
        super().__init__(*args, **kwargs)
        self.pre_tanh_key = pre_tanh_key

    @property
    def out_keys(self) -> list[NestedKey]:
        """The sampled action(s), the log-probability when returned, and the pre-tanh value."""
        keys = list(super().out_keys)
        if self.pre_tanh_key not in keys:
            keys.append(self.pre_tanh_key)
        return keys

    @out_keys.setter
    def out_keys(self, value) -> None:  # the parent's __init__ assigns it
        self._out_keys = list(value)

    def forward(
        self,
        tensordict: TensorDictBase,
        tensordict_out: TensorDictBase | None = None,
        _requires_sample: bool = True,
    ) -> TensorDictBase:
        """Write the action, its pre-tanh value and (optionally) its log-probability."""
        mode = exploration_type() or self.default_interaction_type
        sampling = mode == InteractionType.RANDOM
        if (
            not _requires_sample
            or self.num_samples is not None
            or len(self.dist_sample_keys) != 1
            or mode not in (InteractionType.RANDOM, InteractionType.DETERMINISTIC)
        ):
            return super().forward(tensordict, tensordict_out, _requires_sample=_requires_sample)
        dist = self.get_dist(tensordict)
        if not isinstance(dist, TanhNormal):
            return super().forward(tensordict, tensordict_out, _requires_sample=_requires_sample)
        out = tensordict if tensordict_out is None else tensordict_out
        normal, squash = dist.base_dist, dist.transforms[0]
        if sampling:
            preimage = normal.rsample() if normal.has_rsample else normal.sample()
        else:
            preimage = dist.root_dist.loc
        action = squash(preimage)
        out.set(self.dist_sample_keys[0], action)
        out.set(self.pre_tanh_key, preimage)
        if self.return_log_prob:
            log_det = squash.log_abs_det_jacobian(preimage, action)
            log_prob = normal.log_prob(preimage) - _sum_rightmost(log_det, len(dist.event_shape))
            out.set(self.log_prob_key, log_prob)
        return out


class TanhNormalActor(ProbabilisticActor):
    r"""A TanhNormal :class:`~torchrl.modules.ProbabilisticActor` that stores the pre-tanh value of its actions.

    Built like a ``ProbabilisticActor`` (``distribution_class`` defaults to
    TorchRL's ``TanhNormal``); its distribution module is a
    :class:`PreTanhProbabilisticModule`, so every action it draws comes with its
    pre-image :math:`u` (``"action_pre_tanh"``, ``[*B, A]``) and a log-probability
    computed from that :math:`u`. TorchRL collectors store the entry like any
    other policy output; the SVG losses and replay transforms then score the
    behaviour and the current policy from :math:`u`, which stays exact where
    the float tanh saturates. :func:`~torchrl_svg.modules.make_actor` builds one.

    Args:
        module: writes the distribution parameters (``"loc"``, ``"scale"``).
        in_keys: the distribution's parameter entries.
        out_keys: the action entry. Default ``["action"]``.

    Keyword Args:
        spec: the action spec.
        pre_tanh_key: where the pre-tanh value goes. Default ``"action_pre_tanh"``.
        **kwargs: as :class:`~torchrl.modules.ProbabilisticActor`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import NormalParamExtractor, TensorDictModule
        >>> from torchrl.data import Bounded
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), NormalParamExtractor())
        >>> actor = TanhNormalActor(TensorDictModule(net, ["observation"], ["loc", "scale"]),
        ...                         in_keys=["loc", "scale"], spec=Bounded(-1.0, 1.0, (1,)),
        ...                         return_log_prob=True)
        >>> td = actor(TensorDict({"observation": torch.randn(4, 3)}, [4]))
        >>> bool(torch.equal(td["action"], torch.tanh(td["action_pre_tanh"])))
        True
    """

    def __init__(
        self,
        module: TensorDictModule,
        in_keys: NestedKey | Sequence[NestedKey],
        out_keys: Sequence[NestedKey] | None = None,
        *,
        spec: TensorSpec | None = None,
        pre_tanh_key: NestedKey = PRE_TANH_KEY,
        **kwargs,
    ):
        kwargs.setdefault("distribution_class", TanhNormal)
        out_keys = ["action"] if out_keys is None else list(out_keys)
        if len(out_keys) == 1 and spec is not None and not isinstance(spec, Composite):
            spec = Composite({out_keys[0]: spec})
        # ProbabilisticActor's own __init__ always builds a SafeProbabilisticModule
        SafeProbabilisticTensorDictSequential.__init__(
            self,
            module,
            PreTanhProbabilisticModule(
                in_keys=in_keys, out_keys=out_keys, spec=spec, pre_tanh_key=pre_tanh_key, **kwargs
            ),
        )
        self.pre_tanh_key = pre_tanh_key
