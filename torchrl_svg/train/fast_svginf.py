"""The fast SVG(inf) policy step: Algorithm 1's backward recursion on plain tensors.

Split from :mod:`torchrl_svg.train.fast` (which re-exports it) and built on its
:class:`~torchrl_svg.train.fast.FastUpdate`.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import Tensor

from torchrl_svg.modules.functional import PlainGaussianModel, PlainTanhNormalActor
from torchrl_svg.modules.gaussian import GaussianMLPModel
from torchrl_svg.objectives import SVGInfLoss
from torchrl_svg.objectives.functional import episode_masks, svg_backward_recursion
from torchrl_svg.train.fast import FastUpdate

__all__ = ["FastSVGInfUpdate", "fast_svginf_supported"]


def _plain_reward(loss) -> tuple[object, str]:
    """The reward model of an SVG loss as a plain function ``(s, a, s') -> r [M]``, and its kind."""
    model = loss.reward_model
    if isinstance(model, GaussianMLPModel):
        plain = PlainGaussianModel.from_module(model, loss.reward_model_params).detached()
        return (
            lambda s, a, s_next: plain.loc_scale(torch.cat([s, a], -1))[0].squeeze(-1)
        ), "learned"
    keys = loss.tensor_keys
    known = {keys.observation: 0, keys.action: 1, ("next", keys.observation): 2}
    if (
        type(model) is TensorDictModule
        and all(k in known for k in model.in_keys)
        and list(model.out_keys) == [("next", keys.reward)]
        and not list(model.parameters())
    ):
        order = [known[k] for k in model.in_keys]
        fn = model.module
        return (lambda *x: fn(*(x[i] for i in order)).squeeze(-1)), "known"
    raise TypeError(
        "the fast SVG(inf) step supports a RewardModel or a parameter-free TensorDictModule "
        f"reading (observation, action, next observation); got {type(model).__name__}."
    )


def _pointwise_jacobian(
    fn, inputs: tuple[Tensor, ...], argnums: tuple[int, ...]
) -> tuple[Tensor, ...]:
    """Per-row Jacobians ``[M, out, in_i]`` of a row-wise function of ``[M, *]`` inputs.

    Each row's output depends on that row's inputs only, so a forward-mode
    product with the tangent ``e_j`` on every row gives column ``j`` of every
    row's Jacobian. The products for all input dimensions run as one
    :func:`torch.vmap` over the tangents (the primal is computed once).
    """
    sizes = [inputs[i].shape[-1] for i in argnums]
    total = sum(sizes)
    rows = inputs[0].shape[0]
    eye = torch.eye(total, dtype=inputs[0].dtype, device=inputs[0].device)
    basis, start = [], 0
    for size in sizes:  # e_j of the joint input space, restricted to each input
        basis.append(eye[:, start : start + size].unsqueeze(1).expand(total, rows, size))
        start += size

    def column(*tangent_args: Tensor) -> Tensor:
        tangents = [torch.zeros_like(t) for t in inputs]
        for i, t in zip(argnums, tangent_args, strict=True):
            tangents[i] = t
        return torch.func.jvp(fn, inputs, tuple(tangents))[1]

    columns = torch.func.vmap(column)(*basis)  # [total, M, out]
    return tuple(columns.permute(1, 2, 0).split(sizes, -1))


def fast_svginf_supported(loss: SVGInfLoss) -> str | None:
    """Why :class:`FastSVGInfUpdate` cannot run ``loss`` (``None``: it can)."""
    if loss.reduction != "mean":
        return f"reduction={loss.reduction!r}"
    try:
        PlainTanhNormalActor.from_module(loss.actor_network)
        dynamics = PlainGaussianModel.from_module(loss.dynamics_model)
        _plain_reward(loss)
    except TypeError as err:
        return str(err)
    if dynamics.ensemble_size != 1:
        return "an ensemble dynamics model (members are drawn per step)"
    return None


class FastSVGInfUpdate(FastUpdate):
    r"""One SVG(:math:`\infty`) policy step (SVG paper, Algorithm 1) without a sequential autograd graph.

    :class:`~torchrl_svg.objectives.SVGInfLoss` back-propagates through the
    unrolled episode, one small autograd node after another: at 1000-step
    episodes that is Python overhead, not arithmetic. This step computes the same
    gradient the way Algorithm 1 writes it:

    1. the noise of every real step is inferred at once (``noise="inferred"``:
       the re-built trajectory equals the real one in value), or the model
       trajectory is simulated without a graph (``noise="sampled"``, the planner);
    2. the Jacobians :math:`\pi_s, f_s, f_a` and the reward partials at every step,
       by batched forward-mode products (one per input dimension, all steps at once);
    3. the backward recursion :func:`~torchrl_svg.objectives.functional.svg_backward_recursion`
       gives the action gradients :math:`g_t` (a log-depth parallel scan);
    4. one batched backward through the policy at all steps:
       :math:`\nabla_\theta J = \sum_t \gamma^t g_t\,\partial\pi(s_t,\eta_t;\theta)/\partial\theta`.

    The reported ``loss_actor`` is ``loss(batch)["loss_actor"]``; the parameter
    update equals the public path's up to floating-point summation order.

    Args:
        loss: the :class:`~torchrl_svg.objectives.SVGInfLoss` (see :func:`fast_svginf_supported`).
        optimizer: a fused Adam over the actor's parameters.
        parameters: those parameters.

    Keyword Args:
        see :class:`FastUpdate` (``max_grad_norm``: the policy-gradient clipping of App. D).
    """

    keys = ("loss_actor", "episode_return")
    n_trained = 1
    kind = "policy"

    def __init__(self, loss: SVGInfLoss, optimizer, parameters, **kwargs):
        reason = fast_svginf_supported(loss)
        if reason is not None:
            raise ValueError(f"FastSVGInfUpdate cannot run this SVGInfLoss: {reason}.")
        self.loss = loss
        super().__init__(loss.validate_input, optimizer, parameters, **kwargs)

    def _build(self) -> None:
        loss = self.loss
        self.actor = PlainTanhNormalActor.from_module(loss.actor_network, loss.actor_network_params)
        self.actor_frozen = self.actor.detached()
        self.dynamics = PlainGaussianModel.from_module(
            loss.dynamics_model, loss.dynamics_model_params
        ).detached()
        self.reward, _ = _plain_reward(loss)

    # one step of the policy and of the model, row by row (for the Jacobians)
    def _action(self, state: Tensor, noise: Tensor) -> Tensor:
        loc, scale = self.actor_frozen.loc_scale(state)
        return self.actor_frozen.squash(loc + scale * noise, safe=False)

    def _next_state(self, state: Tensor, action: Tensor, noise: Tensor) -> Tensor:
        loc, scale = self.dynamics.loc_scale(torch.cat([state, action], -1), residual=state)
        return loc + scale * noise

    def _simulate(self, start: Tensor, steps: int) -> tuple[Tensor, ...]:
        """The planner's trajectory from ``start``: ``(s, eta, a, xi, s')``, ``[*B, T, ...]`` each."""
        states, etas, actions, xis, nexts = [], [], [], [], []
        state = start
        for _ in range(steps):
            loc, scale = self.actor_frozen.loc_scale(state)
            eta = torch.randn_like(loc)
            action = self.actor_frozen.squash(loc + scale * eta, safe=False)
            mloc, mscale = self.dynamics.loc_scale(torch.cat([state, action], -1), residual=state)
            xi = torch.randn_like(mloc)
            next_state = mloc + mscale * xi
            for store, value in zip(
                (states, etas, actions, xis, nexts),
                (state, eta, action, xi, next_state),
                strict=True,
            ):
                store.append(value)
            state = next_state
        return tuple(torch.stack(x, -2) for x in (states, etas, actions, xis, nexts))

    def _losses(
        self, obs, action, next_obs, reward, alive, policy_noise, model_noise, pre_tanh, member
    ):
        gamma = self.loss._gamma
        batch, steps = obs.shape[:-2], obs.shape[-2]
        with torch.no_grad():
            if self.loss.noise == "inferred":
                states = obs
                if policy_noise is None:
                    loc, scale = self.actor_frozen.loc_scale(obs)
                    # the behaviour scored the stored pre-tanh value: use the same one
                    u = self.actor_frozen.unsquash(action) if pre_tanh is None else pre_tanh
                    policy_noise = (u - loc) / scale
                    actions = self.actor_frozen.squash(loc + scale * policy_noise, safe=False)
                else:
                    actions = self._rebuild(obs, policy_noise)
                inputs = torch.cat([obs, actions], -1)
                use_member = member is not None and model_noise is not None
                mloc, mscale = self.dynamics.loc_scale(
                    inputs.reshape(-1, inputs.shape[-1]),
                    residual=obs.reshape(-1, obs.shape[-1]),
                    member=member.reshape(-1).long() if use_member else None,
                )
                if model_noise is None:
                    model_noise = (next_obs.reshape(mloc.shape) - mloc) / mscale
                model_noise = model_noise.reshape(mloc.shape)
                nexts = (mloc + mscale * model_noise).reshape(next_obs.shape)
            else:
                states, policy_noise, actions, model_noise, nexts = self._simulate(
                    obs[..., 0, :], steps
                )
            flat = [
                x.reshape(-1, x.shape[-1]) for x in (states, actions, policy_noise, model_noise)
            ]
            s, a, eta, xi = flat
            (policy_state,) = _pointwise_jacobian(self._action, (s, eta), (0,))
            model_state, model_action = _pointwise_jacobian(self._next_state, (s, a, xi), (0, 1))
        # reward partials: each step's reward depends on its own point only
        s_r, a_r, n_r = (
            x.reshape(-1, x.shape[-1]).detach().requires_grad_() for x in (states, actions, nexts)
        )
        with torch.enable_grad():
            model_reward = self.reward(s_r, a_r, n_r)
            weights = (alive.reshape(-1)).to(model_reward.dtype)
            partials = torch.autograd.grad(
                (model_reward * weights).sum(), (s_r, a_r, n_r), allow_unused=True
            )
        r_s, r_a, r_n = (
            torch.zeros_like(x) if g is None else g
            for g, x in zip(partials, (s_r, a_r, n_r), strict=True)
        )
        shape = (*batch, steps)
        _, action_grad = svg_backward_recursion(
            r_s.reshape(*shape, -1),
            r_a.reshape(*shape, -1),
            r_n.reshape(*shape, -1),
            policy_state.reshape(*shape, *policy_state.shape[-2:]),
            model_state.reshape(*shape, *model_state.shape[-2:]),
            model_action.reshape(*shape, *model_action.shape[-2:]),
            gamma,
        )
        rewards = reward if self.loss.noise == "inferred" else model_reward.detach().reshape(shape)
        discount = gamma ** torch.arange(steps, device=obs.device, dtype=obs.dtype)
        episode_return = (discount * alive * rewards).sum(-1)
        # the policy's own dependence on theta at every step, weighted by g_t (detached)
        loc, scale = self.actor.loc_scale(states)
        rebuilt = self.actor.squash(loc + scale * policy_noise, safe=False)
        surrogate = -(discount.unsqueeze(-1) * action_grad.detach() * rebuilt).sum((-2, -1)).mean()
        loss_actor = surrogate - surrogate.detach() - episode_return.mean()
        return loss_actor, episode_return.mean()

    def _rebuild(self, obs: Tensor, noise: Tensor) -> Tensor:
        loc, scale = self.actor_frozen.loc_scale(obs)
        return self.actor_frozen.squash(loc + scale * noise, safe=False)

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One policy step on whole episodes ``[*B, T]`` (as ``loss(batch)`` reads them)."""
        self.check_layout(batch)
        keys = self.loss.tensor_keys
        done = batch.get(("next", keys.done)).squeeze(-1)
        terminated = batch.get(("next", keys.terminated), None)
        valid = batch.get(("collector", "mask"), None)
        alive, _ = episode_masks(
            done, None if terminated is None else terminated.squeeze(-1), valid
        )
        obs = batch.get(keys.observation)
        out = self.step_tensors(
            obs,
            batch.get(keys.action),
            batch.get(("next", keys.observation)),
            batch.get(("next", keys.reward)).squeeze(-1),
            alive.to(obs.dtype),
            batch.get(keys.policy_noise, None),
            batch.get(keys.model_noise, None),
            batch.get(keys.action_pre_tanh, None),
            batch.get(keys.model_member, None),
        )
        self.report()
        return self.outputs(out)
