"""The command line and configuration as a new user meets them: help, version, mistakes, W&B."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

import torchrl_svg
from torchrl_svg.train import ConfigError, load_config
from torchrl_svg.train.builders import make_logger
from torchrl_svg.train.config import describe_config, wandb_mode


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


# ------------------------------------------------------------------ the command line
def _cli(*args: str, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torchrl_svg.train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.slow
def test_help_lists_every_key_with_description_type_default_and_choices(tmp_path):
    start = time.perf_counter()
    proc = _cli("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # descriptions are wrapped
    for row in describe_config():
        shown = f"{row['key']}: {row['type']} = "
        assert shown in text, row["key"]
        assert " ".join(row["description"].split()[:6]) in text, row["key"]
        assert row["description"], f"{row['key']} has no description"
        for choice in row["choices"] or ():
            assert (choice if choice is not None else "null") in text
    for algorithm in ("s2vg", "svg0", "svg1", "svg1_er", "svgk", "svginf", "sac"):
        assert algorithm in text
    for task in ("Pendulum-v1", "InvertedPendulum-v5", "HalfCheetah-v5", "Hand-v0", "LQG-v0"):
        assert task in text
    assert elapsed < 3.0, f"--help took {elapsed:.1f} s"


@pytest.mark.slow
def test_help_and_version_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from torchrl_svg.train.__main__ import main\n"
        "for flag in ('--help', '--version'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            main([flag])\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0\n"
        "    assert out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'torchrl', 'tensordict') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_version(tmp_path):
    proc = _cli("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"torchrl_svg {torchrl_svg.__version__} (torch ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--confg", "my.yaml"], "unrecognized option '--confg'; did you mean --config?"),
        (["--print_config"], "did you mean --print-config?"),
        (["--seed=3"], "did you mean the override env.seed=...?"),
        (
            ["network.actor_hidden_sizes=64,64"],
            "write it in brackets: network.actor_hidden_sizes=[64,64]",
        ),
        (["env.name=CartPole-v1"], "has a Discrete action space"),
    ],
)
@pytest.mark.slow
def test_command_line_mistakes_are_named_before_anything_is_written(tmp_path, args, message):
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not list(tmp_path.iterdir())  # no run directory, no logger files


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.slow
def test_cuda_without_cuda_fails_before_anything_is_built(tmp_path):
    with pytest.raises(ConfigError, match="device='cuda' but CUDA is not available"):
        load_config(["device=cuda"])
    proc = _cli("device=cuda", cwd=tmp_path)
    assert proc.returncode == 2 and "use device=cpu" in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_beyond_the_devices_is_refused():
    with pytest.raises(ConfigError, match="CUDA device"):
        load_config([f"device=cuda:{torch.cuda.device_count()}"])


@pytest.mark.slow
def test_overrides_still_pass_as_wandb_sweeps_write_them(tmp_path):
    proc = _cli("--print-config", "--svg.horizon=3", "--algorithm=svgk", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "horizon: 3" in proc.stdout and "algorithm: svgk" in proc.stdout


def test_defaults_file_sits_below_the_task_preset_and_overrides_win(tmp_path, capsys):
    import yaml

    from torchrl_svg.train.__main__ import main

    defaults = tmp_path / "svgk.yaml"
    defaults.write_text(
        "algorithm: svgk\nenv:\n  name: InvertedPendulum-v5\nsvg:\n  horizon: 3\n"
        "collector:\n  total_frames: 1234\n"
    )
    assert main(["--defaults", str(defaults), "--print-config", "svg.horizon=5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["algorithm"], cfg["env"]["name"], cfg["svg"]["horizon"]) == (
        "svgk",
        "InvertedPendulum-v5",
        5,
    )
    assert cfg["collector"]["total_frames"] == 1234  # the preset leaves it open
    # HalfCheetah's SVG(k) preset sets the network sizes: the preset wins over the file
    defaults.write_text("algorithm: svgk\nnetwork:\n  actor_hidden_sizes: [7]\n")
    assert main(["--defaults", str(defaults), "--print-config", "env.name=HalfCheetah-v5"]) == 0
    preset = load_config(["algorithm=svgk", "env.name=HalfCheetah-v5"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["network"]["actor_hidden_sizes"] == list(preset.network.actor_hidden_sizes)
    assert main(["--defaults", str(tmp_path / "missing.yaml"), "--print-config"]) == 2
    assert "missing.yaml' does not exist" in capsys.readouterr().err
