"""S2VG maths in float64: value-expansion targets by hand, actor gradients against analytic values."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_batch, make_s2vg
from tensordict import TensorDict
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import nn
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import SoftUpdate

from torchrl_svg.modules import GaussianDynamics, KnownTermination, RewardModel
from torchrl_svg.objectives import S2VGLoss

DTYPE = torch.float64


def constant_noise_normal(noise: float) -> type[torch.distributions.Normal]:
    """A Normal whose reparameterised draws always use the same standard-normal noise."""

    class ConstantNoiseNormal(torch.distributions.Normal):
        def rsample(self, sample_shape=torch.Size()):  # noqa: B008
            return self.loc + self.scale * noise

    return ConstantNoiseNormal


class LinearGaussianPolicy(nn.Module):
    """loc = theta * s, scale = exp(log_scale) (one action dimension)."""

    def __init__(self, theta: float, log_scale: float):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=DTYPE))
        self.log_scale = nn.Parameter(torch.tensor(log_scale, dtype=DTYPE))

    def forward(self, s):
        loc = self.theta * s
        return loc, self.log_scale.exp().expand_as(loc)


class LinearDynamicsMean(nn.Module):
    """loc = s + b * a, scale = sigma: a known, parameter-free model."""

    def __init__(self, b: float, sigma: float, shift: float = 0.0):
        super().__init__()
        self.b, self.sigma, self.shift = b, sigma, shift

    def forward(self, s, a):
        loc = s + self.b * a + self.shift
        return loc, torch.full_like(loc, self.sigma)


class QuadraticReward(nn.Module):
    def forward(self, s, a):
        return -(s.pow(2) + a.pow(2))


class Quadratic(nn.Module):
    """V(s) = c * s^2 with a learnable c."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=DTYPE))

    def forward(self, s):
        return self.c * s.pow(2)


def known_dynamics(b: float, sigma: float, distribution_class=torch.distributions.Normal):
    """A user's own analytic dynamics model, as the losses take one (get_dist over next obs)."""
    return ProbabilisticTensorDictSequential(
        TensorDictModule(
            LinearDynamicsMean(b, sigma),
            in_keys=["observation", "action"],
            out_keys=[("model", "loc"), ("model", "scale")],
        ),
        ProbabilisticTensorDictModule(
            in_keys={"loc": ("model", "loc"), "scale": ("model", "scale")},
            out_keys=[("next", "observation")],
            distribution_class=distribution_class,
        ),
    )


def policy(theta: float, log_scale: float, distribution_class=torch.distributions.Normal):
    return ProbabilisticActor(
        TensorDictModule(
            LinearGaussianPolicy(theta, log_scale),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=distribution_class,
    )


def reward_module():
    return TensorDictModule(
        QuadraticReward(), in_keys=["observation", "action"], out_keys=[("next", "reward")]
    )


def linear_value(weight: float, bias: float) -> ValueOperator:
    lin = nn.Linear(1, 1).to(DTYPE)
    with torch.no_grad():
        lin.weight.fill_(weight)
        lin.bias.fill_(bias)
    return ValueOperator(lin, in_keys=["observation"])


class LinearQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1).to(DTYPE)

    def forward(self, s, a):
        return self.linear(torch.cat([s, a], -1))


def qvalue() -> ValueOperator:
    return ValueOperator(LinearQ(), in_keys=["observation", "action"])


# ----------------------------------------------------------------- eq 7
ETA, ZETA = 0.7, -0.5  # the (constant) policy and model noise of the expansion example
THETA, SCALE = 0.5, 0.3  # policy: a = 0.5 s + 0.3 * eta
B_DYN, SIGMA_DYN = 0.1, 0.2  # model: s' = s + 0.1 a + 0.2 * zeta
V_W, V_B = 2.0, 1.0  # target value: V(s) = 2 s + 1
GAMMA, ALPHA = 0.9, 0.2
TERMINAL = 1.0  # imagined states above this terminate


def _expansion_loss(horizon: int, expansion_entropy: bool = True) -> S2VGLoss:
    loss = S2VGLoss(
        policy(THETA, math.log(SCALE), constant_noise_normal(ETA)),
        qvalue(),
        linear_value(V_W, V_B),
        known_dynamics(B_DYN, SIGMA_DYN, constant_noise_normal(ZETA)),
        reward_module(),
        KnownTermination(lambda s: s[..., 0] > TERMINAL),
        horizon=horizon,
        alpha_init=ALPHA,
        fixed_alpha=True,
        expansion_entropy=expansion_entropy,
    ).double()
    loss.make_value_estimator(gamma=GAMMA)
    SoftUpdate(loss, tau=0.1)
    return loss


def _real_batch() -> TensorDict:
    # three real transitions; the second one terminated in the real environment
    return TensorDict(
        {
            "observation": torch.tensor([[0.2], [-0.4], [0.9]], dtype=DTYPE),
            "action": torch.tensor([[0.1], [0.3], [-0.2]], dtype=DTYPE),
            ("next", "observation"): torch.tensor([[0.3], [-0.5], [0.98]], dtype=DTYPE),
            ("next", "reward"): torch.tensor([[1.0], [-2.0], [0.5]], dtype=DTYPE),
            ("next", "terminated"): torch.tensor([[False], [True], [False]]),
            ("next", "done"): torch.tensor([[False], [True], [False]]),
        },
        [3],
    )


def _hand_targets(s0, a0, r0, s1, term1, horizon, expansion_entropy=True):
    """Equation 7 written out with plain floats (soft version with the entropy bonus)."""
    log_norm = -0.5 * math.log(2 * math.pi)
    log_pi = (
        -0.5 * ETA**2 - math.log(SCALE) + log_norm
    )  # log N(a; loc, SCALE) at a = loc + SCALE * eta
    states, rewards, conts, log_probs = [s0], [r0], [1.0 - term1], [None]
    s = s1
    for _ in range(1, horizon):
        a = THETA * s + SCALE * ETA
        r = -(s**2 + a**2)
        s_next = s + B_DYN * a + SIGMA_DYN * ZETA
        states.append(s)
        rewards.append(r)
        conts.append(0.0 if s_next > TERMINAL else 1.0)
        log_probs.append(log_pi)
        s = s_next
    future = V_W * s + V_B
    targets = [0.0] * horizon
    for t in reversed(range(horizon)):
        targets[t] = rewards[t] + GAMMA * conts[t] * future
        future = targets[t]
        if t >= 1 and expansion_entropy:
            future -= ALPHA * log_probs[t]
    weights = [1.0]
    for t in range(1, horizon):
        weights.append(weights[-1] * conts[t - 1])
    return targets, weights, states


@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("expansion_entropy", [True, False])
def test_value_expansion_targets_match_hand_computation(horizon, expansion_entropy):
    loss = _expansion_loss(horizon, expansion_entropy)
    data = _real_batch()
    expansion = loss.value_expansion(data)
    assert expansion.batch_size == torch.Size([horizon, 3])
    for i in range(3):
        targets, weights, states = _hand_targets(
            data["observation"][i, 0].item(),
            data["action"][i, 0].item(),
            data["next", "reward"][i, 0].item(),
            data["next", "observation"][i, 0].item(),
            float(data["next", "terminated"][i, 0]),
            horizon,
            expansion_entropy,
        )
        for t in range(horizon):
            assert expansion["value_target"][t, i].item() == pytest.approx(targets[t], abs=1e-12)
            assert expansion["weight"][t, i].item() == pytest.approx(weights[t], abs=1e-12)
            assert expansion["observation"][t, i, 0].item() == pytest.approx(states[t], abs=1e-12)


def test_h1_target_is_the_real_td_target():
    loss = _expansion_loss(1)
    data = _real_batch()
    target = loss.value_expansion(data)["value_target"][0]
    expected = data["next", "reward"].squeeze(-1) + GAMMA * (
        1 - data["next", "terminated"].squeeze(-1).double()
    ) * (V_W * data["next", "observation"].squeeze(-1) + V_B)
    torch.testing.assert_close(target, expected)


def test_h3_imagined_termination_masks_later_steps():
    loss = _expansion_loss(3)
    data = _real_batch()
    weights = loss.value_expansion(data)["weight"]
    # sample 2 starts at s1 = 0.98: a = 0.79, s2 = 0.98 + 0.079 - 0.1 = 0.959 (alive),
    # a = 0.6895, s3 = 0.959 + 0.06895 - 0.1 = 0.928 (alive). Sample 1 terminated for real.
    torch.testing.assert_close(weights[:, 1], torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE))
    torch.testing.assert_close(weights[:, 2], torch.ones(3, dtype=DTYPE))


def test_qvalue_loss_is_the_weighted_mean_over_the_horizon():
    loss = _expansion_loss(3)
    data = _real_batch()
    expansion = loss.value_expansion(data)
    pred = loss._qvalues(expansion, expansion["action"], loss.qvalue_network_params).detach()
    per_sample = ((pred - expansion["value_target"]) ** 2 * expansion["weight"]).mean(1).sum(0)
    value, _ = loss.qvalue_loss(data)
    torch.testing.assert_close(value, per_sample.mean())


# ------------------------------------------------------------ eqs 10-11
def _actor_gradient(b: float, *, theta=0.4, log_scale=-0.5, c=-0.7, sigma=0.3, n=200_000):
    """Monte Carlo S2VG actor gradient with a known model, and its analytic expectation."""
    torch.manual_seed(0)
    loss = S2VGLoss(
        policy(theta, log_scale),
        qvalue(),
        ValueOperator(Quadratic(c), in_keys=["observation"]),
        known_dynamics(b, sigma),
        reward_module(),
        None,
        alpha_init=ALPHA,
        fixed_alpha=True,
    ).double()
    loss.make_value_estimator(gamma=GAMMA)
    SoftUpdate(loss, tau=0.1)
    s = torch.randn(n, 1, dtype=DTYPE)
    data = TensorDict({"observation": s}, [n])
    value, _ = loss.actor_loss(data)
    value.backward()
    params = loss.actor_network_params
    grad_theta = params["module", "0", "module", "theta"].grad.item()
    grad_log_scale = params["module", "0", "module", "log_scale"].grad.item()
    s2 = s.pow(2).mean().item()
    e2w = math.exp(2 * log_scale)
    # L = -E[r(s, a) - alpha log pi(a|s) + gamma V(s')], a = theta s + e^w eta, s' = s + b a + sigma zeta
    analytic_theta = 2 * theta * s2 - 2 * GAMMA * c * b * (1 + b * theta) * s2
    analytic_log_scale = 2 * e2w - ALPHA - 2 * GAMMA * c * b**2 * e2w
    others = [
        p.grad
        for td in (loss.value_network_params, loss.qvalue_network_params)
        for p in td.values(True, True)
    ]
    return (grad_theta, grad_log_scale), (analytic_theta, analytic_log_scale), others


@pytest.mark.parametrize("b", [0.5, -1.0])
def test_actor_gradient_matches_analytic_value_through_model_jacobian(b):
    (g_theta, g_scale), (a_theta, a_scale), others = _actor_gradient(b)
    assert g_theta == pytest.approx(a_theta, rel=2e-2, abs=2e-3)
    assert g_scale == pytest.approx(a_scale, rel=2e-2, abs=2e-3)
    assert all(g is None for g in others), "critic parameters received an actor gradient"


def test_a_different_model_gives_a_different_actor_gradient():
    (g1, _), (a1, _), _ = _actor_gradient(0.5)
    (g2, _), (a2, _), _ = _actor_gradient(-1.0)
    # the analytic values differ by a lot; so do the estimates
    assert abs(a1 - a2) > 0.5
    assert abs(g1 - g2) > 0.5


def test_learned_models_enter_the_actor_gradient_but_get_none():
    loss = make_s2vg(horizon=1)
    SoftUpdate(loss, tau=0.1)
    data = make_batch((64,))

    def actor_grads():
        loss.zero_grad(set_to_none=True)
        for td in (loss.dynamics_model_params, loss.reward_model_params):
            for p in td.values(True, True):
                p.grad = None
        torch.manual_seed(11)
        value, _ = loss.actor_loss(data)
        value.backward()
        grads = torch.cat([p.grad.flatten() for p in loss.actor_network_params.values(True, True)])
        model_grads = [
            p.grad
            for td in (
                loss.dynamics_model_params,
                loss.reward_model_params,
                loss.termination_model_params,
                loss.value_network_params,
            )
            for p in td.values(True, True)
            if isinstance(p, nn.Parameter)
        ]
        return grads, model_grads

    base, model_grads = actor_grads()
    assert all(g is None for g in model_grads)
    again, _ = actor_grads()
    torch.testing.assert_close(base, again)  # same seed, same models: same gradient
    with torch.no_grad():  # another dynamics model
        for p in loss.dynamics_model_params.values(True, True):
            if isinstance(p, nn.Parameter):
                p.add_(0.3 * torch.randn_like(p))
    other_dynamics, _ = actor_grads()
    assert not torch.allclose(base, other_dynamics, atol=1e-6)
    with torch.no_grad():  # another reward model
        for p in loss.reward_model_params.values(True, True):
            if isinstance(p, nn.Parameter):
                p.add_(0.3 * torch.randn_like(p))
    other_reward, _ = actor_grads()
    assert not torch.allclose(other_dynamics, other_reward, atol=1e-6)


def test_gaussian_models_work_as_the_models_of_the_loss_in_float64():
    loss = S2VGLoss(
        policy(0.3, -1.0),
        qvalue(),
        linear_value(1.0, 0.0),
        GaussianDynamics(1, 1, hidden_sizes=(8,)).double(),
        RewardModel(1, 1, hidden_sizes=(8,)).double(),
        fixed_alpha=True,
    )
    loss.make_value_estimator(gamma=0.99)
    SoftUpdate(loss, tau=0.1)
    data = _real_batch()
    out = loss(data)
    assert all(torch.isfinite(out[k]) for k in ("loss_actor", "loss_qvalue", "loss_value"))
