"""The update steps agents are made of: guarded optimiser steps, Adam, and the replay loop.

A :class:`GuardedUpdate` is one optimisation step of a loss that skips (and
counts) non-finite updates; :func:`run_updates` runs a number of them on fresh
replay batches. :mod:`torchrl_svg.train.agents.base` re-exports all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from torchrl_svg._utils import NonFiniteLossError
from torchrl_svg.train.config import Config
from torchrl_svg.train.fast import FastUpdate, transition_tensors, validate_once_per_layout
from torchrl_svg.train.guard import NonFiniteGuard

__all__ = [
    "GuardedUpdate",
    "fast_kwargs",
    "guarded_step",
    "make_adam",
    "make_soft_actor_critic_optimizer",
    "make_update",
    "run_updates",
    "trainable",
]


def trainable(params: TensorDictBase) -> list[nn.Parameter]:
    """The trainable parameters held in a loss's ``*_params`` TensorDict."""
    return [p for p in params.values(True, True) if isinstance(p, nn.Parameter) and p.requires_grad]


def guarded_step(
    optimizer: torch.optim.Optimizer,
    losses: TensorDictBase,
    keys: Sequence[str],
    *,
    max_grad_norm: float | None = None,
    parameters: Iterable[torch.Tensor] = (),
    guard: NonFiniteGuard | None = None,
    kind: str = "update",
    clip_groups: Sequence[tuple[Sequence[torch.Tensor], float]] = (),
) -> bool:
    """Back-propagate the sum of ``losses[keys]`` and step, skipping non-finite updates.

    A non-finite loss, or a non-finite gradient norm over ``parameters``,
    skips the update (no parameter changes) and is recorded by ``guard``
    (per ``kind`` of update). ``clip_groups`` are ``(parameters, max_norm)`` pairs
    clipped on their own before the global ``max_grad_norm``.

    Returns:
        Whether the update was applied.

    Raises:
        NonFiniteLossError: naming the non-finite entries, when ``guard``
            (by default one that allows none) has seen too many in a row.
    """
    guard = guard if guard is not None else NonFiniteGuard(0)
    total = sum(losses.get(k) for k in keys)
    if not torch.isfinite(total):
        bad = [k for k in keys if not torch.isfinite(losses.get(k)).all()]
        guard.record(False, f"non-finite {', '.join(bad)}", kind)
        return False
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    for group, bound in clip_groups:  # e.g. the actor's gradient alone
        group = [p for p in group if p.grad is not None]
        if group:
            torch.nn.utils.clip_grad_norm_(group, bound)
    params = [p for p in parameters if p.grad is not None]
    if params:
        norm = torch.nn.utils.clip_grad_norm_(
            params, max_grad_norm if max_grad_norm is not None else float("inf")
        )
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            guard.record(False, f"non-finite gradient of {', '.join(keys)}", kind)
            return False
    optimizer.step()
    guard.record(True, "", kind)
    return True


def make_adam(params, cfg: Config, device: torch.device, *, lr: float | None = None, **kwargs):
    """Adam as the recipe uses it: fused kernels (also capturable when CUDA graphs are on).

    ``params`` is a list of tensors or of parameter groups; ``lr`` the default rate.
    """
    if cfg.compile.cudagraphs:
        return torch.optim.Adam(
            params, lr=lr if lr is not None else 1e-3, capturable=True, fused=True, **kwargs
        )
    return torch.optim.Adam(
        params, lr=lr if lr is not None else 1e-3, fused=device.type in ("cpu", "cuda"), **kwargs
    )


def make_update(
    cfg: Config,
    loss_fn,
    keys,
    optimizer,
    parameters,
    *,
    max_grad_norm=None,
    after_step=None,
    kind: str = "update",
    clip_groups=(),
    validate=None,
):
    """A :class:`GuardedUpdate` configured by ``cfg.compile`` (and ``cfg.optim.max_grad_norm``)."""
    return GuardedUpdate(
        loss_fn,
        keys,
        optimizer,
        parameters,
        max_grad_norm=max_grad_norm if max_grad_norm is not None else cfg.optim.max_grad_norm,
        after_step=after_step,
        kind=kind,
        clip_groups=clip_groups,
        validate=validate,
        compile=cfg.compile.compile,
        compile_mode=cfg.compile.mode,
        cudagraphs=cfg.compile.cudagraphs,
    )


def make_soft_actor_critic_optimizer(
    cfg: Config,
    loss,
    actor_params: list[torch.Tensor],
    critic_params: list[torch.Tensor],
    device: torch.device,
    *,
    alpha: bool = True,
) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """One grouped Adam (actor, critics and, unless fixed, alpha) and the parameters it steps.

    The learning rates are ``cfg.optim.actor_lr`` / ``critic_lr`` / ``alpha_lr``; a
    learned alpha is ``loss.log_alpha``. ``alpha=False`` is for a loss without an
    entropy coefficient (no alpha group, whatever ``cfg.loss.fixed_alpha`` says).
    """
    groups = [
        {"params": actor_params, "lr": cfg.optim.actor_lr},
        {"params": critic_params, "lr": cfg.optim.critic_lr},
    ]
    params = actor_params + critic_params
    if alpha and not cfg.loss.fixed_alpha:
        groups.append({"params": [loss.log_alpha], "lr": cfg.optim.alpha_lr})
        params = params + [loss.log_alpha]
    return make_adam(groups, cfg, device), params


def fast_kwargs(cfg: Config) -> dict:
    """The keyword arguments of a :class:`~torchrl_svg.train.fast.FastUpdate` from ``cfg``."""
    return {
        "max_grad_norm": cfg.optim.max_grad_norm,
        "precision": cfg.precision,
        "compile": cfg.compile.compile,
        "compile_mode": cfg.compile.mode,
        "cudagraphs": cfg.compile.cudagraphs,
    }


def run_updates(
    step: GuardedUpdate | FastUpdate,
    sample: Callable[[int], TensorDictBase],
    updates: int,
    batch_size: int,
    *,
    transitions: bool = False,
) -> TensorDictBase | None:
    """``updates`` steps, each on a fresh replay batch of ``batch_size``; returns the last losses.

    A :class:`~torchrl_svg.train.fast.FastUpdate` draws all the batches in one
    replay call (uniform sampling with replacement: the same distribution as one
    call per update), checks their layout once, runs the steps on row slices and
    reads its device counters once at the end. ``transitions`` flattens ``[B, T]``
    slices into independent transitions (for a world model).
    """
    if updates == 0:
        return None
    if not isinstance(step, FastUpdate):
        out = None
        for _ in range(updates):
            batch = sample(batch_size)
            out = step(_transitions(batch) if transitions else batch)
        return out
    batches = sample(updates * batch_size)
    batches = _transitions(batches)
    step.check_layout(batches)
    tensors = transition_tensors(batches)
    rows = batches.numel() // updates
    out = None
    for i in range(updates):
        out = step.step_tensors(*(t[i * rows : (i + 1) * rows] for t in tensors))
    step.report()
    return step.outputs(out)


class GuardedUpdate:
    """One optimisation step of a loss: forward, backward, optional clipping, step, guard.

    The step every agent uses for each of its optimisers. Non-finite losses or
    gradients skip the step and are recorded by :attr:`guard`. ``after_step``
    (e.g. a target-network update) runs after an applied step.

    * eager (default), and ``compile=True`` (the loss forward, and through
      AOTAutograd its backward, run under :func:`torch.compile`): the finite
      check happens before the step, which is skipped;
    * ``cudagraphs=True`` (CUDA only): the whole step is captured by tensordict's
      :class:`~tensordict.nn.CudaGraphModule`. There is no host branching
      inside a graph, so the step always runs and a non-finite one is rolled
      back in the graph (parameters and optimiser state restored with
      ``torch.where``); the guard reads the finite flag after the replay.

    Args:
        loss_fn: ``batch -> TensorDict`` of losses.
        keys: the ``loss_*`` entries summed and back-propagated.
        optimizer: its optimiser (``capturable=True`` Adam for CUDA graphs).
        parameters: the parameters it steps (checked and clipped).

    Keyword Args:
        max_grad_norm: gradient-norm clipping (``None``: none).
        after_step: called after an applied step.
        compile: wrap ``loss_fn`` in :func:`torch.compile` (``compile_mode`` its mode).
        cudagraphs: capture the step in a CUDA graph.
        kind: the kind of update, for the guard's per-kind streaks.
        clip_groups: ``(parameters, max_norm)`` pairs clipped on their own first.
        validate: the loss's input check (``loss.validate_input``), run once per batch layout
            (as the fast steps run it), for a ``loss_fn`` that calls a loss's term methods
            rather than its ``forward`` (which checks its input itself).
    """

    def __init__(
        self,
        loss_fn,
        keys: Sequence[str],
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[torch.Tensor],
        *,
        max_grad_norm: float | None = None,
        after_step=None,
        compile: bool = False,
        compile_mode: str | None = None,
        cudagraphs: bool = False,
        kind: str = "update",
        clip_groups: Sequence[tuple[Sequence[torch.Tensor], float]] = (),
        validate: Callable[[TensorDictBase], None] | None = None,
    ):
        self.kind = kind
        self.validate = validate
        self._layouts: set = set()
        self.clip_groups = [(list(group), float(bound)) for group, bound in clip_groups]
        self.loss_fn = torch.compile(loss_fn, mode=compile_mode) if compile else loss_fn
        self.keys = tuple(keys)
        self.optimizer = optimizer
        self.parameters = list(parameters)
        self.max_grad_norm = max_grad_norm
        self.after_step = after_step
        self.guard = NonFiniteGuard(0)
        self._graph = None
        if cudagraphs:
            from tensordict.nn import CudaGraphModule

            self._graph = CudaGraphModule(self._captured_step, warmup=5)

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Run one step on ``batch``; returns the detached losses."""
        if self.validate is not None:
            validate_once_per_layout(batch, self.validate, self._layouts)
        if self._graph is not None:
            out = self._graph(batch)
            finite = bool(out.get("_finite"))
            self.guard.record(finite, f"non-finite {', '.join(self.keys)} or gradient", self.kind)
            return out.exclude("_finite")
        try:
            out = self.loss_fn(batch)
        except NonFiniteLossError as err:  # a loss refused its own non-finite output
            self.guard.record(False, str(err), self.kind)
            return TensorDict({k: torch.full((), float("nan")) for k in self.keys}, [])
        applied = guarded_step(
            self.optimizer,
            out,
            self.keys,
            max_grad_norm=self.max_grad_norm,
            parameters=self.parameters,
            guard=self.guard,
            kind=self.kind,
            clip_groups=self.clip_groups,
        )
        if applied and self.after_step is not None:
            self.after_step()
        return out.detach()

    def _state_tensors(self) -> list[torch.Tensor]:
        tensors = [p.data for p in self.parameters]
        for state in self.optimizer.state.values():
            tensors.extend(v for v in state.values() if isinstance(v, torch.Tensor))
        return tensors

    def _captured_step(self, batch: TensorDictBase) -> TensorDictBase:
        out = self.loss_fn(batch)
        total = sum(out.get(k) for k in self.keys)
        self.optimizer.zero_grad(set_to_none=False)
        total.backward()
        for group, bound in self.clip_groups:
            torch.nn.utils.clip_grad_norm_(group, bound)
        norm = torch.nn.utils.clip_grad_norm_(
            self.parameters, self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        )
        finite = torch.isfinite(total) & torch.isfinite(norm)
        with torch.no_grad():
            saved = [t.clone() for t in self._state_tensors()]
        self.optimizer.step()
        with torch.no_grad():
            for tensor, old in zip(self._state_tensors(), saved, strict=True):
                tensor.copy_(torch.where(finite, tensor, old))
        if self.after_step is not None:
            self.after_step()
        out = out.detach()
        out.set("_finite", finite)
        return out


def _transitions(batch: TensorDictBase) -> TensorDictBase:
    """Flatten a (possibly ``[B, T]``) sample into independent transitions."""
    return batch.reshape(-1) if batch.ndim > 1 else batch
