"""Small shared helpers: input validation and error types."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

__all__ = [
    "MissingKeyError",
    "NonFiniteLossError",
    "Unpack",
    "check_dim",
    "check_same_shape",
    "get_key",
    "keyword_options",
]

# for the ``**options: Unpack[<TypedDict>]`` annotations of the models, losses and transforms
if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # Python 3.10: typing_extensions, which torch requires
    from typing_extensions import Unpack


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss (or gradient) is NaN or infinite.

    The message names the offending entry and the training step at which it
    appeared, so that a run can be stopped before the bad value reaches the
    parameters.
    """


class MissingKeyError(KeyError):
    """A ``KeyError`` for a missing tensordict entry, printed as plain text (not repr-quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _fmt(shape: Sequence[int] | torch.Size | int) -> str:
    if isinstance(shape, int):
        return f"({shape},)"
    return str(tuple(shape))


def check_same_shape(
    name_a: str,
    shape_a: Sequence[int] | torch.Size,
    name_b: str,
    shape_b: Sequence[int] | torch.Size,
) -> None:
    """Raise a ``ValueError`` naming both sides when two shapes differ.

    Examples:
        >>> check_same_shape("env action_spec", (1,), "actor action", (1,))
        >>> check_same_shape("env observation_spec", (3,), "dynamics observation", (4,))
        Traceback (most recent call last):
        ...
        ValueError: Shape mismatch: env observation_spec has shape (3,) but dynamics observation has shape (4,).

    """
    if tuple(shape_a) != tuple(shape_b):
        raise ValueError(
            f"Shape mismatch: {name_a} has shape {_fmt(shape_a)} but {name_b} has shape {_fmt(shape_b)}."
        )


def check_dim(owner: str, key: NestedKey, tensor: torch.Tensor, expected: int) -> None:
    """Check the trailing (feature) dimension of an input entry.

    Args:
        owner: who is reading the entry (used in the message), e.g. ``"S2VGLoss"``.
        key: the tensordict key the tensor was read from.
        tensor: the tensor, of shape ``[*B, F]``.
        expected: the expected feature size ``F``.

    Raises:
        ValueError: if the tensor has no feature dimension or the wrong size.

    """
    if tensor.ndim == 0 or tensor.shape[-1] != expected:
        raise ValueError(
            f"{owner}: entry {key!r} has shape {_fmt(tensor.shape)}, expected a trailing "
            f"dimension of {expected} (shape [*B, {expected}])."
        )


def get_key(owner: str, tensordict: TensorDictBase, key: NestedKey) -> torch.Tensor:
    """Read ``key`` from ``tensordict`` and raise a ``KeyError`` naming it and its reader."""
    value = tensordict.get(key, None)
    if value is None:
        raise MissingKeyError(
            f"{owner} needs the entry {key!r}, which is missing from the input tensordict "
            f"(present keys: {sorted(map(str, tensordict.keys(True, True)))})."
        )
    return value


def keyword_options(owner: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """``given`` (a constructor's ``**options``) over ``defaults``; other keywords refused.

    Raises:
        TypeError: a keyword that is not in ``defaults``, worded as Python words it for
            ``owner.__init__``.
    """
    for name in given:
        if name not in defaults:
            raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {name!r}")
    return {**defaults, **given}
