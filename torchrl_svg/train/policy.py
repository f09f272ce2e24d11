"""From a run directory back to a policy: :func:`load_policy` and :func:`evaluate_run`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tensordict.nn import InteractionType
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_svg.modules import env_specs
from torchrl_svg.train.agents import make_agent
from torchrl_svg.train.builders import make_env
from torchrl_svg.train.checkpoint import CheckpointError, load_checkpoint
from torchrl_svg.train.config import Config, ConfigError

__all__ = ["EVAL_SEED_OFFSET", "RunEvaluation", "evaluate_run", "load_policy", "load_run"]

#: The training loop's evaluation environment is seeded with ``env.seed + EVAL_SEED_OFFSET``.
EVAL_SEED_OFFSET = 10_000


def _checkpoint_path(run_dir: str | Path, checkpoint: str | Path | None) -> Path:
    run_dir = Path(run_dir)
    if checkpoint is None:
        return run_dir / "checkpoint.pt"
    checkpoint = Path(checkpoint)
    return checkpoint if checkpoint.is_absolute() or checkpoint.exists() else run_dir / checkpoint


def load_run(
    run_dir: str | Path, *, checkpoint: str | Path | None = None
) -> tuple[Config, dict[str, Any]]:
    """The configuration and the training state saved in a run directory.

    Args:
        run_dir: a directory written by ``python -m torchrl_svg.train``.
        checkpoint: the checkpoint file to read (default ``<run_dir>/checkpoint.pt``; a
            relative name such as ``checkpoint.prev.pt`` is looked up in ``run_dir``).

    Returns:
        ``(cfg, state)``: the run's :class:`~torchrl_svg.train.config.Config` (the one
        stored with the weights) and the checkpoint's training state.

    Raises:
        CheckpointError: no run directory, or no readable checkpoint in it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory (it does not exist).")
    state = load_checkpoint(_checkpoint_path(run_dir, checkpoint))
    try:
        node = OmegaConf.merge(OmegaConf.structured(Config), state["config"])
        cfg: Config = OmegaConf.to_object(node)  # type: ignore[assignment]
    except Exception as err:  # a checkpoint of an incompatible torchrl_svg version
        raise ConfigError(f"The configuration stored in {run_dir} does not load: {err}") from None
    return cfg, state


class _CastInputs(nn.Module):
    """Forward pre-hook: cast floating-point inputs to the network's parameter dtype."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            a.to(self.dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args
        )


def load_policy(
    run_dir: str | Path,
    *,
    deterministic: bool = True,
    device: torch.device | str = "cpu",
    checkpoint: str | Path | None = None,
) -> ProbabilisticActor:
    """The trained policy of a run, as a TorchRL actor ready for ``env.rollout(n, policy)``.

    The actor is the run's TanhNormal :class:`~torchrl.modules.ProbabilisticActor`
    with the weights of its checkpoint. It reads ``"observation"`` and writes
    ``"action"`` (and ``"loc"``, ``"scale"``, ``"action_log_prob"``, ``"action_pre_tanh"``). By default it
    acts deterministically (the mode of the action distribution, as the training
    run's evaluations do) unless an exploration type is set around it:
    ``with set_exploration_type(ExplorationType.RANDOM)`` samples. Observations of
    another floating dtype (the float64 of Gymnasium's MuJoCo tasks) are cast to
    the network's dtype, so the actor runs on ``GymEnv(name)`` itself as well as on
    the training recipe's environment.

    Args:
        run_dir: a directory written by ``python -m torchrl_svg.train`` (it holds
            ``checkpoint.pt``).

    Keyword Args:
        deterministic: act with the distribution's mode when no exploration type is
            set (``False``: sample).
        device: where the actor's parameters go.
        checkpoint: another checkpoint file of the run (e.g. ``"checkpoint.prev.pt"``).

    Returns:
        The actor, in eval mode.

    Raises:
        CheckpointError: the directory has no readable checkpoint.

    Examples:
        >>> import contextlib, io, tempfile
        >>> from torchrl.envs import GymEnv
        >>> from torchrl_svg import load_policy
        >>> from torchrl_svg.train import load_config, train
        >>> run_dir = tempfile.mkdtemp()
        >>> cfg = load_config(["network.actor_hidden_sizes=[8]", "network.critic_hidden_sizes=[8]",
        ...     "model.hidden_sizes=[8]", "model.pretrain_updates=1", "collector.total_frames=20",
        ...     "collector.init_random_frames=10", "loss.updates_per_step=1", "eval.episodes=1",
        ...     "eval.max_steps=5", "logger.backend=none", "logger.progress=false",
        ...     f"logger.run_dir={run_dir}"])
        >>> with contextlib.redirect_stdout(io.StringIO()):  # a tiny run
        ...     _ = train(cfg)
        >>> policy = load_policy(run_dir)
        >>> rollout = GymEnv("Pendulum-v1").rollout(10, policy)
        >>> rollout["action"].shape
        torch.Size([10, 1])
    """
    cfg, state = load_run(run_dir, checkpoint=checkpoint)
    device = torch.device(device)
    # Build on the requested device, without the training-only compilation options.
    cfg = dataclasses.replace(
        cfg,
        device=str(device),
        compile=dataclasses.replace(cfg.compile, compile=False, cudagraphs=False),
    )
    env = make_env(cfg, seed_offset=EVAL_SEED_OFFSET)
    try:
        agent = make_agent(cfg, *env_specs(env), device, env=env)
        agent.load_state_dict(state["agent"])
    finally:
        env.close()
    policy = agent.policy
    if not isinstance(policy, ProbabilisticActor):  # pragma: no cover - every agent has one
        raise TypeError(f"The {cfg.algorithm} agent's policy is a {type(policy).__name__}.")
    policy.module[-1].default_interaction_type = (
        InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM
    )
    network = policy.module[0].module
    dtype = next(network.parameters()).dtype
    network.register_forward_pre_hook(_CastInputs(dtype))
    return policy.eval()


@dataclass
class RunEvaluation:
    """Returns of a trained policy, evaluated by :func:`evaluate_run`.

    Attributes:
        run_dir: the run directory.
        env_name: the task.
        algorithm: the algorithm of the run.
        frames: environment steps of training behind the checkpoint.
        returns: the episode returns.
        video: the GIF written, or ``None``.
    """

    run_dir: Path
    env_name: str
    algorithm: str
    frames: int
    returns: list[float]
    video: Path | None = None

    @property
    def mean(self) -> float:
        """Mean return."""
        return sum(self.returns) / len(self.returns)

    @property
    def std(self) -> float:
        """Standard deviation of the returns (population, as ``eval.csv``)."""
        m = self.mean
        return (sum((r - m) ** 2 for r in self.returns) / len(self.returns)) ** 0.5


def evaluate_run(
    run_dir: str | Path,
    *,
    episodes: int = 10,
    max_steps: int | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    video: str | Path | bool = False,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> RunEvaluation:
    """Run ``episodes`` episodes of a run's trained policy on its task.

    The task is built as the training run built it (same wrappers, same
    ``env.max_episode_steps``) and seeded by default as the run's own evaluations
    were (``env.seed + 10000``): the first episodes repeat those of the run's first
    evaluation, so a policy saved right after it scores what ``eval.csv`` says.

    Args:
        run_dir: a directory written by ``python -m torchrl_svg.train``.

    Keyword Args:
        episodes: number of episodes.
        max_steps: cap on an episode's length (default: the run's ``eval.max_steps``).
        seed: seed of the environment (default: the run's evaluation seed).
        deterministic: act with the mode of the action distribution (else sample).
        video: also render one episode to a GIF: ``True`` for
            ``<run_dir>/videos/evaluate.gif``, or a path. Skipped (``video`` of the
            result is ``None``) where the task has no off-screen renderer.
        checkpoint: another checkpoint file of the run.
        device: where the policy runs.

    Returns:
        A :class:`RunEvaluation`.
    """
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_svg.train.records import evaluate

    cfg, state = load_run(run_dir, checkpoint=checkpoint)
    policy = load_policy(run_dir, deterministic=deterministic, device=device, checkpoint=checkpoint)
    max_steps = cfg.eval.max_steps if max_steps is None else max_steps
    seed = cfg.env.seed + EVAL_SEED_OFFSET if seed is None else seed
    env = make_env(dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, seed=seed)))
    try:
        if deterministic:
            returns = evaluate(env, policy, episodes, max_steps)
        else:
            with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
                returns = [
                    float(
                        env.rollout(max_steps, policy, break_when_any_done=True)["next", "reward"]
                        .sum()
                        .item()
                    )
                    for _ in range(episodes)
                ]
    finally:
        env.close()
    written = None
    if video:
        from torchrl_svg.train.video import record_video

        path = Path(run_dir) / "videos" / "evaluate.gif" if video is True else Path(video)
        written = record_video(cfg.env.name, policy, path, max_steps=max_steps, seed=seed)
    return RunEvaluation(
        Path(run_dir),
        cfg.env.name,
        cfg.algorithm,
        int(state["counters"]["frames"]),
        returns,
        written,
    )
