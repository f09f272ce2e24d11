"""The benchmark scripts' own argument handling (their results live in ``benchmarks/results``)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(path: Path, values: list[float]) -> Path:
    path.mkdir()
    curve = [{"frames": 1000 * (i + 1), "mean": v, "std": 0.0} for i, v in enumerate(values)]
    (path / "summary.json").write_text(json.dumps({"mean_curve": curve}))
    return path


def test_compare_takes_labels_that_hold_an_equals_sign(tmp_path):
    compare = _script("compare")
    one = _folder(tmp_path / "one", [-900.0, -300.0, -150.0])
    two = _folder(tmp_path / "two", [-800.0, -180.0])
    compare.main([f"H=1={one}", f"H=2={two}", "--target", "-200", "--out", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert report["max_frames"] == 2000  # the shorter curve's end
    assert report["curves"]["H=1"]["folder"] == str(one)
    assert report["curves"]["H=1"]["first_frames_mean_at_target"] is None  # -300 at 2k
    assert report["curves"]["H=2"]["first_frames_mean_at_target"] == 2000
    with pytest.raises(SystemExit):
        compare.main([str(one), "--out", str(tmp_path / "bad")])


def test_reference_sac_reads_cleanrl_episode_lines(tmp_path):
    reference = _script("reference_sac")
    log = tmp_path / "cleanrl.log"
    log.write_text(
        "SPS: 120\n"
        "global_step=1225, episodic_return=[23.038494]\n"
        "global_step=4000, episodic_return=[33.0]\n"
        "/site-packages/gymnasium/warning: not an episode\n"
        "global_step=6100, episodic_return=[-5.5e+01]\n"
    )
    episodes = reference.read_cleanrl_log(log)
    assert episodes == [(1225, 23.038494), (4000, 33.0), (6100, -55.0)]
    assert reference.windows(episodes, 5000) == [
        (5000.0, 28.019247, 4.980753),
        (10000.0, -55.0, 0.0),
    ]
    (tmp_path / "empty.log").write_text("SPS: 120\n")
    with pytest.raises(ValueError, match="episodic_return"):
        reference.read_cleanrl_log(tmp_path / "empty.log")


def test_diagnose_value_bias_reports_short_time_limited_episodes_instead_of_failing():
    """Pendulum-v1's 200-step episodes all end by the time limit inside the Monte-Carlo tail:
    no state's return is determined, which the report says (the episode statistics stay)."""
    import torch

    from torchrl_svg.modules import env_specs
    from torchrl_svg.train import load_config, make_agent
    from torchrl_svg.train.builders import make_env

    diagnose = _script("diagnose")
    cfg = load_config(["algorithm=s2vg", "env.name=Pendulum-v1", "logger.backend=none"])
    env = make_env(cfg)
    agent = make_agent(cfg, *env_specs(env), env=env)
    torch.manual_seed(0)
    out = diagnose.value_bias(cfg, agent, env, episodes=2)
    env.close()
    assert out["stochastic_episode_lengths"] == [200, 200]
    assert "no state's Monte-Carlo return is determined" in out["value_bias_note"]
    assert "value_bias_mean" not in out
    assert math.isfinite(out["entropy_along_episodes"])
    assert math.isfinite(out["stochastic_episode_return_mean"])
