"""The per-task presets of each algorithm, as data (applied over the schema's defaults).

Values resolve in the order described in :mod:`torchrl_svg.train.config`: the
dataclass defaults, :data:`ALGORITHM_DEFAULTS`, an example's own defaults file,
the task's entry of :data:`PRESETS`, then the user's file and overrides.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALGORITHM_DEFAULTS", "KNOWN_REWARD_ENVS", "OWN_ENVS", "PRESETS", "SAC_SETTINGS"]

#: The package's own reference tasks (torchrl_svg.envs), run by these names.
OWN_ENVS = ("Hand-v0", "LQG-v0")
KNOWN_REWARD_ENVS = frozenset(OWN_ENVS)


# S2VG paper, Appendix A, Table 2 (policy/value networks (256, 256), ReLU, 1000 env
# steps per epoch). Parts of the table are illegible in our copy; where a column is
# blank it takes the value to its left, and the model sizes are our best reading.
# Columns: collector.total_frames, collector.init_random_frames, model.hidden_sizes,
# loss.alpha_init, loss.updates_per_step (m), optim.actor_lr, critic_lr, model_lr.
_S2VG_TABLE: dict[str, tuple[int, int, list[int], float, int, float, float, float]] = {
    "Pendulum-v1": (10_000, 1_000, [32, 16], 0.2, 5, 3e-4, 3e-4, 3e-4),
    "InvertedPendulum-v5": (20_000, 1_000, [32, 16], 0.1, 1, 3e-4, 3e-4, 3e-4),
    "HalfCheetah-v5": (200_000, 5_000, [256, 128], 0.4, 5, 3e-4, 1e-3, 3e-4),
    "Hopper-v5": (200_000, 5_000, [200, 200], 0.2, 5, 3e-4, 1e-3, 1e-4),
    "Walker2d-v5": (300_000, 5_000, [256, 256], 0.4, 3, 3e-4, 3e-4, 1e-4),
}


def _s2vg_preset(env: str) -> dict[str, Any]:
    """The S2VG preset of ``env``: its row of :data:`_S2VG_TABLE` as configuration groups."""
    frames, warmup, model, alpha, updates, actor_lr, critic_lr, model_lr = _S2VG_TABLE[env]
    return {
        "collector": {"total_frames": frames, "init_random_frames": warmup},
        "model": {"hidden_sizes": list(model)},
        "loss": {"alpha_init": alpha, "updates_per_step": updates},
        "optim": {"actor_lr": actor_lr, "critic_lr": critic_lr, "model_lr": model_lr},
    }


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "s2vg": {env: _s2vg_preset(env) for env in _S2VG_TABLE}
}

# SVG paper, App. D: generic 2-hidden-layer tanh networks; Table 1 sizes (policy / value /
# model units per state dimension, one model sub-network per dimension, constant sigma) and
# the discount factors. Tasks without a row take the nearest one (cart-pole for the
# pendulums, the monoped for Hopper, the cheetah for Walker2d).
_SVG_SIZES: dict[str, tuple[list[int], list[int], list[int]]] = {
    "Hand-v0": ([100, 100], [200, 100], [20, 20]),
    "LQG-v0": ([100, 100], [200, 100], [20, 20]),
    "Pendulum-v1": ([100, 100], [200, 100], [20, 20]),
    "InvertedPendulum-v5": ([100, 100], [200, 100], [20, 20]),
    "HalfCheetah-v5": ([100, 100], [400, 200], [40, 40]),
    "Hopper-v5": ([100, 100], [400, 200], [50, 50]),
    "Walker2d-v5": ([100, 100], [400, 200], [40, 40]),
}
_SVG_GAMMA = {"Hand-v0": 1.0, "HalfCheetah-v5": 0.98, "Hopper-v5": 0.95, "Walker2d-v5": 0.98}


def _svg_preset(env: str) -> dict[str, Any]:
    policy, value, model = _SVG_SIZES[env]
    preset: dict[str, Any] = {
        "network": {
            "actor_hidden_sizes": policy,
            "critic_hidden_sizes": value,
            "activation": "tanh",
        },
        "model": {
            "hidden_sizes": model,
            "per_dimension": True,
            "sigma": "constant",
            "activation": "tanh",
        },
    }
    if env in _SVG_GAMMA:
        preset["loss"] = {"gamma": _SVG_GAMMA[env]}
    if env in KNOWN_REWARD_ENVS:
        preset["model"]["reward"] = "known"
    return preset


for _algo in ("svg0", "svg1", "svg1_er", "svgk", "svginf"):
    PRESETS[_algo] = {env: _svg_preset(env) for env in _SVG_SIZES}

# SVG(1)-ER on Pendulum-v1 (measured in benchmarks/results/svg1_er_kl_Pendulum-v1, 3 seeds at
# 20k steps): with the App. D sizes alone the policy's standard deviation collapses towards
# its floor while the replay keeps every transition, the importance weights of replayed
# actions vanish (batch mean 0.005 by 10k steps) and the policy stops learning. A floor of 0.3
# on the policy's standard deviation keeps the weights at ~0.3, and App. D's KL penalty
# between replay steps (KL[pi_theta^(k-1) || pi_theta], weight 1) steadies the updates.
PRESETS["svg1_er"]["Pendulum-v1"]["network"]["scale_lb"] = 0.3
PRESETS["svg1_er"]["Pendulum-v1"]["svg"] = {"kl_coef": 1.0}

# The SAC baseline (TorchRL's SACLoss) runs with S2VG's per-task networks, collector, replay
# and warm-up, and with SAC's own settings as TorchRL's sota-implementations/sac and CleanRL
# run it: one update per environment step, a learned alpha (initial 1.0, target entropy
# -|A|) and one learning rate, 3e-4, for the actor, the critics and alpha.
SAC_SETTINGS: dict[str, dict[str, Any]] = {
    "loss": {
        "fixed_alpha": False,
        "alpha_init": 1.0,
        "target_entropy": "auto",
        "updates_per_step": 1,
    },
    "optim": {"actor_lr": 3e-4, "critic_lr": 3e-4, "alpha_lr": 3e-4},
}
PRESETS["sac"] = {
    env: {
        **{
            group: dict(values)
            for group, values in preset.items()
            if group not in ("model", "loss", "optim")
        },
        **{group: dict(values) for group, values in SAC_SETTINGS.items()},
    }
    for env, preset in PRESETS["s2vg"].items()
}
#: Settings that are part of what an algorithm is: applied for every task (before its
#: preset, and also with ``use_preset=false``).
ALGORITHM_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {"sac": SAC_SETTINGS}
