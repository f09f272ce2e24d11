r"""Does a checkpoint's model and critic rank the actors of its neighbours as the real task does?

S2VG's actor climbs the soft model return :math:`J(\pi) = \mathbb E_{s\sim D}[\sum_t \gamma^t
c_t(\hat r_t - \alpha\log\pi(\tilde a_t|\hat s_t)) + \gamma^H c_H V(\hat s_H)]` (eq 11 for
``H = 1``) that its learned model and critic define. When training collapses (the evaluation
return falls from thousands to near zero between two checkpoints) this script asks whether the
judges of the earlier checkpoint (its world model, its critic, its alpha and its replay
states) already preferred the later, worse actor: if so, the actor climbed an objective that
the model and critic got wrong away from the data (exploited them); if they rate it worse,
the actor was not following their objective there.

For checkpoint files of one S2VG run (the grid's ``checkpoint.pt`` copies) and every pair
(judge ``i``, actor ``j``) it loads checkpoint ``i`` with the actor's parameters of
checkpoint ``j`` and measures ``J`` with the run's own actor objective (its
``loss.actor_horizon``, the same replay batches of judge ``i`` and the same noise for every
actor), split into its model-reward, entropy-bonus and final-value parts, beside each actor's
real deterministic evaluation return recorded in its checkpoint. For the last two checkpoints
``a`` and ``b`` it also takes the world model, the critic (Q, V, target V and alpha) and the
actor each from ``a`` or ``b`` (eight mixes, on ``b``'s replay states), which tells whose
change moved the objective. Writes ``<out>/<name>.json``::

    python benchmarks/cross_checkpoint.py copies/of/checkpoint_*.pt \
        --config runs/mujoco/s2vg_h3_learned_alpha_HalfCheetah-v5/seed0/config.yaml \
        --name s2vg_h3_learned_alpha_HalfCheetah-v5_seed0_cross_checkpoint \
        --out benchmarks/results/mujoco_100k/diagnostics

(the grid overwrites ``checkpoint.pt`` every 5k steps: keep copies of it as the run goes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from learning import _git_commit  # noqa: E402
from multistep_gradient import soft_return_parts  # noqa: E402

from torchrl_svg.modules import env_specs  # noqa: E402
from torchrl_svg.train import load_config, make_agent  # noqa: E402
from torchrl_svg.train.builders import make_env  # noqa: E402
from torchrl_svg.train.checkpoint import load_checkpoint  # noqa: E402

GROUPS = {
    "actor": ("actor_network_params.",),
    "critic": (
        "qvalue_network_params.",
        "value_network_params.",
        "target_value_network_params.",
        "log_alpha",
    ),
    "model": ("dynamics_model_params.", "reward_model_params.", "termination_model_params."),
}


def _mixed(base: dict, **sources: dict) -> dict:
    """The agent state ``base`` with the named groups' parameters taken from other states.

    ``sources``: ``actor=``, ``critic=`` (the Q and V networks, the target V and alpha) or
    ``model=`` (dynamics, reward and termination models), each a checkpoint's agent state.
    """
    loss = dict(base["loss"])
    world_model = {**base["world_model"], "loss": dict(base["world_model"]["loss"])}
    for group, source in sources.items():
        keys = [k for k in source["loss"] if k.startswith(GROUPS[group])]
        if not keys or {k for k in loss if k.startswith(GROUPS[group])} != set(keys):
            raise KeyError(f"the checkpoints' {group} parameters differ in their names.")
        loss.update({k: source["loss"][k] for k in keys})
        if group == "model":
            # the world-model loss holds the same modules and is loaded after the loss
            prefixes = tuple(p.replace("_params", "") for p in GROUPS["model"])
            world_model["loss"].update(
                {k: v for k, v in source["world_model"]["loss"].items() if k.startswith(prefixes)}
            )
    return {**base, "loss": loss, "world_model": world_model}


@torch.no_grad()
def objective(loss, batches: list) -> dict[str, float]:
    """Mean soft model return over ``batches`` and its three parts (fixed noise per batch)."""
    totals = {"soft_model_return": 0.0, "reward_part": 0.0, "entropy_part": 0.0}
    for index, batch in enumerate(batches):
        torch.manual_seed(index)
        rollout = loss._actor_rollout(batch.clone())
        value = loss._state_value(rollout["final_state"], loss._cached_detached_value_params)
        parts = soft_return_parts(loss, rollout, value)
        parts["soft_model_return"] = parts.pop("whole")
        for name, values in parts.items():
            totals[name] += float(values.mean()) / len(batches)
    totals["value_part"] = (
        totals["soft_model_return"] - totals["reward_part"] - totals["entropy_part"]
    )
    return totals


def _batches(state: dict, size: int, count: int, seed: int) -> list:
    """``count`` uniform batches of ``size`` from a checkpoint's replay buffer (seeded)."""
    replay = state["replay"]["data"]
    generator = torch.Generator().manual_seed(seed)
    return [
        replay[torch.randint(replay.numel(), (size,), generator=generator)] for _ in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--config", type=Path, required=True, help="the run's config.yaml")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config([], config_file=args.config)
    if cfg.algorithm != "s2vg":
        raise ValueError(f"{args.config}: an S2VG run is needed, got {cfg.algorithm}.")
    env = make_env(cfg, seed_offset=70_000)
    agent = make_agent(cfg, *env_specs(env), env=env)
    env.close()
    states = sorted(
        (load_checkpoint(path) for path in args.checkpoints),
        key=lambda s: s["counters"]["frames"],
    )
    frames = [s["counters"]["frames"] for s in states]
    real = []
    for s in states:
        returns = s["records"][-1]["returns"] if s["records"] else []
        real.append(sum(returns) / len(returns) if returns else None)
    judges = []
    for i, judge in enumerate(states):
        batches = _batches(judge, cfg.replay_buffer.batch_size, args.batches, seed=i)
        row = []
        for j, actor in enumerate(states):
            agent.load_state_dict(_mixed(judge["agent"], actor=actor["agent"]))
            row.append({"actor_frames": frames[j], **objective(agent.loss, batches)})
            print(
                f"judge {frames[i]} actor {frames[j]}: J {row[-1]['soft_model_return']:.2f} "
                f"(real evaluation return of the actor {real[j]})"
            )
        judges.append({"judge_frames": frames[i], "alpha": float(agent.loss._alpha), "row": row})
    # the last two checkpoints (a, b): model, critic and actor each from a or b, on b's states
    a, b = states[-2], states[-1]
    batches = _batches(b, cfg.replay_buffer.batch_size, args.batches, seed=len(states))
    mixes = []
    for model in (a, b):
        for critic in (a, b):
            for actor in (a, b):
                agent.load_state_dict(
                    _mixed(
                        b["agent"],
                        model=model["agent"],
                        critic=critic["agent"],
                        actor=actor["agent"],
                    )
                )
                names = {
                    part: source["counters"]["frames"]
                    for part, source in (("model", model), ("critic", critic), ("actor", actor))
                }
                mixes.append({**names, **objective(agent.loss, batches)})
                print(f"mix {names}: J {mixes[-1]['soft_model_return']:.2f}")
    report = {
        "command": "python benchmarks/cross_checkpoint.py " + " ".join(argv or sys.argv[1:]),
        "git_commit": _git_commit(),
        "env": cfg.env.name,
        "seed": cfg.env.seed,
        "actor_horizon": cfg.loss.actor_horizon,
        "states_per_judge": args.batches * cfg.replay_buffer.batch_size,
        "frames": frames,
        "real_deterministic_return": dict(zip(map(str, frames), real, strict=True)),
        "judges": judges,
        "mixes_of_last_two": mixes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
