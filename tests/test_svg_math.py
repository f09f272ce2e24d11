"""SVG maths in float64 on the linear-quadratic-Gaussian task with the true model and reward.

* noise inference re-builds the real actions and next states exactly in value;
* the SVG(inf) gradient averaged over many real trajectories matches the analytic
  policy gradient of the finite-horizon objective;
* SVG(1) (and SVG(2)) with the exact value function match the analytic gradient
  of their objective;
* importance weights are 1 on on-policy data and truncated at the maximum;
* the KL penalty is the KL of the policies' Normals.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.modules.distributions import TanhNormal

from torchrl_svg.data import ImportanceWeight, ModelNoiseInference, PolicyNoiseInference
from torchrl_svg.envs import (
    LQGEnv,
    linear_gaussian_actor,
    lqg_dynamics_model,
    lqg_expected_return,
    lqg_reward_module,
    lqg_value_function,
    lqg_value_module,
)
from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value
from torchrl_svg.objectives import SVGInfLoss, SVGLoss, location_scale
from torchrl_svg.objectives._unroll import unroll_real

DTYPE = torch.float64
GAIN = [[-0.3, -0.6]]
LOG_STD = -0.7


def _policy_params(actor):
    policy = actor[0].module
    return policy.gain, policy.log_std


def _rollouts(env: LQGEnv, actor, steps: int, seed: int = 0) -> TensorDict:
    env.set_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        return env.rollout(steps, actor)


def _grads(loss_value, actor) -> tuple[torch.Tensor, torch.Tensor]:
    gain, log_std = _policy_params(actor)
    return torch.autograd.grad(loss_value, [gain, log_std])


# ------------------------------------------------------------------ noise inference
def test_noise_inference_rebuilds_real_trajectories_exactly():
    env = LQGEnv(dtype=DTYPE, batch_size=[64], horizon=12)
    actor = linear_gaussian_actor(2, 1, gain=GAIN, log_std=LOG_STD, dtype=DTYPE)
    data = _rollouts(env, actor, 12)
    loss = SVGInfLoss(actor, lqg_dynamics_model(env), lqg_reward_module(env))
    loss.make_value_estimator(gamma=1.0)
    unroll = unroll_real(loss, data, 12, "inferred")
    torch.testing.assert_close(
        unroll["final_state"], data["next", "observation"][:, -1], rtol=0, atol=1e-10
    )
    for t, reward in enumerate(unroll["rewards"]):
        torch.testing.assert_close(reward, data["next", "reward"][:, t, 0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (-2.0, 3.0)])
def test_tanh_policy_noise_inference_round_trips_and_clamps_at_the_boundary(low, high):
    torch.manual_seed(0)
    loc, scale = torch.randn(1000, 2, dtype=DTYPE), torch.rand(1000, 2, dtype=DTYPE) + 0.1
    dist = TanhNormal(loc, scale, low=low, high=high)
    actions = dist.sample()
    ls = location_scale(dist)
    torch.testing.assert_close(ls.rebuild(ls.infer_noise(actions)), actions)
    # the stable log-density agrees with TorchRL's in the interior
    torch.testing.assert_close(ls.log_prob(actions), dist.log_prob(actions), rtol=1e-6, atol=1e-6)
    boundary = torch.tensor([[low, high], [high, low]], dtype=DTYPE)
    edge = location_scale(
        TanhNormal(
            torch.zeros(2, 2, dtype=DTYPE), torch.ones(2, 2, dtype=DTYPE), low=low, high=high
        )
    )
    noise = edge.infer_noise(boundary)
    assert torch.isfinite(noise).all() and torch.isfinite(edge.log_prob(boundary)).all()
    torch.testing.assert_close(edge.rebuild(noise), boundary, rtol=0, atol=1e-6)


def test_inferred_noise_reproduces_values_and_carries_gradients_float32():
    spec = Bounded(-2.0, 2.0, (2,))
    actor = make_actor(4, spec, hidden_sizes=(16,))
    model = GaussianDynamics(4, 2, hidden_sizes=(16,))
    data = make_batch((64,))
    data["action"][:4] = torch.tensor([[-2.0, 2.0]])  # boundary actions
    model.update_normalizer(data)
    noise = PolicyNoiseInference(actor)(data.clone())["policy_noise"]
    xi = ModelNoiseInference(model)(data.clone())["model_noise"]
    assert torch.isfinite(noise).all() and torch.isfinite(xi).all()
    policy = location_scale(actor.get_dist(data.select("observation")))
    torch.testing.assert_close(policy.rebuild(noise), data["action"], rtol=0, atol=2e-6)
    dyn = location_scale(model.get_dist(data))
    rebuilt_next = dyn.rebuild(xi)
    torch.testing.assert_close(rebuilt_next, data["next", "observation"], rtol=0, atol=1e-4)
    rebuilt_next.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_non_location_scale_distributions_are_refused():
    with pytest.raises(TypeError, match="not a supported location-scale distribution"):
        location_scale(torch.distributions.Uniform(0.0, 1.0))


# ----------------------------------------------------------------------- SVG(inf)
def test_svg_inf_gradient_matches_the_analytic_policy_gradient():
    horizon, n = 10, 40_000
    env = LQGEnv(dtype=DTYPE, batch_size=[n], horizon=horizon)
    actor = linear_gaussian_actor(2, 1, gain=GAIN, log_std=LOG_STD, dtype=DTYPE)
    data = _rollouts(env, actor, horizon)
    loss = SVGInfLoss(actor, lqg_dynamics_model(env), lqg_reward_module(env))
    loss.make_value_estimator(gamma=1.0)
    estimate = _grads(loss(data)["loss_actor"], actor)
    gain, log_std = _policy_params(actor)
    analytic = torch.autograd.grad(
        -lqg_expected_return(env, gain, log_std, horizon), [gain, log_std]
    )
    for est, exact in zip(estimate, analytic, strict=True):
        torch.testing.assert_close(est, exact, rtol=0.03, atol=0.02)
    # the estimate is informative: a different policy has a clearly different gradient
    other = torch.autograd.grad(-lqg_expected_return(env, gain * 0.2, log_std, horizon), [gain])[0]
    assert (other - analytic[0]).abs().max() > 10 * 0.02


def test_svg_inf_planner_gradient_is_also_unbiased_with_the_true_model():
    """With the *true* model, simulating (fresh noise) is unbiased too; the paper's gap comes from model error."""
    horizon, n = 6, 40_000
    env = LQGEnv(dtype=DTYPE, batch_size=[n], horizon=horizon)
    actor = linear_gaussian_actor(2, 1, gain=GAIN, log_std=LOG_STD, dtype=DTYPE)
    data = _rollouts(env, actor, horizon)
    loss = SVGInfLoss(actor, lqg_dynamics_model(env), lqg_reward_module(env), noise="sampled")
    loss.make_value_estimator(gamma=1.0)
    estimate = _grads(loss(data)["loss_actor"], actor)
    gain, log_std = _policy_params(actor)
    analytic = torch.autograd.grad(
        -lqg_expected_return(env, gain, log_std, horizon), [gain, log_std]
    )
    for est, exact in zip(estimate, analytic, strict=True):
        torch.testing.assert_close(est, exact, rtol=0.05, atol=0.05)


# ------------------------------------------------------------------- SVG(1), SVG(2)
def _k_step_objective(env, gain, log_std, k, gamma, P, c):
    """E[sum_{t<k} gamma^t r_t + gamma^k V(s_k)] from the env's initial distribution, V = -(s'Ps) - c."""
    partial = lqg_expected_return(env, gain, log_std, k, gamma)
    A, B = env.A.to(DTYPE), env.B.to(DTYPE)
    closed = A + B @ gain
    noise = B @ torch.diag(torch.exp(2 * log_std)) @ B.T + torch.diag(env.noise_std.to(DTYPE) ** 2)
    mean, cov = env.init_mean.to(DTYPE), torch.diag(env.init_std.to(DTYPE) ** 2)
    for _ in range(k):
        mean, cov = closed @ mean, closed @ cov @ closed.T + noise
    value = -(torch.trace(P @ cov) + mean @ P @ mean) - c
    return partial + gamma**k * value


@pytest.mark.parametrize("k", [1, 2])
def test_svg_k_with_the_exact_value_function_matches_its_analytic_gradient(k):
    gamma, n = 0.9, 60_000
    env = LQGEnv(dtype=DTYPE, batch_size=[n], horizon=k)
    actor = linear_gaussian_actor(2, 1, gain=GAIN, log_std=LOG_STD, dtype=DTYPE)
    gain, log_std = _policy_params(actor)
    P, c = lqg_value_function(env, gain.detach(), log_std.detach(), gamma)
    data = _rollouts(env, actor, k)
    loss = SVGLoss(
        actor,
        lqg_value_module(P, c),
        lqg_dynamics_model(env),
        lqg_reward_module(env),
        horizon=k,
        importance_weights=False,
    )
    loss.make_value_estimator(gamma=gamma)
    batch = data if k > 1 else data[:, 0]
    value, meta = loss.actor_loss(batch)
    estimate = _grads(value, actor)
    analytic = torch.autograd.grad(
        -_k_step_objective(env, gain, log_std, k, gamma, P, c), [gain, log_std]
    )
    for est, exact in zip(estimate, analytic, strict=True):
        torch.testing.assert_close(est, exact, rtol=0.03, atol=0.03)
    # the surrogate's value is the real k-step return plus the bootstrap: an estimate of the objective
    objective = _k_step_objective(env, gain, log_std, k, gamma, P, c).item()
    assert meta["surrogate"].mean().item() == pytest.approx(objective, rel=0.03)


# ------------------------------------------------------------- importance weights
def test_importance_weights_are_one_on_policy_and_truncated_at_the_maximum():
    env = LQGEnv(dtype=DTYPE, batch_size=[256], horizon=3)
    actor = linear_gaussian_actor(2, 1, gain=GAIN, log_std=LOG_STD, dtype=DTYPE)
    data = _rollouts(env, actor, 3)[:, 0]
    weights = ImportanceWeight(actor, max_weight=5.0)(data.clone())["importance_weight"]
    torch.testing.assert_close(weights, torch.ones_like(weights), rtol=0, atol=1e-10)
    unlikely = data.clone()
    unlikely["action_log_prob"] = (
        unlikely["action_log_prob"] - 50.0
    )  # behaviour made the actions unlikely
    weights = ImportanceWeight(actor, max_weight=5.0)(unlikely)["importance_weight"]
    assert torch.equal(weights, torch.full_like(weights, 5.0))
    loss = SVGLoss(
        actor,
        lqg_value_module(
            *lqg_value_function(env, *[p.detach() for p in _policy_params(actor)], 0.9)
        ),
        lqg_dynamics_model(env),
        lqg_reward_module(env),
        max_importance_weight=5.0,
    )
    loss.make_value_estimator(gamma=0.9)
    on_policy = loss(data.clone())["importance_weight"]
    assert on_policy.item() == pytest.approx(1.0, abs=1e-9)
    truncated = data.clone()
    truncated["action_log_prob"] = truncated["action_log_prob"] - 50.0
    assert loss(truncated)["importance_weight"].item() == pytest.approx(5.0)
    # the weights scale the actor term: truncated data gives 5x the on-policy surrogate gradient
    g1 = _grads(loss.actor_loss(data.clone())[0], actor)[0]
    g5 = _grads(loss.actor_loss(truncated)[0], actor)[0]
    torch.testing.assert_close(g5, 5 * g1)


@pytest.mark.parametrize("direction", ["current_reference", "reference_current"])
def test_kl_penalty_is_the_kl_of_the_policies_normals(direction):
    spec = Bounded(-1.0, 1.0, (2,))
    actor = make_actor(4, spec, hidden_sizes=(16,))
    loss = SVGLoss(
        actor,
        make_value(4),
        GaussianDynamics(4, 2, hidden_sizes=(8,)),
        RewardModel(4, 2, hidden_sizes=(8,)),
        kl_coef=2.0,
        kl_direction=direction,
    )
    loss.make_value_estimator(gamma=0.9)
    data = make_batch((32,))
    assert loss.kl_loss(data).item() == pytest.approx(0.0, abs=1e-10)
    before = actor.get_dist(data.select("observation"))
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    after = actor.get_dist(data.select("observation"))
    reference = torch.distributions.Normal(before.root_dist.loc, before.root_dist.scale)
    current = torch.distributions.Normal(after.root_dist.loc, after.root_dist.scale)
    # App. D: KL[policy after k-1 replay steps || policy at the start of the update]
    first, second = (
        (current, reference) if direction == "current_reference" else (reference, current)
    )
    expected = torch.distributions.kl_divergence(first, second).sum(-1).mean()
    torch.testing.assert_close(loss.kl_loss(data), 2.0 * expected)
    loss.update_reference_policy()
    assert loss.kl_loss(data).item() == pytest.approx(0.0, abs=1e-10)
