"""World models: normalisation, Gaussian heads, ensembles, termination, and the NLL loss."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import make_batch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg.modules import (
    GaussianDynamics,
    GaussianMLPModel,
    GaussianModelOptions,
    KnownTermination,
    LearnedTermination,
    ObservationActionModel,
    RewardModel,
    RunningNormalizer,
    termination_for_env,
)
from torchrl_svg.modules.gaussian import _OPTION_DEFAULTS
from torchrl_svg.objectives import GaussianWorldModelLoss


# ------------------------------------------------------------ normaliser
def test_running_normalizer_matches_full_data_statistics():
    data = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]) + 5
    norm = RunningNormalizer(3, dtype=torch.float64)
    for chunk in data.split(97):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, data.mean(0))
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False))
    assert norm.count.item() == 1000
    torch.testing.assert_close(norm.denormalize(norm.normalize(data)), data)


def test_running_normalizer_refuses_bad_input_and_keeps_its_statistics():
    norm = RunningNormalizer(2)
    norm.update(torch.ones(4, 2))
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    with pytest.raises(ValueError, match="non-finite"):
        norm.update(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"expects shape \[\*B, 2\], got \(4, 3\)"):
        norm.update(torch.ones(4, 3))
    for k, v in norm.state_dict().items():
        torch.testing.assert_close(v, before[k])


# -------------------------------------------------------------- dynamics
@pytest.mark.parametrize("sigma", ["state", "constant"])
@pytest.mark.parametrize("per_dimension", [False, True])
@pytest.mark.parametrize("ensemble_size", [1, 3])
def test_gaussian_dynamics_shapes_and_contract(sigma, per_dimension, ensemble_size):
    model = GaussianDynamics(
        4,
        2,
        hidden_sizes=(8,),
        sigma=sigma,
        per_dimension=per_dimension,
        ensemble_size=ensemble_size,
    )
    data = make_batch((5, 3))
    model.update_normalizer(data)
    loc, log_std = model.normalized_params(data)
    assert loc.shape == log_std.shape == (ensemble_size, 5, 3, 4)
    assert (log_std >= model.min_log_std).all() and (log_std <= model.max_log_std).all()
    dist = model.get_dist(data)
    assert dist.event_shape == (4,) and dist.batch_shape == (5, 3)
    assert model.log_prob_normalized(data).shape == (ensemble_size, 5, 3)
    sample = dist.rsample()
    assert sample.shape == (5, 3, 4)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        out = model(data.exclude(("next", "observation")))
    if ensemble_size == 1:
        torch.testing.assert_close(out["next", "observation"], dist.mean)


def test_constant_sigma_does_not_depend_on_the_state():
    model = GaussianDynamics(4, 2, hidden_sizes=(8,), sigma="constant")
    _, log_std = model.normalized_params(make_batch((16,)))
    assert torch.allclose(log_std, log_std[:, :1].expand_as(log_std))


def test_per_dimension_subnetworks_are_independent():
    model = GaussianDynamics(3, 1, hidden_sizes=(8,), per_dimension=True)
    assert model.net.num_members == 3
    data = make_batch((6,), 3, 1)
    loc, _ = model.normalized_params(data)
    loc[..., 0].sum().backward()
    weight_grads = model.net.weights[0].grad  # [members, in, hidden]
    assert weight_grads[0].abs().sum() > 0
    assert weight_grads[1:].abs().sum() == 0


def test_ensemble_reduction_sample_and_mean():
    model = GaussianDynamics(4, 2, hidden_sizes=(8,), ensemble_size=4, ensemble_reduction="sample")
    data = make_batch((200,))
    loc, log_std = model.normalized_params(data)
    torch.manual_seed(0)
    dist = model.get_dist(data)
    std = model.target_normalizer.std
    base = data["observation"] + model.target_normalizer.mean
    chosen = (dist.mean - base) / std  # per-sample: one of the members
    matches = (chosen.unsqueeze(0) - loc).abs().amax(-1) < 1e-5  # [E, B]
    assert (matches.sum(0) >= 1).all()
    assert (matches.sum(1) > 0).all(), "every member is drawn for some sample"
    model.ensemble_reduction = "mean"
    dist = model.get_dist(data)
    torch.testing.assert_close((dist.mean - base) / std, loc.mean(0))
    mixture_var = log_std.exp().pow(2).mean(0) + loc.var(0, unbiased=False)
    torch.testing.assert_close(dist.base_dist.scale / std, mixture_var.sqrt())


def _full_ensemble(monkeypatch):
    """Turn off the per-member routing: every member evaluated on every sample, one kept."""
    from torchrl_svg.modules import functional, gaussian

    monkeypatch.setattr(gaussian, "routes_members", lambda *args: False)
    monkeypatch.setattr(functional, "routes_members", lambda *args: False)


@pytest.mark.parametrize("sigma", ["state", "constant"])
@pytest.mark.parametrize("given", [False, True])
def test_sampling_ensemble_evaluates_only_the_drawn_members(monkeypatch, sigma, given):
    """A sampling ensemble runs each sample through its own member only, with the same draws,
    values and input gradients as evaluating every member and keeping one."""
    from torchrl_svg.modules.functional import PlainGaussianModel

    model = GaussianDynamics(4, 2, hidden_sizes=(16, 8), ensemble_size=5, sigma=sigma)
    data = make_batch((7, 9))
    model.update_normalizer(data)
    if given:
        data.set(model.member_key, model.draw_members(data.batch_size))
    plain = PlainGaussianModel.from_module(model)
    inputs = torch.cat([data["observation"], data["action"]], -1).reshape(63, 6)
    obs = data["observation"].reshape(63, 4)
    member = data.get(model.member_key).reshape(63) if given else None

    def outputs():
        x = data["observation"].clone().requires_grad_(True)
        torch.manual_seed(3)
        dist = model.get_dist(data.clone().set("observation", x))
        (dist.mean.sum() + dist.stddev.sum()).backward()
        torch.manual_seed(3)
        loc, scale = plain.loc_scale(inputs, residual=obs, member=member)
        return dist.mean, dist.stddev, x.grad, loc, scale, torch.randn(3)

    routed = outputs()
    calls = []
    forward = type(model.net).forward
    monkeypatch.setattr(type(model.net), "forward", lambda *a: calls.append(1) or forward(*a))
    with monkeypatch.context() as m:
        _full_ensemble(m)
        full = outputs()
    assert calls, "the reference evaluates every member"
    for a, b in zip(routed, full, strict=True):
        torch.testing.assert_close(a, b)  # the last pair: the generator is left where it was
    torch.testing.assert_close(routed[0].reshape(63, 4), routed[3])
    calls.clear()
    outputs()
    assert not calls, "the routed prediction never evaluates the full ensemble"


def test_member_routing_keeps_to_the_cpu_and_whole_networks():
    model = GaussianDynamics(4, 2, hidden_sizes=(8,), ensemble_size=3)
    x = torch.zeros(2, 6)
    assert model.routes_members(x)
    assert not GaussianDynamics(4, 2, hidden_sizes=(8,)).routes_members(x), "one member"
    per_dim = GaussianDynamics(4, 2, hidden_sizes=(8,), ensemble_size=3, per_dimension=True)
    assert not per_dim.routes_members(x), "sub-networks per dimension: every member evaluated"
    assert not model.routes_members(x.to("meta")), "accelerators: one batched kernel"


def test_route_rows_and_forward_members_match_the_full_stack():
    from torchrl_svg.modules._mlp import StackedMLP, route_rows
    from torchrl_svg.modules.functional import PlainMLP

    mlp = StackedMLP(4, in_features=3, out_features=2, hidden_sizes=(8, 8))
    x, member = torch.randn(50, 3), torch.randint(4, (50,))
    rows = torch.arange(50)
    torch.testing.assert_close(mlp.forward_members(x, member), mlp(x)[member, rows])
    norms = [(torch.randn(4, 8), torch.randn(4, 8), 1e-5)] * 2
    plain = PlainMLP(list(mlp.weights), list(mlp.biases), torch.relu, norms=norms)
    torch.testing.assert_close(plain.forward_members(x, member), plain(x)[member, rows])
    one_member = torch.zeros(50, dtype=torch.long)  # the other groups are empty
    torch.testing.assert_close(mlp.forward_members(x, one_member), mlp(x)[0])
    assert mlp.forward_members(x[:0], member[:0]).shape == (0, 2)
    with pytest.raises(IndexError, match=r"member indices must lie in \[0, 4\)"):
        mlp.forward_members(x, member + 4)
    with pytest.raises(ValueError, match="49 members for 50 rows"):
        route_rows(x, member[:49], 4, lambda j, r: r)
    model = GaussianDynamics(3, 2, hidden_sizes=(8,), ensemble_size=4)
    data = make_batch((6,), 3, 2).set(model.member_key, torch.zeros(6, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"'ensemble_member' have shape \(6, 2\), expected one"):
        model.get_dist(data)
    with pytest.raises(ValueError, match="needs stacked networks"):
        PlainMLP.from_stacked(StackedMLP(1, 3, 2, (8,))).forward_members(x, member)


def test_dynamics_state_dict_round_trip_keeps_normalizer_statistics():
    model = GaussianDynamics(4, 2, hidden_sizes=(8,), ensemble_size=2)
    data = make_batch((64,))
    model.update_normalizer(data)
    state = model.state_dict()
    assert "input_normalizer.mean" in state and "target_normalizer.var" in state
    other = GaussianDynamics(4, 2, hidden_sizes=(8,), ensemble_size=2)
    other.load_state_dict(state)
    torch.testing.assert_close(other.log_prob_normalized(data), model.log_prob_normalized(data))


def test_dynamics_bad_input_messages():
    model = GaussianDynamics(4, 2, hidden_sizes=(8,))
    with pytest.raises(KeyError, match="GaussianDynamics needs the entry 'action'"):
        model.get_dist(make_batch().exclude("action"))
    with pytest.raises(
        ValueError, match=r"'observation' has shape \(8, 5\), expected a trailing dimension of 4"
    ):
        model.get_dist(make_batch(obs_dim=5))
    with pytest.raises(ValueError, match="sigma must be 'state' or 'constant'"):
        GaussianDynamics(4, 2, sigma="diag")


def test_model_options_refuse_unknown_keywords_like_python():
    with pytest.raises(
        TypeError,
        match=r"^GaussianDynamics.__init__\(\) got an unexpected keyword argument 'hidden_size'$",
    ):
        GaussianDynamics(4, 2, hidden_size=(8,))
    with pytest.raises(
        TypeError, match=r"^GaussianMLPModel.__init__\(\) got an unexpected keyword argument 'foo'$"
    ):
        GaussianMLPModel(["observation"], [4], "target", 1, foo=1)
    # the reward model has neither per-dimension sub-networks nor a member entry
    for name, value in (("per_dimension", True), ("member_key", "m"), ("options", {})):
        with pytest.raises(
            TypeError,
            match=rf"^RewardModel.__init__\(\) got an unexpected keyword argument '{name}'$",
        ):
            RewardModel(4, 2, **{name: value})


def _options_of(model):
    """The GaussianModelOptions a model was built with, read back from it."""
    return {
        "hidden_sizes": model.net.hidden_sizes,
        "activation_class": type(model.net.activation),
        "sigma": model.sigma,
        "ensemble_size": model.ensemble_size,
        "ensemble_reduction": model.ensemble_reduction,
        "min_log_std": model.min_log_std.item(),
        "max_log_std": model.max_log_std.item(),
    }


def test_model_options_defaults_and_overrides():
    assert set(_OPTION_DEFAULTS) == GaussianModelOptions.__optional_keys__
    assert not GaussianModelOptions.__required_keys__
    for model in (GaussianDynamics(4, 2), RewardModel(4, 2)):
        assert _options_of(model) == _OPTION_DEFAULTS
        assert isinstance(model, ObservationActionModel)
    options = {
        "hidden_sizes": (8, 4),
        "activation_class": torch.nn.Tanh,
        "sigma": "constant",
        "ensemble_size": 3,
        "ensemble_reduction": "mean",
        "min_log_std": -3.0,
        "max_log_std": 1.0,
    }
    dynamics = GaussianDynamics(4, 2, per_dimension=True, member_key="m", **options)
    reward = RewardModel(4, 2, reward_key="r", **options)
    for model in (dynamics, reward):
        assert _options_of(model) == options
        assert (model.observation_dim, model.action_dim) == (4, 2)
        assert model.in_keys == ["observation", "action"]
    assert dynamics.per_dimension and dynamics.member_key == "m"
    assert not reward.per_dimension and reward.out_keys == ["r"]


def _fit(model, loss_fn, data, steps, lr=3e-3, batch=256):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = data.shape[0]
    for _ in range(steps):
        idx = torch.randint(n, (batch,))
        out = loss_fn(data[idx])
        total = (
            sum(v for k, v in out.items() if k.startswith("loss_"))
            if hasattr(out, "items")
            else out
        )
        opt.zero_grad()
        total.backward()
        opt.step()


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(sigma="constant"), dict(per_dimension=True, sigma="constant")],
    ids=["state-sigma", "constant-sigma", "per-dimension"],
)
@pytest.mark.slow  # a learning test: fits a model for seconds
def test_nll_recovers_a_linear_gaussian_system(kwargs):
    torch.manual_seed(0)
    A = torch.tensor([[0.9, 0.2], [-0.1, 0.8]])
    B = torch.tensor([[0.5], [-1.0]])
    c = torch.tensor([0.1, -0.2])
    sigma = torch.tensor([0.05, 0.2])
    n = 8000
    s = torch.randn(n, 2) * torch.tensor([1.0, 3.0])
    a = torch.rand(n, 1) * 2 - 1
    mean = s @ A.T + a @ B.T + c
    data = TensorDict(
        {"observation": s, "action": a, ("next", "observation"): mean + sigma * torch.randn(n, 2)},
        [n],
    )
    model = GaussianDynamics(2, 1, hidden_sizes=(64, 64), **kwargs)
    model.update_normalizer(data)
    loss = GaussianWorldModelLoss(model)
    _fit(model, loss, data, steps=2500)
    s_test = torch.randn(500, 2) * torch.tensor([1.0, 3.0])
    a_test = torch.rand(500, 1) * 2 - 1
    test = TensorDict({"observation": s_test, "action": a_test}, [500])
    dist = model.get_dist(test)
    true_mean = s_test @ A.T + a_test @ B.T + c
    err = (dist.mean - true_mean).pow(2).mean(0).sqrt()
    # the mean map is recovered to well within the noise level, and explains the signal
    assert (err < 0.5 * sigma).all(), f"mean RMSE {err} vs sigma {sigma}"
    r2 = 1 - (dist.mean - true_mean).pow(2).sum(0) / (true_mean - true_mean.mean(0)).pow(2).sum(0)
    assert (r2 > 0.999).all(), r2
    learned_sigma = dist.base_dist.scale.mean(0)
    torch.testing.assert_close(learned_sigma, sigma, rtol=0.15, atol=0.0)


@pytest.mark.slow  # a learning test: fits a model for seconds
def test_reward_model_fits_a_known_reward_with_its_noise():
    torch.manual_seed(0)
    n = 6000
    s, a = torch.randn(n, 3), torch.rand(n, 1) * 2 - 1
    r = (-(s.pow(2).sum(-1, keepdim=True)) - 0.1 * a.pow(2)) + 0.1 * torch.randn(n, 1)
    data = TensorDict({"observation": s, "action": a, ("next", "reward"): r}, [n])
    model = RewardModel(3, 1, hidden_sizes=(64, 64))
    model.update_normalizer(data)
    loss = GaussianWorldModelLoss(GaussianDynamics(3, 1, hidden_sizes=(2,)), model)
    _fit(model, loss.reward_loss, data, steps=2500)
    test = TensorDict(
        {"observation": torch.randn(500, 3) * 0.7, "action": torch.zeros(500, 1)}, [500]
    )
    pred = model.get_dist(test)
    truth = -(test["observation"].pow(2).sum(-1, keepdim=True))
    assert (pred.mean - truth).pow(2).mean().sqrt() < 0.15
    assert pred.base_dist.scale.mean().item() == pytest.approx(0.1, rel=0.35)


# ----------------------------------------------------------- world-model loss
def test_world_model_losses_reach_only_their_own_model():
    dyn = GaussianDynamics(4, 2, hidden_sizes=(8,))
    rew = RewardModel(4, 2, hidden_sizes=(8,))
    term = LearnedTermination(4, hidden_sizes=(8,))
    loss = GaussianWorldModelLoss(dyn, rew, term)
    data = make_batch((16,))
    loss.update_normalizers(data)
    owners = {"loss_dynamics": dyn, "loss_reward": rew, "loss_termination": term}
    for key, owner in owners.items():
        loss.zero_grad(set_to_none=True)
        loss(data)[key].backward()
        for model in owners.values():
            grads = [p.grad for p in model.parameters()]
            if model is owner:
                assert all(g is not None for g in grads), key
            else:
                assert all(g is None for g in grads), f"{key} reached {type(model).__name__}"


def test_world_model_loss_reduction_none_and_known_termination():
    loss = GaussianWorldModelLoss(
        GaussianDynamics(4, 2, hidden_sizes=(8,)),
        RewardModel(4, 2, hidden_sizes=(8,)),
        termination_for_env("Hopper-v5"),
        reduction="none",
    )
    out = loss(make_batch((3, 5)))
    assert set(out.keys()) == {"loss_dynamics", "loss_reward"}  # nothing to learn for a known fn
    assert out.batch_size == (3, 5) and out["loss_dynamics"].shape == (3, 5)


def test_world_model_loss_fits_a_users_own_model_by_likelihood():
    from tensordict.nn import (
        ProbabilisticTensorDictModule,
        ProbabilisticTensorDictSequential,
        TensorDictModule,
    )
    from torchrl.modules import MLP, NormalParamExtractor

    class UserNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = MLP(in_features=6, out_features=8, num_cells=[16])
            self.extract = NormalParamExtractor()

        def forward(self, s, a):
            return self.extract(self.mlp(s, a))

    net = UserNet()
    user_model = ProbabilisticTensorDictSequential(
        TensorDictModule(net, in_keys=["observation", "action"], out_keys=["loc", "scale"]),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys=[("next", "observation")],
            distribution_class=torch.distributions.Normal,
        ),
    )
    loss = GaussianWorldModelLoss(user_model)
    data = make_batch((16,))
    out = loss(data)
    out["loss_dynamics"].backward()
    assert all(p.grad is not None for p in net.parameters())


def test_learned_termination_learns_a_threshold():
    torch.manual_seed(0)
    n = 4000
    s_next = torch.randn(n, 2)
    terminated = s_next[:, :1] > 0.5
    data = TensorDict({("next", "observation"): s_next, ("next", "terminated"): terminated}, [n])
    head = LearnedTermination(2, hidden_sizes=(32,))
    head.update_normalizer(data)
    loss = GaussianWorldModelLoss(GaussianDynamics(2, 1, hidden_sizes=(2,)), None, head)
    _fit(head, loss.termination_loss, data, steps=1500, lr=1e-2)
    test = TensorDict({("next", "observation"): torch.randn(1000, 2)}, [1000])
    pred = head(test)["next", "terminated"]
    truth = test["next", "observation"][:, :1] > 0.5
    assert (pred == truth).float().mean() > 0.97


# ------------------------------------------------------------ termination
@pytest.mark.parametrize("env_name", ["Hopper-v5", "Walker2d-v5", "InvertedPendulum-v5"])
def test_known_termination_matches_the_gymnasium_environment(env_name):
    env = gym.make(env_name)
    term = termination_for_env(env_name)
    rng = np.random.default_rng(0)
    obs_list, flags = [], []
    obs, _ = env.reset(seed=0)
    for _ in range(3000):
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        obs_list.append(obs)
        flags.append(terminated)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    flags = torch.tensor(flags)
    assert flags.any() and not flags.all()
    td = TensorDict(
        {("next", "observation"): torch.as_tensor(np.stack(obs_list), dtype=torch.float32)},
        [len(obs_list)],
    )
    pred = term.probability(td).squeeze(-1).bool()
    assert torch.equal(pred, flags)


def _clipped_sources(env_name: str, data) -> list[np.ndarray]:
    """The simulator arrays (views) whose clipped values end the task's observation, in order."""
    if env_name.startswith(("Hopper", "Walker2d")):
        return [data.qvel]
    if env_name.startswith("Ant"):
        return [data.cfrc_ext[1:]]  # every body but the world's
    return [data.qvel, data.qfrc_constraint]  # the pendulum: v5 observes the first force only


@pytest.mark.parametrize(
    "env_name",
    [
        "Hopper-v4",
        "Hopper-v5",
        "Walker2d-v4",
        "Walker2d-v5",
        "Ant-v5",
        "InvertedDoublePendulum-v4",
        "InvertedDoublePendulum-v5",
    ],
)
@pytest.mark.filterwarnings("ignore:.*is out of date:DeprecationWarning")  # v4's notice
def test_known_observation_bounds_are_the_environment_clip(env_name):
    # the environment's own observation with the clipped quantities written straight into the
    # simulator: inside the clip the bounded entries are those quantities, in order; far past
    # it exactly the box's edge; the unbounded entries are untouched either way
    from torchrl_svg.modules import KNOWN_OBSERVATION_BOUNDS_ENVS, observation_bounds_for_env

    assert env_name in KNOWN_OBSERVATION_BOUNDS_ENVS
    env = gym.make(env_name).unwrapped
    env.reset(seed=0)
    low, high = observation_bounds_for_env(env_name)
    bounded = high.isfinite()
    clip = float(high[bounded][0])
    sources = _clipped_sources(env_name, env.data)
    signs = [np.where(np.arange(a.size) % 2 == 0, 1.0, -1.0).reshape(a.shape) for a in sources]

    def observe(scale: float) -> torch.Tensor:
        for array, sign in zip(sources, signs, strict=True):
            array[...] = sign * scale * clip
        return torch.as_tensor(env._get_obs(), dtype=torch.float32)

    inside, past = observe(0.5), observe(50.0)
    env.close()
    assert low.shape == high.shape == inside.shape and torch.equal(low, -high)
    assert bounded.any() and (high[bounded] == clip).all()
    assert not bounded[: int((~bounded).sum())].any()  # the bounded entries end the observation
    raw = torch.as_tensor(np.concatenate([s.ravel() for s in signs]), dtype=torch.float32)
    expected = raw[: int(bounded.sum())]
    assert torch.equal(inside[bounded], expected * 0.5 * clip)
    assert torch.equal(past[bounded], expected * clip)
    assert torch.equal(inside[~bounded], past[~bounded])
    with pytest.raises(ValueError, match="No known observation bounds for 'HalfCheetah-v5'"):
        observation_bounds_for_env("HalfCheetah-v5")


def test_never_terminates_for_other_tasks_and_custom_functions():
    assert termination_for_env("HalfCheetah-v5").fn.__name__ == "never_terminated"
    td = TensorDict({("next", "observation"): torch.randn(5, 17)}, [5])
    assert termination_for_env("HalfCheetah-v5").probability(td).sum() == 0
    custom = KnownTermination(lambda s: s[..., 0] > 0)
    out = custom(td.clone())
    assert torch.equal(out["next", "terminated"].squeeze(-1), td["next", "observation"][:, 0] > 0)
