"""On-policy importance weights stay 1 where the TanhNormal policy saturates (float32).

The behaviour log-probability and the current policy's must score the same pre-tanh
value: the one :class:`~torchrl_svg.modules.TanhNormalActor` stores with each action.
Random warm-up steps of a plain TorchRL ``Collector(..., init_random_frames=N)`` carry
no policy outputs: they are refused, or given their uniform log-density by
:class:`~torchrl_svg.data.RandomActionLogProb`.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import Bounded, LazyTensorStorage, ReplayBuffer
from torchrl.envs import Compose, GymEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.data import ImportanceWeight, RandomActionLogProb, uniform_log_prob
from torchrl_svg.modules import GaussianDynamics, RewardModel, env_specs, make_actor, make_value
from torchrl_svg.objectives import HardUpdate, SVG1Loss, SVGLoss
from torchrl_svg.train.builders import REPLAY_KEYS, make_collector, make_env
from torchrl_svg.train.config import load_config

OBS, ACT = 3, 2
SPEC = Bounded(-2.0, 2.0, (ACT,))
LOCATIONS = [0.0, 4.0, 6.0, 8.0, 10.0]


def _saturating_actor(loc: float, spec=SPEC, obs_dim: int = OBS):
    """The package's actor with its pre-tanh location at ``loc`` (+- 0.05 by state) and scale 1."""
    actor = make_actor(obs_dim, spec, hidden_sizes=(8,))
    last = actor.module[0].module[0][-1]
    act = spec.shape[-1]
    with torch.no_grad():
        last.weight.mul_(0.01)
        last.bias.zero_()
        last.bias[:act] = loc  # the scale half stays at softplus-biased 0: scale 1
    return actor


@torch.no_grad()
def _on_policy(actor, batch: tuple[int, ...]) -> TensorDict:
    """Transitions (``[B]``) or sub-trajectories (``[B, T]``) whose actions the actor drew (float32)."""
    states = torch.randn(*batch[:-1], batch[-1] + 1, OBS)  # s_{t+1} is the next state of step t
    td = TensorDict({"observation": states[..., :-1, :]}, list(batch))
    with set_exploration_type(ExplorationType.RANDOM):
        td = actor(td)
    td.set(("next", "observation"), states[..., 1:, :])
    td.set(("next", "reward"), torch.randn(*batch, 1))
    td.set(("next", "done"), torch.zeros(*batch, 1, dtype=torch.bool))
    td.set(("next", "terminated"), torch.zeros(*batch, 1, dtype=torch.bool))
    return td.exclude("loc", "scale")


def _svg_loss(actor, horizon: int = 1, cls=SVGLoss):
    kwargs = {} if cls is SVG1Loss else {"horizon": horizon}
    loss = cls(
        actor,
        make_value(OBS, hidden_sizes=(8,)),
        GaussianDynamics(OBS, ACT, hidden_sizes=(8,)),
        RewardModel(OBS, ACT, hidden_sizes=(8,)),
        max_importance_weight=20.0,
        **kwargs,
    )
    loss.make_value_estimator(gamma=0.9)
    HardUpdate(loss, value_network_update_interval=50)
    return loss


@pytest.mark.parametrize("loc", LOCATIONS)
@pytest.mark.parametrize(
    "name, cls, horizon",
    [("svg1", SVG1Loss, 1), ("svg1_er", SVGLoss, 1), ("svgk", SVGLoss, 3)],
)
def test_on_policy_weights_of_the_losses_are_one_on_saturated_actions(loc, name, cls, horizon):
    actor = _saturating_actor(loc)
    data = _on_policy(actor, (256,) if horizon == 1 else (128, horizon))
    assert data["action"].dtype == torch.float32
    if loc >= 8:  # the float32 actions are on the bound: inverting them no longer gives u back
        inverse = torch.atanh((data["action"] / 2).clamp(-1 + 1e-7, 1 - 1e-7))
        assert ((inverse - data["action_pre_tanh"]).abs() > 0.5).float().mean() > 0.5
    loss = _svg_loss(actor, horizon, cls)
    _, meta = loss.actor_loss(data)
    torch.testing.assert_close(
        meta["step_weights"], torch.ones_like(meta["step_weights"]), rtol=0, atol=1e-3
    )
    weight = meta["importance_weight"]
    torch.testing.assert_close(weight, torch.ones_like(weight), rtol=0, atol=1e-3)
    assert loss(data)["importance_weight"].item() == pytest.approx(1.0, abs=1e-3)
    # the value term re-scores the policy itself when not given the actor's weights
    value_ones = loss.value_loss(
        data, step_weights=torch.ones(data.shape if horizon > 1 else (256, 1))
    )
    torch.testing.assert_close(loss.value_loss(data)[0], value_ones[0], rtol=1e-3, atol=0)


@pytest.mark.parametrize("loc", LOCATIONS)
def test_on_policy_weights_of_the_replay_transform_are_one_on_saturated_actions(loc):
    actor = _saturating_actor(loc)
    data = _on_policy(actor, (512,))
    weight = ImportanceWeight(actor, max_weight=20.0)(data.clone())["importance_weight"]
    torch.testing.assert_close(weight, torch.ones_like(weight), rtol=0, atol=1e-3)
    # and as a TorchRL replay buffer samples it
    rb = ReplayBuffer(
        storage=LazyTensorStorage(512), batch_size=128, transform=ImportanceWeight(actor)
    )
    rb.extend(data)
    sampled = rb.sample()["importance_weight"]
    torch.testing.assert_close(sampled, torch.ones_like(sampled), rtol=0, atol=1e-3)


def test_without_the_stored_pre_tanh_value_saturated_weights_collapse():
    """Why the actor stores it: the float32 action alone loses u, and the weights with it."""
    actor = _saturating_actor(8.0)
    data = _on_policy(actor, (512,)).exclude("action_pre_tanh")
    weight = ImportanceWeight(actor, max_weight=20.0)(data)["importance_weight"]
    assert weight.mean() < 0.5


# ------------------------------------------------------- users' own collectors
def _pendulum():
    return GymEnv("Pendulum-v1")


def _collect(actor, env, postproc=None) -> TensorDict:
    collector = Collector(
        env,
        actor,
        frames_per_batch=50,
        total_frames=150,
        init_random_frames=50,
        postproc=postproc,
        auto_register_policy_transforms=False,
    )
    data = torch.cat([batch.clone() for batch in collector])
    collector.shutdown()
    return data


@pytest.mark.slow
def test_random_warm_up_steps_of_a_plain_collector_are_refused():
    env = _pendulum()
    actor = _saturating_actor(6.0, env.action_spec, env_specs(env)[0].shape[-1])
    data = _collect(actor, env)
    # TorchRL leaves the policy's outputs at 0 on the random steps
    assert (data["action_log_prob"][:50] == 0).all()
    with pytest.raises(ValueError, match="init_random_frames.*RandomActionLogProb"):
        ImportanceWeight(actor)(data.clone())
    loss = SVGLoss(
        actor,
        make_value(3, hidden_sizes=(8,)),
        GaussianDynamics(3, 1, hidden_sizes=(8,)),
        RewardModel(3, 1, hidden_sizes=(8,)),
    )
    loss.make_value_estimator(gamma=0.9)
    HardUpdate(loss, value_network_update_interval=50)
    with pytest.raises(ValueError, match="50 of 150 transition.*RandomActionLogProb"):
        loss(data.select(*REPLAY_KEYS, strict=False))


@pytest.mark.parametrize("where", ["postproc", "replay_buffer"])
@pytest.mark.slow
def test_random_warm_up_steps_get_their_uniform_log_density(where):
    env = _pendulum()
    actor = _saturating_actor(6.0, env.action_spec, env_specs(env)[0].shape[-1])
    fill = RandomActionLogProb(env.action_spec)
    if where == "postproc":
        data = _collect(actor, env, postproc=fill)
    else:
        raw = _collect(actor, env)
        rb = ReplayBuffer(storage=LazyTensorStorage(200), transform=Compose(fill))
        rb.extend(raw)
        data = rb[:150]
    uniform = uniform_log_prob(env.action_spec)
    assert uniform.item() == pytest.approx(-torch.log(torch.tensor(4.0)).item())
    torch.testing.assert_close(data["action_log_prob"][:50], uniform.expand(50))
    torch.testing.assert_close(2.0 * torch.tanh(data["action_pre_tanh"]), data["action"])
    weight = ImportanceWeight(actor, max_weight=1e30)(data.clone())["importance_weight"]
    # policy steps: on-policy, 1
    torch.testing.assert_close(weight[50:], torch.ones(100), rtol=0, atol=1e-3)
    # warm-up steps: pi(a|s) / uniform, with pi scored by TorchRL's own TanhNormal
    with torch.no_grad():
        log_pi = actor.get_dist(data[:50].select("observation")).log_prob(data["action"][:50])
    torch.testing.assert_close(weight[:50].log(), log_pi - uniform, rtol=0, atol=1e-3)
    # applying it again changes nothing
    again = fill(data.clone())
    torch.testing.assert_close(again["action_log_prob"], data["action_log_prob"])


# ------------------------------------------------------------ the recipe's collector
@pytest.mark.slow
def test_the_recipe_collects_pre_tanh_values_that_give_on_policy_weights_of_one():
    cfg = load_config(
        [
            "env.name=Pendulum-v1",
            "algorithm=svg1_er",
            "collector.frames_per_batch=50",
            "collector.init_random_frames=50",
            "collector.total_frames=100",
        ]
    )
    env = make_env(cfg)
    actor = _saturating_actor(8.0, env.action_spec, 3)
    collector = make_collector(cfg, env, actor)
    data = torch.cat([batch.clone() for batch in collector]).select(*REPLAY_KEYS, strict=False)
    collector.shutdown()
    assert "action_pre_tanh" in data.keys()
    # the random steps carry their uniform density and pre-image (CollectionEnv.rand_action)
    torch.testing.assert_close(data["action_log_prob"][:50], torch.full((50,), -1.3862944))
    weight = ImportanceWeight(actor, max_weight=1e30)(data.clone())["importance_weight"]
    torch.testing.assert_close(weight[50:], torch.ones(50), rtol=0, atol=1e-3)
