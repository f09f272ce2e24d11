"""The command line and configuration as a new user meets them: help, version, mistakes, W&B."""

from __future__ import annotations

import os

import pytest

from torchrl_svg.train import ConfigError, load_config
from torchrl_svg.train.builders import make_logger
from torchrl_svg.train.config import wandb_mode


# ------------------------------------------------------------------ W&B mode
@pytest.mark.parametrize(
    "env_mode, cfg_mode, expected",
    [
        (None, None, "offline"),
        ("disabled", None, "disabled"),
        ("offline", None, "offline"),
        ("dryrun", None, "offline"),
        ("online", None, "online"),
        ("disabled", "offline", "offline"),  # an explicit logger.mode wins
        ("online", "disabled", "disabled"),
    ],
)
def test_wandb_mode_follows_wandb_mode_unless_logger_mode_is_given(
    monkeypatch, env_mode, cfg_mode, expected
):
    if env_mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    cfg = load_config([] if cfg_mode is None else [f"logger.mode={cfg_mode}"])
    assert cfg.logger.mode == cfg_mode
    assert wandb_mode(cfg.logger.mode) == expected


@pytest.mark.parametrize(
    "env_mode, cfg_mode, expected",
    [("disabled", None, "disabled"), (None, None, "offline"), ("disabled", "offline", "offline")],
)
def test_the_wandb_run_is_made_in_that_mode(monkeypatch, tmp_path, env_mode, cfg_mode, expected):
    monkeypatch.setenv("WANDB_SILENT", "true")
    if env_mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    cfg = load_config(["logger.backend=wandb"] + ([f"logger.mode={cfg_mode}"] if cfg_mode else []))
    logger = make_logger(cfg, tmp_path)
    try:
        assert logger.experiment.settings.mode == expected
    finally:
        logger.experiment.finish()
    offline_runs = list(tmp_path.glob("wandb/offline-run-*"))
    assert bool(offline_runs) == (expected == "offline")
    # the process's own WANDB_MODE is left as the user set it
    assert os.environ.get("WANDB_MODE") == env_mode


def test_an_unknown_wandb_mode_fails_before_anything_is_built(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "onlien")
    with pytest.raises(ConfigError, match="WANDB_MODE='onlien'"):
        load_config(["logger.backend=wandb"])
    assert load_config(["logger.backend=csv"]).logger.backend == "csv"  # not read without W&B
