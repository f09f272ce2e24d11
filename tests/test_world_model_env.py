"""WorldModelEnv: specs, rollouts, sampling modes, exactness with a known model, starts, collectors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer, Unbounded
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type

from torchrl_svg.envs import (
    LQGEnv,
    WorldModelEnv,
    linear_gaussian_actor,
    lqg_dynamics_model,
    lqg_reward_module,
)
from torchrl_svg.envs.lqg import lqg_reward
from torchrl_svg.modules import (
    GaussianDynamics,
    KnownTermination,
    LearnedTermination,
    RewardModel,
    Termination,
    make_actor,
)

F64 = torch.float64
OBS, ACT, N, H = 3, 1, 4, 5
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "imagined_rollouts.py"


def specs(obs_dim: int = OBS, act_dim: int = ACT):
    obs_spec = Unbounded(shape=(obs_dim,))
    act_spec = Bounded(-2 * torch.ones(act_dim), 2 * torch.ones(act_dim), (act_dim,))
    return obs_spec, act_spec


def learned_env(*, termination=None, batch_size=(N,), **kwargs) -> WorldModelEnv:
    """Small learned models with normalisers set on random data."""
    dynamics = GaussianDynamics(OBS, ACT, hidden_sizes=(8,))
    reward = RewardModel(OBS, ACT, hidden_sizes=(8,))
    data = TensorDict(
        {
            "observation": torch.randn(64, OBS),
            "action": torch.rand(64, ACT) * 4 - 2,
            ("next", "observation"): torch.randn(64, OBS),
            ("next", "reward"): torch.randn(64, 1),
        },
        [64],
    )
    dynamics.update_normalizer(data)
    reward.update_normalizer(data)
    obs_spec, act_spec = specs()
    kwargs.setdefault("initial_observations", data)
    return WorldModelEnv(
        dynamics,
        reward,
        termination,
        observation_spec=obs_spec,
        action_spec=act_spec,
        batch_size=batch_size,
        **kwargs,
    )


def actor_for(env: WorldModelEnv):
    return make_actor(env.observation_dim, specs()[1], hidden_sizes=(8,))


def lqg_pair(batch_size=(N,), **kwargs) -> tuple[LQGEnv, WorldModelEnv]:
    real = LQGEnv(dtype=F64, seed=0, batch_size=batch_size)
    kwargs.setdefault("initial_observations", real.init_mean)
    env = WorldModelEnv.from_env(real, lqg_dynamics_model(real), lqg_reward_module(real), **kwargs)
    return real, env


def lqg_actor(log_std: float = -1.0):
    return linear_gaussian_actor(2, 1, gain=[[-0.1, -0.5]], log_std=log_std, dtype=F64)


def starts_td(obs: torch.Tensor) -> TensorDict:
    return TensorDict({"observation": obs}, obs.shape[:-1])


# ---------------------------------------------------------------------- specs


@pytest.mark.parametrize("batch_size", [(), (N,)])
@pytest.mark.parametrize("max_steps", [None, 3])
@pytest.mark.parametrize("termination", [None, "learned"])
def test_check_env_specs(batch_size, max_steps, termination):
    term = LearnedTermination(OBS, hidden_sizes=(8,)) if termination else None
    env = learned_env(termination=term, batch_size=batch_size, max_steps=max_steps, seed=0)
    check_env_specs(env, seed=0)
    assert env.batch_size == torch.Size(batch_size)
    assert env.observation_spec["observation"].shape == (*batch_size, OBS)
    assert ("step_count" in env.observation_spec.keys()) == (max_steps is not None)


def test_check_env_specs_known_model_float64():
    _, env = lqg_pair(max_steps=4)
    check_env_specs(env, seed=0)
    assert env.observation_spec["observation"].dtype == F64
    assert env.reward_spec.dtype == F64


def test_from_env_copies_the_real_specs():
    real = LQGEnv(dtype=F64, batch_size=[2], seed=0)
    env = WorldModelEnv.from_env(
        real, lqg_dynamics_model(real), lqg_reward_module(real), initial_observations=real.init_mean
    )
    assert env.batch_size == real.batch_size
    assert env.action_spec == real.action_spec
    assert set(env.full_done_spec.keys()) == set(real.full_done_spec.keys())
    assert env.observation_spec["observation"].shape == real.observation_spec["observation"].shape


# ------------------------------------------------------------------- rollouts


def test_batched_rollout_shapes_with_probabilistic_actor():
    env = learned_env(max_steps=H, seed=0)
    data = env.rollout(100, actor_for(env))
    assert data.batch_size == (N, H)
    assert data["observation"].shape == data["next", "observation"].shape == (N, H, OBS)
    assert data["action"].shape == (N, H, ACT)
    assert data["action_log_prob"].shape == (N, H)
    for key in ("reward", "done", "terminated", "truncated", "step_count"):
        assert data["next", key].shape == (N, H, 1)
    assert data["next", "truncated"][:, -1].all() and not data["next", "truncated"][:, :-1].any()
    assert torch.equal(data["next", "step_count"][0, :, 0], torch.arange(1, H + 1))
    assert not data["next", "terminated"].any()
    # consecutive steps chain: s_{t+1} of step t is the observation of step t+1
    assert torch.equal(data["next", "observation"][:, :-1], data["observation"][:, 1:])


def test_rollout_is_a_markov_chain_of_the_model():
    """Every imagined step is the model's mean prediction at the recorded (s, a)."""
    env = learned_env(max_steps=H, seed=0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        data = env.rollout(H, actor_for(env))
        mean = env.dynamics_model.get_dist(data.exclude("next")).mean
        reward = env.reward_model.get_dist(data.exclude("next")).mean
    torch.testing.assert_close(data["next", "observation"], mean)
    torch.testing.assert_close(data["next", "reward"], reward)


def test_deterministic_mode_repeats_and_random_mode_samples():
    env = learned_env(max_steps=H, seed=0)
    actor = actor_for(env)
    starts = starts_td(torch.randn(N, OBS))

    def rollout(mode):
        with set_exploration_type(mode):
            return env.rollout(H, actor, tensordict=starts.clone(), set_state=True)

    first, second = rollout(ExplorationType.DETERMINISTIC), rollout(ExplorationType.DETERMINISTIC)
    assert torch.equal(first["observation"][:, 0], starts["observation"])
    for key in (("next", "observation"), ("next", "reward"), "action"):
        assert torch.equal(first[key], second[key])
    sampled = rollout(ExplorationType.RANDOM)
    assert not torch.equal(sampled["next", "observation"], first["next", "observation"])


def test_default_interaction_type_applies_without_exploration_type():
    env = learned_env(max_steps=H, default_interaction_type=ExplorationType.DETERMINISTIC)
    starts = starts_td(torch.randn(N, OBS))

    def zero_policy(td):
        return td.set("action", torch.zeros(N, ACT))

    a = env.rollout(H, zero_policy, tensordict=starts.clone(), set_state=True)
    b = env.rollout(H, zero_policy, tensordict=starts.clone(), set_state=True)
    assert torch.equal(a["next", "observation"], b["next", "observation"])


# ------------------------------------------------------- exactness (known model)


def test_known_lqg_model_mean_step_equals_the_true_transition():
    real, env = lqg_pair(batch_size=(6,))
    obs = real.reset()["observation"]
    action = torch.randn(6, 1, dtype=F64)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        imagined = env.step(TensorDict({"observation": obs, "action": action}, [6]))
    # mean transition A s + B a and the env's reward function at the same (s, a)
    torch.testing.assert_close(
        imagined["next", "observation"], obs @ real.A.T + action @ real.B.T, rtol=0, atol=1e-12
    )
    expected_reward = lqg_reward(obs, action, real.Q, real.R, real.action_bound)
    torch.testing.assert_close(imagined["next", "reward"], expected_reward, rtol=0, atol=1e-12)
    # the real env's own step from the same (s, a): the same reward, and a next state that
    # differs from the model's mean by the transition noise only
    real_next = real.step(TensorDict({"action": action}, [6]))["next"]
    torch.testing.assert_close(imagined["next", "reward"], real_next["reward"], rtol=0, atol=1e-12)
    noise = (real_next["observation"] - imagined["next", "observation"]) / real.noise_std
    assert noise.abs().max() < 6


def test_known_lqg_model_random_step_has_the_true_noise():
    real, env = lqg_pair(batch_size=(4000,))
    obs = torch.randn(4000, 2, dtype=F64)
    action = torch.randn(4000, 1, dtype=F64)
    with set_exploration_type(ExplorationType.RANDOM):
        imagined = env.step(TensorDict({"observation": obs, "action": action}, [4000]))
    noise = (imagined["next", "observation"] - obs @ real.A.T - action @ real.B.T) / real.noise_std
    assert noise.mean(0).abs().max() < 0.1
    assert (noise.std(0) - 1).abs().max() < 0.1


def test_known_lqg_model_rollout_matches_the_closed_loop_mean():
    real, env = lqg_pair(batch_size=(2,), max_steps=H)
    actor = lqg_actor()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        data = env.rollout(H, actor)
    gain = actor[0].module.gain.detach()
    state = real.init_mean.expand(2, 2)
    for t in range(H):
        state = state @ (real.A + real.B @ gain).T
        torch.testing.assert_close(data["next", "observation"][:, t], state, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- termination


def _far(observation: torch.Tensor) -> torch.Tensor:
    return observation[..., 0].abs() > 2.0


# one episode far out (terminates on its first step), three near the origin
STARTS = torch.tensor([[0.1, 0.0], [5.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=F64)


def test_known_termination_ends_the_episode():
    _, env = lqg_pair(termination_model=KnownTermination(_far, 2), max_steps=10)
    actor = lqg_actor(log_std=-5.0)
    starts = STARTS
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        stopped = env.rollout(10, actor, tensordict=starts_td(starts), set_state=True)
        full = env.rollout(
            3, actor, tensordict=starts_td(starts), set_state=True, break_when_any_done=False
        )
    # the second episode terminates on its first step: the rollout stops there
    assert stopped.batch_size == (4, 1)
    assert stopped["next", "terminated"][:, 0, 0].tolist() == [False, True, False, False]
    assert torch.equal(stopped["next", "done"], stopped["next", "terminated"])
    assert not stopped["next", "truncated"].any()
    # without stopping, only the terminated episode restarts (from the pool: init_mean)
    assert full["step_count"][:, :, 0].tolist()[1] == [0, 0, 1]
    assert full["step_count"][:, :, 0].tolist()[0] == [0, 1, 2]
    torch.testing.assert_close(full["observation"][1, 1], torch.tensor([1.0, -0.5], dtype=F64))


class _ConstantTermination(Termination):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def probability(self, tensordict):
        obs = tensordict["next", "observation"]
        return torch.full((*obs.shape[:-1], 1), self.p, dtype=obs.dtype)


def test_termination_threshold_or_bernoulli():
    term = _ConstantTermination(0.3)
    env = learned_env(termination=term, batch_size=(2000,))
    td = env.reset()
    td["action"] = torch.zeros(2000, ACT)
    with set_exploration_type(ExplorationType.RANDOM):
        thresholded = env.step(td.clone())["next", "terminated"]
    assert not thresholded.any()  # p = 0.3 < 1/2
    env = learned_env(termination=term, batch_size=(2000,), sample_termination=True)
    with set_exploration_type(ExplorationType.RANDOM):
        sampled = env.step(td.clone())["next", "terminated"]
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        mean_mode = env.step(td.clone())["next", "terminated"]
    assert abs(sampled.float().mean().item() - 0.3) < 0.05
    assert not mean_mode.any()


# ------------------------------------------------------------------ start states


def test_starts_from_a_replay_buffer():
    pool = torch.randn(30, OBS)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=8)
    buffer.extend(TensorDict({"observation": pool}, [30]))
    env = learned_env(initial_observations=buffer, batch_size=(16,), seed=0)
    starts = env.reset()["observation"]
    assert ((starts[:, None] == pool[None]).all(-1).any(-1)).all()
    # the same seed draws the same starts
    again = learned_env(initial_observations=buffer, batch_size=(16,), seed=0).reset()
    assert torch.equal(again["observation"], starts)


def test_starts_from_a_multidimensional_replay_buffer():
    pool = torch.randn(3, 5, OBS)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(60, ndim=2))
    buffer.extend(TensorDict({"observation": pool}, [3, 5]))
    starts = learned_env(initial_observations=buffer, batch_size=(8,)).reset()["observation"]
    assert ((starts[:, None] == pool.reshape(-1, OBS)[None]).all(-1).any(-1)).all()


def test_starts_from_a_single_observation_and_a_callable():
    obs = torch.tensor([1.0, 2.0, 3.0])
    starts = learned_env(initial_observations=obs).reset()["observation"]
    assert torch.equal(starts, obs.expand(N, OBS))
    env = learned_env(initial_observations=lambda shape: torch.ones(*shape, OBS))
    assert torch.equal(env.reset()["observation"], torch.ones(N, OBS))


def test_explicit_starts_and_missing_starts():
    env = learned_env(initial_observations=None)
    with pytest.raises(RuntimeError, match="no initial_observations"):
        env.reset()
    obs = torch.randn(N, OBS)
    td = env.reset(starts_td(obs), set_state=True)
    assert torch.equal(td["observation"], obs)
    with pytest.raises(ValueError, match=r"has shape \(4, 2\), expected \(4, 3\)"):
        env.reset(starts_td(torch.randn(N, 2)), set_state=True)
    with pytest.raises(ValueError, match="initial_observations has shape"):
        learned_env(initial_observations=torch.randn(10, OBS + 1))


# ---------------------------------------------------------------------- errors


def test_spec_model_dimension_mismatch_names_both_shapes():
    obs_spec, act_spec = specs(obs_dim=OBS + 1)
    dynamics, reward = GaussianDynamics(OBS, ACT), RewardModel(OBS, ACT)
    with pytest.raises(
        ValueError, match=r"observation_spec has shape \(4,\).*observation_dim has shape \(3,\)"
    ):
        WorldModelEnv(dynamics, reward, observation_spec=obs_spec, action_spec=act_spec)
    obs_spec, act_spec = specs(act_dim=ACT + 1)
    with pytest.raises(
        ValueError, match=r"action_spec has shape \(2,\).*dynamics_model.action_dim"
    ):
        WorldModelEnv(dynamics, reward, observation_spec=obs_spec, action_spec=act_spec)
    obs_spec, act_spec = specs()
    with pytest.raises(ValueError, match=r"reward_model.observation_dim has shape \(2,\)"):
        WorldModelEnv(
            dynamics, RewardModel(2, ACT), observation_spec=obs_spec, action_spec=act_spec
        )
    with pytest.raises(ValueError, match=r"termination_model.observation_dim has shape \(5,\)"):
        WorldModelEnv(
            dynamics,
            reward,
            LearnedTermination(5),
            observation_spec=obs_spec,
            action_spec=act_spec,
        )


def test_interface_and_device_errors():
    obs_spec, act_spec = specs()
    reward = RewardModel(OBS, ACT)
    with pytest.raises(TypeError, match="get_dist"):
        WorldModelEnv(
            torch.nn.Linear(4, 3), reward, observation_spec=obs_spec, action_spec=act_spec
        )
    with pytest.raises(TypeError, match="probability"):
        WorldModelEnv(
            GaussianDynamics(OBS, ACT),
            reward,
            torch.nn.Linear(3, 1),
            observation_spec=obs_spec,
            action_spec=act_spec,
        )
    with pytest.raises(ValueError, match="max_steps"):
        learned_env(max_steps=0)
    # the env never moves the models: a device mismatch is an error (no CUDA needed to check)
    with pytest.raises(ValueError, match="dynamics_model is on cpu but the env device is meta"):
        learned_env(device="meta")


# ------------------------------------------------------------ models untouched


def test_models_are_not_modified_and_get_no_gradient():
    env = learned_env(max_steps=H)
    before = {k: v.clone() for k, v in env.world_model.state_dict().items()}
    data = env.rollout(H, actor_for(env))
    after = env.world_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not data["next", "observation"].requires_grad
    assert not data["next", "reward"].requires_grad
    assert all(p.grad is None for p in env.world_model.parameters())


def test_differentiable_rollout_reaches_policy_and_model():
    _, env = lqg_pair(batch_size=(3,), max_steps=H, differentiable=True)
    actor = lqg_actor()
    data = env.rollout(H, actor)
    data["next", "reward"].sum().backward()
    gain = actor[0].module.gain
    assert gain.grad is not None and gain.grad.abs().sum() > 0
    learned = learned_env(max_steps=H, differentiable=True)
    learned.rollout(H, actor_for(learned))["next", "reward"].sum().backward()
    assert any(p.grad is not None for p in learned.dynamics_model.parameters())


# -------------------------------------------------------------------- collector


@pytest.mark.slow
def test_collector_collects_imagined_data():
    env = learned_env(max_steps=3, seed=0)
    collector = Collector(
        env,
        actor_for(env),
        frames_per_batch=N * 6,
        total_frames=N * 12,
        auto_register_policy_transforms=False,
    )
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    for batch in batches:
        assert batch.batch_size == (N, 6)
        assert torch.isfinite(batch["next", "observation"]).all()
        assert not batch["next", "observation"].requires_grad
    counts = torch.cat([b["step_count"] for b in batches], 1)[0, :, 0]
    assert counts.tolist() == [0, 1, 2] * 4  # truncation restarts the imagined episodes
    assert batches[0]["next", "truncated"][:, 2].all()


@pytest.mark.slow
def test_collector_partial_resets_after_termination():
    _, env = lqg_pair(
        termination_model=KnownTermination(_far, 2),
        max_steps=50,
        initial_observations=lambda shape: STARTS.expand(*shape, 2).clone(),
    )
    collector = Collector(
        env,
        lqg_actor(log_std=-5.0),
        frames_per_batch=4 * 3,
        total_frames=4 * 3,
        auto_register_policy_transforms=False,
        exploration_type=ExplorationType.DETERMINISTIC,
    )
    batch = next(iter(collector))
    collector.shutdown()
    counts = batch["step_count"][..., 0]
    assert counts[1].tolist() == [0, 0, 0]  # terminates every step, restarted each time
    assert counts[0].tolist() == counts[2].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_rollout():
    dynamics = GaussianDynamics(OBS, ACT, hidden_sizes=(8,)).cuda()
    reward = RewardModel(OBS, ACT, hidden_sizes=(8,)).cuda()
    obs_spec, act_spec = specs()
    env = WorldModelEnv(
        dynamics,
        reward,
        observation_spec=obs_spec,
        action_spec=act_spec,
        initial_observations=torch.randn(10, OBS),
        batch_size=(N,),
        max_steps=H,
    )
    assert env.device.type == "cuda"
    data = env.rollout(H, make_actor(OBS, specs()[1], hidden_sizes=(8,), device="cuda"))
    assert data["next", "observation"].device.type == "cuda"


# ---------------------------------------------------------------------- example


@pytest.mark.slow
def test_example_runs_with_tiny_settings(capsys):
    spec = importlib.util.spec_from_file_location("imagined_rollouts_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(
        [
            "--frames", "200",
            "--model-steps", "3",
            "--batch-size", "32",
            "--hidden", "8",
            "--horizon", "3",
            "--num-rollouts", "2",
            "--log-every", "1",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "one-step RMSE" in out and "real env" in out
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
