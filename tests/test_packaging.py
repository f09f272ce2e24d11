"""The package's core needs only torch, TorchRL and tensordict; the recipe's libraries are extras."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest

import torchrl_svg

ROOT = Path(__file__).resolve().parents[1]

# what the ``train`` extra brings; none of it may be needed outside torchrl_svg.train
TRAIN_LIBRARIES = ("gymnasium", "mujoco", "wandb", "omegaconf", "matplotlib", "tqdm", "imageio")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_core_dependencies_are_torch_torchrl_tensordict():
    project = _pyproject()["project"]
    names = {req.split(">")[0].split("<")[0].split("=")[0] for req in project["dependencies"]}
    assert names == {"torch", "torchrl", "tensordict"}
    extras = project["optional-dependencies"]
    train = " ".join(extras["train"])
    for library in ("gymnasium[mujoco]", "wandb", "omegaconf", "matplotlib", "tqdm", "imageio"):
        assert library in train
    assert "torchrl_svg[train]" in extras["tests"]


def test_one_version_and_typed():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("torchrl_svg") == torchrl_svg.__version__
    assert (Path(torchrl_svg.__file__).parent / "py.typed").is_file()


@pytest.mark.slow
def test_core_imports_and_runs_without_the_train_extra():
    # the train extra's libraries made unimportable, as in `pip install -e .` alone
    proc = _run(
        f"""
        import sys
        BLOCKED = {TRAIN_LIBRARIES!r}
        for name in BLOCKED:
            sys.modules[name] = None
        import torch
        from tensordict import TensorDict
        from torchrl.data import Bounded
        import torchrl_svg.data, torchrl_svg.envs, torchrl_svg.modules, torchrl_svg.objectives
        from torchrl_svg.data import ImportanceWeight
        from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value
        from torchrl_svg.objectives import SVGLoss

        spec = Bounded(-1.0, 1.0, (1,))
        actor = make_actor(3, spec, hidden_sizes=(8,))
        loss = SVGLoss(actor, make_value(3, hidden_sizes=(8,)),
                       GaussianDynamics(3, 1, hidden_sizes=(8,)), RewardModel(3, 1, hidden_sizes=(8,)))
        data = TensorDict({{"observation": torch.randn(4, 3), "action": spec.rand((4,)) * 0.9,
            "action_log_prob": torch.zeros(4), ("next", "observation"): torch.randn(4, 3),
            ("next", "reward"): torch.randn(4, 1), ("next", "done"): torch.zeros(4, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}}, [4])
        data = ImportanceWeight(actor)(data)
        out = loss(data)
        (out["loss_actor"] + out["loss_value"]).backward()
        assert all(sys.modules[name] is None for name in BLOCKED)
        assert not [m for m in sys.modules if m.startswith("torchrl_svg.train")]
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_the_recipe_without_the_train_extra_names_the_install_command():
    proc = _run(
        """
        import sys
        sys.modules["omegaconf"] = None
        import torchrl_svg.train
        """
    )
    assert proc.returncode != 0
    assert "torchrl_svg.train needs omegaconf" in proc.stderr
    assert "pip install 'torchrl_svg[train]'" in proc.stderr


def _python_files():
    for folder in ("torchrl_svg", "benchmarks", "examples", "tests"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_string_holds_a_control_character_from_an_unescaped_backslash():
    r"""``:math:`\alpha``` in a docstring that is not raw becomes a bell character and ``lpha``."""
    controls = {chr(7): r"\a", chr(8): r"\b", chr(11): r"\v", chr(12): r"\f"}
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                bad = sorted(escape for c, escape in controls.items() if c in node.value)
                if bad:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {bad}")
    assert not found, 'make these strings raw (r"..."): ' + "; ".join(found)


def test_no_plain_string_joins_lines_with_a_backslash():
    r"""A shell example's ``\`` at a line's end, in a string that is not raw, joins the lines.

    A backslash right after the opening quotes (it drops the first newline) is meant.
    """
    found = []
    for path in _python_files():
        with tokenize.open(path) as f:
            for token in tokenize.generate_tokens(f.readline):
                if token.type != tokenize.STRING:
                    continue
                prefix = re.match(r"[A-Za-z]*", token.string).group(0)
                if "r" in prefix.lower():
                    continue
                body = token.string[len(prefix) :].lstrip("\"'")
                body = body.removeprefix("\\\n")
                if re.search(r"(?<!\\)(\\\\)*\\\n", body):  # an odd run of backslashes ends a line
                    found.append(f"{path.relative_to(ROOT)}:{token.start[0]}")
    assert not found, 'make these strings raw (r"..."): ' + "; ".join(found)
