"""Input validation shared by every loss and replay transform.

This module implements the exception contract documented in
:mod:`torchrl_svg.objectives`: a missing entry raises :class:`KeyError`, a wrong
dtype :class:`TypeError`, a wrong shape, an empty batch or (per ``check_finite``)
a NaN/inf entry :class:`ValueError`, each naming the reader and the entry.
The structural checks read metadata only; finiteness is checked in one fused
reduction, by default only where that costs no device synchronisation
(``check_finite=None``: CPU inputs, not under :func:`torch.compile`).

The checks of the policy and models made once at construction live in
:mod:`torchrl_svg._module_checks` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import TensorSpec

from torchrl_svg._module_checks import (
    LOCATION_SCALE,
    check_policy,
    check_sizes,
    policy_input_size,
    require_get_dist,
    tanh_bounds,
)
from torchrl_svg._utils import MissingKeyError, NonFiniteLossError

__all__ = [
    "CHECK_DEFAULTS",
    "LOCATION_SCALE",
    "TERMINATED_HINT",
    "CheckOptions",
    "Entry",
    "check_batch",
    "check_entries",
    "check_finite_entries",
    "check_finite_losses",
    "check_policy",
    "check_preimage",
    "check_sizes",
    "model_entries",
    "missing_entry_error",
    "module_dtype",
    "preimage_mismatch",
    "policy_input_size",
    "require_get_dist",
    "tanh_bounds",
    "terminated_flags",
    "unique",
    "validate",
]


class CheckOptions(TypedDict, total=False):
    """The input checks every loss and policy transform of the package takes as keywords.

    Attributes:
        action_spec: the environment's action spec, checked at construction against the
            actor's and the models' sizes and the actor's TanhNormal bounds. Default ``None``.
        check_finite: refuse NaN/inf inputs: ``None`` (default) when it costs no device
            synchronisation (CPU inputs, eager), ``True`` always, ``False`` never.
    """

    action_spec: TensorSpec | None
    check_finite: bool | None


#: The defaults of :class:`CheckOptions`.
CHECK_DEFAULTS: CheckOptions = {"action_spec": None, "check_finite": None}


@dataclass(frozen=True)
class Entry:
    """One tensordict entry a loss or transform reads, and what it must look like.

    Attributes:
        key: the entry.
        size: the trailing feature size: an ``int`` (shape ``[*B, size]``),
            a name shared by entries whose feature sizes must agree (e.g.
            ``"obs_dim"`` for ``observation`` and ``("next", "observation")``),
            or ``None`` (any size). Ignored for ``scalar`` entries.
        scalar: one value per sample, shape ``[*B]`` or ``[*B, 1]``.
        any_real: any real dtype (boolean, integer or floating) is accepted, as
            for flags (``done``, ``terminated``, masks) and sampler weights;
            otherwise the entry must have the module's floating dtype.
        any_shape: only ``[*B, ...]`` is required (an entry read by a user's
            module whose layout the loss does not know).
        required: whether a missing entry is an error (optional entries are
            checked when present).
        unless: not required when this other entry is present.
        hint: appended to the message when the entry is missing (why it is needed).

    """

    key: NestedKey
    size: int | str | None = None
    scalar: bool = False
    any_real: bool = False
    any_shape: bool = False
    required: bool = True
    unless: NestedKey | None = None
    hint: str | None = None


#: Why the losses refuse a batch without ``("next", "terminated")``.
TERMINATED_HINT = (
    "It tells terminal transitions (no bootstrap) from time-limit truncations (bootstrap); "
    "('next', 'done') alone would turn every truncation into a terminal, so it is not used "
    "in its place. TorchRL environments write it; for data without truncations, copy done "
    "into it."
)


def missing_entry_error(
    owner: str, tensordict: TensorDictBase, key: NestedKey, hint: str | None = None
) -> MissingKeyError:
    """The ``KeyError`` for a missing entry: it names the reader, the entry and the keys present."""
    message = (
        f"{owner} needs the entry {key!r}, which is missing from the input tensordict "
        f"(present keys: {sorted(map(str, tensordict.keys(True, True)))})."
    )
    return MissingKeyError(message if hint is None else f"{message} {hint}")


def terminated_flags(owner: str, tensordict: TensorDictBase, key: NestedKey) -> torch.Tensor:
    """Read the ``("next", "terminated")`` flags, refusing a batch without them (see :data:`TERMINATED_HINT`)."""
    value = tensordict.get(key, None)
    if value is None:
        raise missing_entry_error(owner, tensordict, key, TERMINATED_HINT)
    return value


def transition_entries(keys, obs: int | str, act: int | str) -> list[Entry]:
    """The entries of a real transition every loss reads.

    ``observation``, ``action``, ``("next", "observation")``, ``("next", "reward")`` and
    the end flags ``("next", "terminated")`` (required: see :data:`TERMINATED_HINT`) and
    ``("next", "done")`` (checked when present), named by the loss's ``tensor_keys`` with
    observation size ``obs`` and action size ``act``.
    """
    return [
        Entry(keys.observation, obs),
        Entry(keys.action, act),
        Entry(("next", keys.observation), obs),
        Entry(("next", keys.reward), 1),
        Entry(("next", keys.terminated), 1, any_real=True, hint=TERMINATED_HINT),
        Entry(("next", keys.done), 1, any_real=True, required=False),
    ]


def _fmt(shape: Sequence[int | str]) -> str:
    inner = ", ".join(str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_batch(owner: str, tensordict: TensorDictBase, *, min_ndim: int = 0) -> None:
    """Refuse an empty batch, or one with fewer than ``min_ndim`` batch dimensions.

    Raises:
        TypeError: if ``tensordict`` is not a TensorDict.
        ValueError: for an empty batch (a zero in the batch shape) or too few
            batch dimensions.

    """
    if not isinstance(tensordict, TensorDictBase):
        raise TypeError(f"{owner} expects a TensorDict, got {type(tensordict).__name__}.")
    shape = tuple(tensordict.batch_size)
    if 0 in shape:
        raise ValueError(
            f"{owner}: empty batch (batch shape {_fmt(shape)}); it needs at least one sample."
        )
    if len(shape) < min_ndim:
        raise ValueError(
            f"{owner}: the batch shape {_fmt(shape)} has {len(shape)} dimension(s); it needs at "
            f"least {min_ndim} (e.g. [*B, T] sub-trajectories)."
        )


def _check_dtype(owner: str, entry: Entry, value: torch.Tensor, dtype: torch.dtype | None) -> None:
    if entry.any_real:
        if value.dtype.is_complex:
            raise TypeError(
                f"{owner}: entry {entry.key!r} has dtype {value.dtype}, expected bool, an integer "
                "or a real floating dtype."
            )
        return
    if not value.dtype.is_floating_point:
        expected = dtype if dtype is not None else "a floating dtype"
        raise TypeError(
            f"{owner}: entry {entry.key!r} has dtype {value.dtype}, expected {expected}."
        )
    if dtype is not None and value.dtype != dtype:
        raise TypeError(
            f"{owner}: entry {entry.key!r} has dtype {value.dtype}, expected {dtype} (the dtype "
            f"of {owner}'s parameters; cast the batch, or the module with .to({dtype}))."
        )


def _check_shape(
    owner: str,
    entry: Entry,
    value: torch.Tensor,
    batch: tuple[int, ...],
    bound: dict[str, tuple[NestedKey, torch.Size]],
) -> None:
    shape = tuple(value.shape)
    if entry.any_shape:
        return
    if entry.scalar:
        if shape != batch and shape != (*batch, 1):
            raise ValueError(
                f"{owner}: entry {entry.key!r} has shape {_fmt(shape)}, expected one value per "
                f"sample: shape {_fmt(batch)} or {_fmt((*batch, 1))} for the batch shape {_fmt(batch)}."
            )
        return
    size = entry.size
    if isinstance(size, str):
        first = bound.get(size)
        if first is None:
            size_shown: int | str = shape[-1] if len(shape) == len(batch) + 1 else "F"
        else:
            size_shown = first[1][-1]
    else:
        size_shown = size if size is not None else "F"
    expected = (*batch, size_shown)
    if len(shape) != len(batch) + 1:
        raise ValueError(
            f"{owner}: entry {entry.key!r} has shape {_fmt(shape)}, expected shape "
            f"{_fmt(expected)} ([*B, {size_shown}] for the batch shape [*B] = {_fmt(batch)})."
        )
    if isinstance(size, int) and shape[-1] != size:
        raise ValueError(
            f"{owner}: entry {entry.key!r} has shape {_fmt(shape)}, expected a trailing dimension "
            f"of {size} (shape {_fmt(expected)} for the batch shape {_fmt(batch)})."
        )
    if isinstance(size, str):
        if first is None:
            bound[size] = (entry.key, value.shape)
        elif first[1][-1] != shape[-1]:
            raise ValueError(
                f"{owner}: entry {entry.key!r} has shape {_fmt(shape)} but {first[0]!r} has shape "
                f"{_fmt(tuple(first[1]))}: their trailing dimensions ({size}) must agree."
            )


def check_entries(
    owner: str,
    tensordict: TensorDictBase,
    entries: Sequence[Entry],
    *,
    dtype: torch.dtype | None = None,
) -> list[tuple[NestedKey, torch.Tensor]]:
    """Check presence, dtype and shape of each entry (metadata only: no kernel, no sync).

    Args:
        owner: the reader, named in every message (e.g. ``"S2VGLoss"``).
        tensordict: the input, of batch shape ``[*B]``.
        entries: what to read.
        dtype: the floating dtype of the reader's parameters (``None``: any floating dtype).

    Returns:
        ``(key, tensor)`` of each floating entry read, for :func:`check_finite_entries`.

    Raises:
        KeyError: a required entry is missing.
        TypeError: an entry has the wrong dtype.
        ValueError: an entry has the wrong shape.

    """
    batch = tuple(tensordict.batch_size)
    bound: dict[str, tuple[NestedKey, torch.Size]] = {}
    floats: list[tuple[NestedKey, torch.Tensor]] = []
    for entry in entries:
        value = tensordict.get(entry.key, None)
        if value is None:
            if entry.required and (
                entry.unless is None or tensordict.get(entry.unless, None) is None
            ):
                raise missing_entry_error(owner, tensordict, entry.key, entry.hint)
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{owner}: entry {entry.key!r} must be a tensor, got {type(value).__name__}."
            )
        _check_dtype(owner, entry, value, dtype)
        _check_shape(owner, entry, value, batch, bound)
        if value.dtype.is_floating_point:
            floats.append((entry.key, value))
    return floats


def _finite_check_runs(mode: bool | None, tensors: Sequence[torch.Tensor]) -> bool:
    if mode is False or not tensors or torch.compiler.is_compiling():
        return False
    if mode is None:
        return all(t.device.type == "cpu" for t in tensors)
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def check_finite_entries(
    owner: str, floats: Sequence[tuple[NestedKey, torch.Tensor]], mode: bool | None = None
) -> None:
    """Refuse NaN or infinite values in the given entries (see the module docstring for ``mode``).

    The fast path is one concatenation, one sum per floating dtype and a single
    host read (a sum is finite only if every term is); only when it is not are
    the entries searched one by one, so a sum that merely overflowed raises nothing.

    Raises:
        ValueError: naming the first entry with a non-finite value.

    """
    tensors = [t for _, t in floats]
    if not _finite_check_runs(mode, tensors):
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t.reshape(-1))
    sums = [torch.cat(group).sum() for group in by_dtype.values()]
    total = sums[0] if len(sums) == 1 else torch.stack([x.double() for x in sums]).sum()
    if bool(torch.isfinite(total)):
        return
    for key, value in floats:
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            raise ValueError(
                f"{owner}: entry {key!r} holds {int(bad.sum())} non-finite value(s) (NaN or inf) "
                f"out of {value.numel()}; drop or repair those samples before they reach "
                f"{owner} (check_finite=False skips this check)."
            )


def check_finite_losses(
    owner: str,
    tensordict: TensorDictBase,
    losses: dict[str, torch.Tensor],
    mode: bool | None = None,
) -> None:
    """Refuse a non-finite loss computed from finite inputs (``mode`` as ``check_finite``).

    Finite but huge inputs (e.g. an observation of 1e25) overflow float32 inside the
    networks and would give a NaN loss with no word of why; this names the loss entries
    and the input entry with the largest magnitude instead. One host read when it runs.

    Raises:
        NonFiniteLossError: naming the non-finite ``loss_*`` entries and the largest input.
    """
    tensors = list(losses.values())
    if not _finite_check_runs(mode, tensors):
        return
    if bool(torch.isfinite(torch.stack([t.detach().sum() for t in tensors])).all()):
        return
    bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
    largest, where = 0.0, None
    for key, value in tensordict.items(include_nested=True, leaves_only=True):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            magnitude = float(value.detach().abs().max())
            if magnitude > largest:
                largest, where = magnitude, key
    raise NonFiniteLossError(
        f"{owner}: {', '.join(bad)} non-finite although every input is finite; the largest "
        f"input magnitude is {largest:.3g} (entry {where!r}). Values this large overflow the "
        "networks' float32 arithmetic: normalise or clip them (check_finite=False skips "
        "this check)."
    )


def check_preimage(
    owner: str,
    bounds: tuple[torch.Tensor, torch.Tensor] | None,
    action: torch.Tensor,
    preimage: torch.Tensor | None,
    *,
    action_key: NestedKey,
    preimage_key: NestedKey,
    log_prob_key: NestedKey | None = None,
    mode: bool | None = None,
) -> None:
    """Refuse stored pre-tanh values that do not reproduce their actions (when checks run, see ``mode``).

    A TanhNormal actor that stores the pre-image ``u`` of its action
    ``a = g(u)`` (:class:`~torchrl_svg.modules.TanhNormalActor`) writes
    ``g(u) == a``; a row where that fails was not drawn by it. The usual case is
    the random warm-up steps of a TorchRL collector with ``init_random_frames``:
    the policy does not run, so its outputs (pre-image, log-probability) stay at
    0 while the action is uniformly random, and an importance weight computed
    from them would be wrong.

    Args:
        owner: the reader, named in the message.
        bounds: ``(low, high)`` of the TanhNormal (``None``: nothing to check).
        action: the stored actions, ``[*B, A]``.
        preimage: their stored pre-tanh values, ``[*B, A]`` (``None``: nothing to check).
        action_key: the action entry, named in the message.
        preimage_key: the pre-tanh entry, named in the message.
        log_prob_key: the behaviour log-probability entry, named in the message.
        mode: as ``check_finite`` (``None``: only where it costs no device sync).

    Raises:
        ValueError: naming the entries, the number of such rows and the remedy.

    """
    if bounds is None or preimage is None or not _finite_check_runs(mode, [action, preimage]):
        return
    bad = preimage_mismatch(bounds, action, preimage)
    if not bool(bad.any()):
        return
    what = f"behaviour log-probability {log_prob_key!r}" if log_prob_key else "pre-tanh value"
    raise ValueError(
        f"{owner}: {int(bad.sum())} of {bad.numel()} transition(s) have an entry {action_key!r} "
        f"that the stored {preimage_key!r} does not reproduce (its tanh, rescaled to the "
        f"action bounds), so their {what} does not describe the action taken. These are "
        "usually the random warm-up steps of a TorchRL collector with init_random_frames, "
        "whose policy outputs stay at 0: give them their uniform log-density and pre-image "
        "with torchrl_svg.data.RandomActionLogProb (as the collector's postproc or in the "
        "replay buffer's transform), or leave them out of the policy's replay."
    )


@torch.no_grad()
def preimage_mismatch(
    bounds: tuple[torch.Tensor, torch.Tensor], action: torch.Tensor, preimage: torch.Tensor
) -> torch.Tensor:
    """Rows ``[*B]`` whose stored pre-tanh value does not reproduce the action ``[*B, A]``.

    ``g(u) = tanh(u) * (high - low) / 2 + (high + low) / 2`` is compared with the
    action to a tolerance of ``1e-5`` of the half-range (float rounding of a real
    draw is far below it; a uniformly random action lands that close to ``g(0)``
    with probability about ``1e-5`` per dimension).
    """
    low, high = (b.to(device=action.device, dtype=action.dtype) for b in bounds)
    half = (high - low) / 2
    rebuilt = torch.tanh(preimage.to(action.dtype)) * half + (high + low) / 2
    tol = 1e-5 * half + 8 * torch.finfo(action.dtype).eps * (high.abs() + low.abs())
    return ((rebuilt - action).abs() > tol).any(-1)


def validate(
    owner: str,
    tensordict: TensorDictBase,
    entries: Sequence[Entry],
    *,
    dtype: torch.dtype | None = None,
    check_finite: bool | None = None,
    min_ndim: int = 0,
) -> None:
    """:func:`check_batch`, :func:`check_entries` and :func:`check_finite_entries` in one call.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> entries = [Entry("observation", size=3), Entry(("next", "reward"), size=1)]
        >>> td = TensorDict({"observation": torch.zeros(4, 3), ("next", "reward"): torch.zeros(4, 1)}, [4])
        >>> validate("MyLoss", td, entries, dtype=torch.float32)
        >>> validate("MyLoss", td[:0], entries)
        Traceback (most recent call last):
        ...
        ValueError: MyLoss: empty batch (batch shape (0,)); it needs at least one sample.
        >>> td["observation"][0, 0] = float("nan")
        >>> validate("MyLoss", td, entries)
        Traceback (most recent call last):
        ...
        ValueError: MyLoss: entry 'observation' holds 1 non-finite value(s) (NaN or inf) out of 12; drop or repair those samples before they reach MyLoss (check_finite=False skips this check).

    """
    check_batch(owner, tensordict, min_ndim=min_ndim)
    floats = check_entries(owner, tensordict, entries, dtype=dtype)
    check_finite_entries(owner, floats, check_finite)


def module_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of a module's first floating parameter (``None`` if it has none)."""
    for param in module.parameters():
        if param.dtype.is_floating_point:
            return param.dtype
    return None


def unique(entries: Sequence[Entry]) -> tuple[Entry, ...]:
    """The entries with repeated keys dropped (the first description of an entry wins)."""
    found: dict[NestedKey, Entry] = {}
    for entry in entries:
        found.setdefault(entry.key, entry)
    return tuple(found.values())


def model_entries(model: nn.Module, *, targets: bool = False) -> list[Entry]:
    """The entries a world model reads (and, with ``targets``, the entry it is fitted to).

    Sizes come from the model's ``input_dims`` / ``target_dim`` /
    ``observation_dim`` when it has them
    (:class:`~torchrl_svg.modules.GaussianDynamics`, ``RewardModel``,
    ``LearnedTermination``); a user's own module is only required to find
    its ``in_keys`` present, in any real dtype and layout.
    """
    keys = list(getattr(model, "in_keys", []))
    dims = getattr(model, "input_dims", None)
    if dims is None and len(keys) == 1 and getattr(model, "observation_dim", None) is not None:
        dims = (model.observation_dim,)
    if dims is not None and len(dims) == len(keys):
        entries = [Entry(k, int(d)) for k, d in zip(keys, dims, strict=True)]
    else:
        entries = [Entry(k, any_real=True, any_shape=True) for k in keys]
    target = getattr(model, "target_key", None)
    if targets and target is not None:
        entries.append(Entry(target, getattr(model, "target_dim", None)))
    return entries
