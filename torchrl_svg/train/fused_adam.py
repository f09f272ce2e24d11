"""``optimizer.step()`` of a fused :class:`torch.optim.Adam` without its per-step Python bookkeeping.

``Adam(fused=True).step()`` spends, at the sizes of continuous-control networks, about as
long in Python (collecting each group's parameters, gradients and states, grouping them by
device and dtype) as in its fused kernel. :class:`FusedAdamStep` makes the same kernel call
with those lists built once and reused while they stay valid, on the optimiser's own state
(so ``optimizer.state_dict()``, checkpoints and resumes see exactly what ``Adam`` would have
written), and falls back to ``optimizer.step()`` for anything it does not cover.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FusedAdamStep"]


class FusedAdamStep:
    """The update of ``optimizer.step()`` for a fused Adam, with its tensor lists cached.

    Covered: :class:`torch.optim.Adam` / :class:`torch.optim.AdamW` with ``fused=True``,
    float learning rates, one device and dtype per parameter group. Anything else (or a
    group whose parameters changed, or an optimiser whose state was replaced by
    ``load_state_dict``) goes through ``optimizer.step()`` or rebuilds the lists first.

    Args:
        optimizer: the optimiser whose step this replaces.

    Examples:
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
        >>> step = FusedAdamStep(opt)
        >>> net(torch.randn(4, 3)).sum().backward()
        >>> step(found_inf=torch.zeros(()))
        >>> int(opt.state[net.weight]["step"])
        1
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self._key: tuple | None = None
        self._groups: list[tuple[dict, list[Tensor], list[list[Tensor]]]] = []

    def _supported(self) -> bool:
        if type(self.optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
            return False
        for group in self.optimizer.param_groups:
            if not group.get("fused") or group.get("differentiable"):
                return False
            if isinstance(group["lr"], Tensor) or isinstance(group["betas"][0], Tensor):
                return False
            params = group["params"]
            if params and len({(p.device, p.dtype) for p in params}) != 1:
                return False
        return True

    def _build(self, key: tuple, with_grad: tuple[tuple[Tensor, ...], ...]) -> None:
        """Collect (and, for new parameters, create) the optimiser states the kernel updates."""
        self._groups = []
        for group, params in zip(self.optimizer.param_groups, with_grad, strict=True):
            if not params:
                continue
            states: list[list[Tensor]] = [[], [], [], []]
            for p in params:
                state = self.optimizer.state[p]
                if not state:  # as Adam's own first step does
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                states[0].append(state["exp_avg"])
                states[1].append(state["exp_avg_sq"])
                if group["amsgrad"]:
                    states[2].append(state["max_exp_avg_sq"])
                states[3].append(state["step"])
            self._groups.append((group, list(params), states))
        self._key = key

    def __call__(self, found_inf: Tensor | None = None) -> None:
        """One Adam step on the parameters that hold a gradient.

        Skipped on the device where ``found_inf`` is 1: the kernel leaves parameters and
        moments as they were and the step count is restored.
        """
        optimizer = self.optimizer
        with_grad = tuple(
            tuple(p for p in group["params"] if p.grad is not None)
            for group in optimizer.param_groups
        )
        key = (
            id(optimizer.state),
            tuple(map(id, optimizer.param_groups)),
            tuple(tuple(map(id, params)) for params in with_grad),
        )
        if key != self._key:
            if not self._supported():
                optimizer.found_inf = found_inf  # what Adam's fused step reads
                optimizer.grad_scale = None
                try:
                    optimizer.step()
                finally:
                    optimizer.found_inf = None
                return
            self._build(key, with_grad)
        for group, params, (exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps) in self._groups:
            beta1, beta2 = group["betas"]
            kernel = (
                torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
            )
            torch._foreach_add_(steps, 1)
            kernel(
                params,
                [p.grad for p in params],
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                steps,
                amsgrad=group["amsgrad"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                grad_scale=None,
                found_inf=found_inf,
            )
            if found_inf is not None:
                torch._foreach_sub_(steps, [found_inf] * len(steps))

    def zero_grad(self) -> None:
        """Drop every gradient of the optimiser's parameters (``zero_grad(set_to_none=True)``)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
