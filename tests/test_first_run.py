"""What a first run shows: its output lines, its files and its logged values."""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest

from torchrl_svg.train import load_checkpoint, load_config, train
from torchrl_svg.train.records import plot_curves

# end-to-end trainings through the CLI and the recipe: the slow tier
pytestmark = pytest.mark.slow

TINY = [
    "network.actor_hidden_sizes=[16]",
    "network.critic_hidden_sizes=[16]",
    "model.hidden_sizes=[16]",
    "model.pretrain_updates=5",
    "replay_buffer.batch_size=32",
    "model.batch_size=32",
    "loss.updates_per_step=1",
    "eval.episodes=2",
    "eval.max_steps=50",
    "num_threads=1",
]


def _eval_rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "eval.csv").read_text().splitlines()))


def test_a_cli_run_prints_each_evaluation_keeps_its_bar_whole_and_two_distinct_checkpoints(
    tmp_path,
):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrl_svg.train",
            *TINY,
            "collector.total_frames=150",
            "collector.frames_per_batch=50",
            "collector.init_random_frames=50",
            "eval.interval=50",
            "checkpoint.interval=50",  # a periodic checkpoint falls on the last step
            "logger.backend=none",
            "logger.progress=true",
            "logger.run_dir=run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    # one printed line per evaluation, with what eval.csv holds
    lines = [line for line in proc.stdout.splitlines() if line.startswith("eval:")]
    rows = _eval_rows(run_dir)
    assert [int(r["frames"]) for r in rows] == [50, 100, 150]
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        match = re.match(r"eval: (\d+) environment steps, return (-?[\d.]+) ± ([\d.]+)", line)
        assert match, line
        assert int(match[1]) == int(row["frames"])
        assert float(match[2]) == pytest.approx(float(row["return_mean"]), abs=0.06)
    # no log line written into the progress bar's line
    for segment in re.split(r"[\r\n]", proc.stderr):
        if "step/s" in segment:
            assert "Initialized" not in segment and "[torchrl]" not in segment, segment
    # the previous checkpoint is the one before the last, not a copy of it
    current = run_dir / "checkpoint.pt"
    previous = run_dir / "checkpoint.prev.pt"
    assert current.read_bytes() != previous.read_bytes()
    assert load_checkpoint(current)["counters"]["frames"] == 150
    assert load_checkpoint(previous)["counters"]["frames"] == 100
    assert len(load_checkpoint(current)["records"]) == 3


def _logged_scalars(run_dir: Path) -> set[str]:
    return {p.stem for p in run_dir.rglob("*.csv") if p.name != "eval.csv"}


@pytest.mark.parametrize("fixed_alpha", [True, False])
def test_loss_alpha_is_logged_only_while_alpha_is_learned(tmp_path, fixed_alpha, capsys):
    cfg = load_config(
        [
            *TINY,
            "collector.total_frames=60",
            "collector.frames_per_batch=20",
            "collector.init_random_frames=20",
            "eval.interval=1000",
            "logger.log_interval=10",
            "logger.backend=csv",
            "logger.progress=false",
            f"loss.fixed_alpha={str(fixed_alpha).lower()}",
            f"logger.run_dir={tmp_path}",
        ]
    )
    train(cfg)
    logged = _logged_scalars(tmp_path)
    assert {"loss_actor", "loss_qvalue", "loss_value"} <= logged
    assert ("loss_alpha" in logged) is (not fixed_alpha)


def test_a_one_point_learning_curve_is_visible(tmp_path):
    path = tmp_path / "curve.png"
    plot_curves({"run": [(1000, -1200.0, 150.0)]}, path, title="one evaluation")
    image = iio.imread(path)[..., :3].astype(int)
    curve_colour = np.array([0x1F, 0x77, 0xB4])  # matplotlib's first colour
    drawn = (np.abs(image - curve_colour).max(-1) < 40).sum()
    # the legend's sample line alone is about 50 pixels; the point and its error bar add more
    assert drawn > 300, drawn


def test_a_long_legend_covers_no_curve(tmp_path):
    path = tmp_path / "curves.png"
    # eight flat curves spread over the whole axes leave the legend no empty corner
    curves = {
        f"a long label for run number {i}": [(x, 100.0 * i, 0.0) for x in range(0, 100_001, 5000)]
        for i in range(8)
    }
    plot_curves(curves, path, title="eight runs")
    image = iio.imread(path)[..., :3].astype(int)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][:8]
    longest = {}
    for label, colour in zip(curves, colours, strict=True):
        rgb = np.round(255 * np.array(matplotlib.colors.to_rgb(colour))).astype(int)
        match = np.abs(image - rgb).max(-1) < 10  # the line's own colour
        row = match.sum(1).argmax()  # the curve's row
        drawn = np.concatenate([[0], match[row - 1 : row + 2].any(0).astype(int), [0]])
        starts, ends = np.flatnonzero(np.diff(drawn) == 1), np.flatnonzero(np.diff(drawn) == -1)
        longest[label] = int((ends - starts).max())  # its longest unbroken stretch
    # a legend drawn over a curve breaks it: every curve is as long as the longest one
    assert max(longest.values()) > 300, longest
    assert min(longest.values()) > 0.97 * max(longest.values()), longest


def test_svginf_says_that_frames_round_up_to_whole_episode_batches(tmp_path, caplog):
    cfg = load_config(
        [
            "algorithm=svginf",
            "env.name=Hand-v0",
            "env.max_episode_steps=20",
            "svg.episodes_per_batch=2",
            "svg.model_updates_per_batch=2",
            "network.actor_hidden_sizes=[8]",
            "model.hidden_sizes=[8]",
            "collector.total_frames=50",
            "eval.episodes=1",
            "logger.backend=none",
            "logger.progress=false",
            f"logger.run_dir={tmp_path}",
        ]
    )
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        result = train(cfg)
    assert result.frames == 80
    assert "collector.total_frames=50 rounds up to 80 environment steps" in caplog.text
    assert "whole batches of 2 episodes (40 environment steps per batch)" in caplog.text
