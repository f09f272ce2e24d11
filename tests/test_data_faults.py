"""Faults in the data and around training: outliers, evaluation failures, NaN returns, full disks."""

from __future__ import annotations

import csv
import json
import logging
import os
import resource
import subprocess
import sys
import textwrap

import faulty_envs  # noqa: F401  (registers the misbehaving tasks)
import pytest
import torch
from conftest import TINY_RUN

from torchrl_svg.train import (
    EnvironmentFailure,
    Trainer,
    load_checkpoint,
    load_config,
    train,
)

# trainings with faulty data, environments and disks: the slow tier
pytestmark = pytest.mark.slow

TINY = TINY_RUN


def _strict_json(text: str):
    """``json.loads`` that refuses NaN and Infinity, as JSON itself does."""

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -------------------------------------------------------------------- outliers
def test_a_finite_outlier_is_dropped_with_its_episode_and_reported(tmp_path, caplog):
    cfg = load_config(
        [
            *TINY,
            "env.name=OutlierPendulum-v0",  # one observation of 1e25 at its step 120
            "model.termination=none",  # a test task: no known termination rule
            "collector.total_frames=200",
            "eval.interval=200",
            f"logger.run_dir={tmp_path}",
        ]
    )
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        result = train(cfg)
    messages = [r.getMessage() for r in caplog.records if "outlying" in r.getMessage()]
    assert "environment step 120" in messages[0] and "guard.max_abs_value" in messages[0]
    assert "(81 dropped in all)" in messages[-1]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    # steps 120-200 of the one episode (it ends at 200): the outlier and what followed it
    assert state["counters"]["dropped_transitions"] == 81
    data = state["replay"]["data"]
    assert len(data) == 119 == result.frames - 81
    assert data["next", "observation"].abs().max() < 100
    world_model = state["agent"]["world_model"]["loss"]
    for key, value in world_model.items():
        if "normalizer" in key:
            assert torch.isfinite(value).all() and value.abs().max() < 1e4, key
    assert state["counters"]["skipped_updates"] == 0


def test_a_non_finite_state_is_never_saved_over_the_last_good_checkpoint(tmp_path):
    from torchrl_svg import NonFiniteLossError

    trainer = Trainer(
        load_config(
            [*TINY, "collector.total_frames=60", "eval.interval=60", f"logger.run_dir={tmp_path}"]
        )
    )
    trainer.run()
    good = (tmp_path / "checkpoint.pt").read_bytes()
    normalizer = trainer.agent.world_model.dynamics.input_normalizer
    normalizer.var[0] = float("inf")  # what one 1e25 observation does to it
    with pytest.raises(NonFiniteLossError, match=r"input_normalizer\.var.*not saved.*step 60"):
        trainer.save()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


# ------------------------------------------------------------------ evaluation
def test_an_evaluation_environment_failure_stops_with_a_resumable_checkpoint(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "env.name=EvalCrashingPendulum-v0",
            "model.termination=none",  # a test task: no known termination rule
            "collector.total_frames=200",
            "eval.interval=60",
            f"logger.run_dir={tmp_path}",
        ]
    )
    with pytest.raises(
        EnvironmentFailure,
        match=r"evaluation environment 'EvalCrashingPendulum-v0' raised while evaluating after "
        r"environment step 60: RuntimeError: simulated renderer failure",
    ) as err:
        train(cfg)
    assert "checkpoint.resume=true" in str(err.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["counters"]["frames"] == len(state["replay"]["data"]) == 60
    assert state["counters"]["updates"] > 0


def test_a_nan_reward_in_evaluation_keeps_eval_csv_and_summary_json_valid(tmp_path, caplog):
    cfg = load_config(
        [
            *TINY,
            "env.name=NaNRewardPendulum-v0",  # NaN reward at the evaluation env's 3rd step
            "model.termination=none",  # a test task: no known termination rule
            "eval.episodes=2",
            "collector.total_frames=60",
            "eval.interval=60",
            f"logger.run_dir={tmp_path}",
        ]
    )
    train(cfg)
    (row,) = list(csv.DictReader((tmp_path / "eval.csv").read_text().splitlines()))
    assert row["episodes"] == "2" and row["nonfinite_episodes"] == "1"
    assert all(v.lower() not in ("nan", "inf", "-inf") for v in row.values())
    summary = _strict_json((tmp_path / "summary.json").read_text())
    assert summary["final_return"] == pytest.approx(float(row["return_mean"]))
    assert summary["final_nonfinite_episodes"] == 1


# -------------------------------------------------------------------- full disk
def _limit_file_size(limit: int):
    def preexec():  # a file that would grow past ``limit`` fails with EFBIG, as a full disk does
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_full_disk_is_reported_in_one_line_and_leaves_no_cut_file(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrl_svg.train",
            *TINY,
            "collector.total_frames=100",
            "eval.interval=50",
            f"logger.run_dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        cwd=tmp_path,
        timeout=600,
        preexec_fn=_limit_file_size(60_000),  # the plot and the logs fit, a checkpoint does not
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: Could not write the checkpoint" in proc.stderr
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp*"))
    assert not (run_dir / "checkpoint.pt").exists()
    _strict_json((run_dir / "summary.json").read_text())
    rows = list(csv.DictReader((run_dir / "eval.csv").read_text().splitlines()))
    assert [r["frames"] for r in rows] == ["50", "100"]
    assert (run_dir / "learning_curve.png").read_bytes()[-8:-4] == b"IEND"


WRITE_SUMMARY = textwrap.dedent(
    """
    import sys
    from torchrl_svg.train.checkpoint import StorageError, write_atomically
    try:
        write_atomically(sys.argv[1], "x" * 5000)
    except StorageError as err:
        print(err)
    """
)


def test_a_file_that_cannot_be_written_is_left_as_it_was(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"frames": 100}')
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_SUMMARY, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(1000),
    )
    assert "Could not write" in proc.stdout and "is as it was before" in proc.stdout
    assert path.read_text() == '{"frames": 100}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_finite_but_huge_inputs_give_a_named_error_not_a_silent_nan():
    # an observation of 1e25 is finite (the input check passes) but overflows float32 in the
    # networks: the losses name what went non-finite and the input that caused it
    from tensordict import TensorDict
    from torchrl.data import Bounded
    from torchrl.objectives import SoftUpdate

    from torchrl_svg import NonFiniteLossError
    from torchrl_svg.modules import (
        GaussianDynamics,
        RewardModel,
        make_actor,
        make_qvalue,
        make_value,
    )
    from torchrl_svg.objectives import GaussianWorldModelLoss, S2VGLoss

    spec = Bounded(-1.0, 1.0, (1,))
    dynamics, reward = (
        GaussianDynamics(3, 1, hidden_sizes=(8,)),
        RewardModel(3, 1, hidden_sizes=(8,)),
    )
    loss = S2VGLoss(
        make_actor(3, spec, hidden_sizes=(8,)),
        make_qvalue(3, 1, hidden_sizes=(8,)),
        make_value(3, hidden_sizes=(8,)),
        dynamics,
        reward,
    )
    loss.make_value_estimator(gamma=0.9)
    SoftUpdate(loss, tau=0.1)
    observation = torch.randn(16, 3)
    observation[3, 1] = 1e25
    batch = TensorDict(
        {
            "observation": observation,
            "action": torch.zeros(16, 1),
            ("next", "observation"): torch.randn(16, 3),
            ("next", "reward"): torch.zeros(16, 1),
            ("next", "done"): torch.zeros(16, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(16, 1, dtype=torch.bool),
        },
        [16],
    )
    for module in (loss, GaussianWorldModelLoss(dynamics, reward)):
        with pytest.raises(
            NonFiniteLossError,
            match=r"non-finite although every input is finite.*1e\+25 \(entry 'observation'\)",
        ):
            module(batch.clone())
    loss.check_finite = False  # the documented way out: the NaN is the caller's to handle
    assert not torch.isfinite(loss(batch.clone())["loss_qvalue"])
    observation[3, 1] = 1.0  # and ordinary inputs pass
    assert torch.isfinite(loss(batch.clone())["loss_qvalue"])
