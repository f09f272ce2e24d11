"""The agent interface of the training loop, and the pieces agents share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase

from torchrl_svg.modules import (
    GaussianDynamics,
    LearnedTermination,
    RewardModel,
    Termination,
    make_actor,
    make_qvalue,
    termination_for_env,
)
from torchrl_svg.objectives import GaussianWorldModelLoss
from torchrl_svg.train.builders import ACTIVATIONS, check_against_env, make_known_reward
from torchrl_svg.train.config import Config
from torchrl_svg.train.fast import FastUpdate, FastWorldModelUpdate, transition_tensors
from torchrl_svg.train.guard import NonFiniteGuard

log = logging.getLogger("torchrl_svg")

__all__ = [
    "Agent",
    "ModelFreeAgent",
    "GuardedUpdate",
    "NonFiniteGuard",
    "WorldModel",
    "guarded_step",
    "make_actor_and_qvalue",
    "fast_kwargs",
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
) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """One grouped Adam (actor, critics and, unless fixed, alpha) and the parameters it steps.

    The learning rates are ``cfg.optim.actor_lr`` / ``critic_lr`` / ``alpha_lr``; a
    learned alpha is ``loss.log_alpha``.
    """
    groups = [
        {"params": actor_params, "lr": cfg.optim.actor_lr},
        {"params": critic_params, "lr": cfg.optim.critic_lr},
    ]
    params = actor_params + critic_params
    if not cfg.loss.fixed_alpha:
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
    ):
        self.kind = kind
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
        if self._graph is not None:
            out = self._graph(batch)
            finite = bool(out.get("_finite"))
            self.guard.record(finite, f"non-finite {', '.join(self.keys)} or gradient", self.kind)
            return out.exclude("_finite")
        out = self.loss_fn(batch)
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


def make_actor_and_qvalue(
    cfg: Config, observation_spec: TensorSpec, action_spec: TensorSpec, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """The TanhNormal actor and the Q network of ``cfg.network`` for these specs."""
    obs_dim, act_dim = observation_spec.shape[-1], action_spec.shape[-1]
    act_cls = ACTIVATIONS[cfg.network.activation]
    actor = make_actor(
        observation_spec,
        action_spec,
        hidden_sizes=cfg.network.actor_hidden_sizes,
        activation_class=act_cls,
        scale_lb=cfg.network.scale_lb,
        safe_tanh=not cfg.compile.compile,  # TorchRL: safe_tanh breaks under torch.compile
        device=device,
    )
    qvalue = make_qvalue(
        obs_dim,
        act_dim,
        hidden_sizes=cfg.network.critic_hidden_sizes,
        activation_class=act_cls,
        device=device,
    )
    return actor, qvalue


class WorldModel:
    """The dynamics, reward and termination models of an agent, their NLL loss and optimiser.

    Built from ``cfg.model``: a :class:`GaussianDynamics`; a learned
    :class:`RewardModel` or the task's known reward; a known, learned or no
    termination model (``termination=False`` skips it, as the SVG losses use
    the real termination flags).
    """

    def __init__(
        self,
        cfg: Config,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        device: torch.device,
        *,
        env: EnvBase | None = None,
        termination: bool = True,
    ):
        obs_dim, act_dim = observation_spec.shape[-1], action_spec.shape[-1]
        act_cls = ACTIVATIONS[cfg.model.activation]
        self.cfg = cfg
        self.dynamics = GaussianDynamics(
            obs_dim,
            act_dim,
            hidden_sizes=cfg.model.hidden_sizes,
            activation_class=act_cls,
            sigma=cfg.model.sigma,
            per_dimension=cfg.model.per_dimension,
            ensemble_size=cfg.model.ensemble_size,
            ensemble_reduction=cfg.model.ensemble_reduction,
            min_log_std=cfg.model.min_log_std,
            max_log_std=cfg.model.max_log_std,
        ).to(device)
        if cfg.model.reward == "known":
            self.reward = make_known_reward(cfg, env).to(device)
        else:
            self.reward = RewardModel(
                obs_dim,
                act_dim,
                hidden_sizes=cfg.model.hidden_sizes,
                activation_class=act_cls,
                sigma=cfg.model.sigma,
                min_log_std=cfg.model.min_log_std,
                max_log_std=cfg.model.max_log_std,
            ).to(device)
        self.termination: Termination | None = None
        if termination and cfg.model.termination == "known":
            self.termination = termination_for_env(cfg.env.name)
        elif termination and cfg.model.termination == "learned":
            self.termination = LearnedTermination(obs_dim, activation_class=act_cls).to(device)
        check_against_env(
            observation_spec,
            action_spec,
            dynamics_model=self.dynamics,
            reward_model=self.reward,
            termination_model=self.termination,
        )
        learned_reward = cfg.model.reward == "learned"
        self.loss = GaussianWorldModelLoss(
            self.dynamics, self.reward if learned_reward else None, self.termination
        )
        self.loss_keys = (
            ("loss_dynamics",)
            + (("loss_reward",) if learned_reward else ())
            + (("loss_termination",) if self.loss.learns_termination else ())
        )
        self.parameters = [p for p in self.loss.parameters() if p.requires_grad]
        self.optimizer = make_adam(
            self.parameters,
            cfg,
            device,
            lr=cfg.optim.model_lr,
            weight_decay=cfg.optim.model_weight_decay,
        )
        self.step: GuardedUpdate | FastUpdate = make_update(
            cfg, self.loss, self.loss_keys, self.optimizer, self.parameters, kind="world-model"
        )
        if cfg.compile.fast_update:
            reason = FastWorldModelUpdate.supported(self.loss)
            if reason is None:
                self.step = FastWorldModelUpdate(
                    self.loss, self.optimizer, self.parameters, **fast_kwargs(cfg)
                )
            else:
                log.info("The world model trains through its LossModule: %s", reason)

    def observe(self, data: TensorDictBase) -> None:
        """Merge a batch of real transitions into the models' running statistics."""
        self.loss.update_normalizers(data)

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One NLL gradient step on a batch of real transitions; returns the detached losses."""
        return self.step(batch)

    def fit(
        self, sample: Callable[[int], TensorDictBase], updates: int, batch_size: int
    ) -> TensorDictBase | None:
        """``updates`` NLL steps on fresh replay batches (see :func:`run_updates`)."""
        return run_updates(self.step, sample, updates, batch_size, transitions=True)

    def state_dict(self) -> dict:
        """Model parameters, normalisation statistics and optimiser state."""
        return {"loss": self.loss.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])


class Agent:
    """What the training loop needs from an algorithm.

    Attributes:
        name: the ``algorithm`` name.
        policy: the exploration policy given to the collector (it shares the trained parameters).
        world_model: the agent's :class:`WorldModel`, or ``None`` for model-free agents.
        episodic: ``True`` when the agent learns from whole fresh episodes
            (SVG(inf)); the loop then collects ``episodes_per_batch`` complete
            episodes per batch.
        slice_len: when set, the replay buffer samples sub-trajectories of this
            many real steps (``[B, slice_len]``) instead of transitions.
    """

    name: str = ""
    policy: nn.Module
    world_model: WorldModel | None = None
    episodic: bool = False
    slice_len: int | None = None
    _guard: NonFiniteGuard | None = None

    @property
    def guard(self) -> NonFiniteGuard:
        """The agent's :class:`NonFiniteGuard` (shared with its world model)."""
        if self._guard is None:
            self._guard = NonFiniteGuard(0)
        return self._guard

    @guard.setter
    def guard(self, guard: NonFiniteGuard) -> None:
        self._guard = guard
        for step in self.updates():
            step.guard = guard

    def updates(self) -> list[GuardedUpdate | FastUpdate]:
        """Every update step of the agent (and of its world model)."""
        steps = [v for v in vars(self).values() if isinstance(v, (GuardedUpdate, FastUpdate))]
        if self.world_model is not None:
            steps.append(self.world_model.step)
        return steps

    def sample(self, replay: ReplayBuffer, batch_size: int) -> TensorDictBase:
        """``batch_size`` transitions from replay (whole slices of ``slice_len`` when set)."""
        if self.slice_len:
            batch_size = max(1, batch_size // self.slice_len) * self.slice_len
        return replay.sample(batch_size)

    def observe(self, data: TensorDictBase) -> None:
        """Merge freshly collected real transitions into running statistics."""
        if self.world_model is not None:
            self.world_model.observe(data)

    def pretrain(self, replay: ReplayBuffer, steps: int, batch_size: int) -> int:
        """Fit the world model on the warm-up data; returns the number of model updates."""
        if self.world_model is None:
            return 0
        self.world_model.fit(lambda n: self.sample(replay, n), steps, batch_size)
        return steps

    def train_on_batch(
        self, fresh: TensorDictBase, replay: ReplayBuffer
    ) -> tuple[TensorDictBase | None, int, int]:
        """All updates that follow one collected batch ``fresh``.

        Returns:
            ``(last_losses, policy_or_critic_updates, model_updates)``.
        """
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything needed to continue training (parameters, targets, statistics, optimisers)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        raise NotImplementedError


class ModelFreeAgent(Agent):
    """An agent with one loss, one optimiser step per update and no world model.

    Subclasses set ``self.loss``, ``self.optimizer`` and ``self.step`` (a
    :class:`GuardedUpdate`) and say how many updates follow each collected
    environment step (:meth:`updates_per_step`).
    """

    loss: nn.Module
    optimizer: torch.optim.Optimizer
    step: GuardedUpdate

    def updates_per_step(self) -> int:
        """Updates per collected environment step."""
        raise NotImplementedError

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One update of the loss (and its target networks); returns the detached losses."""
        return self.step(batch)

    def train_on_batch(self, fresh: TensorDictBase, replay: ReplayBuffer):
        """``updates_per_step()`` updates per collected step, each on a fresh replay batch."""
        out = None
        updates = fresh.numel() * self.updates_per_step()
        for _ in range(updates):
            out = self.update(self.sample(replay, self.cfg.replay_buffer.batch_size))
        return out, updates, 0

    def state_dict(self) -> dict:
        """Parameters, targets (and alpha) and the optimiser state."""
        return {"loss": self.loss.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])


def _transitions(batch: TensorDictBase) -> TensorDictBase:
    """Flatten a (possibly ``[B, T]``) sample into independent transitions."""
    return batch.reshape(-1) if batch.ndim > 1 else batch
