"""The package's core parts with the core dependencies only (torch, TorchRL, tensordict).

Run as a script, in a fresh virtual environment after ``pip install -e .``, or with
``--block`` to hide the training recipe's libraries from this interpreter (each is set to
``None`` in ``sys.modules``, which is how Python marks a module as not importable; TorchRL's
own optional-import probes then see it as absent)::

    python tests/core_only.py [--block]

It runs the docstring examples of ``torchrl_svg.objectives``, ``.modules``, ``.data`` and
``.envs`` (each public class has one; those that build a Gymnasium
environment are set aside) and trains S2VG for a few hundred steps on the
package's own LQG task through a TorchRL collector and replay buffer, with the replay
transforms. It prints ``core-only OK`` and exits 0 when all of it ran.
"""

from __future__ import annotations

import sys

# The libraries of the ``train`` extra (and what gymnasium[mujoco] brings).
RECIPE_LIBRARIES = (
    "gymnasium",
    "gym",
    "mujoco",
    "wandb",
    "matplotlib",
    "omegaconf",
    "tqdm",
    "imageio",
)

CORE_PACKAGES = (
    "torchrl_svg.objectives",
    "torchrl_svg.modules",
    "torchrl_svg.data",
    "torchrl_svg.envs",
)


def block_recipe_libraries() -> None:
    for name in RECIPE_LIBRARIES:
        sys.modules[name] = None  # type: ignore[assignment]


def run_doctests() -> tuple[int, int]:
    """Run the docstring examples of the core subpackages.

    Examples that build a Gymnasium environment (``GymEnv``) need the ``train`` extra and
    are counted apart, not run. Returns how many examples ran and how many were set aside.
    """
    import doctest
    import importlib
    import pkgutil

    import torch

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    attempted = set_aside = 0
    for package_name in CORE_PACKAGES:
        package = importlib.import_module(package_name)
        names = [package_name] + [
            info.name for info in pkgutil.walk_packages(package.__path__, package_name + ".")
        ]
        for name in names:
            module = importlib.import_module(name)
            for test in finder.find(module):
                if any("GymEnv(" in example.source for example in test.examples):
                    set_aside += len(test.examples)
                    continue
                # each example starts from the same random state, whatever ran before it
                torch.manual_seed(0)
                result = runner.run(test)
                if result.failed:
                    raise SystemExit(f"{test.name}: {result.failed} docstring example(s) failed")
                attempted += result.attempted
    return attempted, set_aside


def train_s2vg_on_lqg(frames: int = 400) -> int:
    """S2VG, its world model and a replay transform on LQG through a TorchRL collector.

    A smoke run (too short to learn): the number of updates, all with finite losses.
    """
    import torch
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
    from torchrl.objectives import SoftUpdate

    from torchrl_svg.data import ImportanceWeight
    from torchrl_svg.envs import LQGEnv
    from torchrl_svg.modules import (
        GaussianDynamics,
        RewardModel,
        env_specs,
        make_actor,
        make_qvalue,
        make_value,
    )
    from torchrl_svg.objectives import GaussianWorldModelLoss, S2VGLoss

    torch.manual_seed(0)
    env = LQGEnv()
    obs_spec, act_spec = env_specs(env)
    obs_dim, act_dim = obs_spec.shape[-1], act_spec.shape[-1]
    actor = make_actor(obs_spec, act_spec, hidden_sizes=(32,))
    dynamics = GaussianDynamics(obs_dim, act_dim, hidden_sizes=(32,))
    reward = RewardModel(obs_dim, act_dim, hidden_sizes=(32,))
    loss = S2VGLoss(
        actor,
        make_qvalue(obs_dim, act_dim, hidden_sizes=(32,)),
        make_value(obs_dim, hidden_sizes=(32,)),
        dynamics,
        reward,
        alpha_init=0.1,
        fixed_alpha=True,
        action_spec=act_spec,
    )
    loss.make_value_estimator(gamma=0.99)
    target_updater = SoftUpdate(loss, tau=0.01)
    model_loss = GaussianWorldModelLoss(dynamics, reward)
    optim = torch.optim.Adam([{"params": p} for p in loss.parameter_groups().values()], lr=1e-3)
    model_optim = torch.optim.Adam(
        [{"params": p} for p in model_loss.parameter_groups().values()], lr=1e-3
    )
    replay = TensorDictReplayBuffer(
        storage=LazyTensorStorage(10_000),
        batch_size=64,
        transform=ImportanceWeight(actor),
    )
    collector = Collector(
        env,
        actor,
        frames_per_batch=50,
        total_frames=frames,
        auto_register_policy_transforms=False,
    )
    losses = []
    for batch in collector:
        batch = batch.reshape(-1)
        model_loss.update_normalizers(batch)
        replay.extend(batch)
        for _ in range(10):
            model_out = model_loss(replay.sample())
            model_optim.zero_grad()
            (model_out["loss_dynamics"] + model_out["loss_reward"]).backward()
            model_optim.step()
            sample = replay.sample()
            if not torch.isfinite(sample["importance_weight"]).all():
                raise SystemExit("non-finite importance weights")
            out = loss(sample)
            total = out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]
            optim.zero_grad()
            total.backward()
            optim.step()
            target_updater.step()
            losses.append(total.detach())
    collector.shutdown()
    if not torch.isfinite(torch.stack(losses)).all():
        raise SystemExit("a non-finite S2VG loss")
    return len(losses)


def main(argv: list[str]) -> None:
    if "--block" in argv:
        block_recipe_libraries()
    attempted, set_aside = run_doctests()
    updates = train_s2vg_on_lqg()
    imported = sorted({m.split(".")[0] for m, v in sys.modules.items() if v is not None})
    # TorchRL's own MuJoCo envs import mujoco where it is installed: not the package's doing
    leaked = sorted(set(RECIPE_LIBRARIES) & set(imported) - {"mujoco"})
    if leaked:
        raise SystemExit(f"the core parts imported {leaked}")
    print(
        f"core-only OK: {attempted} docstring examples ran ({set_aside} that build a "
        f"Gymnasium env set aside); S2VG on LQG: {updates} updates, every loss finite"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
