"""From a run directory back to a policy: load_policy and python -m torchrl_svg.evaluate."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import GymEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_svg import load_policy
from torchrl_svg.train import CheckpointError, load_checkpoint
from torchrl_svg.train.policy import evaluate_run

# a trained run, its policy loaded and evaluated (also through the CLI): the slow tier
pytestmark = pytest.mark.slow

ENV = "InvertedPendulum-v5"
EPISODES = 3


def _run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny S2VG run on a MuJoCo task, trained with the command line as a user would."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = _run(
        "torchrl_svg.train",
        f"env.name={ENV}",
        "network.actor_hidden_sizes=[16]",
        "network.critic_hidden_sizes=[16]",
        "model.hidden_sizes=[16]",
        "model.pretrain_updates=5",
        "collector.total_frames=150",
        "collector.init_random_frames=100",
        "collector.frames_per_batch=50",
        "replay_buffer.batch_size=32",
        "model.batch_size=32",
        "loss.updates_per_step=1",
        f"eval.episodes={EPISODES}",
        "eval.max_steps=200",
        "eval.interval=100000",  # one evaluation, at the end
        "logger.backend=none",
        "logger.progress=false",
        "logger.run_dir=run",
        "num_threads=1",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "run"


def _final_eval(run_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((run_dir / "eval.csv").read_text().splitlines()))
    return {k: float(v) for k, v in rows[-1].items()}


def test_load_policy_gives_a_deterministic_torchrl_actor_for_env_rollout(run_dir):
    policy = load_policy(run_dir)
    env = GymEnv(ENV)  # the task as a user makes it: float64 observations
    rollouts = []
    for _ in range(2):
        env.set_seed(3)
        rollouts.append(env.rollout(20, policy))
    actions = rollouts[0]["action"]
    assert actions.ndim == 2 and actions.shape[-1] == 1
    torch.testing.assert_close(actions, rollouts[1]["action"], rtol=0, atol=0)
    # deterministic = the mode of the TanhNormal: tanh(loc) scaled onto the action box
    high = env.action_spec.space.high.to(actions.dtype)
    torch.testing.assert_close(actions, torch.tanh(rollouts[0]["loc"]) * high)
    # sampling is still available under an explicit exploration type
    with set_exploration_type(ExplorationType.RANDOM):
        sampled = policy(rollouts[0].select("observation").clone())["action"]
    assert sampled.shape == actions.shape and not torch.equal(sampled, actions)
    assert rollouts[0]["observation"].dtype == torch.float64


def test_load_policy_holds_the_checkpoint_weights(run_dir):
    saved = load_checkpoint(run_dir / "checkpoint.pt")["agent"]["loss"]
    prefix = "actor_network_params."
    saved = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
    loaded = TensorDict.from_module(load_policy(run_dir)).flatten_keys(".")
    assert saved and set(saved) == set(loaded.keys())
    for key, value in saved.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_loaded_policy_scores_what_the_run_recorded(run_dir):
    # evaluated as the run evaluated it (same task build and seed), the checkpoint's policy
    # repeats the run's final evaluation exactly
    result = evaluate_run(run_dir, episodes=EPISODES)
    final = _final_eval(run_dir)
    assert result.frames == final["frames"]
    assert result.mean == pytest.approx(final["return_mean"], rel=1e-6)
    assert min(result.returns) == pytest.approx(final["return_min"], rel=1e-6)
    assert max(result.returns) == pytest.approx(final["return_max"], rel=1e-6)


def test_evaluate_cli_prints_mean_and_std(run_dir):
    proc = _run("torchrl_svg.evaluate", str(run_dir), "--episodes", str(EPISODES), cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = _final_eval(run_dir)
    match = re.search(r"return (-?[\d.]+) ± ([\d.]+) over (\d+) episodes", proc.stdout)
    assert match, proc.stdout
    assert float(match[1]) == pytest.approx(final["return_mean"], abs=0.06)
    assert float(match[2]) == pytest.approx(final["return_std"], abs=0.06)
    assert int(match[3]) == EPISODES
    assert f"{ENV}, s2vg after {int(final['frames'])} environment steps" in proc.stdout


def _can_render() -> bool:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import gymnasium as gym

        env = gym.make(ENV, render_mode="rgb_array")
        env.reset(seed=0)
        ok = env.render() is not None
        env.close()
        return ok
    except Exception:
        return False


def test_evaluate_cli_writes_a_gif(run_dir, tmp_path):
    if not _can_render():
        pytest.skip("no off-screen MuJoCo renderer (EGL) on this machine")
    import imageio.v3 as iio

    gif = tmp_path / "episode.gif"
    proc = _run(
        "torchrl_svg.evaluate",
        str(run_dir),
        "--episodes",
        "1",
        "--max-steps",
        "30",
        "--video",
        str(gif),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"video: {gif}" in proc.stdout
    frames = iio.imread(gif)
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.std() > 0


def test_a_directory_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_policy(tmp_path)
    proc = _run("torchrl_svg.evaluate", str(tmp_path / "nowhere"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
