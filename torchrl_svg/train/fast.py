r"""Fast update steps: one ``update(batch)`` per algorithm, near the cost of its matrix multiplies.

The LossModules of :mod:`torchrl_svg.objectives` are the public reference: TensorDicts in
and out, input validation on every call, any user module. In the training loop, at the
sizes of continuous-control networks, that machinery costs as much as the maths. The
steps here compute the *same* losses (the equations of :mod:`torchrl_svg.objectives.functional`,
the same random draws in the same order, the same parameter update) on plain tensors, in
the manner of TorchRL's sota-implementations and LeanRL:

* the package's networks are evaluated as plain functions of their parameters
  (:mod:`torchrl_svg.modules.functional`): twin critics in one batched matrix multiply,
  detached copies made once;
* the input is validated once per batch layout (keys, shapes, dtypes) with the loss's own
  :meth:`validate_input`, not on every call;
* one fused Adam kernel call per parameter group, its tensor lists built once
  (:class:`~torchrl_svg.train.fused_adam.FusedAdamStep`), in-place ``lerp_`` target updates;
* **no host synchronisation**: a non-finite loss or gradient norm skips the update on the
  device (the fused Adam kernel's ``found_inf``, a zero target-update weight) and is
  counted in device tensors that the host reads once per collected batch
  (:meth:`FastUpdate.report`);
* ``precision="bf16"``: the matrix multiplies run under :func:`torch.autocast` in bf16
  (AMX / AVX-512-BF16 on CPUs, tensor cores on GPUs) with fp32 parameters, optimiser
  state, losses and targets;
* ``compile=True`` wraps the loss computation in :func:`torch.compile`;
  ``cudagraphs=True`` captures the whole step with tensordict's ``CudaGraphModule``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.objectives.utils import distance_loss

from torchrl_svg._lazy import lazy_exports
from torchrl_svg._validation import terminated_flags
from torchrl_svg.modules.functional import (
    PlainContinuation,
    PlainGaussianModel,
    PlainMLP,
    PlainTanhNormalActor,
)
from torchrl_svg.objectives import GaussianWorldModelLoss, S2VGLoss
from torchrl_svg.objectives.functional import (
    soft_model_return,
    soft_state_value_target,
    temperature_loss,
    value_expansion_targets,
)
from torchrl_svg.train.fused_adam import FusedAdamStep
from torchrl_svg.train.guard import NonFiniteGuard

__all__ = [
    "transition_tensors",
    "PRECISIONS",
    "FastS2VGUpdate",
    "FastSVGInfUpdate",  # noqa: F822  (imported on first use, below)
    "fast_svginf_supported",  # noqa: F822
    "FastUpdate",
    "FastWorldModelUpdate",
    "fast_s2vg_supported",
]

#: ``precision`` values and their autocast dtypes (``None``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

# what a replay batch of transitions holds, as the fast steps read it
_OBS, _ACTION = "observation", "action"
_NEXT_OBS, _REWARD = ("next", "observation"), ("next", "reward")
_TERMINATED = ("next", "terminated")


def transition_tensors(batch: TensorDictBase) -> tuple[Tensor, ...]:
    """``(s, a, r [N], s', terminated [N])`` of a transition batch, flattened to ``N`` rows."""
    n = batch.numel()
    obs = batch.get(_OBS)
    terminated = terminated_flags("transition batch", batch, _TERMINATED)
    return (
        obs.reshape(n, -1),
        batch.get(_ACTION).reshape(n, -1),
        batch.get(_REWARD).reshape(n),
        batch.get(_NEXT_OBS).reshape(n, -1),
        terminated.reshape(n).to(obs.dtype),
    )


def validate_once_per_layout(
    batch: TensorDictBase, validate: Callable[[TensorDictBase], None], seen: set
) -> None:
    """Run ``validate`` (a loss's input check) once per batch layout.

    A layout is the batch's keys, shapes and dtypes; ``seen`` holds those that passed.
    """
    layout = tuple(
        (key, tuple(value.shape), value.dtype)
        for key, value in batch.items(include_nested=True, leaves_only=True)
    )
    if layout not in seen:
        validate(batch)
        seen.add(layout)


class FastUpdate:
    """The machinery shared by the fast steps: layout validation, the guarded step, counters.

    A subclass implements :meth:`_losses` (plain tensors in, a tuple of scalar
    losses out, the first :attr:`n_trained` of which are summed and
    back-propagated) and names its outputs in :attr:`keys`.

    Args:
        validate: the public loss's input check (e.g. ``loss.validate_input``),
            run once per batch layout.
        optimizer: a fused ``torch.optim.Adam`` over ``parameters``.
        parameters: the parameters the step trains (gradient norm, clipping).

    Keyword Args:
        max_grad_norm: gradient-norm clipping of all ``parameters`` (``None``: none).
        clip_groups: ``(parameters, max_norm)`` pairs clipped on their own first
            (e.g. the actor's gradient in an actor-critic step).
        targets / sources: target tensors moved by ``lerp_`` towards their sources
            at rate ``tau`` after each applied step.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the networks' matrix multiplies).
        compile: run the loss computation under :func:`torch.compile`.
        cudagraphs: capture the whole step in a CUDA graph (``device=cuda``).
    """

    keys: tuple[str, ...] = ()
    n_trained: int = 0
    kind: str = "update"

    def __init__(
        self,
        validate,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[Tensor],
        *,
        max_grad_norm: float | None = None,
        clip_groups: Sequence[tuple[Sequence[Tensor], float]] = (),
        targets: Sequence[Tensor] = (),
        sources: Sequence[Tensor] = (),
        tau: float = 0.0,
        precision: str = "fp32",
        compile: bool = False,
        compile_mode: str | None = None,
        cudagraphs: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
        self._validate = validate
        self.optimizer = optimizer
        self._adam = FusedAdamStep(optimizer)
        self.parameters = list(parameters)
        self.max_grad_norm = max_grad_norm
        self.clip_groups = [(list(group), float(bound)) for group, bound in clip_groups]
        self.targets, self.sources, self.tau = list(targets), list(sources), float(tau)
        self._build()
        self._built_for = self._storage()
        self.precision = precision
        self.device = self.parameters[0].device
        self._autocast_dtype = PRECISIONS[precision]
        self._layouts: set = set()
        self.guard = NonFiniteGuard(0)  # the agent replaces it with its own
        zero = torch.zeros((), device=self.device)
        # device-side counters of skipped updates, read by report()
        self.skipped = zero.clone()
        self.streak = zero.clone()
        self.bad = torch.zeros(len(self.keys) + 1, dtype=torch.bool, device=self.device)
        self._reported = 0
        self._calls = 0  # steps run since the last report
        self._loss_fn = torch.compile(self._losses, mode=compile_mode) if compile else self._losses
        self._step_fn = self._step
        if cudagraphs:
            from tensordict.nn import CudaGraphModule

            self._step_fn = CudaGraphModule(self._step, warmup=5)

    # --------------------------------------------------------------- subclass
    def _build(self) -> None:
        """Make the plain views of the networks (and set ``targets``/``sources``, if any)."""

    def _losses(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _storage(self) -> tuple[int, ...]:
        return tuple(p.data_ptr() for p in self.parameters)

    # ------------------------------------------------------------------ step
    def check_layout(self, batch: TensorDictBase) -> None:
        """Validate ``batch`` with the public loss's check, once per layout (keys, shapes, dtypes)."""
        validate_once_per_layout(batch, self._validate, self._layouts)

    def _step(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Forward, backward, clip, guarded fused Adam step and target update; no host sync."""
        if self._autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self._autocast_dtype):
                losses = self._loss_fn(*tensors)
        else:
            losses = self._loss_fn(*tensors)
        total = sum(losses[: self.n_trained])
        self._adam.zero_grad()
        total.backward()
        for group, bound in self.clip_groups:
            group_grads = [p.grad for p in group if p.grad is not None]
            group_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(group_grads)))
            torch._foreach_mul_(group_grads, (bound / (group_norm + 1e-6)).clamp(max=1.0))
        grads = [p.grad for p in self.parameters if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self.max_grad_norm is not None:
            torch._foreach_mul_(grads, (self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0))
        finite_losses = torch.isfinite(torch.stack([x.detach() for x in losses[: len(self.keys)]]))
        finite = finite_losses[: self.n_trained].all() & torch.isfinite(norm)
        not_finite = ~finite
        self._adam(found_inf=not_finite.float())  # the fused kernel skips the step
        if self.targets:
            with torch.no_grad():
                torch._foreach_lerp_(self.targets, self.sources, finite * self.tau)
        with torch.no_grad():
            self.skipped.add_(not_finite)
            self.streak.add_(1).mul_(not_finite)
            self.bad.logical_or_(torch.cat([~finite_losses, (~torch.isfinite(norm)).reshape(1)]))
        return tuple(x.detach() for x in losses)

    def step_tensors(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """One update on plain tensors (already validated); returns the detached outputs.

        The plain views hold the modules' tensors; if the modules were moved or
        cast since (``.to()``, ``.double()``), they are rebuilt first.
        """
        if self._storage() != self._built_for:
            self._build()
            self._built_for = self._storage()
        self._calls += 1
        return self._step_fn(*tensors)

    def report(self) -> int:
        """Read the device counters (one host read) into the agent's guard.

        Returns:
            The number of updates skipped since the last report.

        Raises:
            NonFiniteLossError: naming the non-finite entries, when the current
                streak of skipped updates exceeds the guard's limit.
        """
        skipped = int(self.skipped)
        new, calls = skipped - self._reported, self._calls
        self._reported, self._calls = skipped, 0
        what = ""
        if new:
            names = [k for k, bad in zip(self.keys, self.bad.tolist(), strict=False) if bad]
            what = f"non-finite {', '.join(names)}" if names else ""
            if self.bad[-1]:
                what = (what + "; " if what else "") + (
                    f"non-finite gradient of {', '.join(self.keys[: self.n_trained])}"
                )
            self.bad.zero_()
        self.guard.record_updates(
            self.kind, applied=calls - new, skipped=new, streak=int(self.streak), what=what
        )
        return new

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """:meth:`update`."""
        return self.update(batch)

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One update on a replay batch (validated once per layout); returns the detached outputs."""
        self.check_layout(batch)
        out = self.outputs(self.step_tensors(*transition_tensors(batch)))
        self.report()
        return out

    def outputs(self, values: Sequence[Tensor]) -> TensorDictBase:
        """The named detached outputs of a step as a TensorDict."""
        return TensorDict(dict(zip(self.keys, values, strict=True)), [])


def fast_s2vg_supported(loss: S2VGLoss) -> str | None:
    """Why :class:`FastS2VGUpdate` cannot run ``loss`` (``None``: it can)."""
    if loss.reduction != "mean":
        return f"reduction={loss.reduction!r}"
    try:
        PlainTanhNormalActor.from_module(loss.actor_network)
        PlainMLP.from_module(loss.qvalue_network)
        PlainMLP.from_module(loss.value_network)
        PlainGaussianModel.from_module(loss.dynamics_model)
        PlainGaussianModel.from_module(loss.reward_model)
        PlainContinuation(loss.termination_model)
    except TypeError as err:
        return str(err)
    return None


class FastS2VGUpdate(FastUpdate):
    r"""One S2VG actor-critic update (eqs 7, 8, 11 and alpha; any horizons) on plain tensors.

    The same losses, random draws and parameter update as ``loss(batch)``
    followed by one step of ``optimizer`` over the summed ``loss_*`` entries and
    a :class:`~torchrl.objectives.SoftUpdate` of the target value network.

    Args:
        loss: the :class:`~torchrl_svg.objectives.S2VGLoss` (the package's own
            networks; see :func:`fast_s2vg_supported`). With ``horizon > 1`` the
            critic's imagined steps are drawn here, from the batch's next states.
        optimizer: a fused Adam over the actor, critic (and learned alpha) parameters.
        parameters: those parameters.
        tau: the Polyak rate of the target value network.

    Keyword Args:
        see :class:`FastUpdate`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_qvalue, make_value
        >>> spec = Bounded(-1.0, 1.0, (2,))
        >>> loss = S2VGLoss(make_actor(3, spec, hidden_sizes=(16,)), make_qvalue(3, 2, hidden_sizes=(16,)),
        ...                 make_value(3, hidden_sizes=(16,)), GaussianDynamics(3, 2, hidden_sizes=(16,)),
        ...                 RewardModel(3, 2, hidden_sizes=(16,)))
        >>> _ = loss.make_value_estimator(gamma=0.99)
        >>> params = [*loss.actor_network_params.values(True, True), *loss.qvalue_network_params.values(True, True),
        ...           *loss.value_network_params.values(True, True), loss.log_alpha]
        >>> update = FastS2VGUpdate(loss, torch.optim.Adam(params, fused=True), params, tau=0.005)
        >>> batch = TensorDict({"observation": torch.randn(8, 3), "action": spec.rand((8,)),
        ...     ("next", "observation"): torch.randn(8, 3), ("next", "reward"): torch.randn(8, 1),
        ...     ("next", "done"): torch.zeros(8, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool)}, [8])
        >>> sorted(update.update(batch).keys())
        ['alpha', 'entropy', 'loss_actor', 'loss_alpha', 'loss_qvalue', 'loss_value', 'model_return']
    """

    keys = (
        "loss_actor",
        "loss_qvalue",
        "loss_value",
        "loss_alpha",
        "alpha",
        "entropy",
        "model_return",
    )
    kind = "actor-critic"

    def __init__(
        self,
        loss: S2VGLoss,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[Tensor],
        *,
        tau: float,
        **kwargs,
    ):
        reason = fast_s2vg_supported(loss)
        if reason is not None:
            raise ValueError(f"FastS2VGUpdate cannot run this S2VGLoss: {reason}.")
        self.loss = loss
        self.n_trained = 3 if loss.fixed_alpha else 4
        loss._has_update_associated["value_network"] = True  # this step moves the target
        super().__init__(self._validate_batch, optimizer, parameters, tau=tau, **kwargs)

    def _build(self) -> None:
        loss = self.loss
        self.actor = PlainTanhNormalActor.from_module(loss.actor_network, loss.actor_network_params)
        self.qvalue = PlainMLP.from_module(loss.qvalue_network, loss.qvalue_network_params)
        self.qvalue_detached = self.qvalue.detached()
        self.value = PlainMLP.from_module(loss.value_network, loss.value_network_params)
        self.value_detached = self.value.detached()
        self.target_value = PlainMLP.from_module(
            loss.value_network, loss.target_value_network_params
        )
        self.dynamics = PlainGaussianModel.from_module(
            loss.dynamics_model, loss.dynamics_model_params
        ).detached()
        self.reward = PlainGaussianModel.from_module(
            loss.reward_model, loss.reward_model_params
        ).detached()
        self.continuation = PlainContinuation(
            loss.termination_model,
            None if loss.termination_model is None else loss.termination_model_params,
        ).detached()
        self.targets = self.target_value.parameters()
        self.sources = [p.detach() for p in self.value.parameters()]

    def _validate_batch(self, batch: TensorDictBase) -> None:
        """The loss's input check (run once per layout); refuses stored imagined steps.

        Raises:
            ValueError: the batch holds imagined steps (a ``ModelRollout`` transform's
                output), which this step would not read: use the LossModule for them.
        """
        key = self.loss.tensor_keys.imagined
        if self.loss.horizon > 1 and key in batch.keys(include_nested=True):
            raise ValueError(
                f"FastS2VGUpdate imagines the critic's steps itself; the batch holds stored "
                f"imagined steps under {key!r}: train on it with the S2VGLoss instead."
            )
        self.loss.validate_input(batch)

    @torch.no_grad()
    def _value_expansion(self, obs, action, reward, next_obs, terminated, alpha):
        """States, actions, masks ``w_t`` and targets ``y_t`` of eq 7, ``[H, B(, D)]``.

        Steps ``1..H-1`` are imagined from the real next states as
        :meth:`~torchrl_svg.objectives.S2VGLoss.value_expansion` imagines them (the
        same draws in the same order).
        """
        loss = self.loss
        states, actions = [obs], [action]
        rewards, continuations, log_probs = [reward], [1.0 - terminated], []
        reduction = "average" if loss.expansion_ensemble_mean else None
        state = next_obs
        for _ in range(loss.horizon - 1):
            step_action, step_log_prob = self.actor.sample(state)
            inputs = torch.cat([state, step_action], -1)
            loc, scale = self.dynamics.loc_scale(inputs, residual=state, reduction=reduction)
            next_state = loss._bounded(loc + scale * torch.empty_like(loc).normal_())
            states.append(state)
            actions.append(step_action)
            log_probs.append(step_log_prob)
            rewards.append(self.reward.loc_scale(inputs)[0].squeeze(-1))
            continuations.append(self.continuation(next_state))
            state = next_state
        targets, weights = value_expansion_targets(
            rewards,
            continuations,
            log_probs,
            self.target_value(state).squeeze(-1),  # G_H
            alpha,
            loss._gamma,
            loss.expansion_entropy,
        )
        return torch.stack(states), torch.stack(actions), weights, targets

    def _losses(self, obs, action, reward, next_obs, terminated):
        loss = self.loss
        gamma, log_alpha = loss._gamma, loss.log_alpha
        if loss.min_log_alpha is not None or loss.max_log_alpha is not None:
            log_alpha.data.clamp_(loss.min_log_alpha, loss.max_log_alpha)
        alpha = log_alpha.detach().exp()
        # eq 7: twin Q onto the H-step value expansion, step 0 the real transition
        states, actions, weights, targets = self._value_expansion(
            obs, action, reward, next_obs, terminated, alpha
        )
        # [H, B, D] flattened: a leading H equal to N_q would be read as one input per member
        inputs = torch.cat([states, actions], -1).flatten(0, 1)
        q = self.qvalue(inputs).view(-1, *targets.shape)  # [N_q, H, B]
        error = distance_loss(q, targets.expand_as(q), loss_function=loss.loss_function)
        loss_qvalue = (error * weights).mean(1).sum(0).mean()
        # eqs 10-11: H model steps from real states with fresh policy and model noise (or
        # the model's mean, actor_model_noise=False)
        new_action, log_prob = self.actor.sample(obs)
        rewards, log_probs, continuations, values, trusted = [], [], [], [], []
        state, step_action, step_log_prob = obs, new_action, log_prob
        bound = loss.disagreement_bound
        member = None
        if loss.ensemble_members == "rollout":  # one model per imagined rollout
            member = torch.randint(self.dynamics.ensemble_size, obs.shape[:-1], device=obs.device)
        for t in range(loss.actor_horizon):
            if t > 0:
                step_action, step_log_prob = self.actor.sample(state)
            inputs = torch.cat([state, step_action], -1)
            if bound is not None:
                values.append(self.value_detached(state).squeeze(-1))
                loc, scale, disagreement = self.dynamics.loc_scale(
                    inputs, residual=state, disagreement=True, member=member
                )
                trusted.append((disagreement <= bound).to(state.dtype))
            else:
                loc, scale = self.dynamics.loc_scale(inputs, residual=state, member=member)
            if loss.actor_model_noise:
                next_state = loc + scale * torch.empty_like(loc).normal_()
            else:  # the model's mean next state: the policy's draws are the only noise
                next_state = loc
            next_state = loss._bounded(next_state)  # observation_bounds, when set
            rewards.append(self.reward.loc_scale(inputs)[0].squeeze(-1))
            log_probs.append(step_log_prob)
            continuations.append(self.continuation(next_state))
            state = next_state
        soft_return = soft_model_return(
            rewards,
            log_probs,
            continuations,
            self.value_detached(state).squeeze(-1),
            alpha,
            gamma,
            bootstrap_values=values or None,
            trusted=trusted or None,
        )
        loss_actor = -soft_return.mean()
        # eq 8: V onto min Q - alpha log pi at real states, with the actor's draw
        with torch.no_grad():
            q_new = self.qvalue_detached(torch.cat([obs, new_action.detach()], -1)).squeeze(-1)
            value_target = soft_state_value_target(q_new, log_prob.detach(), alpha)
        value = self.value(obs).squeeze(-1)
        loss_value = 0.5 * distance_loss(value, value_target, loss.loss_function).mean()
        loss_alpha = temperature_loss(log_alpha, log_prob, loss.target_entropy).mean()
        entropy = -log_prob.detach().mean()
        return (
            loss_actor,
            loss_qvalue,
            loss_value,
            loss_alpha,
            alpha,
            entropy,
            soft_return.detach().mean(),
        )


class FastWorldModelUpdate(FastUpdate):
    """One world-model NLL step (:class:`~torchrl_svg.objectives.GaussianWorldModelLoss`) on plain tensors.

    The package's :class:`~torchrl_svg.modules.GaussianDynamics`, a learned
    :class:`~torchrl_svg.modules.RewardModel` (or none) and a
    :class:`~torchrl_svg.modules.LearnedTermination` (or a known one, not trained).

    Args:
        loss: the world-model loss (``reduction="mean"``).
        optimizer: a fused Adam over the models' parameters.
        parameters: those parameters.

    Keyword Args:
        see :class:`FastUpdate`.
    """

    def __init__(
        self,
        loss: GaussianWorldModelLoss,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[Tensor],
        **kwargs,
    ):
        if loss.reduction != "mean":
            raise ValueError(
                f"FastWorldModelUpdate needs reduction='mean', got {loss.reduction!r}."
            )
        self.loss = loss
        keys = ["loss_dynamics"]
        if loss.reward_model is not None:
            keys.append("loss_reward")
        if loss.learns_termination:
            keys.append("loss_termination")
        self.n_trained = len(keys)
        self.keys = (*keys, "dynamics_mse", "dynamics_log_std")
        self.kind = "world-model"
        super().__init__(loss.validate_input, optimizer, parameters, **kwargs)

    def _build(self) -> None:
        loss = self.loss
        self.dynamics = PlainGaussianModel.from_module(loss.dynamics_model)
        self.reward = (
            None if loss.reward_model is None else PlainGaussianModel.from_module(loss.reward_model)
        )
        self.termination = (
            PlainContinuation(loss.termination_model) if loss.learns_termination else None
        )

    @staticmethod
    def supported(loss: GaussianWorldModelLoss) -> str | None:
        """Why this step cannot run ``loss`` (``None``: it can)."""
        try:
            PlainGaussianModel.from_module(loss.dynamics_model)
            if loss.reward_model is not None:
                PlainGaussianModel.from_module(loss.reward_model)
        except TypeError as err:
            return str(err)
        if loss.reduction != "mean":
            return f"reduction={loss.reduction!r}"
        return None

    def _losses(self, obs, action, reward, next_obs, terminated):
        inputs = torch.cat([obs, action], -1)
        log_prob, loc, log_std, target = self.dynamics.log_prob_normalized(inputs, next_obs - obs)
        out = [-log_prob.sum(0).mean()]
        if self.reward is not None:
            reward_log_prob = self.reward.log_prob_normalized(inputs, reward.unsqueeze(-1))[0]
            out.append(self.loss.reward_coef * -reward_log_prob.sum(0).mean())
        if self.termination is not None:
            logits = self.termination.logits(next_obs)
            bce = F.binary_cross_entropy_with_logits(logits, terminated)
            out.append(self.loss.termination_coef * bce)
        with torch.no_grad():  # diagnostics, as GaussianWorldModelLoss reports them
            out.append((loc.detach() - target.unsqueeze(0)).pow(2).mean())
            out.append(log_std.detach().mean())
        return tuple(out)


# the SVG(inf) step lives in its own module, which builds on FastUpdate above: re-exported
# here on first use
__getattr__, __dir__ = lazy_exports(
    __name__,
    dict.fromkeys(("FastSVGInfUpdate", "fast_svginf_supported"), "torchrl_svg.train.fast_svginf"),
    __all__,
)
