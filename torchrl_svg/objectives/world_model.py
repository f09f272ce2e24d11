"""Maximum-likelihood fitting of the Gaussian world model on real transitions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torchrl_svg._utils import get_key
from torchrl_svg._validation import (
    Entry,
    check_finite_losses,
    model_entries,
    module_dtype,
    require_get_dist,
    unique,
    validate,
)
from torchrl_svg.modules.termination import LearnedTermination, Termination
from torchrl_svg.objectives._groups import trainable

__all__ = ["GaussianWorldModelLoss"]


def _target_key(model: TensorDictModuleBase) -> NestedKey:
    """The entry a model predicts: its ``target_key``, its distribution's sample key, or its last out key."""
    key = getattr(model, "target_key", None)
    if key is not None:
        return key
    sample_keys = getattr(model, "dist_sample_keys", None)
    if sample_keys:
        return sample_keys[0]
    return model.out_keys[-1]


class GaussianWorldModelLoss(LossModule):
    r"""Negative log-likelihood of the world model on real replay transitions.

    Three independent terms, one ``loss_*`` entry each:

    * ``loss_dynamics``: Gaussian NLL of the normalised delta,

      .. math::

          -\log \mathcal N\!\Big(\tfrac{s' - s - m_\Delta}{d_\Delta};\;
          \mu_n(s, a),\, \sigma_n(s, a)^2\Big)

      summed over state dimensions and over ensemble members. Fitting the
      mean *and* the variance by likelihood (rather than MSE on a
      reparameterised sample, as the reference S2VG code did) keeps
      :math:`\sigma` from collapsing.
    * ``loss_reward``: the same for the normalised reward, or the squared error
      when the reward model is a deterministic TensorDict module.
    * ``loss_termination``: binary cross-entropy of a
      :class:`~torchrl_svg.modules.LearnedTermination` head against the real
      ``("next", "terminated")`` flags. Omitted for known termination
      functions (nothing to learn).

    Models that do not provide ``log_prob_normalized`` (a user's own module with
    a ``get_dist`` over its target) are fitted by ``-get_dist(td).log_prob(target)``.
    Each term reaches only the parameters of its own model.

    Args:
        dynamics_model: e.g. :class:`~torchrl_svg.modules.GaussianDynamics`.
        reward_model: e.g. :class:`~torchrl_svg.modules.RewardModel`, or ``None``.
        termination_model: a :class:`~torchrl_svg.modules.Termination`, or ``None``.

    Keyword Args:
        reward_coef / termination_coef: weights of those terms.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch ``[*B]``.
        check_finite: refuse NaN/inf inputs: ``None`` (default) when it costs no
            device synchronisation (CPU inputs, eager), ``True`` always, ``False`` never.

    Inputs are checked by :meth:`validate_input` as :mod:`torchrl_svg.objectives` documents.

    Raises:
        TypeError: at construction, for a dynamics model without ``get_dist``; in
            ``forward``, for an entry of the wrong dtype.
        ValueError: in ``forward``, for a wrong shape, an empty batch or (per
            ``check_finite``) a NaN/inf entry.
        KeyError: in ``forward``, for a missing entry (the models' inputs and targets).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel
        >>> from torchrl_svg.objectives import GaussianWorldModelLoss
        >>> dyn, rew = GaussianDynamics(3, 1, hidden_sizes=(16,)), RewardModel(3, 1, hidden_sizes=(16,))
        >>> loss = GaussianWorldModelLoss(dyn, rew)
        >>> data = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.randn(8, 1),
        ...     ("next", "observation"): torch.randn(8, 3), ("next", "reward"): torch.randn(8, 1),
        ...     ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool)}, [8])
        >>> out = loss(data)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_dynamics', 'loss_reward']
        >>> (out["loss_dynamics"] + out["loss_reward"]).backward()

    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            terminated: the termination flag, read under ``"next"``. Defaults to ``"terminated"``.

        """

        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        dynamics_model: TensorDictModuleBase,
        reward_model: TensorDictModuleBase | None = None,
        termination_model: Termination | None = None,
        *,
        reward_coef: float = 1.0,
        termination_coef: float = 1.0,
        reduction: str = "mean",
        check_finite: bool | None = None,
    ):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        require_get_dist("GaussianWorldModelLoss", "dynamics_model", dynamics_model)
        self.check_finite = check_finite
        self.dynamics_model = dynamics_model
        self.reward_model = reward_model
        self.termination_model = termination_model
        self.reward_coef = float(reward_coef)
        self.termination_coef = float(termination_coef)
        self.reduction = reduction
        self._out_keys: list[str] | None = None

    @property
    def in_keys(self) -> list[NestedKey]:
        """The entries the loss requires: the models' inputs and fitting targets."""
        entries = self._input_entries()
        return list(dict.fromkeys(entry.key for entry in entries if entry.required))

    @property
    def out_keys(self) -> list[str]:
        """The entries of the output tensordict (:meth:`select_out_keys` narrows them).

        ``loss_dynamics``, ``loss_reward`` (with a reward model), ``loss_termination``
        (with a learned termination head) and, unless ``reduction="none"``, the
        diagnostics ``dynamics_mse`` and ``dynamics_log_std`` of a model that
        exposes its normalised parameters (:class:`~torchrl_svg.modules.GaussianDynamics`).
        """
        if self._out_keys is not None:
            return self._out_keys
        keys = ["loss_dynamics"]
        if self.reward_model is not None:
            keys.append("loss_reward")
        if self.learns_termination:
            keys.append("loss_termination")
        if self.reduction != "none" and hasattr(self.dynamics_model, "normalized_params"):
            keys += ["dynamics_mse", "dynamics_log_std"]
        return keys

    @out_keys.setter
    def out_keys(self, values: list[str]) -> None:
        self._out_keys = list(values)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameters this loss trains, by model: what its optimiser should step.

        ``dynamics``, ``reward`` (a learned reward model) and ``termination`` (a
        learned termination head); a known termination function has none.

        Examples:
            >>> import torch
            >>> from torchrl_svg.modules import GaussianDynamics, RewardModel
            >>> loss = GaussianWorldModelLoss(GaussianDynamics(3, 1), RewardModel(3, 1))
            >>> list(loss.parameter_groups())
            ['dynamics', 'reward']
            >>> optim = torch.optim.Adam(
            ...     [{"params": p} for p in loss.parameter_groups().values()], lr=3e-4)
        """
        groups = {
            "dynamics": trainable(self.dynamics_model),
            "reward": trainable(self.reward_model) if self.reward_model is not None else [],
            "termination": trainable(self.termination_model) if self.learns_termination else [],
        }
        return {name: params for name, params in groups.items() if params}

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def learns_termination(self) -> bool:
        """Whether a termination head is trained by this loss."""
        return isinstance(self.termination_model, LearnedTermination)

    def _input_entries(self) -> list[Entry]:
        """The models' inputs and fitting targets."""
        entries = model_entries(self.dynamics_model, targets=True)
        if self.reward_model is not None:
            entries += model_entries(self.reward_model, targets=True)
            if getattr(self.reward_model, "target_key", None) is None:
                entries.append(Entry(_target_key(self.reward_model), any_shape=True))
        if getattr(self.dynamics_model, "target_key", None) is None:
            entries.append(Entry(_target_key(self.dynamics_model), any_shape=True))
        if self.learns_termination:
            entries += model_entries(self.termination_model)
            entries.append(Entry(("next", self.tensor_keys.terminated), 1, any_real=True))
        return entries

    def validate_input(self, tensordict: TensorDictBase) -> None:
        """Check ``tensordict`` against what the models read and are fitted to.

        Raises:
            KeyError: a required entry is missing.
            TypeError: an entry has the wrong dtype.
            ValueError: an entry has the wrong shape, the batch is empty, or (per
                ``check_finite``) an entry holds NaN or inf.

        """
        validate(
            type(self).__name__,
            tensordict,
            unique(self._input_entries()),
            dtype=module_dtype(self.dynamics_model),
            check_finite=self.check_finite,
        )

    def _nll(self, model: TensorDictModuleBase, tensordict: TensorDictBase) -> torch.Tensor:
        """Per-sample negative log-likelihood ``[*B]`` (summed over ensemble members)."""
        if hasattr(model, "log_prob_normalized"):
            return -model.log_prob_normalized(tensordict).sum(0)
        target = get_key(type(self).__name__, tensordict, _target_key(model))
        # a shallow copy: a user's probabilistic module writes its parameters into its input
        log_prob = model.get_dist(tensordict.copy()).log_prob(target)
        if log_prob.ndim == target.ndim:  # a per-dimension distribution (e.g. plain Normal)
            log_prob = log_prob.sum(-1)
        return -log_prob

    def dynamics_loss(
        self, tensordict: TensorDictBase
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Gaussian NLL of the normalised delta, ``[*B]`` before reduction."""
        nll = self._nll(self.dynamics_model, tensordict)
        metadata: dict[str, torch.Tensor] = {}
        if hasattr(self.dynamics_model, "normalized_params"):
            with torch.no_grad():
                loc, log_std = self.dynamics_model.normalized_params(tensordict)
                err = loc - self.dynamics_model.normalized_target(tensordict).unsqueeze(0)
                metadata["dynamics_mse"] = err.pow(2).mean()
                metadata["dynamics_log_std"] = log_std.mean()
        return self._reduce_loss(nll, tensordict, reduction=self.reduction), metadata

    def reward_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Gaussian NLL of the normalised reward (or squared error for a deterministic module)."""
        model = self.reward_model
        if hasattr(model, "get_dist"):
            loss = self._nll(model, tensordict)
        else:
            key = _target_key(model)
            target = get_key(type(self).__name__, tensordict, key)
            pred = model(tensordict.exclude(key)).get(key)
            loss = (pred - target).pow(2).sum(-1)
        return self._reduce_loss(self.reward_coef * loss, tensordict, reduction=self.reduction)

    def termination_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Binary cross-entropy of the learned termination head on real flags."""
        model = self.termination_model
        logits = model.logits(tensordict)
        target = get_key(type(self).__name__, tensordict, ("next", self.tensor_keys.terminated))
        target = target.to(logits.dtype).reshape(logits.shape)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").squeeze(-1)
        return self._reduce_loss(self.termination_coef * bce, tensordict, reduction=self.reduction)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All terms on a batch of real transitions, plus detached diagnostics."""
        self.validate_input(tensordict)
        loss_dynamics, metadata = self.dynamics_loss(tensordict)
        out = {"loss_dynamics": loss_dynamics}
        if self.reward_model is not None:
            out["loss_reward"] = self.reward_loss(tensordict)
        if self.learns_termination:
            out["loss_termination"] = self.termination_loss(tensordict)
        check_finite_losses(type(self).__name__, tensordict, out, self.check_finite)
        batch_size = tensordict.batch_size if self.reduction == "none" else []
        td_out = TensorDict(out, batch_size=batch_size)
        if self.reduction != "none":
            td_out.update(metadata)
        return td_out

    def update_normalizers(self, tensordict: TensorDictBase) -> None:
        """Merge a batch of real transitions into every model's running statistics."""
        for model in (self.dynamics_model, self.reward_model, self.termination_model):
            update = getattr(model, "update_normalizer", None)
            if update is not None:
                update(tensordict)
