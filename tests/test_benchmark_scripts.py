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


def _evals(*returns: float, start: int = 5000) -> list[dict[str, float]]:
    return [{"frames": float(start * (i + 1)), "return_mean": v} for i, v in enumerate(returns)]


def test_mujoco_grid_chooses_the_horizon_on_seed_0_over_common_steps():
    grid = _script("mujoco_grid")
    # H = 5 ends higher, but over the steps both reached H = 3 scores more; seed 1 of H = 5
    # (far higher) must not count
    runs = {
        "s2vg_h3_learned_alpha": {0: _evals(100.0, 900.0, 800.0, 10.0)},
        "s2vg_h5_learned_alpha": {0: _evals(100.0, 200.0, 300.0), 1: _evals(5000.0, 5000.0)},
    }
    choice = grid.choose_horizon(runs)
    assert choice["chosen"] == "s2vg_h3_learned_alpha" and choice["horizon"] == 3
    assert choice["frames"] == [5000, 10000, 15000]
    assert choice["scores"]["s2vg_h3_learned_alpha"] == pytest.approx(600.0)
    assert choice["scores"]["s2vg_h5_learned_alpha"] == pytest.approx(200.0)
    assert choice["status"] == "provisional"
    # both at the budget: final, and now the 20 steps of both count
    full = {
        a: {0: _evals(*([1.0] * 19 + [v]))}
        for a, v in zip(grid.HORIZON_CANDIDATES, (0, 90), strict=True)
    }
    final = grid.choose_horizon(full)
    assert final["status"] == "final" and final["horizon"] == 5
    assert final["frames"][-1] == grid.BUDGET
    waiting = grid.choose_horizon({"s2vg_h5_learned_alpha": {1: _evals(1.0)}})
    assert waiting["chosen"] is None and "s2vg_h3_learned_alpha" in waiting["status"]


def test_mujoco_grid_keeps_a_frozen_horizon_choice():
    grid = _script("mujoco_grid")
    # frozen at 10k on H = 5, which led there (150 against 100); H = 3 leads once 15k counts
    runs = {
        "s2vg_h3_learned_alpha": {0: _evals(100.0, 100.0, 1000.0)},
        "s2vg_h5_learned_alpha": {0: _evals(100.0, 200.0, 0.0, 0.0)},
    }
    frozen = grid.choose_horizon(runs, ("s2vg_h5_learned_alpha", 10_000))
    assert frozen["chosen"] == "s2vg_h5_learned_alpha" and frozen["horizon"] == 5
    assert frozen["frames"] == [5000, 10000] and frozen["status"] == "frozen at 10k"
    assert frozen["scores"]["s2vg_h5_learned_alpha"] == pytest.approx(150.0)
    assert frozen["frames_to_date"] == [5000, 10000, 15000]
    assert frozen["scores_to_date"]["s2vg_h3_learned_alpha"] == pytest.approx(400.0)
    assert grid.choose_horizon(runs)["chosen"] == "s2vg_h3_learned_alpha"
    # a seed-0 run restarted since, whose curve over the frozen steps now favours H = 3
    restarted = {**runs, "s2vg_h5_learned_alpha": {0: _evals(0.0, 0.0)}}
    kept = grid.choose_horizon(restarted, ("s2vg_h5_learned_alpha", 10_000))
    assert kept["chosen"] == "s2vg_h5_learned_alpha"
    assert "now picks s2vg_h3_learned_alpha" in kept["status"]
    # a candidate's seed 0 absent here: still the frozen choice, and the status says so
    alone = grid.choose_horizon(
        {"s2vg_h5_learned_alpha": runs["s2vg_h5_learned_alpha"]}, ("s2vg_h5_learned_alpha", 10_000)
    )
    assert alone["chosen"] == "s2vg_h5_learned_alpha" and alone["scores"] == {}
    assert "no seed-0 evaluations of s2vg_h3_learned_alpha" in alone["status"]


def test_mujoco_grid_frozen_choices_are_candidates():
    grid = _script("mujoco_grid")
    for task, (chosen, at) in grid.CHOICE_FROZEN.items():
        assert task in grid.TASKS and chosen in grid.HORIZON_CANDIDATES
        assert at % 5000 == 0 and 0 < at < grid.BUDGET


def test_mujoco_grid_compares_the_chosen_variant_seed_for_seed():
    grid = _script("mujoco_grid")
    chosen = "s2vg_h5_learned_alpha"
    runs = {
        chosen: {0: _evals(0.0, 400.0, 600.0), 1: _evals(0.0, 200.0)},
        "s2vg": {0: _evals(0.0, 300.0, 900.0), 2: _evals(0.0, 5000.0)},  # seed 2: not chosen's
        "sac": {1: _evals(0.0, 100.0)},
    }
    c = grid.compare_at_matched_steps(runs, chosen)
    assert c["frames"] == 10000 and c["seeds"] == [0, 1]  # where the shorter seed ends
    assert c["algorithms"][chosen]["return"] == pytest.approx(300.0)
    assert c["algorithms"][chosen]["mean_to_here"] == pytest.approx(150.0)
    assert c["algorithms"]["s2vg"] == {"seeds": [0], "return": 300.0, "mean_to_here": 150.0}
    assert c["algorithms"]["sac"]["seeds"] == [1]
    assert "s2vg_learned_alpha" not in c["algorithms"]
    assert c["beats_one_step"] is None  # short of the budget
    # further on, over the chosen variant's seeds that got there
    later = grid.compare_at_matched_steps(runs, chosen, 15000)
    assert later["seeds"] == [0] and later["algorithms"]["s2vg"]["return"] == 900.0
    assert "sac" not in later["algorithms"]
    assert grid.compare_at_matched_steps(runs, chosen, 20000)["seeds"] == []
    # at the budget with three seeds on both sides the verdict is the higher mean return
    n = grid.BUDGET // 5000
    for multi, one, expected in ((500.0, 400.0, True), (300.0, 400.0, False)):
        at_budget = {
            chosen: {s: _evals(*([0.0] * (n - 1) + [multi])) for s in range(3)},
            "s2vg": {s: _evals(*([0.0] * (n - 1) + [one])) for s in range(3)},
        }
        assert grid.compare_at_matched_steps(at_budget, chosen)["beats_one_step"] is expected
    # a one-step variant with fewer seeds there cannot undo "below a complete one" (300 < 400)
    at_budget["s2vg_learned_alpha"] = {0: _evals(*([0.0] * (n - 1) + [1.0]))}
    below = grid.compare_at_matched_steps(at_budget, chosen)
    assert below["beats_one_step"] is False
    assert grid._verdict_basis(below) == (
        f"{chosen} 300 against s2vg 400 over seeds 0, 1, 2; s2vg_learned_alpha has seeds 0 there"
    )
    # but leaves "above every complete one" undecided: it could still be beaten
    above = {**at_budget, chosen: {s: _evals(*([0.0] * (n - 1) + [500.0])) for s in range(3)}}
    assert grid.compare_at_matched_steps(above, chosen)["beats_one_step"] is None
    # the report: a seed that has just started does not pull the comparison back to the first
    # evaluation (the warm-up's); the budget's comparison stands alone then
    at_budget[chosen][2] = _evals(0.0)
    report = grid._comparisons(at_budget, {"chosen": chosen})
    assert [c["frames"] for c in report] == [grid.BUDGET] and report[0]["seeds"] == [0, 1]
    at_budget[chosen][2] = _evals(0.0, 1.0)
    assert [c["frames"] for c in grid._comparisons(at_budget, {"chosen": chosen})] == [
        10000,
        grid.BUDGET,
    ]


def test_multistep_gradient_counts_imagined_states_outside_the_replay():
    # a 1-d task whose models move every state by 1, 2 or 3 per step; replay states in [0, 1]:
    # every imagined state leaves the replay's box at the first step, unless the loss clips
    # the imagined states to it
    import torch
    from conftest import constant_step_loss
    from tensordict import TensorDict

    multistep_gradient = _script("multistep_gradient")
    torch.manual_seed(0)
    replay = TensorDict({"observation": torch.rand(256, 1)}, [256])
    free = multistep_gradient.outside_the_replay(constant_step_loss(-20.0), replay, 3, 64)
    assert free["share"] == [1.0, 1.0, 1.0] and free["value_inside"] == [None] * 3
    assert free["share_per_entry"] == [[1.0]] * 3 and len(free["value_outside"]) == 3
    assert 0.0 <= free["replay_low"][0] < free["replay_high"][0] <= 1.0
    box = (replay["observation"].min(0).values, replay["observation"].max(0).values)
    clipped = constant_step_loss(-20.0, observation_bounds=box)
    assert multistep_gradient.outside_the_replay(clipped, replay, 3, 64)["share"] == [0.0] * 3


def test_multistep_gradient_splits_the_soft_return_into_its_parts():
    # the whole soft return less its reward and entropy parts is the discounted final value
    # (gamma 0.9, H = 3, no termination model); whole_only takes the same draws
    import torch
    from conftest import constant_step_loss
    from tensordict import TensorDict

    multistep_gradient = _script("multistep_gradient")
    torch.manual_seed(0)
    loss = constant_step_loss(-1.0)
    batch = TensorDict({"observation": torch.rand(8, 1)}, [8])
    rollout = loss._actor_rollout(batch)
    value = loss._state_value(rollout["final_state"], loss._cached_detached_value_params)
    parts = multistep_gradient.soft_return_parts(loss, rollout, value)
    rest = parts["whole"] - parts["reward_part"] - parts["entropy_part"]
    torch.testing.assert_close(rest, 0.9**3 * value.reshape(rest.shape))
    assert (parts["reward_part"] != 0).all() and (parts["entropy_part"] != 0).all()
    whole = multistep_gradient.soft_return_parts(loss, rollout, value, whole_only=True)
    assert list(whole) == ["whole"] and torch.equal(whole["whole"], parts["whole"])
    torch.manual_seed(1)
    every, mean_return = multistep_gradient._actor_gradients(loss, batch.clone())
    torch.manual_seed(1)
    alone, same_return = multistep_gradient._actor_gradients(loss, batch.clone(), True)
    assert list(every) == list(multistep_gradient.PARTS) and list(alone) == ["whole"]
    torch.testing.assert_close(alone["whole"], every["whole"])
    assert mean_return == same_return
    assert every["value_part"].norm() > 0


def test_every_mujoco_grid_variant_is_a_valid_configuration():
    # a typo in a variant's keys or values would only show when its run starts, hours later
    from torchrl_svg.train import ConfigError, load_config

    grid = _script("mujoco_grid")
    for name, (algorithm, overrides) in grid.VARIANTS.items():
        for task in grid.TASKS:
            keys = [f"algorithm={algorithm}", f"env.name={task}", *grid.GRID_OVERRIDES, *overrides]
            if "loss.observation_bounds=known" in overrides and task == "HalfCheetah-v5":
                with pytest.raises(ConfigError, match="'HalfCheetah-v5' has none"):
                    load_config(keys)  # it observes its velocities unclipped
                continue
            cfg = load_config(keys)
            assert cfg.algorithm == algorithm and cfg.collector.total_frames == grid.BUDGET
        assert name in grid.LABELS
