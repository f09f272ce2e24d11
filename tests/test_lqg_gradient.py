"""The exact LQG policy gradient against finite differences of the closed-form objective (float64)."""

from __future__ import annotations

import pytest
import torch

from torchrl_svg.envs import (
    LQGEnv,
    lqg_expected_return,
    lqg_lookahead_return,
    lqg_policy_gradient,
    lqg_state_moments,
    lqg_value_function,
)

DTYPE = torch.float64
GAIN = torch.tensor([[-0.15, -0.55]], dtype=DTYPE)
LOG_STD = torch.tensor([-0.8], dtype=DTYPE)


def central_differences(fn, gain, log_std, eps=1e-6):
    flat = torch.cat([gain.flatten(), log_std])
    grad = torch.zeros_like(flat)
    for i in range(flat.numel()):
        up, down = flat.clone(), flat.clone()
        up[i] += eps
        down[i] -= eps

        def split(x):
            return x[: gain.numel()].reshape(gain.shape), x[gain.numel() :]

        grad[i] = (fn(*split(up)) - fn(*split(down))) / (2 * eps)
    return grad[: gain.numel()].reshape(gain.shape), grad[gain.numel() :]


@pytest.mark.parametrize("horizon, gamma", [(10, 1.0), (50, 0.95), (200, 0.99)])
def test_finite_horizon_gradient_matches_finite_differences(horizon, gamma):
    env = LQGEnv(dtype=DTYPE)
    J, dK, dl = lqg_policy_gradient(env, GAIN, LOG_STD, horizon, gamma)
    fdK, fdl = central_differences(
        lambda K, ell: lqg_expected_return(env, K, ell, horizon, gamma), GAIN, LOG_STD
    )
    torch.testing.assert_close(dK, fdK, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dl, fdl, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(J, lqg_expected_return(env, GAIN, LOG_STD, horizon, gamma))


def test_infinite_horizon_gradient_matches_finite_differences_and_the_long_finite_one():
    env = LQGEnv(dtype=DTYPE)
    gamma = 0.9
    J, dK, dl = lqg_policy_gradient(env, GAIN, LOG_STD, "inf", gamma)

    def objective(K, ell):
        P, c = lqg_value_function(env, K, ell, gamma)
        mean, cov = env.init_mean, torch.diag(env.init_std**2)
        return -(torch.trace(P @ cov) + mean @ P @ mean) - c

    fdK, fdl = central_differences(objective, GAIN, LOG_STD)
    torch.testing.assert_close(dK, fdK, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dl, fdl, rtol=1e-6, atol=1e-8)
    # gamma^400 is negligible: the finite-horizon objective and gradient converge to it
    J_long, dK_long, dl_long = lqg_policy_gradient(env, GAIN, LOG_STD, 400, gamma)
    torch.testing.assert_close(J_long, J, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dK_long, dK, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(dl_long, dl, rtol=1e-8, atol=1e-10)


def test_lookahead_with_the_exact_value_is_the_value():
    # E[sum_{t<k} gamma^t r_t + gamma^k V(s_k)] from s_0 is V(s_0) for every k (Bellman)
    env = LQGEnv(dtype=DTYPE)
    gamma = 0.9
    P, c = lqg_value_function(env, GAIN, LOG_STD, gamma)
    starts = torch.randn(5, 2, dtype=DTYPE)
    value = (-(((starts @ P) * starts).sum(-1)) - c).mean()
    zero = torch.zeros(2, 2, dtype=DTYPE)
    for k in (0, 1, 3, 10):
        got = lqg_lookahead_return(env, GAIN, LOG_STD, starts, zero, k, gamma, (P, c))
        torch.testing.assert_close(got, value)


def test_state_moments_match_a_monte_carlo_rollout():
    env = LQGEnv(dtype=DTYPE, batch_size=[20_000], seed=0, horizon=6)
    mean, cov = lqg_state_moments(env, GAIN, LOG_STD, 6)
    from torchrl_svg.envs import linear_gaussian_actor

    actor = linear_gaussian_actor(2, 1, gain=GAIN, log_std=LOG_STD, dtype=DTYPE)
    with torch.no_grad():
        data = env.rollout(6, actor)
    states = data["observation"]  # [N, T, n]
    torch.testing.assert_close(states.mean(0), mean, atol=0.02, rtol=0.0)
    centred = states - states.mean(0)
    mc_cov = torch.einsum("ntk,ntl->tkl", centred, centred) / states.shape[0]
    torch.testing.assert_close(mc_cov, cov, atol=0.02, rtol=0.05)
