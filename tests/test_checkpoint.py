"""Checkpoints, resuming a killed run, and what a fault does to a run."""

from __future__ import annotations

import csv
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import faulty_envs  # noqa: F401  (registers CrashingPendulum-v0 and NaNPendulum-v0)
import pytest
import torch

from torchrl_svg import NonFiniteLossError
from torchrl_svg.train import (
    CheckpointError,
    ConfigError,
    EnvironmentFailure,
    Trainer,
    load_checkpoint,
    load_config,
    save_checkpoint,
    train,
)
from torchrl_svg.train.agents import NonFiniteGuard
from torchrl_svg.train.checkpoint import previous_checkpoint

# end-to-end trainings, resumed and interrupted: the slow tier
pytestmark = pytest.mark.slow

TINY = [
    "network.actor_hidden_sizes=[32,32]",
    "network.critic_hidden_sizes=[32,32]",
    "model.hidden_sizes=[32,32]",
    "model.pretrain_updates=20",
    "loss.updates_per_step=1",
    "eval.episodes=1",
    "logger.progress=false",
    "logger.backend=csv",
]


# ------------------------------------------------------------------ file format
def test_save_is_atomic_and_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(previous_checkpoint(path))["step"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_foreign_corrupted_and_newer_checkpoints_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # truncated (a crash mid-copy)
    with pytest.raises(
        CheckpointError,
        match=r"is truncated.*Other checkpoints here: .*checkpoint\.prev\.pt",
    ):
        load_checkpoint(path)
    assert load_checkpoint(previous_checkpoint(path))["step"] == 1  # the previous good one is kept

    torch.save({"model": torch.ones(2)}, path)  # someone else's torch file
    with pytest.raises(CheckpointError, match="is not a torchrl_svg checkpoint"):
        load_checkpoint(path)

    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a torchrl_svg checkpoint"):
        load_checkpoint(path)

    corrupted = bytearray(good)
    corrupted[-10] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    with pytest.raises(CheckpointError, match="corrupted: its checksum does not match"):
        load_checkpoint(path)

    path.write_bytes(good.replace(b'"version": 2', b'"version": 99', 1))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)

    with pytest.raises(CheckpointError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resuming_a_bad_checkpoint_fails_before_training_and_names_it(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"x": 1})[:5])
    cfg = load_config([*TINY, f"logger.run_dir={tmp_path}", "checkpoint.resume=true"])
    with pytest.raises(CheckpointError, match=str(tmp_path / "checkpoint.pt")):
        Trainer(cfg)


def test_resuming_with_another_task_is_refused(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "collector.total_frames=120",
            "collector.init_random_frames=100",
            "eval.interval=120",
            f"logger.run_dir={tmp_path}",
        ]
    )
    train(cfg)
    other = load_config(
        [
            *TINY,
            "env.name=InvertedPendulum-v5",
            f"logger.run_dir={tmp_path}",
            "checkpoint.resume=true",
        ]
    )
    with pytest.raises(ConfigError, match="env.name=.*cannot change.*env.name='Pendulum-v1'"):
        Trainer(other)


# --------------------------------------------------------------------- resume
def _cli(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torchrl_svg.train",
        *TINY,
        "collector.total_frames=600",
        "collector.init_random_frames=100",
        "eval.interval=300",
        "checkpoint.interval=100",
        f"logger.run_dir={run_dir}",
        *extra,
    ]


def _counters(run_dir: Path) -> dict:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return {**state["counters"], "replay": len(state["replay"]["data"])}


def test_a_killed_run_resumes_at_the_same_step_with_nothing_lost(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = tmp_path / "uninterrupted"
    subprocess.run(_cli(reference), check=True, capture_output=True, timeout=600, env=env)
    expected = _counters(reference)
    assert expected["frames"] == 600 and expected["replay"] == 600

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        try:
            counters = _counters(run_dir)
        except CheckpointError:
            counters = None
        if counters and 200 <= counters["frames"] < 600:
            proc.send_signal(signal.SIGKILL)  # no chance to clean up
            proc.wait()
            killed_at = counters
            break
        time.sleep(0.2)
    assert killed_at is not None, "the run finished before it could be killed"
    state = _counters(run_dir)  # the checkpoint it left behind is whole
    assert state["replay"] == state["frames"] >= killed_at["frames"]

    subprocess.run(
        _cli(run_dir, "checkpoint.resume=true"),
        check=True,
        capture_output=True,
        timeout=600,
        env=env,
    )
    resumed = _counters(run_dir)
    assert resumed["frames"] == expected["frames"]
    assert resumed["replay"] == expected["replay"]
    assert resumed["updates"] == expected["updates"]
    rows = list(csv.DictReader((run_dir / "eval.csv").read_text().splitlines()))
    assert [int(r["frames"]) for r in rows] == [300, 600]


def test_resume_restores_every_piece_of_state(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "collector.total_frames=300",
            "collector.init_random_frames=100",
            "eval.interval=150",
            f"logger.run_dir={tmp_path}",
        ]
    )
    trainer = Trainer(cfg)
    trainer.run()
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    resumed = Trainer(
        load_config(
            [
                *TINY,
                "collector.total_frames=300",
                "collector.init_random_frames=100",
                "eval.interval=150",
                f"logger.run_dir={tmp_path}",
                "checkpoint.resume=true",
            ]
        )
    )
    again = resumed.state_dict()
    for key, value in saved["agent"]["loss"].items():
        torch.testing.assert_close(again["agent"]["loss"][key], value, msg=key)
    for name in (
        "frames",
        "updates",
        "model_updates",
        "next_eval",
        "next_checkpoint",
        "pretrained",
    ):
        assert again["counters"][name] == saved["counters"][name], name
    assert (again["replay"]["data"] == saved["replay"]["data"]).all()
    assert again["replay"]["writer"] == saved["replay"]["writer"]
    assert torch.equal(again["rng"]["torch"], saved["rng"]["torch"])
    assert len(resumed.records.records) == len(saved["records"]) == 2
    normalizer = resumed.agent.world_model.dynamics.input_normalizer
    assert normalizer.count.item() == 300
    optimizer_state = again["agent"]["optimizer"]["state"]
    assert optimizer_state and all(
        torch.equal(v["exp_avg"], saved["agent"]["optimizer"]["state"][k]["exp_avg"])
        for k, v in optimizer_state.items()
    )
    resumed.close()


def test_keep_leaves_every_checkpoint_of_the_run_loadable(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "collector.total_frames=300",
            "collector.init_random_frames=100",
            "eval.interval=300",
            "checkpoint.interval=100",
            "checkpoint.keep=true",
            f"logger.run_dir={tmp_path}",
        ]
    )
    trainer = Trainer(cfg)
    trainer.run()
    kept = sorted((tmp_path / "checkpoints").glob("checkpoint_*.pt"))
    assert [p.name for p in kept] == [f"checkpoint_{f}.pt" for f in (100, 200, 300)]
    for path, frames in zip(kept, (100, 200, 300), strict=True):
        state = load_checkpoint(path)
        assert state["counters"]["frames"] == frames
        assert len(state["replay"]["data"]) == frames
    newest = load_checkpoint(tmp_path / "checkpoint.pt")
    assert newest["counters"]["frames"] == 300
    # the default keeps only the newest (and the one before it)
    plain = tmp_path / "plain"
    Trainer(
        load_config(
            [
                *TINY,
                "collector.total_frames=200",
                "collector.init_random_frames=100",
                "eval.interval=200",
                "checkpoint.interval=100",
                f"logger.run_dir={plain}",
            ]
        )
    ).run()
    assert not (plain / "checkpoints").exists()


# --------------------------------------------------------------------- faults
def test_an_environment_failure_stops_cleanly_with_a_resumable_checkpoint(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "env.name=CrashingPendulum-v0",
            "model.termination=none",  # a test task: no known termination rule
            "collector.total_frames=400",
            "collector.init_random_frames=50",
            "eval.interval=400",
            f"logger.run_dir={tmp_path}",
        ]
    )
    with pytest.raises(
        EnvironmentFailure,
        match=r"'CrashingPendulum-v0' raised while collecting after environment step 140",
    ) as err:
        train(cfg)
    assert "simulated physics failure" in str(err.value) and "checkpoint.resume=true" in str(
        err.value
    )
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["counters"]["frames"] == 140
    assert len(state["replay"]["data"]) == 140  # every transition collected before the failure


def test_non_finite_observations_are_dropped_and_reported_with_the_step(tmp_path, caplog):
    cfg = load_config(
        [
            *TINY,
            "env.name=NaNPendulum-v0",
            "model.termination=none",  # a test task: no known termination rule
            "collector.total_frames=200",
            "collector.init_random_frames=100",
            "eval.interval=200",
            "eval.max_steps=10",
            f"logger.run_dir={tmp_path}",
        ]
    )
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        result = train(cfg)
    messages = [
        r.getMessage() for r in caplog.records if "non-finite observation" in r.getMessage()
    ]
    assert messages and "environment step 50" in messages[0]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    # training steps 50, 100, 150, 200 are NaN (the eval env counts its own steps)
    assert state["counters"]["dropped_transitions"] == 4
    assert len(state["replay"]["data"]) == 196 == result.frames - 4
    assert torch.isfinite(state["replay"]["data"]["observation"]).all()


def test_non_finite_updates_are_skipped_counted_and_stop_after_a_streak():
    guard = NonFiniteGuard(max_consecutive=2)
    guard.record(False, "non-finite loss_actor")
    guard.record(False, "non-finite loss_actor")
    guard.record(True, "")
    assert (guard.skipped, guard.consecutive) == (2, 0)
    guard.record(False, "a")
    guard.record(False, "b")
    with pytest.raises(
        NonFiniteLossError, match=r"c \(3 non-finite update\(s\) in a row, 5 in all\)"
    ):
        guard.record(False, "c")


def test_a_non_finite_gradient_skips_the_update():
    from tensordict import TensorDict

    from torchrl_svg.train.agents import guarded_step

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    guard = NonFiniteGuard(max_consecutive=5)
    loss = (w * torch.tensor([float("inf"), 1.0])).sum() * 0 + (
        w.sqrt() * torch.tensor([0.0, 1.0])
    ).sum()
    with torch.no_grad():
        w[0] = 0.0  # d sqrt(w)/dw at 0 is inf
    applied = guarded_step(
        opt, TensorDict({"loss": (w.sqrt()).sum()}, []), ("loss",), parameters=[w], guard=guard
    )
    assert not applied and guard.skipped == 1
    assert torch.equal(w.detach(), torch.tensor([0.0, 1.0]))
    del loss


def test_same_seed_same_configuration_gives_identical_evaluations(tmp_path):
    def returns(run_dir):
        cfg = load_config(
            [
                *TINY,
                "collector.total_frames=400",
                "collector.init_random_frames=100",
                "eval.interval=100",
                "env.seed=7",
                f"logger.run_dir={run_dir}",
            ]
        )
        return [r.returns for r in train(cfg).records]

    first = returns(tmp_path / "a")
    assert first == returns(tmp_path / "b")
    assert len({tuple(r) for r in first}) > 1  # the policy changed over the run
