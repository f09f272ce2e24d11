"""Evaluation videos: rendered where a renderer exists, skipped (never fatal) elsewhere."""

from __future__ import annotations

import imageio.v3 as iio
import pytest

from torchrl_svg.train import load_config, train

# trainings that render evaluation videos: the slow tier
pytestmark = pytest.mark.slow

TINY = [
    "network.actor_hidden_sizes=[16]",
    "network.critic_hidden_sizes=[16]",
    "model.hidden_sizes=[16]",
    "model.pretrain_updates=5",
    "eval.episodes=1",
    "eval.max_steps=30",
    "logger.progress=false",
    "eval.video=true",
]


def test_mujoco_evaluation_video_is_written_and_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(
        [
            *TINY,
            "env.name=InvertedPendulum-v5",
            "collector.total_frames=120",
            "collector.init_random_frames=100",
            "eval.interval=100",
            "logger.backend=wandb",
            f"logger.run_dir={tmp_path}",
        ]
    )
    train(cfg)
    videos = sorted((tmp_path / "videos").glob("eval_*.gif"))
    if not videos:
        pytest.skip("no off-screen renderer (EGL) on this machine")
    frames = iio.imread(videos[-1])
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] == 3
    assert frames.std() > 0  # a real rendering, not a blank image
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"eval/video" in run_file.read_bytes()


def test_a_task_without_renderer_trains_without_video(tmp_path):
    cfg = load_config(
        [
            *TINY,
            "algorithm=svg1",
            "env.name=Hand-v0",
            "env.max_episode_steps=20",
            "collector.total_frames=60",
            "collector.init_random_frames=40",
            "eval.interval=40",
            "logger.backend=csv",
            f"logger.run_dir={tmp_path}",
        ]
    )
    result = train(cfg)
    assert result.frames >= 60
    assert not (tmp_path / "videos").exists()
