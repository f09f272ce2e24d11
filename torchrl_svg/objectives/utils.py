"""Target-network updaters for the SVG losses."""

from __future__ import annotations

from torch import Tensor
from torchrl.objectives import HardUpdate as _TorchRLHardUpdate
from torchrl.objectives import LossModule
from torchrl.objectives.utils import TargetNetUpdater

__all__ = ["HardUpdate"]


class HardUpdate(_TorchRLHardUpdate):
    r"""Copy the target parameters from the trained ones every ``C`` calls of :meth:`step`.

    Algorithm 4 of the SVG paper copies :math:`\bar\nu \leftarrow \nu` every
    :math:`C` value updates (:math:`C = 50`). TorchRL's
    :class:`~torchrl.objectives.HardUpdate` copies on every ``C + 1``-th call;
    this one on the ``C``-th, ``2C``-th, ... call (``C = 1`` copies at every
    update). Otherwise the same class: call :meth:`step` after each optimiser
    step; ``counter`` (saved by :meth:`state_dict`) counts the calls since the
    last copy.

    Args:
        loss_module: the loss whose ``target_*_params`` follow its parameters.

    Keyword Args:
        value_network_update_interval: ``C``, a positive integer.

    Examples:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value
        >>> from torchrl_svg.objectives import HardUpdate, SVGLoss
        >>> loss = SVGLoss(make_actor(3, Bounded(-1.0, 1.0, (1,)), hidden_sizes=(8,)),
        ...                make_value(3, hidden_sizes=(8,)), GaussianDynamics(3, 1, hidden_sizes=(8,)),
        ...                RewardModel(3, 1, hidden_sizes=(8,)))
        >>> updater = HardUpdate(loss, value_network_update_interval=2)
        >>> with torch.no_grad():
        ...     _ = loss.value_network_params.apply(lambda p: p.add_(1.0))
        >>> updater.step()  # 1st update: no copy yet
        >>> torch.equal(loss.target_value_network_params["module", "0", "bias"],
        ...             loss.value_network_params["module", "0", "bias"])
        False
        >>> updater.step()  # 2nd update: copy
        >>> torch.equal(loss.target_value_network_params["module", "0", "bias"],
        ...             loss.value_network_params["module", "0", "bias"])
        True
    """

    def __init__(self, loss_module: LossModule, *, value_network_update_interval: int = 1000):
        if int(value_network_update_interval) != value_network_update_interval or (
            value_network_update_interval < 1
        ):
            raise ValueError(
                "value_network_update_interval must be a positive integer, got "
                f"{value_network_update_interval!r}."
            )
        super().__init__(
            loss_module, value_network_update_interval=int(value_network_update_interval)
        )

    def _step(self, p_source: Tensor, p_target: Tensor) -> None:
        p_target.data.copy_(p_source.data)

    def step(self) -> None:
        """Count one update; on every ``C``-th, copy the parameters into their targets."""
        self.counter += 1
        if self.counter >= self.value_network_update_interval:
            TargetNetUpdater.step(self)  # _step on every parameter: the copy
            self.counter = 0
