r"""The package's networks as plain tensor functions: the hot path of the fast update steps.

A TorchRL module call goes through TensorDicts, parameter swaps and distribution objects;
at the sizes of continuous-control networks (256 x 256 at batch 256) that costs as much as
the matrix multiplies themselves. The classes here read the parameters of the package's own
modules once (:func:`~torchrl_svg.modules.make_actor`, :func:`~torchrl_svg.modules.make_qvalue`,
:func:`~torchrl_svg.modules.make_value`, :class:`~torchrl_svg.modules.GaussianDynamics`,
:class:`~torchrl_svg.modules.RewardModel`, the termination models) and evaluate the same maths
on plain tensors: ``addmm`` / ``baddbmm`` per layer, twin critics and ensemble members as one
batched matrix multiply. They hold *references* to the modules' parameters and buffers (the
optimisers update those in place, the normalisers merge new statistics in place), so they
stay in step with the modules and need to be built only once.

Under :func:`torch.autocast` the matrix multiplies run in the autocast dtype (bf16 on CPUs
with bf16 matrix units and on GPUs); every network output is cast back to the parameters'
dtype, so the distributions, losses and targets built on them stay in fp32.

Each class has a ``from_module`` constructor that raises :class:`TypeError` for a module it
does not know; the losses in :mod:`torchrl_svg.objectives` are the reference for any module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import Tensor, nn
from torchrl.modules import MLP, NormalParamExtractor, TanhNormal

from torchrl_svg.modules._plain_mlp import PlainMLP, activation_function
from torchrl_svg.modules.gaussian import (
    GaussianMLPModel,
    member_heads,
    reduce_members,
    routes_members,
    soft_clamp,
)
from torchrl_svg.modules.normalizer import RunningNormalizer
from torchrl_svg.modules.termination import KnownTermination, LearnedTermination, Termination

__all__ = [
    "normal_log_prob",
    "squashed_normal_log_prob",
    "PlainContinuation",
    "PlainGaussianModel",
    "PlainMLP",
    "PlainNormalizer",
    "PlainTanhNormalActor",
    "activation_function",
]


class PlainNormalizer:
    """A :class:`~torchrl_svg.modules.RunningNormalizer` read in place (its buffers are shared)."""

    def __init__(self, normalizer: RunningNormalizer):
        self.mean, self.var, self.min_std = normalizer.mean, normalizer.var, normalizer.min_std

    @property
    def std(self) -> Tensor:
        """The normalising standard deviation (as :attr:`RunningNormalizer.std`)."""
        return self.var.sqrt().clamp_min(self.min_std)

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std``."""
        return (x - self.mean) / self.std


class PlainTanhNormalActor:
    r"""The TanhNormal actor of :func:`~torchrl_svg.modules.make_actor` on plain tensors.

    :math:`u = \mu_\theta(s) + \sigma_\theta(s)\,\eta`, :math:`a = g(u)` with
    :math:`g` tanh and the affine map onto ``[low, high]``; the log-density
    scores :math:`u` itself (TorchRL's ``TanhNormal.rsample_and_log_prob``), so
    it stays exact where tanh saturates.

    Examples:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import make_actor
        >>> actor = make_actor(3, Bounded(-2.0, 2.0, (1,)), hidden_sizes=(16,))
        >>> plain = PlainTanhNormalActor.from_module(actor)
        >>> action, log_prob = plain.sample(torch.randn(4, 3))
        >>> action.shape, log_prob.shape, bool((action.abs() <= 2).all())
        (torch.Size([4, 1]), torch.Size([4]), True)
    """

    def __init__(
        self,
        net: PlainMLP,
        low: Tensor,
        high: Tensor,
        *,
        scale_bias: float,
        scale_min: float,
        scale_lb: float,
        safe_tanh: bool = True,
    ):
        self.net = net
        self.low, self.high = low, high
        self.mid, self.half = (high + low) / 2, (high - low) / 2
        self.log_half = self.half.log()
        self.scale_bias, self.scale_min, self.scale_lb = scale_bias, scale_min, scale_lb
        self.safe_tanh = safe_tanh

    @classmethod
    def from_module(
        cls, actor: nn.Module, params: TensorDictBase | None = None
    ) -> PlainTanhNormalActor:
        """The actor of :func:`~torchrl_svg.modules.make_actor` (``params``: as a loss holds them).

        Raises:
            TypeError: for any other actor.
        """
        try:
            assert isinstance(actor, ProbabilisticTensorDictSequential)
            head, prob = actor.module[0], actor.module[1]
            seq = head.module
            mlp, extractor = seq[0], seq[1]
            assert isinstance(mlp, MLP) and isinstance(extractor, NormalParamExtractor)
            assert prob.distribution_class is TanhNormal
            kwargs = prob.distribution_kwargs
            assert not kwargs.get("tanh_loc", False)
            mapping = extractor.scale_mapping
            scale_bias, scale_min = float(mapping.bias), float(mapping.min_val)
        except (AssertionError, AttributeError, IndexError, TypeError):
            raise TypeError(
                "PlainTanhNormalActor supports the TanhNormal actor of "
                f"torchrl_svg.modules.make_actor; got {type(actor).__name__}."
            ) from None
        sub = None if params is None else params.get(("module", "0", "module", "0"))
        net = PlainMLP.from_module(mlp, sub)
        low = torch.as_tensor(kwargs.get("low", -1.0)).to(net.weights[0])
        high = torch.as_tensor(kwargs.get("high", 1.0)).to(net.weights[0])
        return cls(
            net,
            low,
            high,
            scale_bias=scale_bias,
            scale_min=scale_min,
            scale_lb=float(extractor.scale_lb),
            safe_tanh=bool(kwargs.get("safe_tanh", True)),
        )

    def detached(self) -> PlainTanhNormalActor:
        """The same actor with detached parameters (gradients reach its input only)."""
        out = object.__new__(PlainTanhNormalActor)
        out.__dict__.update(self.__dict__)
        out.net = self.net.detached()
        return out

    def unsquash(self, action: Tensor) -> Tensor:
        """:math:`g^{-1}(a)`, with actions at (or beyond) the bounds clamped one ulp inside.

        The same clamp as :meth:`~torchrl_svg.objectives.LocationScale.unsquash`.
        """
        eps = torch.finfo(action.dtype).eps
        return torch.atanh(((action - self.mid) / self.half).clamp(-1 + eps, 1 - eps))

    def loc_scale(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """The pre-tanh Normal's location and scale, ``[*B, A]`` each."""
        loc, raw = self.net(observation).chunk(2, -1)
        scale = (F.softplus(raw + self.scale_bias) + self.scale_min).clamp_min(self.scale_lb)
        return loc, scale

    def squash(self, u: Tensor, safe: bool | None = None) -> Tensor:
        """:math:`g(u)`: tanh onto ``[low, high]``.

        ``safe`` (default: the actor's ``safe_tanh``) keeps tanh one resolution
        inside ±1, as TorchRL's safe tanh does when it samples; the SVG losses
        re-build actions with the plain tanh (``safe=False``).
        """
        y = torch.tanh(u)
        if self.safe_tanh if safe is None else safe:
            lim = 1.0 - torch.finfo(y.dtype).resolution
            y = y.clamp(-lim, lim)
        return y * self.half + self.mid

    def sample(self, observation: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""A re-parameterised action and its log-density, ``([*B, A], [*B])``.

        Args:
            observation: ``[*B, obs_dim]``.
            noise: the standard-normal :math:`\eta` (``[*B, A]``); drawn if omitted.
        """
        loc, scale = self.loc_scale(observation)
        if noise is None:
            noise = torch.empty_like(loc).normal_()
        u = loc + noise * scale
        return self.squash(u), squashed_normal_log_prob(u, loc, scale, self.log_half)

    def mode(self, observation: Tensor) -> Tensor:
        r"""The deterministic action :math:`g(\mu_\theta(s))`."""
        return self.squash(self.loc_scale(observation)[0])


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    r"""Element-wise log-density of :math:`\mathcal N(\mathrm{loc}, \mathrm{scale}^2)` at ``x``."""
    return -((x - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI


def squashed_normal_log_prob(u: Tensor, loc: Tensor, scale: Tensor, log_half: Tensor) -> Tensor:
    r"""Log-density of :math:`a = g(u)`, :math:`u \sim \mathcal N(\mathrm{loc}, \mathrm{scale}^2)`, scored at ``u``: ``[*B]``.

    .. math::

        \log\pi(a) = \sum_i \log\mathcal N(u_i) - \log h_i - 2(\log 2 - u_i - \mathrm{softplus}(-2u_i))

    with :math:`h = (\mathrm{high} - \mathrm{low})/2` (``log_half``).
    """
    log_det = 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u)) + log_half
    return (normal_log_prob(u, loc, scale) - log_det).sum(-1)


class PlainGaussianModel:
    r"""A :class:`~torchrl_svg.modules.GaussianMLPModel` (dynamics, reward) on plain tensors.

    Inputs are the raw ``[*B, in]`` features (observation and action
    concatenated, as the module reads them); the residual (the observation, for
    the dynamics) is passed explicitly.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_svg.modules import GaussianDynamics
        >>> model = GaussianDynamics(3, 1, hidden_sizes=(8,))
        >>> plain = PlainGaussianModel.from_module(model)
        >>> s, a = torch.randn(4, 3), torch.randn(4, 1)
        >>> loc, scale = plain.loc_scale(torch.cat([s, a], -1), residual=s)
        >>> dist = model.get_dist(TensorDict({"observation": s, "action": a}, [4]))
        >>> torch.allclose(loc, dist.mean, atol=1e-6), torch.allclose(scale, dist.stddev, atol=1e-6)
        (True, True)
    """

    def __init__(self, model: GaussianMLPModel, params: TensorDictBase | None = None):
        self.ensemble_size = model.ensemble_size
        self.target_dim = model.target_dim
        self.per_dimension = model.per_dimension
        self.heads = model._heads
        self.reduction = model.ensemble_reduction
        net_params = None if params is None else params.get("net")
        self.net = PlainMLP.from_stacked(model.net, net_params)
        if model.log_std is None:
            self.log_std = None
        else:
            self.log_std = model.log_std if params is None else params.get("log_std")
        self.min_log_std, self.max_log_std = model.min_log_std, model.max_log_std
        self.input_normalizer = PlainNormalizer(model.input_normalizer)
        self.target_normalizer = PlainNormalizer(model.target_normalizer)

    @classmethod
    def from_module(
        cls, model: nn.Module, params: TensorDictBase | None = None
    ) -> PlainGaussianModel:
        """A :class:`~torchrl_svg.modules.GaussianMLPModel` (``params``: as a loss holds them).

        Raises:
            TypeError: for any other model.
        """
        if not isinstance(model, GaussianMLPModel):
            raise TypeError(
                "PlainGaussianModel supports torchrl_svg's GaussianDynamics and RewardModel; "
                f"got {type(model).__name__}."
            )
        return cls(model, params)

    def detached(self) -> PlainGaussianModel:
        """The same model with detached parameters (statistics stay shared)."""
        out = object.__new__(PlainGaussianModel)
        out.__dict__.update(self.__dict__)
        out.net = self.net.detached()
        out.log_std = None if self.log_std is None else self.log_std.detach()
        return out

    def normalized_params(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member normalised mean and log-std, ``[E, N, D]`` each (``inputs`` ``[N, in]``)."""
        x = self.input_normalizer.normalize(inputs)
        n = x.shape[0]
        out = self.net(x)
        E, Dt, H = self.ensemble_size, self.target_dim, self.heads
        if not self.net.stacked:
            out = out.unsqueeze(0)
        if self.per_dimension:
            out = out.view(E, Dt, n, H).permute(0, 2, 1, 3)
        else:
            out = out.view(E, n, H, Dt).transpose(-1, -2)
        loc = out[..., 0]
        raw = out[..., 1] if self.log_std is None else self.log_std.unsqueeze(1).expand(E, n, Dt)
        return loc, soft_clamp(raw, self.min_log_std, self.max_log_std)

    def log_prob_normalized(
        self, inputs: Tensor, target: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Log-likelihood of the normalised ``target`` (the delta, for the dynamics) per member.

        Returns:
            ``(log_prob [E, N], loc [E, N, D], log_std [E, N, D], normalised target [N, D])``.
        """
        loc, log_std = self.normalized_params(inputs)
        y = self.target_normalizer.normalize(target)
        log_prob = normal_log_prob(y, loc, log_std.exp()).sum(-1)
        return log_prob, loc, log_std, y

    def loc_scale(
        self,
        inputs: Tensor,
        residual: Tensor | None = None,
        disagreement: bool = False,
        member: Tensor | None = None,
        reduction: str | None = None,
    ) -> tuple[Tensor, ...]:
        """Location and scale of the predictive distribution over the raw target, ``[N, D]``.

        Ensemble members are combined as the module's ``ensemble_reduction`` says, or as
        ``reduction`` overrides it for this call (``"sample"`` uses ``member`` ``[N]``, or
        draws one member per row). With
        ``disagreement`` also the
        members' disagreement ``[N]``: the standard deviation of their normalised
        means across members, averaged over dimensions.
        """
        E = self.ensemble_size
        reduction = self.reduction if reduction is None else reduction
        if (
            E > 1
            and reduction == "sample"
            and not disagreement
            and routes_members(self.per_dimension, inputs)
        ):
            # only each row's own member is evaluated (same values and draws as below)
            n = inputs.shape[0]
            if member is None:
                member = torch.randint(E, (n,), device=inputs.device)
            out = self.net.forward_members(self.input_normalizer.normalize(inputs), member)
            loc_n, log_std_n = member_heads(
                out, self.target_dim, self.log_std, member, self.min_log_std, self.max_log_std
            )
            return self._raw(loc_n, log_std_n.exp(), residual)
        loc_n, log_std_n = self.normalized_params(inputs)
        spread = loc_n.detach().std(0, unbiased=False).mean(-1) if disagreement else None
        scale_n = log_std_n.exp()
        if E == 1:
            loc_n, scale_n = loc_n[0], scale_n[0]
        elif reduction in ("mean", "average"):
            loc_n, scale_n = reduce_members(loc_n, scale_n, reduction)
        else:
            n = loc_n.shape[1]
            if member is None:
                member = torch.randint(E, (n,), device=loc_n.device)
            rows = torch.arange(n, device=loc_n.device)
            loc_n, scale_n = loc_n[member, rows], scale_n[member, rows]
        loc, scale = self._raw(loc_n, scale_n, residual)
        if disagreement:
            return loc, scale, spread
        return loc, scale

    def _raw(
        self, loc_n: Tensor, scale_n: Tensor, residual: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Normalised ``[N, D]`` location and scale to the raw target's units (plus ``residual``)."""
        std = self.target_normalizer.std
        loc = self.target_normalizer.mean + std * loc_n
        if residual is not None:
            loc = residual + loc
        return loc, std * scale_n


class PlainContinuation:
    r"""The continuation :math:`1 - \hat d(s')` of a termination model on plain tensors, ``[*B]``.

    ``None`` (no termination model) gives ones; a
    :class:`~torchrl_svg.modules.KnownTermination` its function; a
    :class:`~torchrl_svg.modules.LearnedTermination` ``1 - sigmoid(logits)``.
    """

    def __init__(self, termination: Termination | None, params: TensorDictBase | None = None):
        self.fn = None
        self.net = None
        if termination is None:
            return
        if isinstance(termination, KnownTermination):
            self.fn = termination.fn
        elif isinstance(termination, LearnedTermination):
            self.net = PlainMLP.from_stacked(
                termination.net, None if params is None else params.get("net")
            )
            self.normalizer = PlainNormalizer(termination.normalizer)
        else:
            raise TypeError(
                "PlainContinuation supports KnownTermination, LearnedTermination or None; "
                f"got {type(termination).__name__}."
            )

    def detached(self) -> PlainContinuation:
        """The same model with detached parameters."""
        out = object.__new__(PlainContinuation)
        out.__dict__.update(self.__dict__)
        if self.net is not None:
            out.net = self.net.detached()
        return out

    def logits(self, next_observation: Tensor) -> Tensor:
        """Termination logits of a learned head, ``[*B]``."""
        return self.net(self.normalizer.normalize(next_observation)).squeeze(-1)

    def __call__(self, next_observation: Tensor) -> Tensor:
        r""":math:`1 - \hat d(s')`, ``[*B]``."""
        if self.net is not None:
            return 1.0 - torch.sigmoid(self.logits(next_observation))
        if self.fn is not None:
            return 1.0 - self.fn(next_observation).to(next_observation.dtype)
        return next_observation.new_ones(next_observation.shape[:-1])
