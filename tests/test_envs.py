"""The reference envs (Hand, LQG): specs, seeding, resets, and their exact models and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import distributions as D
from torchrl.collectors import Collector
from torchrl.data import Bounded, Composite
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type, step_mdp

from torchrl_svg.envs import (
    HandEnv,
    HandParams,
    LQGEnv,
    hand_dynamics_model,
    hand_reward_module,
    linear_gaussian_actor,
    lqg_dynamics_model,
    lqg_expected_return,
    lqg_reward_module,
    lqg_value_function,
    lqg_value_module,
)

F64 = torch.float64
GAIN = [[-0.1, -0.5]]  # a stabilising gain for the default LQG problem
LOG_STD = [math.log(0.3)]


def make_env(kind: str, **kwargs) -> EnvBase:
    if kind == "hand":
        kwargs.setdefault("episode_steps", 10)
        return HandEnv(**kwargs)
    kwargs.setdefault("horizon", 10)
    return LQGEnv(**kwargs)


def policy_params(dtype=F64, requires_grad=False):
    gain = torch.tensor(GAIN, dtype=dtype, requires_grad=requires_grad)
    log_std = torch.tensor(LOG_STD, dtype=dtype, requires_grad=requires_grad)
    return gain, log_std


def hand_policy(td: TensorDict) -> TensorDict:
    """A deterministic, state-dependent Hand policy (uses no RNG)."""
    obs = td["observation"]
    td["action"] = torch.tanh(3.0 * (obs[..., 6:8] - obs[..., 2:4]) + obs[..., 8:9])
    return td


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("kind", ["hand", "lqg"])
@pytest.mark.parametrize("batch_size", [[], [3], [2, 2]])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_check_env_specs(kind, batch_size, dtype):
    env = make_env(kind, batch_size=batch_size, dtype=dtype, seed=0)
    check_env_specs(env, break_when_any_done="both")


@pytest.mark.parametrize("kind", ["hand", "lqg"])
def test_spec_shapes_and_dtypes(kind):
    env = make_env(kind, batch_size=[5], dtype=F64, seed=0)
    obs_dim, act_dim = (9, 2) if kind == "hand" else (2, 1)
    assert isinstance(env.observation_spec, Composite)
    assert env.observation_spec["observation"].shape == (5, obs_dim)
    assert env.observation_spec["observation"].dtype == F64
    assert isinstance(env.action_spec, Bounded)
    assert env.action_spec.shape == (5, act_dim) and env.action_spec.dtype == F64
    assert env.reward_spec.shape == (5, 1) and env.reward_spec.dtype == F64
    assert set(env.full_done_spec.keys()) == {"done", "terminated", "truncated"}
    for key in ("done", "terminated", "truncated"):
        assert env.full_done_spec[key].shape == (5, 1)
    bound = 1.0 if kind == "hand" else 100.0
    assert torch.equal(env.action_spec.space.high, torch.full((5, act_dim), bound, dtype=F64))


# --------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("kind", ["hand", "lqg"])
def test_same_seed_same_rollout_independent_of_global_rng(kind):
    def rollout(seed: int, global_seed: int):
        env = make_env(kind, batch_size=[4], seed=seed)
        torch.manual_seed(global_seed)  # the env must not use the global RNG
        policy = hand_policy if kind == "hand" else None
        if policy is None:

            def policy(td):
                td["action"] = -0.3 * td["observation"][..., 1:2]
                return td

        return env.rollout(10, policy)

    a, b, c = rollout(1, 0), rollout(1, 123), rollout(2, 0)
    assert (a == b).all()
    assert not torch.equal(a["next", "observation"], c["next", "observation"])


@pytest.mark.parametrize("kind", ["hand", "lqg"])
def test_set_seed_restarts_the_stream(kind):
    env = make_env(kind, batch_size=[3], seed=0)

    def run():
        env.set_seed(7)
        torch.manual_seed(0)  # random actions come from the global RNG
        return env.rollout(12, break_when_any_done=False)

    first = run()
    env.rollout(3)
    assert (run() == first).all()


# --------------------------------------------------------------------------- rollouts and resets


@pytest.mark.parametrize("kind", ["hand", "lqg"])
def test_rollout_shapes_with_nested_batch(kind):
    env = make_env(kind, batch_size=[2, 3], seed=0)
    data = env.rollout(4)
    obs_dim = 9 if kind == "hand" else 2
    assert data.shape == (2, 3, 4)
    assert data["observation"].shape == (2, 3, 4, obs_dim)
    assert data["next", "observation"].shape == (2, 3, 4, obs_dim)
    assert data["next", "reward"].shape == (2, 3, 4, 1)
    # consecutive observations chain
    assert torch.equal(data["observation"][..., 1:, :], data["next", "observation"][..., :-1, :])


def test_hand_episode_truncates_at_episode_steps():
    env = HandEnv(batch_size=[3], episode_steps=7, seed=0)
    data = env.rollout(20)
    assert data.shape == (3, 7)
    truncated, done = data["next", "truncated"].squeeze(-1), data["next", "done"].squeeze(-1)
    assert truncated[:, -1].all() and not truncated[:, :-1].any()
    assert torch.equal(truncated, done)
    assert not data["next", "terminated"].any()
    time = data["next", "observation"][..., -1]
    torch.testing.assert_close(time, torch.arange(1, 8).div(7).expand(3, 7))
    assert (data["observation"][:, 0, -1] == 0).all()
    # without stopping, episodes restart with time 0
    data = env.rollout(15, break_when_any_done=False)
    assert (data["observation"][:, 7, -1] == 0).all()
    assert data["next", "truncated"].squeeze(-1).sum(-1).eq(2).all()


def test_lqg_episode_truncates_at_horizon():
    env = LQGEnv(batch_size=[2], horizon=5, seed=0)
    data = env.rollout(50)
    assert data.shape == (2, 5)
    assert data["next", "truncated"][:, -1].all() and not data["next", "terminated"].any()


def test_hand_reset_distribution_and_both_targets():
    params = HandParams()
    env = HandEnv(batch_size=[400], seed=0)
    obs = env.reset()["observation"]
    target = obs[:, 6:8]
    assert set(target[:, 0].unique().tolist()) == {-params.target_x, params.target_x}
    assert 0.4 < (target[:, 0] > 0).float().mean() < 0.6
    torch.testing.assert_close(target[:, 1], torch.full((400,), params.hanging_y))
    assert obs[:, 0:2].abs().max() < 6 * params.init_std
    hanging = torch.tensor([0.0, params.hanging_y])
    assert (obs[:, 2:4] - hanging).abs().max() < 6 * params.init_std
    assert (obs[:, 4:6] == 0).all() and (obs[:, 8] == 0).all()
    # over many single-episode resets both targets occur too
    env = HandEnv(seed=3)
    sides = {float(env.reset()["observation"][6]) for _ in range(30)}
    assert sides == {-params.target_x, params.target_x}


def test_hand_physics_without_noise():
    env = HandEnv(batch_size=[2], force_std=0.0, init_std=0.0, seed=0, dtype=F64)
    td = env.reset()
    start = td["observation"].clone()
    td["action"] = torch.tensor([[0.0, 0.0], [1.0, -0.5]], dtype=F64)
    nxt = env.step(td)["next", "observation"]
    # resting hand: the ball hangs in equilibrium and stays there
    torch.testing.assert_close(nxt[0, :8], start[0, :8], rtol=0, atol=1e-12)
    # moving hand: velocity control, the spring drags the ball along
    torch.testing.assert_close(nxt[1, :2], torch.tensor([0.01, -0.005], dtype=F64))
    assert nxt[1, 4] > 0 and nxt[1, 5] < 0


@pytest.mark.parametrize("kind", ["hand", "lqg"])
def test_partial_reset(kind):
    env = make_env(kind, batch_size=[4], seed=0, **({"horizon": 50} if kind == "lqg" else {}))
    td = env.reset()
    for _ in range(3):
        td = step_mdp(env.rand_step(td))
    before = td["observation"].clone()
    mask = torch.tensor([True, False, True, False])
    td["_reset"] = mask.unsqueeze(-1)
    td = env.reset(td)
    assert "_reset" not in td.keys()
    assert torch.equal(td["observation"][~mask], before[~mask])
    assert not (td["observation"][mask] == before[mask]).all(-1).any()
    if kind == "hand":
        assert torch.equal(td["observation"][:, -1], torch.tensor([0.0, 0.3, 0.0, 0.3]))
    # the kept episodes continue from where they were, and truncate at their own time
    steps_left = 7 if kind == "hand" else 47
    data = env.rollout(steps_left, tensordict=td, auto_reset=False, break_when_any_done=False)
    assert torch.equal(data["observation"][:, 0], td["observation"])
    truncated = data["next", "truncated"][:, -1, 0]
    assert torch.equal(truncated, ~mask)


def test_step_errors():
    env = HandEnv(batch_size=[2], seed=0)
    with pytest.raises(RuntimeError, match="before reset"):
        env._step(TensorDict({"action": torch.zeros(2, 2)}, [2]))
    td = env.reset()
    td["action"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"'action' has shape \(2, 3\), expected \(2, 2\)"):
        env.step(td)
    with pytest.raises(TypeError, match="unknown keyword arguments"):
        HandEnv(stiffnes=10.0)
    with pytest.raises(ValueError, match="mass must be > 0"):
        HandEnv(mass=0.0)
    with pytest.raises(ValueError, match="B must be a matrix of shape"):
        LQGEnv(B=[[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="floating dtype"):
        LQGEnv(dtype=torch.int64)


@pytest.mark.parametrize("kind", ["hand", "lqg"])
@pytest.mark.slow
def test_collector(kind):
    env = make_env(kind, batch_size=[2], seed=0, dtype=F64)
    if kind == "hand":
        policy = None
        steps = 10
    else:
        policy = linear_gaussian_actor(2, 1, GAIN, LOG_STD, dtype=F64)
        steps = 10
    collector = Collector(
        env,
        policy,
        frames_per_batch=2 * 2 * steps,
        total_frames=4 * 2 * steps,
        auto_register_policy_transforms=False,
    )
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    for batch in batches:
        assert batch.shape == (2, 2 * steps)
        assert batch["next", "truncated"].sum() == 4  # two episodes per env per batch
        assert batch["next", "reward"].dtype == F64
        if policy is not None:
            assert batch["action_log_prob"].shape == (2, 2 * steps)


# --------------------------------------------------------------------------- Hand: known reward and true model


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_hand_reward_module_equals_env_reward(dtype):
    env = HandEnv(batch_size=[8], episode_steps=25, dtype=dtype, seed=0)
    data = env.rollout(25)
    reward = hand_reward_module(env)(data.clone())["next", "reward"]
    assert reward.shape == (8, 25, 1) and reward.dtype == dtype
    assert torch.equal(reward, data["next", "reward"])
    # the terminal term (eq 15) is paid on the last step only
    params = env.params
    control = params.control_cost * data["action"].pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(reward[:, :-1], -control[:, :-1])
    assert (reward[:, -1] < -control[:, -1] - 0.1).all()
    # from params, on a flattened batch
    flat = data.reshape(-1)
    flat_reward = hand_reward_module(params)(flat.clone())["next", "reward"]
    assert torch.equal(flat_reward, data["next", "reward"].reshape(-1, 1))


def test_hand_reward_is_differentiable():
    env = HandEnv(batch_size=[2, 3], episode_steps=1, dtype=F64, seed=0)
    data = env.rollout(1)[..., 0]
    action = data["action"].clone().mul(0.5).requires_grad_()
    next_obs = data["next", "observation"].clone().requires_grad_()
    td = TensorDict(
        {"observation": data["observation"], "action": action, ("next", "observation"): next_obs},
        [2, 3],
    )
    reward = hand_reward_module(env)(td)["next", "reward"]
    assert reward.shape == (2, 3, 1)
    d_action, d_next = torch.autograd.grad(reward.sum(), [action, next_obs])
    torch.testing.assert_close(d_action, -2 * env.params.control_cost * action.detach())
    assert torch.isfinite(d_next).all() and d_next[..., :4].abs().gt(0).all()
    # hand at the exact origin: the smooth distance keeps the gradient finite
    next_obs = torch.zeros(9, dtype=F64, requires_grad=True)
    td = TensorDict(
        {
            "observation": torch.zeros(9, dtype=F64),
            "action": torch.zeros(2, dtype=F64),
            ("next", "observation"): next_obs + torch.eye(9, dtype=F64)[-1],
        }
    )
    (grad,) = torch.autograd.grad(hand_reward_module(env)(td)["next", "reward"].sum(), next_obs)
    assert torch.isfinite(grad).all()


def test_hand_true_model_reproduces_env_transitions():
    env = HandEnv(batch_size=[64], episode_steps=30, dtype=F64, seed=0)
    data = env.rollout(30)
    model = hand_dynamics_model(env)
    assert isinstance(model, ProbabilisticTensorDictSequential)
    dist = model.get_dist(data.clone())
    assert isinstance(dist, D.Independent) and isinstance(dist.base_dist, D.Normal)
    assert dist.event_shape == (9,) and dist.batch_shape == (64, 30)
    next_obs = data["next", "observation"]
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    noise = (next_obs - loc) / scale
    torch.testing.assert_close(loc + scale * noise, next_obs, rtol=0, atol=1e-9)
    deterministic = [0, 1, 2, 3, 6, 7, 8]
    assert (noise[..., deterministic] == 0).all()
    torch.testing.assert_close(
        scale[..., deterministic], torch.full_like(loc[..., deterministic], 1e-6)
    )
    # the inferred velocity noise is standard normal: the scale is the true one
    velocity_noise = noise[..., 4:6].reshape(-1)
    assert velocity_noise.mean().abs() < 0.05
    assert (velocity_noise.std() - 1).abs() < 0.05
    assert torch.isfinite(dist.log_prob(next_obs)).all()


def test_hand_true_model_forward_and_gradients():
    env = HandEnv(batch_size=[5], episode_steps=4, dtype=F64, seed=0)
    data = env.rollout(4)
    model = hand_dynamics_model(env)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        mean = model(data.clone())["next", "observation"]
    sample = model(data.clone())["next", "observation"]
    assert mean.shape == sample.shape == (5, 4, 9)
    assert not torch.equal(mean[..., 4:6], sample[..., 4:6])
    # gradients of the next ball velocity reach the action (through the damping) and the state
    action = data["action"].clone().requires_grad_()
    td = data.clone().set("action", action)
    loc = model.get_dist(td).mean
    (grad,) = torch.autograd.grad(loc[..., 4].sum(), action)
    torch.testing.assert_close(
        grad[..., 0],
        torch.full_like(grad[..., 0], env.params.dt * env.params.damping * env.params.max_speed),
    )


# --------------------------------------------------------------------------- LQG: known reward, true model, policy


def test_lqg_reward_module_and_true_model_reproduce_env():
    env = LQGEnv(batch_size=[32], dtype=F64, seed=0)
    actor = linear_gaussian_actor(2, 1, GAIN, LOG_STD, dtype=F64)
    data = env.rollout(20, actor)
    reward = lqg_reward_module(env)(data.clone())["next", "reward"]
    assert torch.equal(reward, data["next", "reward"])
    dist = lqg_dynamics_model(env).get_dist(data.clone())
    assert isinstance(dist, D.Independent) and dist.event_shape == (2,)
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    expected_loc = data["observation"] @ env.A.T + data["action"] @ env.B.T
    torch.testing.assert_close(loc, expected_loc, rtol=0, atol=1e-12)
    torch.testing.assert_close(scale, torch.full_like(loc, 0.1))
    noise = (data["next", "observation"] - loc) / scale
    torch.testing.assert_close(loc + scale * noise, data["next", "observation"], rtol=0, atol=1e-9)
    assert (noise.std() - 1).abs() < 0.1


def test_linear_gaussian_actor_is_exactly_linear():
    actor = linear_gaussian_actor(2, 1, GAIN, LOG_STD, dtype=F64)
    net = actor[0].module
    obs = torch.randn(6, 2, dtype=F64)
    td = TensorDict({"observation": obs}, [6])
    dist = actor.get_dist(td)
    torch.testing.assert_close(dist.mean, obs @ net.gain.T, rtol=0, atol=0)
    torch.testing.assert_close(dist.stddev, torch.full((6, 1), 0.3, dtype=F64))
    out = actor(td.clone())
    assert out["action"].shape == (6, 1) and out["action_log_prob"].shape == (6,)
    dist.log_prob(out["action"]).sum().backward()
    assert net.gain.grad is not None and net.log_std.grad is not None
    assert {name for name, _ in actor.named_parameters()} == {
        "module.0.module.gain",
        "module.0.module.log_std",
    }


# --------------------------------------------------------------------------- LQG: closed forms


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_lqg_expected_return_matches_monte_carlo(gamma):
    env = LQGEnv(batch_size=[20000], dtype=F64, seed=0)
    actor = linear_gaussian_actor(2, 1, GAIN, LOG_STD, dtype=F64)
    with torch.no_grad():
        data = env.rollout(env.horizon, actor)
    discount = gamma ** torch.arange(env.horizon, dtype=F64)
    returns = (data["next", "reward"].squeeze(-1) * discount).sum(-1)
    mc, stderr = returns.mean(), returns.std() / math.sqrt(returns.numel())
    expected = lqg_expected_return(env, *policy_params(), gamma=gamma)
    assert (mc - expected).abs() < 4 * stderr, (mc.item(), expected.item(), stderr.item())


def test_lqg_expected_return_gradient_is_exact():
    env = LQGEnv(dtype=F64, seed=0)
    gain, log_std = policy_params(requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda k, s: lqg_expected_return(env, k, s, gamma=0.95), (gain, log_std)
    )


def test_lqg_value_function_satisfies_bellman():
    gamma = 0.9
    env = LQGEnv(dtype=F64, seed=0)
    gain, log_std = policy_params()
    P, c = lqg_value_function(env, gain, log_std, gamma)
    torch.testing.assert_close(P, P.T)
    closed_loop = env.A + env.B @ gain
    action_cov = torch.diag(torch.exp(2 * log_std))
    torch.testing.assert_close(
        P, env.Q + gain.T @ env.R @ gain + gamma * closed_loop.T @ P @ closed_loop
    )
    critic = lqg_value_module(P, c)
    states = torch.randn(5, 2, dtype=F64)

    def value(s):
        return critic(TensorDict({"observation": s}, s.shape[:-1]))["state_value"]

    # closed-form expectation of r + gamma V(s') over a ~ pi(s) and the env noise
    mean_next = states @ closed_loop.T
    expected_reward = -(
        ((states @ env.Q) * states).sum(-1)
        + (((states @ gain.T) @ env.R) * (states @ gain.T)).sum(-1)
        + torch.trace(env.R @ action_cov)
    )
    next_cov = env.B @ action_cov @ env.B.T + torch.diag(env.noise_std**2)
    expected_next_value = value(mean_next).squeeze(-1) - torch.trace(P @ next_cov)
    torch.testing.assert_close(
        value(states).squeeze(-1), expected_reward + gamma * expected_next_value
    )
    # Monte Carlo through the actor, the true model, the reward module and the critic
    n = 20000
    actor = linear_gaussian_actor(2, 1, gain, log_std, dtype=F64)
    model, reward = lqg_dynamics_model(env), lqg_reward_module(env)
    td = TensorDict({"observation": states.unsqueeze(1).expand(5, n, 2)}, [5, n])
    with torch.no_grad():
        td = reward(model(actor(td)))
        target = td["next", "reward"] + gamma * value(td["next", "observation"])
    mc, stderr = target.squeeze(-1).mean(-1), target.squeeze(-1).std(-1) / math.sqrt(n)
    assert ((mc - value(states).squeeze(-1)).abs() < 4 * stderr).all()


def test_lqg_value_equals_long_horizon_discounted_return():
    gamma = 0.9
    state = [0.7, -1.2]
    env = LQGEnv(init_mean=state, init_std=0.0, dtype=F64, seed=0)
    gain, log_std = policy_params(requires_grad=True)
    P, c = lqg_value_function(env, gain, log_std, gamma)
    s = torch.tensor(state, dtype=F64)
    value = -(s @ P @ s) - c
    long_return = lqg_expected_return(env, gain, log_std, horizon=400, gamma=gamma)
    torch.testing.assert_close(value, long_return, rtol=1e-10, atol=1e-10)
    # and so are their policy gradients
    grads_v = torch.autograd.grad(value, [gain, log_std])
    grads_j = torch.autograd.grad(long_return, [gain, log_std])
    for gv, gj in zip(grads_v, grads_j, strict=True):
        torch.testing.assert_close(gv, gj, rtol=1e-8, atol=1e-8)


def test_lqg_value_function_errors():
    env = LQGEnv(A=[[1.5, 0.0], [0.0, 1.0]], dtype=F64)
    gain, log_std = policy_params()
    with pytest.raises(ValueError, match="spectral radius"):
        lqg_value_function(env, torch.zeros_like(gain), log_std, 0.99)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\)"):
        lqg_value_function(env, gain, log_std, 1.0)
    with pytest.raises(ValueError, match=r"gain must be \[1, 2\]"):
        lqg_expected_return(env, gain.T, log_std)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["hand", "lqg"])
def test_cuda(kind):
    env = make_env(kind, batch_size=[4], seed=0, device="cuda")
    check_env_specs(env)
    data = env.rollout(10)
    assert data["next", "observation"].device.type == "cuda"
    if kind == "hand":
        reward, model = hand_reward_module(env), hand_dynamics_model(env)
    else:
        reward, model = lqg_reward_module(env).to("cuda"), lqg_dynamics_model(env).to("cuda")
    assert torch.equal(reward(data.clone())["next", "reward"], data["next", "reward"])
    assert model.get_dist(data.clone()).mean.device.type == "cuda"
    cpu_env = make_env(kind, batch_size=[4], seed=0).to("cuda")
    assert cpu_env.rollout(3)["next", "observation"].device.type == "cuda"
