"""The training recipe: configuration, end-to-end runs, files written, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchrl.envs import GymEnv

from torchrl_svg import NonFiniteLossError
from torchrl_svg.modules import GaussianDynamics, env_specs
from torchrl_svg.train import (
    PRESETS,
    ConfigError,
    S2VGAgent,
    load_checkpoint,
    load_config,
    make_agent,
    train,
)
from torchrl_svg.train.builders import check_against_env, episode_length, make_env, num_threads

TINY = [
    "network.actor_hidden_sizes=[32,32]",
    "network.critic_hidden_sizes=[32,32]",
    "model.hidden_sizes=[32,32]",
    "model.pretrain_updates=20",
    "eval.episodes=1",
    "logger.progress=false",
]


# ---------------------------------------------------------------- config
def test_defaults_are_the_pendulum_preset():
    cfg = load_config([])
    assert cfg.env.name == "Pendulum-v1"
    assert cfg.model.hidden_sizes == PRESETS["s2vg"]["Pendulum-v1"]["model"]["hidden_sizes"]
    assert cfg.loss.updates_per_step == 5


def test_task_presets_follow_table_2_and_overrides_win():
    cfg = load_config(["env.name=HalfCheetah-v5"])
    assert (cfg.loss.alpha_init, cfg.loss.updates_per_step, cfg.optim.critic_lr) == (0.4, 5, 1e-3)
    cfg = load_config(["env.name=HalfCheetah-v5", "loss.alpha_init=0.05", "use_preset=false"])
    assert cfg.loss.alpha_init == 0.05 and cfg.optim.critic_lr == 3e-4


@pytest.mark.parametrize("extra", [[], ["use_preset=false"]])
def test_sac_is_run_as_its_users_run_it(extra):
    # a learned alpha from 1.0 towards -|A|, one lr, one update per step; S2VG's networks,
    # collector and warm-up; the user's own overrides still win
    cfg = load_config(["algorithm=sac", "env.name=HalfCheetah-v5", *extra])
    assert (cfg.loss.fixed_alpha, cfg.loss.alpha_init, cfg.loss.target_entropy) == (
        False,
        1.0,
        "auto",
    )
    assert (cfg.optim.actor_lr, cfg.optim.critic_lr, cfg.optim.alpha_lr) == (3e-4,) * 3
    assert cfg.loss.updates_per_step == 1
    s2vg = load_config(["env.name=HalfCheetah-v5", *extra])
    assert cfg.network == s2vg.network and cfg.collector == s2vg.collector
    agent = make_agent(cfg, *env_specs(GymEnv("HalfCheetah-v5")))
    assert agent.loss.target_entropy.item() == -6.0
    assert agent.loss.log_alpha.requires_grad and agent.loss.log_alpha.item() == 0.0
    assert load_config(["algorithm=sac", "loss.alpha_init=0.3"]).loss.alpha_init == 0.3


def test_the_thread_count_is_the_config_s_then_omp_num_threads_then_the_usable_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert num_threads(load_config(["num_threads=2"])) == 2
    assert num_threads(load_config([])) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert num_threads(load_config([])) == len(os.sched_getaffinity(0))


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("env:\n  name: InvertedPendulum-v5\nloss:\n  horizon: 2\n")
    cfg = load_config(["loss.horizon=3"], config_file=path)
    assert cfg.env.name == "InvertedPendulum-v5" and cfg.loss.horizon == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.horzion=3", "loss.horzion"),
        ("optim.actor_lr=fast", "optim.actor_lr"),
        ("env.name=NoSuchTask-v0", "env.name='NoSuchTask-v0'"),
        ("model.termination=sometimes", "model.termination"),
        ("loss.gamma=1.5", "loss.gamma"),
        ("collector.frames_per_batch=0", "collector.frames_per_batch"),
    ],
)
def test_bad_configuration_fails_before_training_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config([override])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["algorithm=svgk", "loss.horizon=5"],
            "loss.horizon=5 does nothing with algorithm='svgk'.*use svg.horizon",
        ),
        (
            ["algorithm=sac", "svg.horizon=3"],
            "svg.horizon=3 does nothing with algorithm='sac'.*read by svgk only",
        ),
        (["algorithm=svg1", "svg.kl_coef=0.1"], "svg.kl_coef=0.1 .*read by svg1_er, svgk only"),
        (["algorithm=svginf", "loss.actor_max_grad_norm=1.0"], "use svg.actor_max_grad_norm"),
    ],
)
def test_a_key_the_algorithm_does_not_read_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_every_key_with_choices_is_literal_typed_and_refuses_other_values():
    import typing

    from omegaconf import OmegaConf

    from torchrl_svg.train import AGENTS
    from torchrl_svg.train.config_schema import CHOICES, Config

    assert len(CHOICES) >= 15  # algorithm, precision, activations, backends, modes, ...
    assert set(CHOICES[("algorithm",)]) == set(AGENTS)
    hints = typing.get_type_hints(Config)
    assert typing.get_origin(hints["algorithm"]) is typing.Literal
    schema = OmegaConf.structured(Config)
    for path, choices in CHOICES.items():
        key = ".".join(path)
        for value in choices:  # the schema takes every allowed value (None is written null)
            text = "null" if value is None else value
            node = OmegaConf.merge(schema, OmegaConf.from_dotlist([f"{key}={text}"]))
            assert OmegaConf.select(node, key) == value, key
        allowed = ", ".join(repr(c) for c in choices if c is not None)
        with pytest.raises(ConfigError, match=rf"'{key}': Invalid value 'bogus'.*{allowed}"):
            load_config([f"{key}=bogus"])


def test_every_preset_and_a_saved_configuration_pass_the_key_owner_check(tmp_path):
    from omegaconf import OmegaConf

    from torchrl_svg.train import AGENTS
    from torchrl_svg.train.config import to_dict

    algorithms = sorted(AGENTS)
    for algorithm in algorithms:
        for env in sorted({e for preset in PRESETS.values() for e in preset}):
            cfg = load_config([f"algorithm={algorithm}", f"env.name={env}"])
            # a run's saved configuration sets every key, to the values it resolved
            path = tmp_path / f"{algorithm}_{env}.yaml"
            path.write_text(OmegaConf.to_yaml(to_dict(cfg)))
            assert to_dict(load_config([], config_file=path)) == to_dict(cfg)
    # a key the algorithm reads, or one set to the value it has anyway, passes
    assert load_config(["algorithm=svgk", "svg.horizon=5"]).svg.horizon == 5
    assert load_config(["algorithm=sac", "svg.horizon=2"]).algorithm == "sac"


@pytest.mark.slow
def test_cli_bad_key_exits_with_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torchrl_svg.train", "loss.horzion=3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "loss.horzion" in proc.stderr
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------ end to end
def _assert_run_files(run_dir: Path, n_evals: int) -> None:
    rows = list(csv.DictReader((run_dir / "eval.csv").read_text().splitlines()))
    assert len(rows) == n_evals
    assert all(float(r["return_mean"]) == float(r["return_mean"]) for r in rows)  # not NaN
    png = (run_dir / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return"] == pytest.approx(float(rows[-1]["return_mean"]))
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert {"config", "agent", "replay", "counters", "rng", "records"} <= set(ckpt)
    assert (run_dir / "config.yaml").is_file()


@pytest.mark.slow
def test_cli_end_to_end_on_pendulum_with_wandb_offline(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrl_svg.train",
            *TINY,
            "collector.total_frames=300",
            "collector.init_random_frames=100",
            "eval.interval=150",
            f"logger.run_dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final evaluation return" in proc.stdout
    _assert_run_files(run_dir, n_evals=2)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "no W&B offline run files"
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["counters"]["frames"] == 300 and ckpt["counters"]["updates"] == 200 * 5
    assert len(ckpt["replay"]["data"]) == 300  # every collected transition


@pytest.mark.slow
def test_mujoco_task_runs_by_name_and_the_checkpoint_reloads(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "env.name=InvertedPendulum-v5",
            "collector.total_frames=200",
            "collector.init_random_frames=100",
            "eval.interval=100",
            "logger.backend=csv",
            f"logger.run_dir={tmp_path}",
        ]
    )
    result = train(cfg)
    assert result.frames == 200 and result.updates == 100  # m = 1 on InvertedPendulum
    _assert_run_files(tmp_path, n_evals=2)
    env = GymEnv("InvertedPendulum-v5")
    agent = S2VGAgent(cfg, *env_specs(env))
    agent.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt")["agent"])
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["agent"]["loss"]
    for key, value in agent.loss.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
    assert agent.dynamics.input_normalizer.count.item() == 200  # statistics of all real data


def test_environment_and_model_spec_mismatch_names_both_shapes():
    env = GymEnv("Pendulum-v1")
    obs_spec, act_spec = env_specs(env)
    with pytest.raises(
        ValueError,
        match=r"environment observation_spec has shape \(3,\) but dynamics observation has shape \(4,\)",
    ):
        check_against_env(obs_spec, act_spec, dynamics=GaussianDynamics(4, 1))
    with pytest.raises(
        ValueError,
        match=r"environment action_spec has shape \(1,\) but dynamics action has shape \(2,\)",
    ):
        check_against_env(obs_spec, act_spec, dynamics=GaussianDynamics(3, 2))


@pytest.mark.slow
def test_non_finite_loss_is_reported_with_the_step_and_not_applied(tmp_path):
    # an absurd critic learning rate overflows the critics within a couple of updates
    cfg = load_config(
        [
            *TINY,
            "collector.total_frames=400",
            "collector.init_random_frames=100",
            "optim.critic_lr=1e30",
            "logger.backend=none",
            f"logger.run_dir={tmp_path}",
        ]
    )
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite loss_\w+.* after \d+ updates and \d+ model updates \(environment step \d+\)",
    ) as err:
        train(cfg)
    assert "No non-finite update was applied" in str(err.value)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    for name, value in ckpt["agent"]["loss"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"{name} holds non-finite values"


def test_guarded_step_refuses_nan_and_leaves_parameters(tmp_path):
    cfg = load_config(TINY)
    env = GymEnv("Pendulum-v1")
    agent = S2VGAgent(cfg, *env_specs(env))
    from conftest import make_batch

    batch = make_batch((16,), 3, 1)
    batch["next", "reward"][0] = float("nan")
    agent.loss.check_finite = False  # let the NaN input reach the loss: this tests the guard
    before = [p.detach().clone() for p in agent.loss.parameters()]
    with pytest.raises(NonFiniteLossError, match="loss_qvalue"):
        agent.update(batch)
    for b, p in zip(before, agent.loss.parameters(), strict=True):
        assert torch.equal(b, p)


# ------------------------------------------------------------ SVG family
@pytest.mark.parametrize(
    "algorithm, env_name, extra",
    [
        ("svg0", "InvertedPendulum-v5", []),
        ("sac", "Pendulum-v1", []),  # the TorchRL baseline of the benchmarks
        ("svg1", "InvertedPendulum-v5", []),
        ("svg1_er", "InvertedPendulum-v5", ["svg.kl_coef=0.1"]),
        ("svgk", "InvertedPendulum-v5", ["svg.horizon=3"]),
        ("svg1_er", "Hand-v0", ["env.max_episode_steps=50"]),
        (
            "svginf",
            "Hand-v0",
            [
                "env.max_episode_steps=50",
                "svg.episodes_per_batch=4",
                "svg.model_updates_per_batch=5",
            ],
        ),
        ("svginf", "LQG-v0", ["svg.episodes_per_batch=8", "svg.model_updates_per_batch=5"]),
        (
            "svginf",
            "InvertedPendulum-v5",
            [
                "env.max_episode_steps=40",
                "svg.episodes_per_batch=2",
                "svg.model_updates_per_batch=5",
            ],
        ),
    ],
)
@pytest.mark.slow
def test_every_algorithm_trains_through_the_cli_recipe(algorithm, env_name, extra, tmp_path):
    cfg = load_config(
        [
            *TINY,
            f"algorithm={algorithm}",
            f"env.name={env_name}",
            "collector.total_frames=400",
            "collector.init_random_frames=100",
            "eval.interval=200",
            "eval.max_steps=100",
            "logger.backend=csv",
            f"logger.run_dir={tmp_path}",
            *extra,
        ]
    )
    result = train(cfg)
    assert result.frames >= 400 and result.updates > 0
    assert all(r.mean == r.mean for r in result.records)
    _assert_run_files(tmp_path, n_evals=len(result.records))
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    fresh = make_agent(cfg, *env_specs(make_env(cfg)), env=make_env(cfg))
    fresh.load_state_dict(ckpt["agent"])


@pytest.mark.slow
def test_svg1_without_replay_makes_one_policy_update_per_observed_step(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "algorithm=svg1",
            "env.name=InvertedPendulum-v5",
            "collector.total_frames=300",
            "collector.init_random_frames=100",
            "eval.interval=300",
            "logger.backend=none",
            f"logger.run_dir={tmp_path}",
        ]
    )
    assert train(cfg).updates == 200


@pytest.mark.slow
def test_warm_up_transitions_store_the_uniform_behaviour_log_prob(tmp_path, monkeypatch):
    from torchrl_svg.train import loop

    seen = []
    original = loop.make_replay_buffer

    def spy(*args, **kwargs):
        rb = original(*args, **kwargs)
        extend = rb.extend
        rb.extend = lambda data: (seen.append(data.clone()), extend(data))[1]
        return rb

    monkeypatch.setattr(loop, "make_replay_buffer", spy)
    cfg = load_config(
        [
            *TINY,
            "algorithm=svg1_er",
            "env.name=InvertedPendulum-v5",
            "collector.total_frames=60",
            "collector.init_random_frames=30",
            "collector.frames_per_batch=10",
            "eval.interval=60",
            "logger.backend=none",
            f"logger.run_dir={tmp_path}",
        ]
    )
    train(cfg)
    uniform = -torch.log(torch.tensor(6.0))  # InvertedPendulum actions in [-3, 3]
    for batch in seen[:3]:
        torch.testing.assert_close(batch["action_log_prob"], torch.full((10,), uniform.item()))
    assert not torch.allclose(seen[-1]["action_log_prob"], torch.full((10,), uniform.item()))


def test_own_tasks_are_made_by_name_and_batched():
    cfg = load_config(["env.name=Hand-v0", "algorithm=svginf"])
    env = make_env(cfg, num_envs=3)
    assert env.batch_size == (3,) and episode_length(env) == 1000
    assert episode_length(make_env(load_config(["env.name=Pendulum-v1"]))) == 200
    with pytest.raises(ConfigError, match="model.reward='known'"):
        load_config(["env.name=Pendulum-v1", "model.reward=known"])


def test_each_svg_algorithm_has_its_own_agent_class_and_the_shared_one_is_deprecated():
    from torchrl_svg.train import AGENTS
    from torchrl_svg.train.agents import SVG1Agent, SVG1ERAgent, SVGAgent, SVGkAgent

    small = ["network.actor_hidden_sizes=[8]", "network.critic_hidden_sizes=[8]"]
    specs = env_specs(make_env(load_config(["env.name=Pendulum-v1"])))
    cases = {  # algorithm: (class, extra overrides, learns from replay, slice length)
        "svg1": (SVG1Agent, [], False, None),
        "svg1_er": (SVG1ERAgent, ["svg.kl_coef=0.5"], True, None),
        "svgk": (SVGkAgent, ["svg.horizon=4"], True, 4),
    }
    for algorithm, (cls, extra, replays, slice_len) in cases.items():
        assert AGENTS[algorithm] is cls
        cfg = load_config([f"algorithm={algorithm}", *small, "model.hidden_sizes=[8]", *extra])
        agent = AGENTS[algorithm](cfg, *specs)
        assert (agent.name, agent.replays_policy, agent.slice_len) == (
            algorithm,
            replays,
            slice_len,
        )
        assert (agent.loss.kl_coef > 0) == (algorithm == "svg1_er")
        with pytest.warns(DeprecationWarning, match="SVGAgent"):
            old = SVGAgent(cfg, *specs)
        assert type(old) is cls and old.slice_len == slice_len
    # each agent has its module; the old imports from agents/svg.py still resolve
    import importlib

    moved = importlib.import_module("torchrl_svg.train.agents.svg")
    for name in ("SVG0Agent", "SVG1Agent", "SVG1ERAgent", "SVGkAgent", "SVGInfAgent"):
        cls = getattr(importlib.import_module("torchrl_svg.train.agents"), name)
        assert (
            getattr(moved, name) is cls and cls.__module__ == f"torchrl_svg.train.agents.{cls.name}"
        )
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not 'sac'"):
        SVGAgent(load_config(["algorithm=sac"]), *specs)


@pytest.mark.parametrize("algorithm", ["svg1", "svg1_er", "svgk"])
def test_the_svg_agents_steps_check_their_input_as_the_loss_forward_does(algorithm):
    # the policy and value steps call SVGLoss's term methods: the loss's own input check
    # runs on their first batch and names the missing entry
    from tensordict import TensorDict
    from torchrl.data import Bounded

    from torchrl_svg.train import AGENTS

    small = ["network.actor_hidden_sizes=[8]", "network.critic_hidden_sizes=[8]"]
    cfg = load_config([f"algorithm={algorithm}", *small, "model.hidden_sizes=[8]"])
    agent = AGENTS[algorithm](cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
    shape = [4, agent.slice_len] if agent.slice_len else [4]
    batch = TensorDict(
        {"observation": torch.randn(*shape, 3), "action": torch.rand(*shape, 1)}, shape
    )
    for step in (agent.policy_step, agent.value_step):
        with pytest.raises(KeyError, match=r"SVGLoss needs the entry \('next', 'observation'\)"):
            step(batch)
