"""Details of the SVG paper the losses and the recipe follow.

* the value target is copied every C updates (Algorithm 4), not every C + 1;
* the App. D KL penalty is KL[current policy || policy at the start of the replay steps];
* every loss refuses a batch without ("next", "terminated") instead of using done;
* the known termination rules are Gymnasium's, for every MuJoCo task that terminates;
* an ensemble that draws a member per sample rebuilds the real next state from the
  model noise of ModelNoiseInference (same member in the transform and the loss).
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, make_batch, make_s2vg, make_svg, make_svg0
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.objectives import SoftUpdate

from torchrl_svg.data import ModelNoiseInference
from torchrl_svg.modules import (
    KNOWN_TERMINATION_ENVS,
    GaussianDynamics,
    RewardModel,
    make_actor,
    make_value,
    mountain_car_continuous_terminated,
    termination_for_env,
)
from torchrl_svg.objectives import HardUpdate, SVGInfLoss, SVGLoss
from torchrl_svg.objectives._unroll import unroll_real


# ------------------------------------------------------------------ HardUpdate
@pytest.mark.parametrize("interval", [1, 3, 50])
def test_hard_update_copies_the_target_every_c_updates(interval):
    loss = make_svg()
    updater = HardUpdate(loss, value_network_update_interval=interval)
    copies = []
    for update in range(1, 2 * interval + 1):
        with torch.no_grad():  # an optimiser step
            loss.value_network_params.apply(lambda p: p.add_(0.01))
        updater.step()
        same = (loss.value_network_params == loss.target_value_network_params).all()
        copies.append(update) if bool(same) else None
    assert copies == [interval, 2 * interval]
    assert updater.state_dict()["counter"] == 0


def test_hard_update_refuses_a_non_positive_interval():
    with pytest.raises(ValueError, match="positive integer"):
        HardUpdate(make_svg(), value_network_update_interval=0)


def test_the_recipe_copies_the_value_target_every_c_updates():
    from torchrl_svg.modules import env_specs
    from torchrl_svg.train.agents import make_agent
    from torchrl_svg.train.builders import make_env
    from torchrl_svg.train.config import load_config

    cfg = load_config(["algorithm=svg1_er", "env.name=Pendulum-v1", "svg.value_target_interval=7"])
    env = make_env(cfg)
    agent = make_agent(cfg, *env_specs(env), "cpu", env=env)
    env.close()
    assert isinstance(agent.target_updater, HardUpdate)
    assert agent.target_updater.value_network_update_interval == 7


# ------------------------------------------------------------------ KL penalty
def test_kl_penalty_follows_app_d_by_default():
    loss = make_svg(kl_coef=1.0)
    assert loss.kl_direction == "current_reference"
    data = make_batch((64,))
    with torch.no_grad():
        loss.actor_network_params.apply(lambda p: p.add_(0.2 * torch.randn_like(p)))
    kl = loss.kl_loss(data)
    (grad,) = torch.autograd.grad(
        kl, [loss.actor_network_params["module", "0", "module", "0", "0", "bias"]]
    )
    assert kl.item() > 0 and grad.abs().sum() > 0  # the penalty moves the current policy only
    other = make_svg(kl_coef=1.0, kl_direction="reference_current")
    other.load_state_dict(loss.state_dict())
    assert other.kl_loss(data).item() != pytest.approx(kl.item(), rel=1e-3)
    with pytest.raises(ValueError, match="kl_direction"):
        make_svg(kl_coef=1.0, kl_direction="forward")


# --------------------------------------------------------- ("next", "terminated")
TERMINATED = re.escape("('next', 'terminated')")


def _svg0():
    loss = make_svg0()
    SoftUpdate(loss, tau=0.1)
    return loss


def _svg(horizon):
    loss = make_svg(horizon=horizon)
    HardUpdate(loss, value_network_update_interval=5)
    return loss


def _s2vg():
    loss = make_s2vg(learned_termination=False)
    SoftUpdate(loss, tau=0.1)
    return loss


@pytest.mark.parametrize(
    "name, build, shape",
    [
        ("SVG0Loss", _svg0, (8,)),
        ("SVGLoss", lambda: _svg(1), (8,)),
        ("SVGLoss", lambda: _svg(2), (4, 2)),
        ("S2VGLoss", _s2vg, (8,)),
    ],
)
def test_every_loss_refuses_a_batch_without_terminated(name, build, shape):
    loss = build()
    data = make_batch(shape)
    loss(data.clone())  # with the flags: fine
    with pytest.raises(KeyError, match=f"{name} needs the entry {TERMINATED}.*truncation"):
        loss(data.exclude(("next", "terminated")))


def test_the_loss_terms_called_alone_refuse_a_batch_without_terminated():
    data = make_batch((8,)).exclude(("next", "terminated"))
    with pytest.raises(KeyError, match=TERMINATED):
        _svg0().qvalue_loss(data)
    svg = _svg(1)
    with pytest.raises(KeyError, match=TERMINATED):
        svg.value_loss(data)
    with pytest.raises(KeyError, match=TERMINATED):
        svg.actor_loss(data)


def test_svginf_does_not_bootstrap_and_reads_done_only():
    nets_actor = make_actor(OBS_DIM, Bounded(-1.0, 1.0, (ACT_DIM,)), hidden_sizes=(8,))
    loss = SVGInfLoss(
        nets_actor,
        GaussianDynamics(OBS_DIM, ACT_DIM, hidden_sizes=(8,)),
        RewardModel(OBS_DIM, ACT_DIM, hidden_sizes=(8,)),
    )
    loss.make_value_estimator(gamma=0.9)
    data = make_batch((3, 5))
    torch.manual_seed(1)
    with_flags = loss(data.clone())["loss_actor"]
    torch.manual_seed(1)
    without = loss(data.exclude(("next", "terminated")))["loss_actor"]
    torch.testing.assert_close(with_flags, without)


# ------------------------------------------------------------ known termination
GYM_TASKS = sorted(
    name
    for name in KNOWN_TERMINATION_ENVS
    if name not in ("Hand-v0", "LQG-v0", "Pendulum-v1", "Pusher-v4")  # Pusher-v4 needs mujoco<3
)
TERMINATING = {
    "Hopper",
    "Walker2d",
    "Ant",
    "Humanoid",
    "InvertedPendulum",
    "InvertedDoublePendulum",
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Gymnasium's notice on the v4 tasks
@pytest.mark.parametrize("env_name", GYM_TASKS)
def test_known_termination_is_gymnasiums_rule(env_name):
    env = gym.make(env_name)
    term = termination_for_env(env_name)
    rng = np.random.default_rng(0)
    observations, flags = [], []
    obs, _ = env.reset(seed=0)
    for _ in range(400):
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        observations.append(obs)
        flags.append(terminated)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    flags = torch.tensor(flags)
    if env_name.split("-")[0] in TERMINATING:
        assert flags.any() and not flags.all()
    td = TensorDict(
        {("next", "observation"): torch.as_tensor(np.stack(observations), dtype=torch.float32)},
        [len(observations)],
    )
    assert torch.equal(term.probability(td).squeeze(-1).bool(), flags)


def test_mountain_car_terminates_at_the_goal_moving_right():
    obs = torch.tensor([[0.46, 0.01], [0.46, -0.01], [0.40, 0.05], [0.45, 0.0]])
    assert mountain_car_continuous_terminated(obs).tolist() == [True, False, False, True]


@pytest.mark.parametrize("env_name", ["BipedalWalker-v3", "MyTask-v0", "Hopper-v3"])
def test_known_termination_is_refused_for_tasks_without_a_rule(env_name):
    with pytest.raises(ValueError, match=f"No known termination rule for '{env_name}'.*learned"):
        termination_for_env(env_name)


# --------------------------------------------------------- ensembles drawing members
def _ensemble_episodes(dtype=torch.float64):
    model = GaussianDynamics(
        OBS_DIM, ACT_DIM, hidden_sizes=(16,), ensemble_size=5, ensemble_reduction="sample"
    ).to(dtype)
    data = make_batch((6, 4), dtype=dtype)
    model.update_normalizer(data)
    return model, data


def test_model_noise_inference_and_the_loss_use_the_same_ensemble_member():
    model, data = _ensemble_episodes()
    actor = make_actor(OBS_DIM, Bounded(-1.0, 1.0, (ACT_DIM,)), hidden_sizes=(8,)).double()
    loss = SVGInfLoss(actor, model, RewardModel(OBS_DIM, ACT_DIM, hidden_sizes=(8,)).double())
    loss.make_value_estimator(gamma=1.0)
    inferred = ModelNoiseInference(model)(data.clone())
    assert inferred["ensemble_member"].shape == (6, 4)
    assert len(inferred["ensemble_member"].unique()) > 1
    # each rebuilt next state is the real one (states are the real observations at each step)
    for t in range(4):
        unroll = unroll_real(loss, inferred[:, t : t + 1], 1, "inferred")
        torch.testing.assert_close(
            unroll["final_state"], data["next", "observation"][:, t], rtol=0, atol=1e-10
        )
    # model noise without the member that inferred it cannot be used
    with pytest.raises(KeyError, match="ensemble_member"):
        unroll_real(loss, inferred.exclude("ensemble_member"), 4, "inferred")


def test_svg_loss_rebuilds_real_next_states_with_a_sampling_ensemble():
    model, data = _ensemble_episodes(torch.float32)
    loss = SVGLoss(
        make_actor(OBS_DIM, Bounded(-1.0, 1.0, (ACT_DIM,)), hidden_sizes=(8,)),
        make_value(OBS_DIM, hidden_sizes=(8,)),
        model,
        RewardModel(OBS_DIM, ACT_DIM, hidden_sizes=(8,)),
    )
    loss.make_value_estimator(gamma=0.9)
    flat = data.reshape(-1)
    inferred = ModelNoiseInference(model)(flat.clone())
    unroll = unroll_real(loss, inferred.unsqueeze(-1), 1, "inferred")
    torch.testing.assert_close(
        unroll["final_state"], flat["next", "observation"], rtol=0, atol=1e-4
    )
