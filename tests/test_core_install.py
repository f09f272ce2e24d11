"""The LossModules, models, transforms and envs need only torch, TorchRL and tensordict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_dependencies_are_torch_torchrl_and_tensordict():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("<")[0].split("=")[0].strip() for dep in project["dependencies"]
    }
    assert names == {"torch", "torchrl", "tensordict"}
    train = " ".join(project["optional-dependencies"]["train"])
    for library in ("gymnasium[mujoco]", "wandb", "matplotlib", "omegaconf"):
        assert library in train


@pytest.mark.slow
def test_the_core_parts_run_with_the_recipe_libraries_hidden():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "core_only.py"), "--block"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "core-only OK" in proc.stdout
