r"""Noise inference for location-scale distributions (SVG paper, eqs 11-12 and App. B).

A location-scale distribution draws :math:`x = g(\mu + \sigma\,\epsilon)` with
:math:`\epsilon \sim \mathcal N(0, I)` and a fixed bijection :math:`g` (identity for a
Normal; ``tanh`` followed by the affine map onto ``[low, high]`` for a TorchRL
``TanhNormal``). Given an observed :math:`x` the noise that produced it is

.. math::

    \epsilon = \big(g^{-1}(x) - \mu\big) / \sigma,

and re-building :math:`\tilde x = g(\mu_\theta + \sigma_\theta\,\epsilon)` with the
(detached) inferred noise reproduces :math:`x` in value while gradients flow through
:math:`\mu_\theta, \sigma_\theta`. For the policy this is :math:`\eta` from the replayed
action; for the model :math:`\xi = (s' - s - \mu)/\sigma` from the replayed next state.
Actions on the tanh boundary are clamped just inside it before the inverse, so the
inferred noise is always finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch import distributions as D
from torchrl.modules.distributions import TanhNormal

__all__ = ["LocationScale", "location_scale"]


def _boundary_eps(dtype: torch.dtype) -> float:
    # One ulp below 1 keeps atanh finite (about 8.3 in float32, 18.7 in float64).
    return float(torch.finfo(dtype).eps)


@dataclass
class LocationScale:
    """The location, scale and squashing bijection of a location-scale distribution.

    Attributes:
        loc: location of the underlying Normal, ``[*B, D]``.
        scale: its scale, ``[*B, D]``.
        low / high: bounds of a tanh squashing (``None`` for an unsquashed Normal).

    Examples:
        >>> import torch
        >>> from torchrl.modules.distributions import TanhNormal
        >>> dist = TanhNormal(torch.zeros(3, 1), torch.ones(3, 1), low=-2.0, high=2.0)
        >>> ls = location_scale(dist)
        >>> action = torch.tensor([[-2.0], [0.5], [2.0]])  # two on the boundary
        >>> noise = ls.infer_noise(action)
        >>> bool(torch.isfinite(noise).all())
        True
        >>> torch.allclose(ls.rebuild(noise)[1], action[1])
        True
    """

    loc: Tensor
    scale: Tensor
    low: Tensor | None = None
    high: Tensor | None = None

    @property
    def squashed(self) -> bool:
        """Whether a tanh (and affine) squashing follows the Normal."""
        return self.low is not None

    def unsquash(self, x: Tensor) -> Tensor:
        """:math:`g^{-1}(x)`, with values at (or beyond) the bounds clamped just inside."""
        if not self.squashed:
            return x
        mid = (self.high + self.low) / 2
        half = (self.high - self.low) / 2
        y = (x - mid) / half
        eps = _boundary_eps(x.dtype)
        return torch.atanh(y.clamp(-1 + eps, 1 - eps))

    def squash(self, u: Tensor) -> Tensor:
        """:math:`g(u)`."""
        if not self.squashed:
            return u
        return torch.tanh(u) * (self.high - self.low) / 2 + (self.high + self.low) / 2

    def infer_noise(self, x: Tensor) -> Tensor:
        r"""The standard-normal noise :math:`\epsilon = (g^{-1}(x) - \mu)/\sigma` that yields ``x``."""
        return (self.unsquash(x) - self.loc) / self.scale

    def rebuild(self, noise: Tensor) -> Tensor:
        r""":math:`g(\mu + \sigma\,\epsilon)`: differentiable in the location and scale."""
        return self.squash(self.loc + self.scale * noise)

    def noise_of_preimage(self, u: Tensor) -> Tensor:
        r"""The noise :math:`\epsilon = (u - \mu)/\sigma` of a sample given its pre-image :math:`u = g^{-1}(x)`."""
        return (u - self.loc) / self.scale

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x``, summed over the last (event) dimension: ``[*B]``.

        ``x`` is inverted with :meth:`unsquash`; where the squashing saturates
        (``|u|`` beyond about 8 in float32) that inverse is clamped and the density
        is that of the clamped pre-image: score the stored pre-image with
        :meth:`log_prob_of_preimage` instead when it is known.
        """
        return self.log_prob_of_preimage(self.unsquash(x))

    def log_prob_of_preimage(self, u: Tensor) -> Tensor:
        r"""Log-density of :math:`x = g(u)` given its pre-image :math:`u`, summed over the event: ``[*B]``.

        .. math::

            \log p(x) = \log\mathcal N(u;\,\mu, \sigma^2) - \log\Big|\frac{dg}{du}\Big|

        Exact for any :math:`u`, including where the float tanh of :math:`u` rounds
        to the bound (the action itself then no longer determines :math:`u`).
        """
        lp = D.Normal(self.loc, self.scale, validate_args=False).log_prob(u)
        if self.squashed:
            half = (self.high - self.low) / 2
            # log |dg/du| = log(half) + log(1 - tanh(u)^2), in a stable form
            log_det = torch.log(half) + 2.0 * (
                torch.log(torch.tensor(2.0, dtype=u.dtype, device=u.device))
                - u
                - torch.nn.functional.softplus(-2.0 * u)
            )
            lp = lp - log_det
        return lp.sum(-1)


def location_scale(dist: D.Distribution) -> LocationScale:
    """Extract the location-scale form of a distribution.

    Supported: :class:`torch.distributions.Normal`, ``Independent(Normal)``
    (including TorchRL's ``IndependentNormal``) and TorchRL's ``TanhNormal``
    (with its ``low``/``high`` rescaling).

    Raises:
        TypeError: for any other distribution (it is not location-scale, so its
            noise cannot be inferred from a sample).
    """
    if isinstance(dist, TanhNormal):
        root = dist.root_dist
        loc, scale = root.loc, root.scale
        low = torch.as_tensor(dist.low, dtype=loc.dtype, device=loc.device).expand_as(loc)
        high = torch.as_tensor(dist.high, dtype=loc.dtype, device=loc.device).expand_as(loc)
        return LocationScale(loc, scale, low, high)
    base = dist.base_dist if isinstance(dist, D.Independent) else dist
    if isinstance(base, D.Normal) and not isinstance(base, D.TransformedDistribution):
        return LocationScale(base.loc, base.scale)
    raise TypeError(
        f"{type(dist).__name__} is not a supported location-scale distribution: SVG losses "
        "need Normal, IndependentNormal or TanhNormal policies and models to infer their noise."
    )
