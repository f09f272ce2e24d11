"""Gaussian MLP heads with normalised inputs and targets: the base of the world models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torchrl.envs.utils import exploration_type

from torchrl_svg._utils import Unpack, check_dim, get_key, keyword_options
from torchrl_svg.modules._mlp import StackedMLP
from torchrl_svg.modules.normalizer import RunningNormalizer

__all__ = ["GaussianMLPModel", "GaussianModelOptions", "ObservationActionModel"]

SigmaMode = Literal["state", "constant"]
EnsembleReduction = Literal["sample", "mean", "average"]


class GaussianModelOptions(TypedDict, total=False):
    """The hyper-parameters of the Gaussian world models, each optional.

    :class:`GaussianMLPModel`, :class:`GaussianDynamics` and :class:`RewardModel`
    take them as keyword arguments (``**options``); one left out takes the
    default below.

    Keys:
        hidden_sizes: hidden layer widths (of each sub-network with
            ``per_dimension``). Default ``(200, 200)``.
        activation_class: activation of the hidden layers. Default :class:`torch.nn.ReLU`.
        sigma: ``"state"`` for a learned state-dependent standard deviation,
            ``"constant"`` for one learned value per target dimension (as in the
            SVG paper, App. C). Default ``"state"``.
        ensemble_size: number of independent members ``E``, evaluated with
            :func:`torch.vmap` (in ``"sample"`` mode on the CPU, each sample
            through its own member only: :meth:`~GaussianMLPModel.routes_members`).
            Default ``1``.
        ensemble_reduction: how :meth:`~GaussianMLPModel.get_dist` combines
            members: ``"sample"`` uses one member per sample (read from the
            model's ``member_key`` entry when the input has it, else drawn
            uniformly), ``"mean"`` moment-matches the mixture (the members' mean
            location; their mean variance plus their disagreement),
            ``"average"`` is the members' average prediction (their mean location
            and mean variance, the disagreement left out). Default ``"sample"``.
        min_log_std / max_log_std: soft bounds (softplus) of the log-std in
            normalised units. Defaults ``-5.0`` and ``0.5``.

    Examples:
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel
        >>> options: GaussianModelOptions = {"hidden_sizes": (32,), "ensemble_size": 2}
        >>> GaussianDynamics(3, 1, **options).ensemble_size, RewardModel(3, 1, **options).ensemble_size
        (2, 2)
        >>> RewardModel(3, 1, hidden_size=(32,))
        Traceback (most recent call last):
        ...
        TypeError: RewardModel.__init__() got an unexpected keyword argument 'hidden_size'

    """

    hidden_sizes: Sequence[int]
    activation_class: type[nn.Module]
    sigma: SigmaMode
    ensemble_size: int
    ensemble_reduction: EnsembleReduction
    min_log_std: float
    max_log_std: float


_OPTION_DEFAULTS: GaussianModelOptions = {
    "hidden_sizes": (200, 200),
    "activation_class": nn.ReLU,
    "sigma": "state",
    "ensemble_size": 1,
    "ensemble_reduction": "sample",
    "min_log_std": -5.0,
    "max_log_std": 0.5,
}


def soft_clamp(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Differentiable clamp of ``x`` into ``(low, high)`` with softplus (PETS-style bounds)."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("sample", "mean", "average"):
        raise ValueError(
            f"ensemble_reduction must be 'sample', 'mean' or 'average', got {reduction!r}."
        )


def reduce_members(
    loc: torch.Tensor, scale: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine ``[E, *B, D]`` ensemble members' Gaussians into one ``[*B, D]``.

    ``"mean"`` moment-matches the uniform mixture (variance: the members' mean
    variance plus the variance of their means); ``"average"`` keeps the members'
    mean variance only (their disagreement left out).

    Examples:
        >>> loc = torch.tensor([[0.0], [2.0]]); scale = torch.ones(2, 1)
        >>> reduce_members(loc, scale, "mean")
        (tensor([1.]), tensor([1.4142]))
        >>> reduce_members(loc, scale, "average")
        (tensor([1.]), tensor([1.]))
    """
    var = scale.pow(2).mean(0)
    if reduction == "mean":
        var = var + loc.var(0, unbiased=False)
    return loc.mean(0), var.sqrt()


def routes_members(per_dimension: bool, inputs: torch.Tensor) -> bool:
    """Whether an ensemble's one-member-per-sample prediction evaluates only the chosen members.

    See :meth:`GaussianMLPModel.routes_members`; the rule shared by the module and
    its plain-tensor form.
    """
    return not per_dimension and inputs.device.type == "cpu" and not torch.compiler.is_compiling()


def member_heads(
    out: torch.Tensor,
    target_dim: int,
    log_std: torch.Tensor | None,
    member: torch.Tensor,
    min_log_std: torch.Tensor,
    max_log_std: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised mean and soft-bounded log-std ``[N, D]`` of one member per sample.

    ``out`` ``[N, heads * D]``: each sample's own member's output (the mean, then the
    raw log-std when it is state-dependent); ``log_std`` ``[E, D]``: the constant
    log-stds, or ``None``. The rule shared by the module and its plain-tensor form.
    """
    out = out.unflatten(-1, (-1, target_dim))  # [N, heads, D]
    raw = out[:, 1] if log_std is None else log_std[member]
    return out[:, 0], soft_clamp(raw, min_log_std, max_log_std)


class GaussianMLPModel(TensorDictModuleBase):
    r"""A diagonal Gaussian over a target entry, predicted by an MLP from input entries.

    The inputs (concatenated along the last dimension) are normalised with
    running statistics, and so is the regression target, so that one network
    serves state dimensions of very different scales. With ``residual_key`` the
    target is the *change* of that entry (``target - residual``); the returned
    distribution is nevertheless over the raw target:

    .. math::

        y = \text{residual} + m_\Delta + s_\Delta\,(\mu_n(x_n) + \sigma_n(x_n)\,\xi),
        \qquad \xi \sim \mathcal{N}(0, I)

    where :math:`(m_\Delta, s_\Delta)` are the target statistics and
    :math:`(\mu_n, \sigma_n)` the network outputs in normalised units.
    :math:`\log\sigma_n` is kept inside ``[min_log_std, max_log_std]`` with
    softplus soft bounds.

    This class is the shared machinery of :class:`GaussianDynamics` and
    :class:`RewardModel`; use those.

    Args:
        input_keys: entries concatenated to form the network input.
        input_dims: feature size of each input entry.
        target_key: the entry the distribution is over.
        target_dim: its feature size.

    Keyword Args:
        residual_key: if given, the model predicts ``target - residual``.
        per_dimension: one sub-network per target dimension (SVG paper, App. C).
            Default ``False``.
        default_interaction_type: what :meth:`forward` writes when no
            exploration type is set (``DETERMINISTIC``: the mean).
        member_key: the optional input entry ``[*B]`` (integers in ``[0, E)``) that
            names the member of each sample with ``ensemble_reduction="sample"``
            (so that two calls, e.g. noise inference and a loss, use the same one).
            Default ``"ensemble_member"``.
        **options: the :class:`GaussianModelOptions` (their meaning and defaults
            are there): ``hidden_sizes``, ``activation_class``, ``sigma``,
            ``ensemble_size``, ``ensemble_reduction``, ``min_log_std``,
            ``max_log_std``. Any other keyword raises :class:`TypeError`.

    """

    def __init__(
        self,
        input_keys: Sequence[NestedKey],
        input_dims: Sequence[int],
        target_key: NestedKey,
        target_dim: int,
        *,
        residual_key: NestedKey | None = None,
        per_dimension: bool = False,
        default_interaction_type: InteractionType = InteractionType.DETERMINISTIC,
        member_key: NestedKey = "ensemble_member",
        **options: Unpack[GaussianModelOptions],
    ):
        resolved = keyword_options(type(self).__name__, options, _OPTION_DEFAULTS)
        sigma = resolved["sigma"]
        ensemble_size = resolved["ensemble_size"]
        ensemble_reduction = resolved["ensemble_reduction"]
        min_log_std, max_log_std = resolved["min_log_std"], resolved["max_log_std"]
        super().__init__()
        if len(input_keys) != len(input_dims):
            raise ValueError(
                f"{type(self).__name__}: got {len(input_keys)} input keys but {len(input_dims)} input dims."
            )
        if any(int(d) <= 0 for d in input_dims) or int(target_dim) <= 0:
            raise ValueError(
                f"{type(self).__name__}: dimensions must be positive, got inputs {tuple(input_dims)} "
                f"and target {target_dim}."
            )
        if sigma not in ("state", "constant"):
            raise ValueError(f"sigma must be 'state' or 'constant', got {sigma!r}.")
        _check_reduction(ensemble_reduction)
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}.")
        if not min_log_std < max_log_std:
            raise ValueError(
                f"min_log_std ({min_log_std}) must be smaller than max_log_std ({max_log_std})."
            )
        self.in_keys = list(input_keys)
        self.out_keys = [target_key]
        self.input_dims = tuple(int(d) for d in input_dims)
        self.target_key = target_key
        self.target_dim = int(target_dim)
        self.residual_key = residual_key
        self.sigma = sigma
        self.per_dimension = bool(per_dimension)
        self.ensemble_size = int(ensemble_size)
        self.ensemble_reduction = ensemble_reduction
        self.default_interaction_type = default_interaction_type
        self.member_key = member_key

        in_features = sum(self.input_dims)
        heads = 2 if sigma == "state" else 1
        self._heads = heads
        if self.per_dimension:
            members, out_features = self.ensemble_size * self.target_dim, heads
        else:
            members, out_features = self.ensemble_size, heads * self.target_dim
        self.net = StackedMLP(
            members,
            in_features,
            out_features,
            resolved["hidden_sizes"],
            resolved["activation_class"],
        )
        if sigma == "constant":
            self.log_std = nn.Parameter(torch.zeros(self.ensemble_size, self.target_dim))
        else:
            self.log_std = None
        self.input_normalizer = RunningNormalizer(in_features)
        self.target_normalizer = RunningNormalizer(self.target_dim)
        self.register_buffer("min_log_std", torch.tensor(float(min_log_std)))
        self.register_buffer("max_log_std", torch.tensor(float(max_log_std)))

    # ------------------------------------------------------------------ data
    def _read_inputs(self, tensordict: TensorDictBase) -> torch.Tensor:
        owner = type(self).__name__
        parts = []
        for key, dim in zip(self.in_keys, self.input_dims, strict=True):
            value = get_key(owner, tensordict, key)
            check_dim(owner, key, value, dim)
            parts.append(value)
        batch_shapes = {p.shape[:-1] for p in parts}
        if len(batch_shapes) != 1:
            raise ValueError(
                f"{owner}: input entries {self.in_keys} have different batch shapes "
                f"{[tuple(p.shape) for p in parts]}."
            )
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def _residual(self, tensordict: TensorDictBase) -> torch.Tensor | None:
        if self.residual_key is None:
            return None
        return get_key(type(self).__name__, tensordict, self.residual_key)

    def target(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The regression target ``[*B, D]``: the target entry, minus the residual entry if any."""
        owner = type(self).__name__
        value = get_key(owner, tensordict, self.target_key)
        check_dim(owner, self.target_key, value, self.target_dim)
        residual = self._residual(tensordict)
        return value if residual is None else value - residual

    @torch.no_grad()
    def update_normalizer(self, tensordict: TensorDictBase) -> None:
        """Merge a batch of real transitions into the input and target statistics.

        Call it on every batch of collected (real) data before it is used to
        train the model. The update is in place, so losses holding this module
        see the new statistics.
        """
        inputs = self._read_inputs(tensordict)
        target = self.target(tensordict)
        self.input_normalizer.update(inputs)
        self.target_normalizer.update(target)

    # ------------------------------------------------------------- network
    def normalized_params(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean and log-std of the normalised target.

        Returns:
            ``(loc, log_std)``, each ``[E, *B, D]`` in normalised units.

        """
        x, batch_shape = self._normalized_inputs(tensordict)
        loc, log_std = self._stacked_params(x)
        shape = (self.ensemble_size, *batch_shape, self.target_dim)
        return loc.reshape(shape), log_std.reshape(shape)

    def _normalized_inputs(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Size]:
        """The normalised inputs flattened to ``[N, in]``, and the batch shape ``[*B]``."""
        x = self._read_inputs(tensordict)
        return self.input_normalizer.normalize(x).reshape(-1, x.shape[-1]), x.shape[:-1]

    def _stacked_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's normalised mean and log-std, ``[E, N, D]``, from ``x`` ``[N, in]``."""
        n = x.shape[0]
        out = self.net(x)  # [K, N, out]
        E, Dt, H = self.ensemble_size, self.target_dim, self._heads
        if self.per_dimension:
            out = out.view(E, Dt, n, H).permute(0, 2, 1, 3)  # [E, N, D, H]
        else:
            out = out.view(E, n, H, Dt).transpose(-1, -2)  # [E, N, D, H]
        loc = out[..., 0]
        if self.log_std is None:
            raw_log_std = out[..., 1]
        else:
            raw_log_std = self.log_std.unsqueeze(1).expand(E, n, Dt)
        return loc, soft_clamp(raw_log_std, self.min_log_std, self.max_log_std)

    def routes_members(self, inputs: torch.Tensor) -> bool:
        """Whether a one-member-per-sample prediction evaluates only the chosen members.

        On the CPU (outside ``torch.compile``) an ensemble in ``"sample"`` mode
        runs each sample through its own member only, ``1/E`` of evaluating all
        ``E`` members and keeping one (same values, same draws). On accelerators,
        where the full evaluation is one batched kernel and static shapes keep
        CUDA graphs possible, and with ``per_dimension`` sub-networks, every
        member is evaluated.
        """
        return self.ensemble_size > 1 and routes_members(self.per_dimension, inputs)

    def member_params(
        self, tensordict: TensorDictBase, member: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised mean and log-std of one member per sample, ``[*B, D]`` each.

        ``member`` ``[*B]`` (drawn uniformly when ``None``, as :meth:`get_dist`
        draws) selects the member of each sample; only those are evaluated when
        :meth:`routes_members` holds. Returns ``(loc, log_std, member)``.
        """
        x, batch_shape = self._normalized_inputs(tensordict)
        n = x.shape[0]
        if member is None:
            member = torch.randint(self.ensemble_size, (n,), device=x.device)
        elif member.numel() != n:
            raise ValueError(
                f"{type(self).__name__}: the ensemble members {self.member_key!r} have shape "
                f"{tuple(member.shape)}, expected one per sample of the batch "
                f"{tuple(batch_shape)}."
            )
        member = member.to(device=x.device, dtype=torch.long).reshape(n)
        if self.routes_members(x):
            out = self.net.forward_members(x, member)
            loc, log_std = member_heads(
                out, self.target_dim, self.log_std, member, self.min_log_std, self.max_log_std
            )
        else:  # every member evaluated, one kept per sample
            loc, log_std = self._stacked_params(x)
            rows = torch.arange(n, device=x.device)
            loc, log_std = loc[member, rows], log_std[member, rows]
        shape = (*batch_shape, self.target_dim)
        return loc.reshape(shape), log_std.reshape(shape), member.reshape(batch_shape)

    def normalized_target(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The target in normalised units, ``[*B, D]``."""
        return self.target_normalizer.normalize(self.target(tensordict))

    def log_prob_normalized(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Gaussian log-likelihood of the normalised target under each member, ``[E, *B]``.

        This is the quantity the world-model loss maximises: the log-likelihood
        of the (normalised) delta, summed over target dimensions.
        """
        loc, log_std = self.normalized_params(tensordict)
        y = self.normalized_target(tensordict)
        dist = D.Normal(loc, log_std.exp(), validate_args=False)
        return dist.log_prob(y.unsqueeze(0)).sum(-1)

    @property
    def samples_members(self) -> bool:
        """Whether :meth:`get_dist` uses one member per sample (an ensemble with ``"sample"``)."""
        return self.ensemble_size > 1 and self.ensemble_reduction == "sample"

    def draw_members(
        self, batch_shape: torch.Size | Sequence[int], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """One member per sample, drawn uniformly: ``[*B]`` integers in ``[0, E)``.

        Write them under :attr:`member_key` to make :meth:`get_dist` use them.
        """
        return torch.randint(self.ensemble_size, tuple(batch_shape), device=device)

    def _reduce_members(
        self, loc: torch.Tensor, scale: torch.Tensor, reduction: EnsembleReduction
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Combine ``[E, *B, D]`` member parameters into ``[*B, D]`` (``"mean"``, ``"average"``)."""
        if self.ensemble_size == 1:
            return loc[0], scale[0]
        return reduce_members(loc, scale, reduction)

    def get_dist(
        self, tensordict: TensorDictBase, ensemble_reduction: EnsembleReduction | None = None
    ) -> D.Independent:
        """The predictive distribution over the raw target entry, ``event_shape [D]``.

        Its ``base_dist`` is a :class:`torch.distributions.Normal`, so it is
        location-scale: ``rsample()`` is ``loc + scale * xi``. With
        :attr:`samples_members`, the member of each sample is read from
        :attr:`member_key` when the input has it (``[*B]``), else drawn.
        ``ensemble_reduction`` overrides the module's own for this call.
        """
        if ensemble_reduction is not None:
            _check_reduction(ensemble_reduction)
        reduction = self.ensemble_reduction if ensemble_reduction is None else ensemble_reduction
        sampled = self.ensemble_size > 1 and reduction == "sample"
        if sampled:  # one member per sample: the given one, or drawn uniformly
            member = tensordict.get(self.member_key, None)
            loc_n, log_std_n, _ = self.member_params(tensordict, member)
            scale_n = log_std_n.exp()
        else:
            loc_n, log_std_n = self.normalized_params(tensordict)
            loc_n, scale_n = self._reduce_members(loc_n, log_std_n.exp(), reduction)
        std = self.target_normalizer.std
        loc = self.target_normalizer.mean + std * loc_n
        residual = self._residual(tensordict)
        if residual is not None:
            loc = residual + loc
        scale = std * scale_n
        return D.Independent(D.Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write a prediction of the target entry: a sample, or the mean when deterministic."""
        dist = self.get_dist(tensordict)
        mode = exploration_type()
        if mode is None:
            mode = self.default_interaction_type
        value = dist.rsample() if mode == InteractionType.RANDOM else dist.mean
        tensordict.set(self.target_key, value)
        return tensordict


class ObservationActionModel(GaussianMLPModel):
    """A :class:`GaussianMLPModel` of an observation and an action.

    The base of :class:`GaussianDynamics` and :class:`RewardModel`: it reads
    ``observation_key`` ``[*B, observation_dim]`` and ``action_key``
    ``[*B, action_dim]`` (concatenated in that order) and keeps the four as
    attributes of the same names.

    Args:
        observation_dim: size of the observation vector.
        action_dim: size of the action vector.
        target_key: the entry the distribution is over.
        target_dim: its feature size.

    Keyword Args:
        observation_key / action_key: the entries read.
        options: the :class:`GaussianModelOptions` a user passed to the subclass;
            any other key raises :class:`TypeError` naming the subclass, so that
            the subclass accepts the options and nothing else through them.
        **model_kwargs: the other keyword arguments of :class:`GaussianMLPModel`
            that the subclass sets (``residual_key``, ``per_dimension``,
            ``member_key``, ``default_interaction_type``).

    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        target_key: NestedKey,
        target_dim: int,
        *,
        observation_key: NestedKey,
        action_key: NestedKey,
        options: Mapping[str, Any],
        **model_kwargs: Any,
    ):
        keyword_options(type(self).__name__, options, _OPTION_DEFAULTS)  # these and no others
        super().__init__(
            [observation_key, action_key],
            [observation_dim, action_dim],
            target_key,
            target_dim,
            **model_kwargs,
            **options,
        )
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.observation_key = observation_key
        self.action_key = action_key
