"""The fast update steps compute the public path's losses and parameter updates."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_svg import NonFiniteLossError
from torchrl_svg.train import load_config
from torchrl_svg.train.agents import NonFiniteGuard, S2VGAgent
from torchrl_svg.train.agents.base import run_updates
from torchrl_svg.train.fast import FastS2VGUpdate, FastWorldModelUpdate

OBS, ACT = 3, 2  # Pendulum-v1 observations (its known termination checks the size)
SMALL = [
    "network.actor_hidden_sizes=[32,32]",
    "network.critic_hidden_sizes=[32,32]",
    "model.hidden_sizes=[32,16]",
]


def specs(obs: int = OBS):
    observation = Bounded(-torch.inf, torch.inf, (obs,))
    return observation, Bounded(-torch.ones(ACT) * 2, torch.ones(ACT) * 2, (ACT,))


def agent_pair(overrides, obs: int = OBS):
    """Two agents with identical parameters: the public path and the fast path."""
    agents = []
    for fast in (False, True):
        torch.manual_seed(1)
        cfg = load_config([*SMALL, *overrides, f"compile.fast_update={str(fast).lower()}"])
        agents.append(S2VGAgent(cfg, *specs(obs)))
    public, fast = agents
    assert not isinstance(public.step, FastS2VGUpdate) and isinstance(fast.step, FastS2VGUpdate)
    assert isinstance(fast.world_model.step, FastWorldModelUpdate)
    data = make_batch((64,), obs, ACT)
    data["action"] = data["action"] * 2
    for agent in agents:
        agent.world_model.observe(data)
    return public, fast, data


def max_relative_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for key, x in a.items():
        if x.is_floating_point():
            scale = x.abs().max().clamp_min(1e-8)
            worst = max(worst, float((x - b[key]).abs().max() / scale))
    return worst


@pytest.mark.parametrize(
    "overrides, obs",
    [
        ([], OBS),
        (["loss.fixed_alpha=false"], OBS),
        (["env.name=Hopper-v5", "loss.loss_function=smooth_l1"], 11),  # known termination
        (["model.termination=learned"], OBS),
        (["model.ensemble_size=3", "optim.max_grad_norm=0.5"], OBS),
        (["model.ensemble_size=2", "model.ensemble_reduction=mean", "model.sigma=constant"], OBS),
        (["loss.actor_horizon=3", "model.termination=learned", "loss.fixed_alpha=false"], OBS),
        (
            [
                "model.ensemble_size=3",
                "loss.actor_horizon=3",
                "loss.disagreement_bound=0.14",  # about half the rows stop at step 0
                "loss.actor_max_grad_norm=0.1",
            ],
            OBS,
        ),
        (["model.ensemble_size=3", "loss.actor_horizon=3", "loss.ensemble_members=rollout"], OBS),
        (
            [
                "model.ensemble_size=3",
                "loss.actor_horizon=3",
                "loss.ensemble_members=rollout",
                "loss.actor_model_noise=false",
            ],
            OBS,
        ),
        (["network.critic_layer_norm=true", "loss.fixed_alpha=false"], OBS),
        (["loss.horizon=2"], OBS),
        (["loss.horizon=5", "model.termination=learned", "loss.fixed_alpha=false"], OBS),
        (["env.name=Hopper-v5", "loss.horizon=3", "loss.expansion_entropy=false"], 11),
        (["model.ensemble_size=3", "loss.horizon=3", "loss.actor_horizon=2"], OBS),
        (["model.ensemble_size=3", "loss.horizon=3", "loss.expansion_ensemble_mean=true"], OBS),
        (
            [
                "env.name=Hopper-v5",
                "loss.observation_bounds=known",
                "loss.horizon=3",
                "loss.actor_horizon=3",
            ],
            11,
        ),
    ],
    ids=[
        "fixed-alpha",
        "learned-alpha",
        "known-termination",
        "learned-termination",
        "ensemble",
        "ensemble-mean",
        "actor-horizon",
        "actor-horizon-ensemble-bound-clip",
        "actor-horizon-member-per-rollout",
        "actor-horizon-model-mean",
        "critic-layer-norm",
        "critic-horizon-2",
        "critic-horizon-5-learned-termination",
        "critic-horizon-known-termination-no-entropy",
        "critic-and-actor-horizon-ensemble",
        "critic-horizon-ensemble-mean",
        "known-observation-bounds",
    ],
)
def test_fast_s2vg_step_equals_loss_and_optimizer(overrides, obs):
    public, fast, data = agent_pair(overrides, obs)
    noise = "loss.actor_model_noise=false" not in overrides
    assert public.loss.actor_model_noise is noise and fast.loss.actor_model_noise is noise
    if "loss.observation_bounds=known" in overrides:  # velocities about the clip of 10
        assert public.loss.observation_high[5:].eq(10).all()
        for key in ("observation", ("next", "observation")):
            data[key][:, 5:] *= 10.0
    if obs == 11:  # a Hopper state: upright (continuing) and fallen (terminated) rows
        data["next", "observation"][:, 0] = torch.where(torch.arange(64) % 2 == 0, 1.25, 0.5)
        for agent in (public, fast):
            agent.world_model.observe(data)
    clipped = []
    if "loss.observation_bounds=known" in overrides:  # record that the clip is reached
        bounded = public.loss._bounded

        def record(x):
            out = bounded(x)
            clipped.append(bool((out != x).any()))
            return out

        public.loss._bounded = record
    for i in range(3):
        torch.manual_seed(100 + i)
        expected = public.update(data.clone())
        torch.manual_seed(100 + i)
        got = fast.update(data.clone())
        for key in ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    assert all(clipped) if clipped else "loss.observation_bounds=known" not in overrides
    state_public, state_fast = public.loss.state_dict(), fast.loss.state_dict()
    assert max_relative_difference(state_public, state_fast) < 1e-5
    # the world-model step too
    for _ in range(3):
        expected = public.world_model.update(data.clone())
        got = fast.world_model.update(data.clone())
        for key in public.world_model.loss_keys:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    assert (
        max_relative_difference(
            public.world_model.loss.state_dict(), fast.world_model.loss.state_dict()
        )
        < 1e-5
    )


def test_fast_world_model_step_with_per_dimension_models_equals_the_loss():
    torch.manual_seed(0)
    public, fast, data = agent_pair(["model.per_dimension=true", "model.sigma=constant"])
    for _ in range(3):
        expected = public.world_model.update(data.clone())
        got = fast.world_model.update(data.clone())
        torch.testing.assert_close(got["loss_dynamics"], expected["loss_dynamics"])
    assert (
        max_relative_difference(
            public.world_model.loss.state_dict(), fast.world_model.loss.state_dict()
        )
        < 1e-5
    )


def test_bf16_step_is_close_to_fp32():
    # bf16 autocast of the matrix multiplies: losses within a few percent of fp32, the same
    # direction of the parameter update (fp32 parameters and optimiser state)
    _, fp32, data = agent_pair([])
    torch.manual_seed(1)
    cfg = load_config([*SMALL, "precision=bf16"])
    bf16 = S2VGAgent(cfg, *specs())
    bf16.world_model.observe(data)
    before = {k: v.clone() for k, v in fp32.loss.state_dict().items()}
    torch.manual_seed(5)
    a = fp32.update(data.clone())
    torch.manual_seed(5)
    b = bf16.update(data.clone())
    for key in ("loss_actor", "loss_qvalue", "loss_value"):
        torch.testing.assert_close(b[key], a[key], rtol=5e-2, atol=5e-2)
    after_a, after_b = fp32.loss.state_dict(), bf16.loss.state_dict()
    assert all(after_b[k].dtype == before[k].dtype for k in before)
    step_a = torch.cat([(after_a[k] - before[k]).flatten() for k in before if "actor" in k])
    step_b = torch.cat([(after_b[k] - before[k]).flatten() for k in before if "actor" in k])
    assert torch.nn.functional.cosine_similarity(step_a, step_b, dim=0) > 0.9


def test_non_finite_step_is_skipped_on_the_device_and_reported():
    _, fast, data = agent_pair([])
    fast.guard = NonFiniteGuard(max_consecutive=1)
    bad = data.clone()
    bad["next", "reward"][0] = float("nan")
    fast.loss.check_finite = False  # let the NaN reach the loss: the guard's case
    fast.update(data.clone())
    before = {k: v.clone() for k, v in fast.loss.state_dict().items()}
    adam_steps = [s["step"].clone() for s in fast.optimizer.state.values()]
    fast.step.check_layout(bad)
    out = fast.step.step_tensors(*fast_tensors(bad))  # no host read here
    assert not torch.isfinite(out[1])  # loss_qvalue
    assert int(fast.step.skipped) == 1 and int(fast.step.streak) == 1
    for key, value in fast.loss.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [s["step"] for s in fast.optimizer.state.values()] == adam_steps
    assert fast.step.report() == 1 and fast.guard.skipped == 1
    fast.update(data.clone())  # a good update resets the streak
    assert int(fast.step.streak) == 0 and fast.guard.consecutive == 0
    with pytest.raises(NonFiniteLossError, match="loss_qvalue"):
        run_updates(fast.step, lambda n: bad.repeat(n // 64) if n > 64 else bad, 2, 64)
    assert fast.guard.skipped == 3


def fast_tensors(batch):
    from torchrl_svg.train.fast import transition_tensors

    return transition_tensors(batch)


def test_layout_is_validated_once_and_bad_input_still_names_the_entry():
    _, fast, data = agent_pair([])
    calls = []
    validate = fast.step._validate
    fast.step._validate = lambda td: (calls.append(1), validate(td))
    for _ in range(3):
        fast.update(data.clone())
    assert len(calls) == 1
    with pytest.raises(KeyError, match="reward"):
        fast.update(data.exclude(("next", "reward")))
    wrong = data.clone()
    wrong["observation"] = torch.randn(64, OBS + 1)
    with pytest.raises(ValueError, match="observation"):
        fast.update(wrong)


def test_batched_replay_sampling_makes_one_call_per_round():
    _, fast, data = agent_pair([])
    sizes = []

    def sample(n):
        sizes.append(n)
        return data[torch.randint(64, (n,))]

    out = run_updates(fast.step, sample, 5, 16)
    assert sizes == [80] and set(out.keys()) >= {"loss_actor", "loss_qvalue"}


# ---------------------------------------------------------------- SVG(inf)
def svginf_pair(noise: str, steps: int, dtype=torch.float64):
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_svg.modules import env_specs
    from torchrl_svg.train.agents import SVGInfAgent
    from torchrl_svg.train.builders import make_env
    from torchrl_svg.train.fast import FastSVGInfUpdate

    agents = []
    for fast in (False, True):
        torch.manual_seed(0)
        cfg = load_config(
            [
                "algorithm=svginf",
                "env.name=Hand-v0",
                f"env.max_episode_steps={steps}",
                f"svg.noise={noise}",
                f"compile.fast_update={str(fast).lower()}",
                "svg.actor_max_grad_norm=1e9",
            ]
        )
        env = make_env(cfg, num_envs=3)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # parameters and statistics in dtype from the start
        try:
            agents.append(SVGInfAgent(cfg, *env_specs(env), env=env))
        finally:
            torch.set_default_dtype(default)
    public, fast = agents
    assert isinstance(fast.policy_step, FastSVGInfUpdate)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        data = env.rollout(
            steps,
            lambda td: td.set("action", 0.5 * torch.randn(3, 2).clamp(-1, 1)),
            break_when_any_done=False,
        )
    data = data.select(
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    )
    data["next", "done"][1, steps // 2] = True  # an episode that ends half-way: masked after
    data = data.apply(lambda x: x.to(dtype) if x.is_floating_point() else x)
    for agent in agents:
        agent.world_model.observe(data.reshape(-1))
        for _ in range(5):
            agent.world_model.update(data.reshape(-1))
    return public, fast, data


@pytest.mark.parametrize("noise", ["inferred", "sampled"])
def test_fast_svginf_gradient_equals_backprop_through_the_unroll(noise):
    # float64: Algorithm 1's recursion over batched Jacobians is the autograd gradient
    public, fast, data = svginf_pair(noise, steps=30)
    torch.manual_seed(3)
    expected = public.policy_step(data.clone())
    torch.manual_seed(3)
    got = fast.policy_step(data.clone())
    torch.testing.assert_close(got["loss_actor"], expected["loss_actor"], rtol=1e-10, atol=1e-12)
    for p, q in zip(public._actor_params, fast._actor_params, strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(q, p, rtol=1e-8, atol=1e-12)


def test_fast_svginf_float32_on_long_episodes():
    public, fast, data = svginf_pair("inferred", steps=300, dtype=torch.float32)
    expected = public.policy_step(data.clone())
    got = fast.policy_step(data.clone())
    torch.testing.assert_close(got["loss_actor"], expected["loss_actor"], rtol=1e-5, atol=1e-6)
    grads_p = torch.cat([p.grad.flatten() for p in public._actor_params])
    grads_f = torch.cat([p.grad.flatten() for p in fast._actor_params])
    assert (grads_p - grads_f).abs().max() <= 1e-4 * grads_p.abs().max()


def test_reverse_linear_scan_with_a_final_value():
    from torchrl_svg.objectives.functional import reverse_linear_scan

    u, m, final = torch.randn(2, 7, 3), 0.5 * torch.randn(2, 7, 3, 3), torch.randn(2, 3)
    nxt, expected = final, []
    for t in reversed(range(7)):
        nxt = u[:, t] + (nxt.unsqueeze(-2) @ m[:, t]).squeeze(-2)
        expected.insert(0, nxt)
    torch.testing.assert_close(reverse_linear_scan(u, m, final), torch.stack(expected, 1))


# ---------------------------------------------------------------- guard
def test_good_world_model_updates_do_not_hide_skipped_actor_critic_updates():
    _, fast, data = agent_pair([])
    guard = NonFiniteGuard(max_consecutive=2)
    fast.guard = guard
    with torch.no_grad():  # a broken critic: every actor-critic update is non-finite
        next(iter(fast.loss.qvalue_network_params.values(True, True))).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="3 non-finite actor-critic update"):
        for _ in range(3):
            fast.update_model(data.clone())  # applied, and counted for its own kind only
            fast.update(data.clone())
    assert guard.streaks["world-model"] == 0 and guard.applied_by_kind["world-model"] == 3


def test_a_kind_of_update_that_never_applied_fails_the_run():
    guard = NonFiniteGuard(max_consecutive=1000)
    guard.record(True, "", kind="world-model")
    guard.record(False, "non-finite loss_actor", kind="actor-critic")
    with pytest.raises(NonFiniteLossError, match="every actor-critic update"):
        guard.check_progress()
    guard.record(True, "", kind="actor-critic")
    guard.check_progress()


def test_fast_svginf_scores_the_stored_pre_tanh_values_of_saturated_actions():
    # the agent's own actor stores each action's pre-tanh value; with the policy pushed into
    # tanh saturation, the fast step must rebuild from it exactly as SVGInfLoss does
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_svg.modules import env_specs
    from torchrl_svg.train.agents import SVGInfAgent
    from torchrl_svg.train.builders import make_env

    agents = []
    for fast in (False, True):
        torch.manual_seed(0)
        cfg = load_config(
            [
                "algorithm=svginf",
                "env.name=Hand-v0",
                "env.max_episode_steps=20",
                f"compile.fast_update={str(fast).lower()}",
                "svg.actor_max_grad_norm=1e9",
            ]
        )
        env = make_env(cfg, num_envs=3)
        agents.append(SVGInfAgent(cfg, *env_specs(env), env=env))
    public, fast = agents
    for agent in agents:  # a location of 9 before the tanh: float32 actions saturate
        with torch.no_grad():
            agent.policy.module[0].module[0][-1].bias[:2].fill_(9.0)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        data = env.rollout(20, public.policy, break_when_any_done=False)
    assert (data["action_pre_tanh"].abs() > 8).float().mean() > 0.5  # saturated
    data = data.select(
        "observation",
        "action",
        "action_pre_tanh",
        "action_log_prob",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    )
    for agent in agents:
        agent.world_model.observe(data.reshape(-1))
    expected = public.policy_step(data.clone())
    got = fast.policy_step(data.clone())
    torch.testing.assert_close(got["loss_actor"], expected["loss_actor"], rtol=1e-5, atol=1e-6)
    grads_p = torch.cat([p.grad.flatten() for p in public._actor_params])
    grads_f = torch.cat([p.grad.flatten() for p in fast._actor_params])
    assert (grads_p - grads_f).abs().max() <= 1e-4 * grads_p.abs().max()


def test_fused_adam_step_is_adams_own_step_and_follows_a_reloaded_state():
    # bit-identical to Adam(fused=True).step(), with a skipped step (found_inf), per-group
    # learning rates, amsgrad / weight decay / AdamW, and after load_state_dict (a resume)
    import copy

    from torchrl_svg.train.fused_adam import FusedAdamStep

    for cls, kwargs in (
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"amsgrad": True, "weight_decay": 0.1}),
        (torch.optim.AdamW, {"weight_decay": 0.1}),
    ):
        torch.manual_seed(0)
        a = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        b = copy.deepcopy(a)

        def groups(net):
            return [
                {"params": net[0].parameters(), "lr": 1e-2},
                {"params": net[2].parameters(), "lr": 3e-3},
            ]

        reference = cls(groups(a), fused=True, **kwargs)
        optimizer = cls(groups(b), fused=True, **kwargs)
        step = FusedAdamStep(optimizer)
        for i in range(8):
            x = torch.randn(5, 3)
            found_inf = torch.tensor(1.0 if i == 3 else 0.0)
            reference.zero_grad(set_to_none=True)
            a(x).pow(2).sum().backward()
            reference.found_inf, reference.grad_scale = found_inf, None
            reference.step()
            reference.found_inf = None
            step.zero_grad()
            b(x).pow(2).sum().backward()
            step(found_inf)
            if i == 5:  # a resume replaces the optimiser's state tensors
                optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)
        expected, got = reference.state_dict()["state"], optimizer.state_dict()["state"]
        for index, state in expected.items():
            for name, value in state.items():
                assert torch.equal(value, got[index][name]), (cls.__name__, name)
        assert int(got[0]["step"]) == 7  # eight steps, one skipped


def test_plain_mlp_runs_layer_norm_critics_as_their_modules_do():
    from tensordict import TensorDict
    from torch import nn
    from torchrl.modules import MLP

    from torchrl_svg.modules import make_qvalue
    from torchrl_svg.modules.functional import PlainMLP

    torch.manual_seed(0)
    q = make_qvalue(3, 2, hidden_sizes=(16, 8), layer_norm=True)
    norms = [m for m in q.modules() if isinstance(m, nn.LayerNorm)]
    assert [n.normalized_shape for n in norms] == [(16,), (8,)]
    for n in norms:  # away from the identity affine map they start with
        n.weight.data.normal_()
        n.bias.data.normal_()
    x = torch.randn(7, 5)
    td = TensorDict({"observation": x[:, :3], "action": x[:, 3:]}, [7])
    torch.testing.assert_close(PlainMLP.from_module(q)(x), q(td)["state_action_value"])
    # twin critics as a loss holds them: a leading dimension per copy
    params = TensorDict.from_module(q).expand(2).clone()
    params.apply_(lambda t: t.add_(0.1 * torch.randn_like(t)))
    plain = PlainMLP.from_module(q, params)
    assert len(plain.parameters()) == 10  # 3 affine layers and 2 norms, weight and bias each
    expected = []
    for k in range(2):
        with params[k].to_module(q):
            expected.append(q(td)["state_action_value"])
    torch.testing.assert_close(plain(x), torch.stack(expected))
    # a norm where the plain network has none is refused, not skipped
    with pytest.raises(TypeError, match="LayerNorm after the output layer"):
        PlainMLP.from_module(
            nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.LayerNorm(1))
        )
    with pytest.raises(TypeError, match="must follow a Linear"):
        PlainMLP.from_module(
            MLP(in_features=3, out_features=1, num_cells=[4]).insert(0, nn.LayerNorm(3))
        )


def test_critic_horizon_step_refuses_stored_imagined_steps():
    # a ModelRollout transform's imagined steps would be read by S2VGLoss, not by the fast step
    _, fast, data = agent_pair(["loss.horizon=2"])
    key = fast.loss.tensor_keys.imagined
    data[key] = TensorDict({"observation": torch.randn(64, 1, OBS)}, [64, 1])
    with pytest.raises(ValueError, match="imagined"):
        fast.update(data)
