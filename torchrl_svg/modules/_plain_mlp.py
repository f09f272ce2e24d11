r"""Plain-tensor multilayer perceptrons: one ``addmm`` (``baddbmm`` for stacked networks) per layer.

The building block of :mod:`torchrl_svg.modules.functional` (which exports it); see there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import Tensor, nn
from torchrl.modules import MLP, ValueOperator

from torchrl_svg.modules._mlp import route_rows

__all__ = ["PlainMLP", "activation_function"]

_ACTIVATIONS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu,
    nn.Tanh: torch.tanh,
    nn.ELU: F.elu,
    nn.SiLU: F.silu,
}


def activation_function(module: nn.Module | type[nn.Module]) -> Callable[[Tensor], Tensor]:
    """The functional form of an activation module (``nn.ReLU`` -> :func:`torch.relu`, ...).

    Raises:
        TypeError: for an activation without a known functional form.
    """
    cls = module if isinstance(module, type) else type(module)
    if cls not in _ACTIVATIONS:
        raise TypeError(
            f"No functional form for the activation {cls.__name__}; known: "
            f"{[c.__name__ for c in _ACTIVATIONS]}."
        )
    return _ACTIVATIONS[cls]


class PlainMLP:
    r"""A stack of affine layers and activations on plain tensors.

    A layer is one ``addmm`` (``baddbmm`` for ``K`` stacked networks: twin
    critics, ensemble members), optionally followed by a layer norm (hidden layers,
    before the activation). The last layer has no activation. The weights are
    kept as the modules' own tensors (leaves), so that ``torch.compile`` traces
    them as parameters; the transposition of ``nn.Linear`` weights is a view
    taken at call time.

    Args:
        weights: per layer ``[in, out]`` or ``[K, in, out]`` (``input_major``), or
            ``nn.Linear``'s ``[out, in]`` / ``[K, out, in]``.
        biases: per layer ``[out]`` or ``[K, out]``.
        activation: the hidden activation.
        input_major: the layout of ``weights``.
        single_member: ``[1, ...]`` tensors used as one unstacked network.
        norms: per hidden layer, ``None`` or a layer norm's ``(weight, bias, eps)``
            (``weight`` and ``bias`` ``[out]``, or ``[K, out]`` when stacked).

    Shapes:
        Unstacked: ``[*B, in] -> [*B, out]``. Stacked: ``[*B, in]`` (shared by the
        ``K`` networks) or ``[K, *B, in]`` ``-> [K, *B, out]``.

    Examples:
        >>> import torch
        >>> from torchrl.modules import MLP
        >>> net = MLP(in_features=3, out_features=2, num_cells=[8])
        >>> plain = PlainMLP.from_module(net)
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(plain(x), net(x), atol=1e-6)
        True
    """

    def __init__(
        self,
        weights: Sequence[Tensor],
        biases: Sequence[Tensor],
        activation: Callable[[Tensor], Tensor],
        input_major: bool = True,
        single_member: bool = False,
        norms: Sequence[tuple[Tensor, Tensor, float] | None] | None = None,
    ):
        if len(weights) != len(biases) or not weights:
            raise ValueError(
                f"PlainMLP needs one bias per weight; got {len(weights)} and {len(biases)}."
            )
        self.weights = list(weights)
        self.biases = list(biases)
        self.norms = list(norms) if norms is not None else [None] * (len(weights) - 1)
        if len(self.norms) != len(weights) - 1:
            raise ValueError(
                f"PlainMLP needs one norm (or None) per hidden layer ({len(weights) - 1}); "
                f"got {len(self.norms)}."
            )
        self.activation = activation
        self.input_major = input_major
        self.single_member = single_member  # [1, ...] tensors used as one unstacked network
        self.stacked = self.weights[0].ndim == 3 and not single_member
        self.dtype = self.weights[0].dtype

    @classmethod
    def from_module(cls, module: nn.Module, params: TensorDictBase | None = None) -> PlainMLP:
        """A TorchRL :class:`~torchrl.modules.MLP` (or a ``ValueOperator`` around one).

        Args:
            module: the network.
            params: its parameters as a loss holds them (e.g. ``loss.qvalue_network_params``,
                whose leaves carry a leading dimension per network copy); default: the
                module's own.

        Raises:
            TypeError: for anything other than ``Linear`` layers, affine layer norms
                right after a hidden ``Linear`` and known activations.
        """
        net = module.module if isinstance(module, (ValueOperator, TensorDictModule)) else module
        prefix: tuple[str, ...] = ("module",) if net is not module else ()
        if not isinstance(net, (MLP, nn.Sequential)):
            raise TypeError(f"PlainMLP: expected a TorchRL MLP, got {type(net).__name__}.")
        weights, biases, activation = [], [], None
        norms: dict[int, tuple[Tensor, Tensor, float]] = {}
        for name, layer in net.named_children():
            if isinstance(layer, nn.LayerNorm):
                if (
                    not weights
                    or len(weights) - 1 in norms
                    or layer.weight is None
                    or layer.bias is None
                    or len(layer.normalized_shape) != 1
                ):
                    raise TypeError(
                        "PlainMLP: a LayerNorm must follow a Linear layer, over its last "
                        "dimension, with a weight and a bias."
                    )
                if params is None:
                    nw, nb = layer.weight, layer.bias
                else:
                    nw = params.get((*prefix, name, "weight"))
                    nb = params.get((*prefix, name, "bias"))
                norms[len(weights) - 1] = (nw, nb, layer.eps)
            elif isinstance(layer, nn.Linear):
                if layer.bias is None:
                    raise TypeError("PlainMLP: Linear layers without bias are not supported.")
                if params is None:
                    w, b = layer.weight, layer.bias
                else:
                    w, b = (
                        params.get((*prefix, name, "weight")),
                        params.get((*prefix, name, "bias")),
                    )
                weights.append(w)
                biases.append(b)
            else:
                fn = activation_function(layer)
                if activation not in (None, fn):
                    raise TypeError("PlainMLP: all hidden activations must be the same.")
                activation = fn
        if len(weights) - 1 in norms:
            raise TypeError("PlainMLP: a LayerNorm after the output layer is not supported.")
        return cls(
            weights,
            biases,
            activation if activation is not None else torch.relu,
            input_major=False,
            norms=[norms.get(i) for i in range(len(weights) - 1)],
        )

    @classmethod
    def from_stacked(cls, mlp: nn.Module, params: TensorDictBase | None = None) -> PlainMLP:
        """A :class:`~torchrl_svg.modules.StackedMLP` (weights already ``[K, in, out]``).

        A single member is unstacked (plain ``addmm``). ``params``: the module's
        parameters as a loss holds them (keys ``weights.<i>``, ``biases.<i>``).
        """
        n = len(mlp.weights)
        if params is None:
            weights, biases = list(mlp.weights), list(mlp.biases)
        else:
            weights = [params.get(("weights", str(i))) for i in range(n)]
            biases = [params.get(("biases", str(i))) for i in range(n)]
        return cls(
            weights,
            biases,
            activation_function(mlp.activation),
            single_member=mlp.num_members == 1,
        )

    def detached(self) -> PlainMLP:
        """The same network with detached parameters (gradients reach its input only).

        The detached tensors share storage with the parameters, so they follow
        in-place optimiser steps.
        """
        return PlainMLP(
            [w.detach() for w in self.weights],
            [b.detach() for b in self.biases],
            self.activation,
            self.input_major,
            self.single_member,
            [None if n is None else (n[0].detach(), n[1].detach(), n[2]) for n in self.norms],
        )

    def parameters(self) -> list[Tensor]:
        """Weights and biases (as stored here), layer by layer, each layer's norm after it."""
        out = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out += [w, b]
            if i < len(self.norms) and self.norms[i] is not None:
                out += list(self.norms[i][:2])
        return out

    def forward_members(self, x: Tensor, member: Tensor) -> Tensor:
        """Stacked: each row of ``x`` ``[N, in]`` through its own network ``member`` ``[N]``.

        Equals ``self(x)[member, arange(N)]`` (``[N, out]``) while computing only
        the chosen networks' rows (:func:`~torchrl_svg.modules._mlp.route_rows`).
        """
        if not self.stacked:
            raise ValueError("PlainMLP.forward_members needs stacked networks.")
        last = len(self.weights) - 1

        def one(j: int, h: Tensor) -> Tensor:
            for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
                h = torch.addmm(b[j], h, w[j] if self.input_major else w[j].mT)
                if i < last:
                    norm = self.norms[i]
                    if norm is not None:
                        h = F.layer_norm(h, h.shape[-1:], norm[0][j], norm[1][j], norm[2])
                    h = self.activation(h)
            return h.to(self.dtype)

        return route_rows(x, member, self.weights[0].shape[0], one)

    def _norm(self, i: int, x: Tensor) -> Tensor:
        """Hidden layer ``i``'s layer norm (if any) of its affine output ``x``."""
        norm = self.norms[i]
        if norm is None:
            return x
        weight, bias, eps = norm
        if not self.stacked:
            if self.single_member:
                weight, bias = weight[0], bias[0]
            return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        return torch.addcmul(
            bias.unsqueeze(-2), F.layer_norm(x, x.shape[-1:], eps=eps), weight.unsqueeze(-2)
        )

    def __call__(self, x: Tensor) -> Tensor:
        """The network's output (see the class docstring for the shapes)."""
        last = len(self.weights) - 1
        if not self.stacked:
            shape = x.shape[:-1]
            x = x.reshape(-1, x.shape[-1])
            for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
                if self.single_member:
                    w, b = w[0], b[0]
                x = torch.addmm(b, x, w if self.input_major else w.mT)
                if i < last:
                    x = self.activation(self._norm(i, x))
            return x.to(self.dtype).reshape(*shape, x.shape[-1])
        k = self.weights[0].shape[0]
        shared = x.ndim == 2 or x.shape[0] != k
        shape = x.shape[:-1] if shared else x.shape[1:-1]
        x = x.reshape(1 if shared else k, -1, x.shape[-1]).expand(k, -1, -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b.unsqueeze(-2), x, w if self.input_major else w.mT)
            if i < last:
                x = self.activation(self._norm(i, x))
        return x.to(self.dtype).reshape(k, *shape, x.shape[-1])
