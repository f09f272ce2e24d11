"""S2VG's actor through H imagined steps: the maths in float64, and the fast step."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import constant_step_ensemble, constant_step_loss
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_svg.envs import (
    LQGEnv,
    linear_gaussian_actor,
    lqg_dynamics_model,
    lqg_reward_module,
    lqg_value_function,
    lqg_value_module,
)
from torchrl_svg.modules import make_qvalue
from torchrl_svg.objectives import S2VGLoss
from torchrl_svg.objectives.functional import soft_model_return

DTYPE = torch.float64


def analytic_h_step_return(
    env, gain, log_std, starts, horizon, gamma, alpha, P, c, model_noise=True
):
    """E[sum_{t<H} gamma^t (r_t + alpha H[pi]) + gamma^H V(s_H)], averaged over start states.

    The state stays Gaussian under the linear-Gaussian policy and the true model: mean
    m_{t+1} = (A + BK) m_t per start state, covariance S_{t+1} = A_K S_t A_K^T + B Sigma_a
    B^T + Sigma_w from S_0 = 0 (Sigma_w = 0 for steps that follow the model's mean); the
    policy's entropy does not depend on the state.
    """
    A, B, Q, R = env.A, env.B, env.Q, env.R
    action_cov = torch.diag(torch.exp(2 * log_std))
    noise_cov = torch.diag(env.noise_std**2) * float(model_noise)
    closed_loop = A + B @ gain
    entropy = (0.5 * math.log(2 * math.pi * math.e) + log_std).sum()
    mean = starts  # [N, n]
    cov = torch.zeros_like(A)
    total = torch.zeros((), dtype=DTYPE)
    for t in range(horizon):
        action_mean = mean @ gain.T
        state_cost = torch.trace(Q @ cov) + ((mean @ Q) * mean).sum(-1)
        action_cost = torch.trace(R @ (gain @ cov @ gain.T + action_cov)) + (
            (action_mean @ R) * action_mean
        ).sum(-1)
        total = total + gamma**t * (-(state_cost + action_cost) + alpha * entropy)
        mean = mean @ closed_loop.T
        cov = closed_loop @ cov @ closed_loop.T + B @ action_cov @ B.T + noise_cov
    final_value = -(torch.trace(P @ cov) + ((mean @ P) * mean).sum(-1)) - c
    return (total + gamma**horizon * final_value).mean()


@pytest.mark.parametrize(
    "horizon, model_noise", [(1, True), (2, True), (4, True), (1, False), (4, False)]
)
def test_h_step_soft_surrogate_gradient_is_the_analytic_gradient(horizon, model_noise):
    # the LQG task with its true model, known reward and a fixed quadratic critic: the
    # pathwise gradient of the H-step soft return is an unbiased estimate of the exact one;
    # with the model's mean next states, of the exact one without process noise
    torch.manual_seed(0)
    gamma, alpha = 0.9, 0.3
    env = LQGEnv(dtype=DTYPE)
    gain = torch.tensor([[-0.2, -0.6]], dtype=DTYPE)
    log_std = torch.tensor([-0.7], dtype=DTYPE)
    P, c = lqg_value_function(env, torch.tensor([[-0.1, -0.4]], dtype=DTYPE), log_std, gamma)
    actor = linear_gaussian_actor(2, 1, gain=gain, log_std=log_std, dtype=DTYPE)
    loss = S2VGLoss(
        actor,
        make_qvalue(2, 1, hidden_sizes=(4,)).to(DTYPE),
        lqg_value_module(P, c),
        lqg_dynamics_model(env),
        lqg_reward_module(env),
        actor_horizon=horizon,
        actor_model_noise=model_noise,
        alpha_init=alpha,
        fixed_alpha=True,
    )
    loss.make_value_estimator(gamma=gamma)
    starts = torch.randn(8, 2, dtype=DTYPE)
    copies = 50_000
    batch = TensorDict({"observation": starts.repeat(copies, 1)}, [8 * copies])
    loss_actor, _ = loss.actor_loss(batch)
    params = [actor[0].module.gain, actor[0].module.log_std]
    estimate = torch.autograd.grad(-loss_actor, params)
    gain_ = gain.clone().requires_grad_()
    log_std_ = log_std.clone().requires_grad_()
    exact = torch.autograd.grad(
        analytic_h_step_return(
            env, gain_, log_std_, starts, horizon, gamma, alpha, P, c, model_noise
        ),
        [gain_, log_std_],
    )
    for e, x in zip(estimate, exact, strict=True):
        torch.testing.assert_close(e, x, rtol=0.02, atol=0.02 * float(x.abs().max()))
    # and the objective itself, which the process noise changes (V of the spread-out states)
    objective = analytic_h_step_return(
        env, gain, log_std, starts, horizon, gamma, alpha, P, c, model_noise
    )
    torch.testing.assert_close(-loss_actor, objective, rtol=0.01, atol=0.0)
    other = analytic_h_step_return(
        env, gain, log_std, starts, horizon, gamma, alpha, P, c, not model_noise
    )
    # ... and the estimate is far nearer its own objective than the other one
    assert abs(float(-loss_actor.detach() - objective)) < 0.2 * abs(float(objective - other))


def test_soft_model_return_with_a_distrusted_step_stops_with_the_value():
    one = torch.ones(1, dtype=DTYPE)
    rewards, log_probs, conts = [one, 2 * one, 3 * one], [0 * one] * 3, [one] * 3
    values = [10 * one, 20 * one, 30 * one]
    final = 40 * one
    # step 1's transition is not trusted: r_0 + gamma V(s_1)
    trusted = [one, 0 * one, one]
    got = soft_model_return(rewards, log_probs, conts, final, 0.0, 0.5, values, trusted)
    torch.testing.assert_close(got, 1 + 0.5 * 20 * one)
    # all trusted: the plain H-step return
    got = soft_model_return(rewards, log_probs, conts, final, 0.0, 0.5, values, [one] * 3)
    torch.testing.assert_close(got, (1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 40) * one)
    # a terminal continuation after step 0 removes everything later
    got = soft_model_return(rewards, log_probs, [0 * one, one, one], final, 0.0, 0.5)
    torch.testing.assert_close(got, one)


def imagined_steps(loss: S2VGLoss, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The actor loss from zero states and each imagined step's move ``s' - s``, ``[H, B]``."""
    seen = []
    original = loss._model_step

    def record(state, action, *args):
        reward, next_state = original(state, action, *args)
        seen.append((next_state - state).squeeze(-1))
        return reward, next_state

    loss._model_step = record
    loss_actor, _ = loss.actor_loss(TensorDict({"observation": torch.zeros(batch, 1)}, [batch]))
    return loss_actor, torch.stack(seen)


def test_one_ensemble_member_per_rollout():
    # the actor's imagined rollout keeps the member drawn for it: with members that predict
    # different constant steps, every transition of a rollout moves by its member's step
    from torchrl.data import Bounded

    from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value

    spec = Bounded(-1.0, 1.0, (1,))
    # log std soft-clamped to exp(-5): noise below 0.05
    loss = constant_step_loss(-20.0, ensemble_members="rollout")
    steps = imagined_steps(loss, 64)[1].round()  # [H, B]: the member of each step, plus one
    assert set(steps[0].tolist()) == {1.0, 2.0, 3.0}  # members differ across rollouts
    assert torch.equal(steps, steps[:1].expand_as(steps))  # ... not along one
    with pytest.raises(ValueError, match="rollout"):
        S2VGLoss(
            make_actor(1, spec, hidden_sizes=(4,)),
            make_qvalue(1, 1, hidden_sizes=(4,)),
            make_value(1, hidden_sizes=(4,)),
            GaussianDynamics(1, 1, hidden_sizes=(4,)),
            RewardModel(1, 1, hidden_sizes=(4,)),
            ensemble_members="rollout",
        )


@pytest.mark.parametrize("model_noise", [True, False])
def test_actor_steps_follow_the_model_mean_without_model_noise(model_noise):
    # members that move the state by 1, 2 or 3 with unit noise: with actor_model_noise=False
    # every imagined step moves by exactly its member's mean, with it the steps are spread
    torch.manual_seed(0)
    loss = constant_step_loss(0.0, actor_model_noise=model_noise)
    loss_actor, steps = imagined_steps(loss, 256)  # steps: [H, B]
    off_the_mean = (steps - steps.round()).abs().max()
    if model_noise:
        assert off_the_mean > 0.3 and steps.std() > 0.9
    else:
        assert off_the_mean < 1e-5 and set(steps.round().unique().tolist()) == {1.0, 2.0, 3.0}
    loss_actor.backward()  # the chain stays differentiable for the actor
    assert all(
        p.grad is not None for p in loss.actor_network_params.values(True, True) if p.requires_grad
    )


@pytest.mark.slow
def test_multistep_example_resolves_and_trains(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from torchrl_svg.train import load_config

    root = Path(__file__).resolve().parents[1]
    config = root / "examples" / "configs" / "s2vg_multistep.yaml"
    cfg = load_config([], config_file=config)
    assert (cfg.loss.actor_horizon, cfg.model.ensemble_size, cfg.loss.ensemble_members) == (
        5,
        5,
        "rollout",
    )
    assert cfg.loss.alpha_init == 0.4 and cfg.loss.updates_per_step == 5  # the preset's
    assert cfg.loss.fixed_alpha is False  # the example's: alpha learned towards -|A|
    run_dir = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrl_svg.train",
            "--defaults",
            str(config),
            "env.name=Pendulum-v1",
            "collector.total_frames=120",
            "collector.init_random_frames=100",
            "model.pretrain_updates=5",
            "network.actor_hidden_sizes=[16]",
            "network.critic_hidden_sizes=[16]",
            "model.hidden_sizes=[16]",
            "eval.episodes=1",
            "eval.max_steps=20",
            "logger.backend=none",
            "logger.progress=false",
            f"logger.run_dir={run_dir}",
        ],
        check=True,
        cwd=root,
        capture_output=True,
    )
    assert (run_dir / "eval.csv").read_text().count("\n") >= 2


def test_an_error_inside_a_loss_is_not_hidden_by_the_parameter_swap():
    # tensordict's to_module context turns an interrupt (KeyboardInterrupt, SystemExit) that
    # leaves it into "Converting a tensordict to boolean value is not permitted": the losses
    # must let the real one through
    from torchrl.data import Bounded

    from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value

    class Broken(KeyboardInterrupt):  # e.g. Ctrl-C in the middle of a network call
        pass

    value = make_value(1, hidden_sizes=(4,))
    loss = S2VGLoss(
        make_actor(1, Bounded(-1.0, 1.0, (1,)), hidden_sizes=(4,)),
        make_qvalue(1, 1, hidden_sizes=(4,)),
        value,
        GaussianDynamics(1, 1, hidden_sizes=(4,)),
        RewardModel(1, 1, hidden_sizes=(4,)),
    )
    loss.make_value_estimator(gamma=0.9)

    def fail(*args, **kwargs):
        raise Broken("from inside the value network")

    loss.value_network.module.register_forward_hook(fail)
    with pytest.raises(Broken, match="inside the value network"):
        loss.value_loss(TensorDict({"observation": torch.zeros(4, 1)}, [4]))
    with pytest.raises(Broken, match="inside the value network"):
        loss.actor_loss(TensorDict({"observation": torch.zeros(4, 1)}, [4]))


def test_imagined_states_are_clipped_to_the_observation_bounds():
    # members move the state by 1, 2 or 3 per step from 0: the actor's three steps reach 3 to
    # 9 without bounds; with the box (-inf, 2.5] every imagined state stays in it, as the
    # critic targets' imagined steps do
    torch.manual_seed(0)
    batch = TensorDict({"observation": torch.zeros(64, 1)}, [64])
    free = constant_step_loss(-20.0, ensemble_members="rollout")
    assert free._actor_rollout(batch)["final_state"].min() > 2.9
    box = (torch.tensor([-float("inf")]), torch.tensor([2.5]))
    loss = constant_step_loss(-20.0, ensemble_members="rollout", observation_bounds=box)
    rollout = loss._actor_rollout(batch)
    assert rollout["final_state"].max() <= 2.5 and rollout["final_state"].min() > 2.4
    assert "observation_low" not in loss.state_dict()  # from the constructor, as the horizon
    expansion = constant_step_loss(-20.0, horizon=3, observation_bounds=box)
    SoftUpdate(expansion, tau=0.1)
    real = {
        "observation": torch.zeros(64, 1),
        "action": torch.zeros(64, 1),
        ("next", "observation"): torch.full((64, 1), 2.0),
        ("next", "reward"): torch.zeros(64, 1),
        ("next", "done"): torch.zeros(64, 1, dtype=torch.bool),
        ("next", "terminated"): torch.zeros(64, 1, dtype=torch.bool),
    }
    states = expansion.value_expansion(TensorDict(real, [64]))["observation"]  # [H, B, 1]
    assert states[2].max() <= 2.5 and states[2].min() > 2.4
    # a replay transform that imagines the critic's steps, and an imagined environment
    from torchrl.data import Bounded, Unbounded

    from torchrl_svg.data import ModelRollout
    from torchrl_svg.envs import WorldModelEnv
    from torchrl_svg.modules import RewardModel, make_actor

    actor = make_actor(1, Bounded(-1.0, 1.0, (1,)), hidden_sizes=(4,))
    models = (actor, constant_step_ensemble(), RewardModel(1, 1, hidden_sizes=(4,)))
    for bounds in (None, box):
        rollout = ModelRollout(*models, steps=2, observation_bounds=bounds)
        imagined = rollout(TensorDict(real, [64]))["imagined", "next", "observation"]
        env = WorldModelEnv(
            *models[1:],
            observation_spec=Unbounded((1,)),
            action_spec=Bounded(-1.0, 1.0, (1,)),
            initial_observations=torch.zeros(1),
            batch_size=[16],
            observation_bounds=bounds,
        )
        observed = env.rollout(3, actor)["next", "observation"][:, -1]  # after three steps
        if bounds is None:  # past 2.5 from the first imagined step (from 2), or by the third
            assert imagined.min() > 2.9 and observed.min() > 2.9
        else:
            assert imagined.max() <= 2.5 and observed.max() <= 2.5


@pytest.mark.parametrize(
    "box, message",
    [
        ((torch.zeros(2), torch.ones(2)), r"low must have shape \[1\], got \(2,\)"),
        ((torch.ones(1), torch.zeros(1)), "need low <= high"),
        ((torch.zeros(1),), "must be a \\(low, high\\) pair"),
    ],
)
def test_observation_bounds_are_checked(box, message):
    with pytest.raises(ValueError, match="S2VGLoss: observation_bounds " + message):
        constant_step_loss(0.0, observation_bounds=box)


@pytest.mark.parametrize("mean", [False, True])
def test_critic_targets_from_the_ensemble_mean(mean):
    # the value expansion's imagined steps: one member per sample (steps of 1, 2 or 3), or,
    # with expansion_ensemble_mean, the members' average prediction (a step of 2 everywhere)
    from torchrl.data import Bounded

    from torchrl_svg.data import ModelRollout
    from torchrl_svg.modules import RewardModel, make_actor, make_value

    spec = Bounded(-1.0, 1.0, (1,))
    actor, reward = make_actor(1, spec, hidden_sizes=(4,)), RewardModel(1, 1, hidden_sizes=(4,))
    dynamics = constant_step_ensemble()
    loss = S2VGLoss(
        actor,
        make_qvalue(1, 1, hidden_sizes=(4,)),
        make_value(1, hidden_sizes=(4,)),
        dynamics,
        reward,
        horizon=3,
        expansion_ensemble_mean=mean,
    )
    loss.make_value_estimator(gamma=0.9)
    SoftUpdate(loss, tau=0.1)
    batch = TensorDict(
        {
            "observation": torch.zeros(256, 1),
            "action": torch.zeros(256, 1),
            ("next", "observation"): torch.zeros(256, 1),
            ("next", "reward"): torch.zeros(256, 1),
            ("next", "done"): torch.zeros(256, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(256, 1, dtype=torch.bool),
        },
        [256],
    )
    states = loss.value_expansion(batch)["observation"].squeeze(-1)  # [H, B]
    steps = (states[2] - states[1]).round()
    if mean:
        assert set(steps.tolist()) == {2.0}
    else:
        assert set(steps.tolist()) == {1.0, 2.0, 3.0}
    # the same from a replay transform that imagines the steps at sample time
    rollout = ModelRollout(
        actor, dynamics, reward, steps=2, ensemble_reduction="average" if mean else None
    )
    imagined = rollout(batch.clone())["imagined", "next", "observation"].squeeze(-1)
    assert set((imagined[:, 0] - batch["next", "observation"].squeeze(-1)).round().tolist()) == (
        {2.0} if mean else {1.0, 2.0, 3.0}
    )


def test_critic_targets_from_the_ensemble_mean_are_refused_where_they_do_nothing():
    from torchrl.data import Bounded

    from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value

    spec = Bounded(-1.0, 1.0, (1,))

    def build(dynamics, horizon):
        return S2VGLoss(
            make_actor(1, spec, hidden_sizes=(4,)),
            make_qvalue(1, 1, hidden_sizes=(4,)),
            make_value(1, hidden_sizes=(4,)),
            dynamics,
            RewardModel(1, 1, hidden_sizes=(4,)),
            horizon=horizon,
            expansion_ensemble_mean=True,
        )

    with pytest.raises(ValueError, match="ensemble_size=1, horizon=3"):
        build(GaussianDynamics(1, 1, hidden_sizes=(4,)), 3)
    with pytest.raises(ValueError, match="horizon >= 2"):
        build(constant_step_ensemble(), 1)
    with pytest.raises(ValueError, match="'sample', 'mean' or 'average'"):
        GaussianDynamics(1, 1, hidden_sizes=(4,), ensemble_reduction="median")


def test_average_reduction_leaves_the_disagreement_out():
    from torchrl_svg.modules import GaussianDynamics

    model = GaussianDynamics(2, 1, hidden_sizes=(8,), ensemble_size=4)
    data = TensorDict({"observation": torch.randn(32, 2), "action": torch.randn(32, 1)}, [32])
    loc, log_std = model.normalized_params(data)
    std = model.target_normalizer.std
    for reduction, var in (
        ("average", log_std.exp().pow(2).mean(0)),
        ("mean", log_std.exp().pow(2).mean(0) + loc.var(0, unbiased=False)),
    ):
        dist = model.get_dist(data, ensemble_reduction=reduction)
        base = data["observation"] + model.target_normalizer.mean
        torch.testing.assert_close((dist.mean - base) / std, loc.mean(0))
        torch.testing.assert_close(dist.base_dist.scale / std, var.sqrt())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss.expansion_ensemble_mean=true"], "needs model.ensemble_size >= 2 and loss.horizon"),
        (
            ["loss.expansion_ensemble_mean=true", "model.ensemble_size=3"],
            "got 3 and 1",
        ),
        (["loss.disagreement_bound=0.5"], "loss.disagreement_bound needs model.ensemble_size"),
        (
            [
                "loss.ensemble_members=rollout",
                "model.ensemble_size=3",
                "model.ensemble_reduction=mean",
            ],
            "model.ensemble_reduction=sample",
        ),
        (
            ["env.name=HalfCheetah-v5", "loss.observation_bounds=known"],
            "observation clipping is known .*'HalfCheetah-v5' has none",
        ),
    ],
)
def test_the_recipe_refuses_model_switches_without_what_they_need(overrides, message):
    from torchrl_svg.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(overrides)
    load_config(  # with what they need, they are accepted
        ["loss.expansion_ensemble_mean=true", "model.ensemble_size=3", "loss.horizon=2"]
    )
    load_config(["env.name=Walker2d-v5", "loss.observation_bounds=known"])
