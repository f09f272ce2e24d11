"""The example scripts, the W&B sweep file and the README's pipeline snippet."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from torchrl_svg.train import ConfigError, load_checkpoint, load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ALGORITHMS = ("s2vg", "svg0", "svg1", "svg1_er", "svgk", "svginf")
TINY = [
    "network.actor_hidden_sizes=[32,32]",
    "network.critic_hidden_sizes=[32,32]",
    "model.hidden_sizes=[32,32]",
    "model.pretrain_updates=20",
    "eval.episodes=1",
    "eval.max_steps=100",
    "logger.progress=false",
]


def _sweep() -> dict:
    return yaml.safe_load((EXAMPLES / "sweep.yaml").read_text())


def _candidates(spec: dict) -> list:
    """The values a W&B sweep can give one parameter (ends of the ranges)."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def _wandb_arg(key: str, value) -> str:
    """A parameter as ``wandb agent`` writes it into ``${args}``: ``--key=value``."""
    return f"--{key}={value}"


def _logged_wandb_keys(run_file: Path, names: list[str]) -> set[str]:
    """Which of ``names`` the W&B run file holds as history keys.

    The ``.wandb`` file is a log of protobuf records; a history key is stored as a
    length-prefixed string, which is what we look for.
    """
    data = run_file.read_bytes()
    return {n for n in names if bytes([len(n)]) + n.encode() in data}


# ---------------------------------------------------------------- sweep
def test_sweep_parameters_are_configuration_keys_with_valid_values():
    sweep = _sweep()
    assert (ROOT / sweep["program"]).is_file()
    assert "${args}" in sweep["command"]
    params = sweep["parameters"]
    assert params, "the sweep has no parameters"
    base = [_wandb_arg(k, _candidates(v)[0]) for k, v in params.items()]
    # every single value of every parameter, on top of the first value of the others
    for key, spec in params.items():
        for value in _candidates(spec):
            args = [a for a in base if not a.startswith(f"--{key}=")]
            cfg = load_config([*args, _wandb_arg(key, value)])
            got = cfg
            for part in key.split("."):
                got = getattr(got, part)
            if isinstance(value, float):
                assert got == pytest.approx(value), key
            else:
                assert got == value, key


def test_a_misspelt_sweep_parameter_is_refused_naming_it():
    with pytest.raises(ConfigError, match="loss.horizn"):
        load_config([_wandb_arg("loss.horizn", 3)])


@pytest.mark.slow
def test_sweep_parameters_reach_the_script():
    params = _sweep()["parameters"]
    # the last candidate of each parameter, in the agent's --key=value form
    chosen = {k: _candidates(v)[-1] for k, v in params.items()}
    # the sweep's own command, with its macros filled in as ``wandb agent`` fills them
    fill = {
        "${env}": [],
        "${interpreter}": [sys.executable],
        "${program}": [_sweep()["program"]],
        "${args}": [*(_wandb_arg(k, v) for k, v in chosen.items()), "--print-config"],
    }
    command = [part for item in _sweep()["command"] for part in fill.get(item, [item])]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = yaml.safe_load(proc.stdout)
    for key, value in chosen.items():
        got = resolved
        for part in key.split("."):
            got = got[part]
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key


# ---------------------------------------------------------------- example scripts
_EXTRA = {
    "svginf": [
        "env.max_episode_steps=40",
        "svg.episodes_per_batch=2",
        "svg.model_updates_per_batch=5",
        "eval.interval=80",
    ],
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.slow
def test_example_config_runs_on_mujoco_and_writes_its_files(algorithm, tmp_path):
    """The CLI with every algorithm's example file on a real MuJoCo task, W&B offline."""
    example = EXAMPLES / "configs" / f"{algorithm}.yaml"
    config = yaml.safe_load(example.read_text())
    assert config["algorithm"] == algorithm
    run_dir = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchrl_svg.train",
            "--defaults",
            str(example),
            *TINY,
            "env.name=InvertedPendulum-v5",
            "collector.total_frames=200",
            "collector.init_random_frames=100",
            "eval.interval=100",
            "num_threads=1",
            f"logger.run_dir={run_dir}",
            *_EXTRA.get(algorithm, []),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final evaluation return" in proc.stdout
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["config"]["algorithm"] == algorithm
    assert ckpt["counters"]["frames"] >= 200 and ckpt["counters"]["updates"] > 0
    rows = (run_dir / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("frames") and len(rows) >= 2
    assert (run_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "no W&B offline run"
    (run_file,) = runs[0].glob("run-*.wandb")
    # the sweep's metric is what the trainer logs
    metric = _sweep()["metric"]["name"]
    assert _logged_wandb_keys(run_file, [metric, "no/such_key"]) == {metric}


def test_every_algorithm_has_an_example_config_and_every_family_a_pipeline():
    for algorithm in ALGORITHMS:
        cfg = load_config([], defaults_file=EXAMPLES / "configs" / f"{algorithm}.yaml")
        assert cfg.algorithm == algorithm
    for path in (EXAMPLES / "configs").glob("*.yaml"):  # s2vg_multistep.yaml too
        assert load_config([], defaults_file=path).algorithm in ALGORITHMS, path.name
    for family in ("s2vg", "svg", "svginf"):
        assert (EXAMPLES / f"{family}_pipeline.py").is_file()
    # the recipe's command line is the one entry point: no per-algorithm CLI copies
    assert not [
        p.name for p in EXAMPLES.glob("*.py") if "torchrl_svg.train.__main__" in p.read_text()
    ]


# ---------------------------------------------------------------- README snippet
def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    assert "## Use it in your own TorchRL pipeline" in text
    start = text.index("<!-- pipeline-snippet -->")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, "no python block after the pipeline-snippet marker"
    return match.group(1)


@pytest.mark.slow
def test_readme_pipeline_snippet_runs(monkeypatch, tmp_path):
    code = _readme_snippet()
    for name in (
        "Collector",
        "TensorDictReplayBuffer",
        "S2VGLoss",
        "SoftUpdate",
        "optim.Adam",
        "loss.parameter_groups()",
        "model_loss.parameter_groups()",
    ):
        assert name in code
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md:pipeline-snippet", "exec"), {"__name__": "__snippet__"})
    match = re.search(
        r"return after a 1000-step smoke run \(too short to learn\): (-?[\d.]+)", out.getvalue()
    )
    assert match, out.getvalue()[-2000:]
    ret = float(match.group(1))
    assert -1e4 < ret <= 0.0  # Pendulum returns are non-positive and finite


# ---------------------------------------------------------------- presets through the examples
def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _value(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_example_configs_keep_every_task_preset(algorithm):
    from torchrl_svg.train import PRESETS

    example = EXAMPLES / "configs" / f"{algorithm}.yaml"
    for env_name, preset in PRESETS[algorithm].items():
        cfg = load_config([f"env.name={env_name}"], defaults_file=example)
        assert cfg.algorithm == algorithm
        for key, value in _flat(preset).items():
            assert _value(cfg, key) == value, f"{algorithm} on {env_name}: {key}"


@pytest.mark.slow
def test_example_config_resolves_the_task_preset_and_the_users_own_values_win(tmp_path):
    def resolved(*args: str) -> dict:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torchrl_svg.train",
                "--defaults",
                str(EXAMPLES / "configs" / "s2vg.yaml"),
                "--print-config",
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return yaml.safe_load(proc.stdout)

    cfg = resolved("env.name=InvertedPendulum-v5")
    assert (cfg["loss"]["alpha_init"], cfg["loss"]["updates_per_step"]) == (0.1, 1)
    cfg = resolved("env.name=HalfCheetah-v5")
    assert cfg["collector"]["total_frames"] == 200_000
    assert cfg["collector"]["init_random_frames"] == 5_000
    # the user's own file and overrides still win over the preset
    user = tmp_path / "mine.yaml"
    user.write_text("loss:\n  alpha_init: 0.3\n")
    cfg = resolved("--config", str(user), "env.name=HalfCheetah-v5", "collector.total_frames=500")
    assert cfg["loss"]["alpha_init"] == 0.3 and cfg["collector"]["total_frames"] == 500


def test_the_sweep_searches_hyper_parameters_not_seeds():
    sweep = _sweep()
    seed = sweep["parameters"].get("env.seed")
    if sweep["method"] in ("bayes", "random"):
        assert seed is None or set(seed) == {"value"}, "a model-based search over env.seed"


_MULTISTEP = [
    "--actor-horizon",
    "3",
    "--ensemble-size",
    "3",
    "--ensemble-members",
    "rollout",
    "--learn-alpha",
    "--actor-max-grad-norm",
    "10",
]


def _load_example(name: str, *parts: str):
    """An example script as a module (its ``main`` not run), checked to build on ``parts``.

    A pipeline example shows the library without the recipe: it names the TorchRL and
    torchrl_svg parts it composes and imports nothing from ``torchrl_svg.train``.
    """
    import importlib.util

    path = EXAMPLES / f"{name}.py"
    code = path.read_text()
    for part in parts:
        assert part in code, f"{name}.py does not use {part}"
    assert not re.search(r"^\s*(from|import) torchrl_svg\.train", code, re.M)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], _MULTISTEP], ids=["eq11", "multistep"])
def test_the_s2vg_pipeline_example_trains_with_torchrl_parts(capsys, extra):
    module = _load_example(
        "s2vg_pipeline", "Collector(", "TensorDictReplayBuffer(", "S2VGLoss(", "SoftUpdate("
    )
    torch.manual_seed(0)
    # InvertedPendulum-v5: float64 observations and a known termination rule
    args = ["--env", "InvertedPendulum-v5", "--frames", "200", "--warmup", "100"]
    curve = module.main([*args, "--utd", "1", "--eval-every", "100", "--eval-steps", "50", *extra])
    assert [frames for frames, _ in curve] == [100, 200]
    assert all(1.0 <= ret <= 50.0 for _, ret in curve)  # +1 per step until it falls
    printed = capsys.readouterr().out
    assert "200 steps" in printed and "Q loss" in printed
    # the flags reach the loss and the model
    _, _, loss, model_loss, *_ = module.make_parts(module.parse_args([*args, *extra]))
    multistep = bool(extra)
    assert loss.actor_horizon == (3 if multistep else 1)
    assert loss.ensemble_members == ("rollout" if multistep else "step")
    assert loss.fixed_alpha is not multistep
    assert model_loss.dynamics_model.ensemble_size == (3 if multistep else 1)


@pytest.mark.parametrize(
    "variant", [[], ["--no-replay"], ["--horizon", "3"]], ids=["svg1_er", "svg1", "svgk"]
)
@pytest.mark.slow
def test_the_svg_pipeline_example_trains_with_torchrl_parts(variant, capsys):
    module = _load_example(
        "svg_pipeline",
        "Collector(",
        "TensorDictReplayBuffer(",
        "RandomActionLogProb(",
        "SVGLoss(",
        "GaussianWorldModelLoss(",
        "HardUpdate(",
        "clip_grad_norm_(",
    )
    torch.manual_seed(0)
    # InvertedPendulum-v5: float64 observations and episodes that end
    args = ["--frames", "200", "--warmup", "100", "--model-pretrain", "20", *variant]
    curve = module.main([*args, "--eval-every", "100", "--eval-steps", "50"])
    assert [frames for frames, _ in curve] == [100, 200]
    assert all(1.0 <= ret <= 50.0 for _, ret in curve)  # +1 per step until it falls
    printed = capsys.readouterr().out
    assert "200 steps" in printed and "loss_value" in printed and "importance_weight" in printed


def test_the_svg_pipeline_refuses_svgk_without_replay(capsys):
    module = _load_example("svg_pipeline")
    with pytest.raises(SystemExit):
        module.main(["--horizon", "3", "--no-replay"])
    assert "replay" in capsys.readouterr().err


@pytest.mark.parametrize("noise", ["inferred", "sampled"])
@pytest.mark.slow
def test_the_svginf_pipeline_example_trains_with_torchrl_parts(noise, capsys):
    module = _load_example(
        "svginf_pipeline",
        "Collector(",
        "TensorDictReplayBuffer(",
        "SVGInfLoss(",
        "GaussianWorldModelLoss(",
        "clip_grad_norm_(",
    )
    torch.manual_seed(0)
    # Hand-v0: 2 whole episodes of 40 steps per batch, one policy step each
    args = ["--batches", "2", "--episodes", "2", "--episode-steps", "40", "--model-updates", "5"]
    curve = module.main([*args, "--noise", noise, "--eval-every", "1"])
    assert [frames for frames, _ in curve] == [80, 160]
    # a small control cost per step and the final distances to the targets, as minus a cost
    assert all(-5.0 < ret < 0.0 for _, ret in curve)
    printed = capsys.readouterr().out
    assert "160 steps" in printed and "loss_dynamics" in printed
