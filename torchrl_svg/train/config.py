"""Training configuration: typed defaults, per-task presets, a config file and CLI overrides.

The configuration is a tree of dataclasses validated by OmegaConf: an unknown
key or a value of the wrong type fails before anything is built, with a
message that names the key. Values are resolved in this order, later ones
winning:

1. the dataclass defaults below;
2. an example script's own YAML file (``examples/configs/*.yaml``; ``defaults_file``);
3. the per-task preset of the chosen algorithm (e.g. the S2VG paper's Table 2);
4. a YAML config file (``--config path.yaml``);
5. command-line overrides ``group.key=value`` (dot-list syntax, as W&B sweeps
   and Hydra pass them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchrl_svg.train.errors import CheckpointError

__all__ = [
    "ALGORITHM_DEFAULTS",
    "OWN_ENVS",
    "Config",
    "ConfigError",
    "PRESETS",
    "ResumeConfigError",
    "SAFE_ON_RESUME",
    "load_config",
    "resume_config",
    "to_dict",
    "wandb_mode",
]


class ConfigError(ValueError):
    """A configuration problem found before training starts (the message names the key)."""


@dataclass
class EnvConfig:
    """The task.

    Attributes:
        name: a Gymnasium environment id (any MuJoCo task runs by name).
        seed: seed of the environment, torch and the collector.
        max_episode_steps: override of the task's time limit (``None``: the task's own).

    """

    name: str = "Pendulum-v1"
    seed: int = 0
    max_episode_steps: int | None = None


@dataclass
class CollectorConfig:
    """Data collection with a TorchRL collector.

    Attributes:
        total_frames: environment steps of the whole run.
        frames_per_batch: steps collected between two rounds of updates.
        init_random_frames: warm-up steps with uniformly random actions.
        backend: ``"single"`` (one TorchRL ``Collector`` in the training process),
            ``"multi_sync"`` (``MultiSyncCollector``: every batch gathers
            ``frames_per_batch / num_workers`` steps from each worker process),
            ``"multi_async"`` (``MultiAsyncCollector``: each batch is the
            ``frames_per_batch`` steps of whichever worker is ready first) or ``"ray"``
            (TorchRL's ``RayCollector``, synchronous, one Ray actor per worker).
        num_workers: worker processes (or Ray actors) of the non-``single`` backends,
            each with its own environment.
        ray_address: address of an existing Ray cluster for ``backend=ray``
            (``None``: start a local one with ``ray.init``).

    """

    total_frames: int = 10_000
    frames_per_batch: int = 10
    init_random_frames: int = 1_000
    backend: str = "single"
    num_workers: int = 2
    ray_address: str | None = None


@dataclass
class ReplayBufferConfig:
    """The replay buffer (a ``TensorDictReplayBuffer`` on a ``LazyTensorStorage``).

    Attributes:
        size: capacity in transitions (the oldest are overwritten).
        batch_size: transitions per batch of the policy and critic losses.

    """

    size: int = 1_000_000
    batch_size: int = 256


@dataclass
class NetworkConfig:
    """Policy and critic networks.

    Attributes:
        actor_hidden_sizes: hidden layer widths of the policy.
        critic_hidden_sizes: hidden layer widths of the critics (Q and V).
        activation: hidden activation of the policy and the critics.
        scale_lb: lower bound of the policy's Normal scale (before the tanh).

    """

    actor_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    scale_lb: float = 1e-4


@dataclass
class ModelConfig:
    """World model (dynamics, reward, termination) and its fitting schedule.

    Attributes:
        hidden_sizes: widths of the dynamics and reward networks.
        activation: hidden activation.
        sigma: ``"state"`` (learned, state-dependent) or ``"constant"`` (per dimension).
        per_dimension: one sub-network per state dimension (SVG paper App. C).
        ensemble_size: number of dynamics members.
        ensemble_reduction: how an ensemble imagines: ``"sample"`` (one member drawn
            per sample) or ``"mean"``.
        min_log_std / max_log_std: soft bounds of the normalised log-std.
        termination: ``"known"`` (the task's termination rule; refused for a task
            without one, see :func:`~torchrl_svg.modules.termination_for_env`),
            ``"learned"`` (a learned head) or ``"none"``.
        updates_per_step: model gradient steps per environment step.
        pretrain_updates: model gradient steps once the warm-up data is in.
        batch_size: model batch size.
        reward: ``"learned"`` (a reward model fit by NLL) or ``"known"`` (the task's
            exact differentiable reward: Hand-v0 and LQG-v0 only).

    """

    hidden_sizes: list[int] = field(default_factory=lambda: [200, 200])
    activation: str = "relu"
    sigma: str = "state"
    per_dimension: bool = False
    ensemble_size: int = 1
    ensemble_reduction: str = "sample"
    min_log_std: float = -5.0
    max_log_std: float = 0.5
    termination: str = "known"
    updates_per_step: int = 1
    pretrain_updates: int = 500
    batch_size: int = 256
    reward: str = "learned"


@dataclass
class LossConfig:
    """Loss hyper-parameters.

    Attributes:
        gamma: discount.
        horizon: value-expansion horizon H (1: real data only, as in the paper).
        alpha_init: initial (or fixed) entropy coefficient.
        fixed_alpha: keep alpha fixed (the S2VG paper) or learn it to a target entropy.
        target_entropy: ``"auto"`` (``-action_dim``) or a number.
        tau: Polyak rate of the target value network.
        updates_per_step: actor-critic updates per environment step (the paper's m).
        expansion_entropy: include the entropy bonus of imagined steps in the expansion target.
        loss_function: critic distance, ``"l2"``, ``"smooth_l1"`` or ``"l1"``.
        actor_horizon: S2VG's actor: imagined steps of its soft return (1: the paper's eq 11;
            H > 1: back-propagation through H steps of the models, ending in V).
        disagreement_bound: with a model ensemble, stop the actor's imagined rollouts where
            the members disagree by more than this (normalised units; ``None``: never).
        ensemble_members: with a sampling model ensemble, the actor's imagined rollouts draw a
            member at every ``"step"`` or keep one per ``"rollout"``.
        actor_max_grad_norm: clip the actor's gradient norm in the actor-critic step
            (``None``: no clipping), as SVG(inf) does for its long chains.

    """

    gamma: float = 0.99
    horizon: int = 1
    alpha_init: float = 0.2
    fixed_alpha: bool = True
    target_entropy: str = "auto"
    tau: float = 0.005
    updates_per_step: int = 5
    expansion_entropy: bool = True
    loss_function: str = "l2"
    actor_horizon: int = 1
    disagreement_bound: float | None = None
    ensemble_members: str = "step"
    actor_max_grad_norm: float | None = None


@dataclass
class SVGConfig:
    """Options of the SVG family (``algorithm`` = ``svg0``, ``svg1``, ``svg1_er``, ``svgk``, ``svginf``).

    Attributes:
        horizon: k of SVG(k) (``svgk``); sub-trajectories of k real steps.
        max_importance_weight: truncation of the importance weights (5 in the paper, 20 for two tasks).
        kl_coef: weight of the KL penalty between replay steps (App. D); 0 turns it off.
        value_target_interval: C of Algorithm 4 (hard copy of the target value every C updates).
        critic_updates_per_step: value (or Q) updates per environment step, from replay.
        policy_updates_per_step: policy updates per environment step; from replay for
            ``svg0``, ``svg1_er`` and ``svgk``. ``svg1`` makes one on-policy update per
            collected batch (no policy replay), as in the paper's comparison.
        noise: ``"inferred"`` (gradients along real trajectories) or ``"sampled"``
            (re-sampled noise; for ``svginf`` this is the planner of the paper's Fig. 2).
        actor_max_grad_norm: policy-gradient norm clipping (App. D); ``None`` turns it off.
        episodes_per_batch: ``svginf``: real episodes collected (in parallel) per policy update.
        model_updates_per_batch: ``svginf``: model gradient steps after each batch of episodes.
    """

    horizon: int = 2
    max_importance_weight: float = 5.0
    kl_coef: float = 0.0
    value_target_interval: int = 50
    critic_updates_per_step: int = 1
    policy_updates_per_step: int = 1
    noise: str = "inferred"
    actor_max_grad_norm: float | None = 10.0
    episodes_per_batch: int = 8
    model_updates_per_batch: int = 100


@dataclass
class OptimConfig:
    """Adam learning rates (the paper's "policy", "value" and "model" rates).

    Attributes:
        actor_lr: learning rate of the policy.
        critic_lr: learning rate of the critics (Q and V).
        alpha_lr: learning rate of the entropy coefficient (with ``loss.fixed_alpha=false``).
        model_lr: learning rate of the world model.
        model_weight_decay: Adam weight decay of the world model.
        max_grad_norm: gradient-norm clipping of every update (``None``: none).

    """

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    model_lr: float = 3e-4
    model_weight_decay: float = 0.0
    max_grad_norm: float | None = None


@dataclass
class CompileConfig:
    """Faster updates.

    Attributes:
        compile: run the losses under :func:`torch.compile` (forward and, through
            AOTAutograd, backward) for the per-step updates (not SVG(inf)'s long unroll).
        mode: the ``torch.compile`` mode (``None``, ``"default"``, ``"reduce-overhead"``,
            ``"max-autotune"``).
        cudagraphs: capture each update in tensordict's ``CudaGraphModule`` (``device=cuda``).
        fast_update: run S2VG's actor-critic step and every world-model step through
            :mod:`torchrl_svg.train.fast` (the same losses and updates on plain tensors,
            no host synchronisation); ``false`` runs the LossModules themselves. Set-ups
            the fast steps do not cover (``loss.horizon > 1``, a known reward) use the
            LossModules either way.
    """

    compile: bool = False
    mode: str | None = None
    cudagraphs: bool = False
    fast_update: bool = True


@dataclass
class CheckpointConfig:
    """Checkpoints and resuming.

    Attributes:
        interval: environment steps between checkpoints (one is also written at the end,
            on Ctrl-C and when the environment fails).
        resume: continue the run in ``logger.run_dir`` from its ``checkpoint.pt``.
    """

    interval: int = 10_000
    resume: bool = False


@dataclass
class GuardConfig:
    """Protection against bad values.

    Attributes:
        max_nonfinite_updates: non-finite losses or gradients in a row that are skipped
            (and counted) before the run stops with the last checkpoint.
        max_abs_value: a transition with an observation or reward entry larger than this in
            magnitude is dropped before it reaches the replay buffer and the model's
            normalisation statistics, and reported like a non-finite one (with the rest of
            its episode); ``None`` turns the bound off.
        max_deviation: after ``outlier_warmup`` transitions, one whose observation or reward
            lies farther than this many running standard deviations (floored at 1) from the
            running mean of the data kept so far is dropped the same way; ``None`` turns
            the bound off.
        outlier_warmup: transitions kept before ``max_deviation`` applies.
    """

    max_nonfinite_updates: int = 10
    max_abs_value: float | None = 1e9
    max_deviation: float | None = 1e4
    outlier_warmup: int = 100


@dataclass
class EvalConfig:
    """Periodic deterministic evaluation.

    Attributes:
        interval: environment steps between evaluations.
        episodes: episodes per evaluation.
        max_steps: cap on the length of an evaluation episode.
        video: also render one deterministic episode per evaluation to
            ``<run_dir>/videos/eval_<frames>.gif`` (and to W&B), where the task has
            an off-screen renderer (MuJoCo tasks through EGL); skipped otherwise.

    """

    interval: int = 1_000
    episodes: int = 5
    max_steps: int = 1_000
    video: bool = False


@dataclass
class LoggerConfig:
    """Where results go.

    Attributes:
        backend: ``"wandb"`` (offline by default), ``"csv"``, ``"tensorboard"`` or ``"none"``.
        project: W&B project.
        mode: W&B mode, ``"offline"`` (no network needed), ``"online"`` or ``"disabled"``;
            ``None``: W&B's own ``WANDB_MODE`` environment variable, else ``"offline"``.
        run_dir: directory of this run (``None``: ``runs/<env>-<algo>-seed<seed>-<time>``).
        exp_name: experiment name (``None``: derived from the run directory).
        log_interval: updates between two logged sets of losses.
        progress: show a tqdm progress bar.

    """

    backend: str = "wandb"
    project: str = "torchrl_svg"
    mode: str | None = None
    run_dir: str | None = None
    exp_name: str | None = None
    log_interval: int = 1_000
    progress: bool = True


@dataclass
class Config:
    """The whole training configuration.

    Attributes:
        algorithm: which algorithm the recipe trains.
        device: where networks and the replay storage live (``"cpu"`` or ``"cuda"``).
        num_threads: torch intra-op threads (``None``: every core this process may use;
            set 1 when several runs share the machine).
        precision: ``"fp32"`` or ``"bf16"``: bf16 autocast of the networks' matrix
            multiplies in the fast update steps (fp32 parameters, optimiser state,
            losses and targets); the LossModule steps always run in fp32.
        use_preset: apply the per-task preset of the algorithm.

    """

    algorithm: str = "s2vg"
    device: str = "cpu"
    num_threads: int | None = None
    precision: str = "fp32"
    use_preset: bool = True
    env: EnvConfig = field(default_factory=EnvConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    replay_buffer: ReplayBufferConfig = field(default_factory=ReplayBufferConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    svg: SVGConfig = field(default_factory=SVGConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)


#: The package's own reference tasks (torchrl_svg.envs), run by these names.
OWN_ENVS = ("Hand-v0", "LQG-v0")
KNOWN_REWARD_ENVS = frozenset(OWN_ENVS)


# S2VG paper, Appendix A, Table 2 (policy/value networks (256, 256), ReLU, 1000 env
# steps per epoch). Parts of the table are illegible in our copy; where a column is
# blank it takes the value to its left, and the model sizes are our best reading.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "s2vg": {
        "Pendulum-v1": {
            "collector": {"total_frames": 10_000, "init_random_frames": 1_000},
            "model": {"hidden_sizes": [32, 16]},
            "loss": {"alpha_init": 0.2, "updates_per_step": 5},
            "optim": {"actor_lr": 3e-4, "critic_lr": 3e-4, "model_lr": 3e-4},
        },
        "InvertedPendulum-v5": {
            "collector": {"total_frames": 20_000, "init_random_frames": 1_000},
            "model": {"hidden_sizes": [32, 16]},
            "loss": {"alpha_init": 0.1, "updates_per_step": 1},
            "optim": {"actor_lr": 3e-4, "critic_lr": 3e-4, "model_lr": 3e-4},
        },
        "HalfCheetah-v5": {
            "collector": {"total_frames": 200_000, "init_random_frames": 5_000},
            "model": {"hidden_sizes": [256, 128]},
            "loss": {"alpha_init": 0.4, "updates_per_step": 5},
            "optim": {"actor_lr": 3e-4, "critic_lr": 1e-3, "model_lr": 3e-4},
        },
        "Hopper-v5": {
            "collector": {"total_frames": 200_000, "init_random_frames": 5_000},
            "model": {"hidden_sizes": [200, 200]},
            "loss": {"alpha_init": 0.2, "updates_per_step": 5},
            "optim": {"actor_lr": 3e-4, "critic_lr": 1e-3, "model_lr": 1e-4},
        },
        "Walker2d-v5": {
            "collector": {"total_frames": 300_000, "init_random_frames": 5_000},
            "model": {"hidden_sizes": [256, 256]},
            "loss": {"alpha_init": 0.4, "updates_per_step": 3},
            "optim": {"actor_lr": 3e-4, "critic_lr": 3e-4, "model_lr": 1e-4},
        },
    },
}

# SVG paper, App. D: generic 2-hidden-layer tanh networks; Table 1 sizes (policy / value /
# model units per state dimension, one model sub-network per dimension, constant sigma) and
# the discount factors. Tasks without a row take the nearest one (cart-pole for the
# pendulums, the monoped for Hopper, the cheetah for Walker2d).
_SVG_SIZES: dict[str, tuple[list[int], list[int], list[int]]] = {
    "Hand-v0": ([100, 100], [200, 100], [20, 20]),
    "LQG-v0": ([100, 100], [200, 100], [20, 20]),
    "Pendulum-v1": ([100, 100], [200, 100], [20, 20]),
    "InvertedPendulum-v5": ([100, 100], [200, 100], [20, 20]),
    "HalfCheetah-v5": ([100, 100], [400, 200], [40, 40]),
    "Hopper-v5": ([100, 100], [400, 200], [50, 50]),
    "Walker2d-v5": ([100, 100], [400, 200], [40, 40]),
}
_SVG_GAMMA = {"Hand-v0": 1.0, "HalfCheetah-v5": 0.98, "Hopper-v5": 0.95, "Walker2d-v5": 0.98}


def _svg_preset(env: str) -> dict[str, Any]:
    policy, value, model = _SVG_SIZES[env]
    preset: dict[str, Any] = {
        "network": {
            "actor_hidden_sizes": policy,
            "critic_hidden_sizes": value,
            "activation": "tanh",
        },
        "model": {
            "hidden_sizes": model,
            "per_dimension": True,
            "sigma": "constant",
            "activation": "tanh",
        },
    }
    if env in _SVG_GAMMA:
        preset["loss"] = {"gamma": _SVG_GAMMA[env]}
    if env in KNOWN_REWARD_ENVS:
        preset["model"]["reward"] = "known"
    return preset


for _algo in ("svg0", "svg1", "svg1_er", "svgk", "svginf"):
    PRESETS[_algo] = {env: _svg_preset(env) for env in _SVG_SIZES}

# The SAC baseline (TorchRL's SACLoss) runs with S2VG's per-task networks, collector, replay
# and warm-up, and with SAC's own settings as TorchRL's sota-implementations/sac and CleanRL
# run it: one update per environment step, a learned alpha (initial 1.0, target entropy
# -|A|) and one learning rate, 3e-4, for the actor, the critics and alpha.
SAC_SETTINGS: dict[str, dict[str, Any]] = {
    "loss": {
        "fixed_alpha": False,
        "alpha_init": 1.0,
        "target_entropy": "auto",
        "updates_per_step": 1,
    },
    "optim": {"actor_lr": 3e-4, "critic_lr": 3e-4, "alpha_lr": 3e-4},
}
PRESETS["sac"] = {
    env: {
        **{
            group: dict(values)
            for group, values in preset.items()
            if group not in ("model", "loss", "optim")
        },
        **{group: dict(values) for group, values in SAC_SETTINGS.items()},
    }
    for env, preset in PRESETS["s2vg"].items()
}
#: Settings that are part of what an algorithm is: applied for every task (before its
#: preset, and also with ``use_preset=false``).
ALGORITHM_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {"sac": SAC_SETTINGS}

_CHOICES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("algorithm",): ("s2vg", "svg0", "svg1", "svg1_er", "svgk", "svginf", "sac"),
    ("precision",): ("fp32", "bf16"),
    ("network", "activation"): ("relu", "tanh", "elu", "silu"),
    ("model", "activation"): ("relu", "tanh", "elu", "silu"),
    ("model", "sigma"): ("state", "constant"),
    ("model", "ensemble_reduction"): ("sample", "mean"),
    ("model", "termination"): ("known", "learned", "none"),
    ("model", "reward"): ("learned", "known"),
    ("svg", "noise"): ("inferred", "sampled"),
    ("loss", "loss_function"): ("l2", "smooth_l1", "l1"),
    ("loss", "ensemble_members"): ("step", "rollout"),
    ("logger", "backend"): ("wandb", "csv", "tensorboard", "none"),
    ("logger", "mode"): ("offline", "online", "disabled", None),
    ("collector", "backend"): ("single", "multi_sync", "multi_async", "ray"),
}

_POSITIVE_INTS: tuple[tuple[str, ...], ...] = (
    ("collector", "total_frames"),
    ("collector", "frames_per_batch"),
    ("collector", "num_workers"),
    ("replay_buffer", "size"),
    ("replay_buffer", "batch_size"),
    ("model", "ensemble_size"),
    ("model", "batch_size"),
    ("loss", "horizon"),
    ("loss", "actor_horizon"),
    ("eval", "interval"),
    ("eval", "episodes"),
    ("eval", "max_steps"),
    ("logger", "log_interval"),
    ("svg", "horizon"),
    ("svg", "value_target_interval"),
    ("svg", "episodes_per_batch"),
    ("checkpoint", "interval"),
)


def _get(cfg: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        cfg = getattr(cfg, p)
    return cfg


def _validate(cfg: Config) -> None:
    for path, choices in _CHOICES.items():
        value = _get(cfg, path)
        if value not in choices:
            raise ConfigError(f"{'.'.join(path)}={value!r} is not one of {list(choices)}.")
    for path in _POSITIVE_INTS:
        value = _get(cfg, path)
        if value < 1:
            raise ConfigError(f"{'.'.join(path)} must be a positive integer, got {value}.")
    for path in (
        ("collector", "init_random_frames"),
        ("model", "updates_per_step"),
        ("model", "pretrain_updates"),
        ("loss", "updates_per_step"),
    ):
        if _get(cfg, path) < 0:
            raise ConfigError(f"{'.'.join(path)} must be >= 0, got {_get(cfg, path)}.")
    if cfg.num_threads is not None and cfg.num_threads < 1:
        raise ConfigError(f"num_threads must be a positive integer, got {cfg.num_threads}.")
    if not 0.0 < cfg.loss.gamma <= 1.0:
        raise ConfigError(f"loss.gamma must be in (0, 1], got {cfg.loss.gamma}.")
    if not 0.0 < cfg.loss.tau <= 1.0:
        raise ConfigError(f"loss.tau must be in (0, 1], got {cfg.loss.tau}.")
    if cfg.loss.alpha_init <= 0:
        raise ConfigError(f"loss.alpha_init must be positive, got {cfg.loss.alpha_init}.")
    if cfg.loss.target_entropy != "auto":
        try:
            float(cfg.loss.target_entropy)
        except ValueError:
            raise ConfigError(
                f"loss.target_entropy must be 'auto' or a number, got {cfg.loss.target_entropy!r}."
            ) from None
    for name in ("actor_lr", "critic_lr", "alpha_lr", "model_lr"):
        if getattr(cfg.optim, name) <= 0:
            raise ConfigError(f"optim.{name} must be positive, got {getattr(cfg.optim, name)}.")
    if not (cfg.device == "cpu" or cfg.device.startswith("cuda")):
        raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {cfg.device!r}.")
    if cfg.device.startswith("cuda"):
        _validate_cuda(cfg.device)
    if cfg.svg.max_importance_weight <= 0:
        raise ConfigError(
            f"svg.max_importance_weight must be positive, got {cfg.svg.max_importance_weight}."
        )
    _validate_env_name(cfg.env.name)
    _validate_collector(cfg)
    _validate_exp_name(cfg.logger.exp_name)
    if cfg.compile.cudagraphs and not cfg.device.startswith("cuda"):
        raise ConfigError(
            "compile.cudagraphs=true needs device=cuda (CUDA graphs capture GPU work)."
        )
    if cfg.compile.mode not in (
        None,
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    ):
        raise ConfigError(f"compile.mode={cfg.compile.mode!r} is not a torch.compile mode.")
    if cfg.checkpoint.resume and cfg.logger.run_dir is None:
        raise ConfigError(
            "checkpoint.resume=true needs logger.run_dir: the run directory to continue."
        )
    if cfg.logger.backend == "wandb":
        wandb_mode(cfg.logger.mode)  # a bad WANDB_MODE fails here, before anything is built
    if cfg.model.reward == "known" and cfg.env.name not in KNOWN_REWARD_ENVS:
        raise ConfigError(
            f"model.reward='known' needs a task with a known differentiable reward "
            f"({sorted(KNOWN_REWARD_ENVS)}); {cfg.env.name!r} has none: use model.reward=learned."
        )


# W&B's own spellings of its modes (``WANDB_MODE``), as the mode passed to ``wandb.init``.
_WANDB_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
    "shared": "shared",
}


def wandb_mode(mode: str | None) -> str:
    """The W&B mode of a run: ``logger.mode`` if given, else ``WANDB_MODE``, else ``"offline"``.

    Args:
        mode: the configured ``logger.mode`` (``None``: not given).

    Raises:
        ConfigError: ``WANDB_MODE`` holds a value W&B does not know.

    Examples:
        >>> import os
        >>> saved = os.environ.pop("WANDB_MODE", None)
        >>> wandb_mode(None)
        'offline'
        >>> os.environ["WANDB_MODE"] = "disabled"
        >>> wandb_mode(None), wandb_mode("offline")
        ('disabled', 'offline')
        >>> _ = os.environ.pop("WANDB_MODE") if saved is None else os.environ.update(WANDB_MODE=saved)
    """
    if mode is not None:
        return mode
    import os

    env = os.environ.get("WANDB_MODE")
    if env is None or env == "":
        return "offline"
    if env.lower() not in _WANDB_MODES:
        raise ConfigError(
            f"WANDB_MODE={env!r} is not a W&B mode ({sorted(_WANDB_MODES)}); unset it or set "
            "logger.mode."
        )
    return _WANDB_MODES[env.lower()]


def _validate_cuda(device: str) -> None:
    import torch

    if not torch.cuda.is_available():
        build = (
            "this torch is a CPU-only build"
            if torch.version.cuda is None
            else f"this torch is built for CUDA {torch.version.cuda} but finds no GPU"
        )
        raise ConfigError(
            f"device={device!r} but CUDA is not available ({build}, torch {torch.__version__}); "
            "use device=cpu."
        )
    _, _, index = device.partition(":")
    if index:
        if not index.isdigit():
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}.")
        if int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )


def _validate_env_name(name: str) -> None:
    import gymnasium as gym

    if name not in gym.envs.registry and name not in OWN_ENVS:
        close = sorted(
            k for k in gym.envs.registry if k.split("-")[0].lower() == name.split("-")[0].lower()
        )
        hint = f" Did you mean one of {close}?" if close else ""
        raise ConfigError(f"env.name={name!r} is not a registered Gymnasium environment.{hint}")
    if name not in OWN_ENVS:
        problem = _gym_spaces_problem(name)
        if problem is not None:
            raise ConfigError(f"env.name={name!r} {problem}")


def _gym_spaces_problem(name: str) -> str | None:
    """What rules a Gymnasium task out (``None``: a Box action space and flat Box observations).

    The SVG family and S2VG differentiate through continuous actions; the actor and the
    models read one flat observation vector. The task is made (and closed) once per
    process to read its spaces.
    """
    import warnings

    import gymnasium as gym

    spec = gym.spec(name)
    key = (name, spec.entry_point if isinstance(spec.entry_point, str) else id(spec.entry_point))
    if key in _SPACES_PROBLEMS:
        return _SPACES_PROBLEMS[key]
    try:
        with warnings.catch_warnings():  # the real build, later, warns as it will
            warnings.simplefilter("ignore")
            env = gym.make(name, disable_env_checker=True)
    except Exception as err:  # a missing optional dependency (Box2D, Atari ROMs, ...)
        return f"cannot be made: {type(err).__name__}: {err}"
    try:
        action, observation = env.action_space, env.observation_space
    finally:
        env.close()
    problem = None
    if not isinstance(action, gym.spaces.Box):
        problem = (
            f"has a {type(action).__name__} action space; the SVG family and S2VG need "
            "continuous actions (a Box action space)."
        )
    elif not isinstance(observation, gym.spaces.Box) or len(observation.shape) != 1:
        problem = (
            f"has a {type(observation).__name__} observation space of shape "
            f"{getattr(observation, 'shape', None)}; the recipe needs one flat vector "
            "observation (a 1-D Box)."
        )
    _SPACES_PROBLEMS[key] = problem
    return problem


_SPACES_PROBLEMS: dict[tuple[str, Any], str | None] = {}


def _validate_collector(cfg: Config) -> None:
    backend, workers = cfg.collector.backend, cfg.collector.num_workers
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "collector.backend='ray' needs the ray package: pip install 'torchrl_svg[distributed]'."
            )
    if backend not in ("multi_sync", "ray"):
        return
    # a synchronous batch takes the same number of steps (or episodes) from every worker
    if cfg.algorithm == "svginf":
        if cfg.svg.episodes_per_batch % workers:
            raise ConfigError(
                f"svg.episodes_per_batch={cfg.svg.episodes_per_batch} must be a multiple of "
                f"collector.num_workers={workers} with collector.backend={backend!r}."
            )
    elif cfg.collector.frames_per_batch % workers:
        raise ConfigError(
            f"collector.frames_per_batch={cfg.collector.frames_per_batch} must be a multiple of "
            f"collector.num_workers={workers} with collector.backend={backend!r}."
        )


def _field_type(path: Sequence[str]) -> str | None:
    """The annotated type of the configuration key ``path`` (``None``: no such key)."""
    cls: Any = Config
    for i, name in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            return None
        f = fields[name]
        if i == len(path) - 1:
            return str(f.type)
        if not dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            return None
        cls = f.default_factory
    return None


def _check_list_syntax(item: str) -> None:
    """``group.key=64,64`` for a list key: say how a list is written."""
    key, _, value = item.partition("=")
    kind = _field_type(key.split("."))
    value = value.strip()
    if kind is not None and kind.startswith("list") and not value.startswith("["):
        items = ",".join(v.strip() for v in value.split(","))
        raise ConfigError(
            f"{key}={value!r}: {key} is a list; write it in brackets: {key}=[{items}] "
            f"(quote it in a shell that expands brackets: '{key}=[{items}]')."
        )


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    cleaned = []
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"Override {item!r} is not of the form group.key=value.")
        _check_list_syntax(item)
        cleaned.append(item)
    try:
        return OmegaConf.from_dotlist(cleaned)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Could not parse overrides {cleaned}: {err}") from None


def _merge(base: DictConfig, *others: Any) -> DictConfig:
    try:
        return OmegaConf.merge(base, *others)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = str(err).splitlines()[0]
        raise ConfigError(f"Invalid configuration key {key!r}: {msg}" if key else msg) from None


def _read_yaml(config_file: str | Path) -> DictConfig:
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        return OmegaConf.load(path)  # type: ignore[return-value]
    except Exception as err:  # a YAML syntax error
        raise ConfigError(f"Could not read config file {str(path)!r}: {err}") from None


def load_config(
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    *,
    defaults_file: str | Path | None = None,
) -> Config:
    """Build and validate a :class:`Config`.

    Args:
        overrides: ``group.key=value`` strings (a leading ``--`` is accepted).
        config_file: an optional YAML file with (a subset of) the same tree.
        defaults_file: an optional YAML file of defaults that sits *below* the
            per-task preset (the example scripts' own files): it may choose the
            algorithm and the task, and set what the preset leaves open, but the
            preset of the task finally chosen wins over it.

    Raises:
        ConfigError: for an unknown key, a value of the wrong type or out of
            range, or an unknown environment; nothing has been built yet.

    Examples:
        >>> cfg = load_config(["env.name=InvertedPendulum-v5", "loss.horizon=3"])
        >>> cfg.env.name, cfg.loss.horizon, cfg.loss.alpha_init  # alpha from the preset
        ('InvertedPendulum-v5', 3, 0.1)
        >>> load_config(["loss.horzion=3"])
        Traceback (most recent call last):
        ...
        torchrl_svg.train.config.ConfigError: Invalid configuration key 'loss.horzion': Key 'horzion' not in 'LossConfig'. Did you mean one of: 'horizon', 'actor_horizon'?

    """
    schema = OmegaConf.structured(Config)
    user = OmegaConf.create()
    if config_file is not None:
        user = _read_yaml(config_file)
    user = OmegaConf.merge(user, _parse_overrides(overrides))
    _refuse_interpolations(user)
    defaults = OmegaConf.create() if defaults_file is None else _read_yaml(defaults_file)
    # Validate the keys and types against the schema before choosing a preset.
    _merge(schema, defaults)
    merged = _merge(schema, defaults, user)
    layers: list[Any] = [schema]
    if merged.algorithm in ALGORITHM_DEFAULTS:
        layers.append(OmegaConf.create(ALGORITHM_DEFAULTS[merged.algorithm]))
    layers.append(defaults)
    if merged.use_preset:
        preset = PRESETS.get(merged.algorithm, {}).get(merged.env.name)
        if preset is not None:
            layers.append(OmegaConf.create(preset))
    layers.append(user)
    cfg_node = _merge(*layers)
    cfg: Config = OmegaConf.to_object(cfg_node)  # type: ignore[assignment]
    _validate(cfg)
    # what the user set, as opposed to defaults and presets (a resume keeps the run's own)
    cfg._explicit_keys = frozenset(_leaf_values(OmegaConf.to_container(user, resolve=False)))
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """A plain nested dict of the configuration (for loggers and checkpoints)."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------- help text
def _groups() -> list[tuple[str, type]]:
    """``(group, dataclass)`` for the top level (``""``) and each group, in declaration order."""
    out: list[tuple[str, type]] = [("", Config)]
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            out.append((f.name, f.default_factory))  # type: ignore[arg-type]
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of a dataclass docstring.

    An entry ``a / b: text`` documents both ``a`` and ``b``.
    """
    import inspect
    import re

    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    try:
        start = lines.index("Attributes:") + 1
    except ValueError:
        return docs
    names: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break  # the next section
        entry = re.match(r"^    (\w+(?: / \w+)*): (.*)$", line)
        if entry:
            names = entry[1].split(" / ")
            for name in names:
                docs[name] = entry[2].strip()
        elif line.strip() and names:
            for name in names:
                docs[name] += " " + line.strip()
    return {k: _plain(v) for k, v in docs.items()}


def _plain(text: str) -> str:
    """Docstring markup as plain terminal text: ``x`` and :role:`x` become x."""
    import re

    return re.sub(r"``([^`]*)``", r"\1", re.sub(r":\w+:`~?([^`]*)`", r"\1", text))


def _override_text(value: Any) -> str:
    """A value as it is written in a ``group.key=value`` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    return str(value)


def describe_config() -> list[dict[str, Any]]:
    """Every configuration key with its description, type, default and choices.

    Returns:
        One dict per key, in declaration order: ``key`` (``group.key``), ``type`` (as
        annotated), ``default`` (the dataclass default, before any preset), ``choices``
        (a tuple, or ``None`` when any value of the type goes) and ``description``.

    Examples:
        >>> keys = {d["key"]: d for d in describe_config()}
        >>> keys["loss.horizon"]["type"], keys["loss.horizon"]["default"]
        ('int', 1)
        >>> keys["algorithm"]["choices"]
        ('s2vg', 'svg0', 'svg1', 'svg1_er', 'svgk', 'svginf', 'sac')
        >>> keys["loss.horizon"]["description"]
        'value-expansion horizon H (1: real data only, as in the paper).'
    """
    rows = []
    for group, cls in _groups():
        docs = _attribute_docs(cls)
        for f in dataclasses.fields(cls):
            if group == "" and dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
                continue
            path = (group, f.name) if group else (f.name,)
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = f.default_factory()  # type: ignore[misc]
            rows.append(
                {
                    "key": ".".join(path),
                    "type": str(f.type),
                    "default": default,
                    "choices": _CHOICES.get(path),
                    "description": docs.get(f.name, ""),
                }
            )
    return rows


def config_help(width: int = 100) -> str:
    """The configuration reference printed by ``--help``: every group and key.

    Each key is shown with its type, default (before any per-task preset) and
    choices, then its description; the per-task presets and the tasks follow.

    Examples:
        >>> text = config_help()
        >>> "loss.horizon: int = 1" in text and "value-expansion horizon H" in text
        True
    """
    import textwrap

    out = [
        "configuration keys (override with group.key=value; defaults before any per-task preset):"
    ]
    docs = {group: _plain((cls.__doc__ or "").strip().splitlines()[0]) for group, cls in _groups()}
    current = None
    for row in describe_config():
        group = row["key"].rpartition(".")[0]
        if group != current:
            current = group
            out.append("")
            out.append(f"{group}: {docs[group]}" if group else "top level:")
        choices = row["choices"]
        shown = ""
        if choices:
            names = [_override_text(c) for c in choices]
            shown = "  {" + ", ".join(names) + "}"
        out.append(f"  {row['key']}: {row['type']} = {_override_text(row['default'])}{shown}")
        if row["description"]:
            out.extend(
                textwrap.wrap(
                    row["description"],
                    width,
                    initial_indent="      ",
                    subsequent_indent="      ",
                    break_on_hyphens=False,
                )
            )
    out.append("")
    out.append("per-task presets (applied over the defaults; use_preset=false skips them):")
    families: dict[tuple[str, ...], list[str]] = {}
    for algo, presets in PRESETS.items():
        families.setdefault(tuple(presets), []).append(algo)
    for tasks, algos in families.items():
        out.extend(
            textwrap.wrap(
                f"{', '.join(algos)}: {', '.join(tasks)}",
                width,
                initial_indent="  ",
                subsequent_indent="      ",
            )
        )
    out.append("")
    out.extend(
        textwrap.wrap(
            "tasks (env.name): any registered Gymnasium environment with a continuous (Box) "
            "action space and flat vector observations, e.g. the MuJoCo tasks "
            "(InvertedPendulum-v5, HalfCheetah-v5, Hopper-v5, Walker2d-v5, ...), and the "
            f"package's own {' and '.join(OWN_ENVS)}.",
            width,
        )
    )
    return "\n".join(out)


def _validate_exp_name(exp_name: str | None) -> None:
    """The logger writes into ``<run_dir>/<exp_name>``: one plain path component, no escape."""
    if exp_name is None:
        return
    if (
        not exp_name
        or exp_name in (".", "..")
        or "/" in exp_name
        or "\\" in exp_name
        or "\0" in exp_name
        or Path(exp_name).is_absolute()
    ):
        raise ConfigError(
            f"logger.exp_name={exp_name!r} must be a plain name (no '/', '\\', '.' or '..'): the "
            "logger writes into <logger.run_dir>/<logger.exp_name>."
        )


def _leaf_values(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"group.key": value}`` of a nested dict (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= _leaf_values(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _refuse_interpolations(user: DictConfig) -> None:
    """Refuse ``${...}`` in user values: they would be resolved (``oc.env`` reads the environment)."""
    for key, value in _leaf_values(OmegaConf.to_container(user, resolve=False)).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "${" in v for v in values):
            raise ConfigError(
                f"{key}={value!r} is an interpolation; configuration values are taken literally "
                "(write the value itself: interpolations such as ${oc.env:...} would read the "
                "environment into config.yaml and the logged hyperparameters)."
            )


class ResumeConfigError(ConfigError, CheckpointError):
    """A resume that would change what the run is (the message names the key).

    A :class:`ConfigError` about the key, and a
    :class:`~torchrl_svg.train.checkpoint.CheckpointError`: the run in the
    checkpoint cannot be continued with it.
    """


#: Keys that a resumed run may change (``group.`` covers the whole group): how long it runs,
#: what and where it logs, how it evaluates and checkpoints, and its fault limits. Everything
#: else is part of what was trained and is taken from the run itself.
SAFE_ON_RESUME: tuple[str, ...] = (
    "collector.total_frames",
    "eval.",
    "logger.",
    "checkpoint.",
    "guard.",
    "num_threads",
)


def _safe_on_resume(key: str) -> bool:
    return any(
        key == safe or (safe.endswith(".") and key.startswith(safe)) for safe in SAFE_ON_RESUME
    )


def _known_keys(saved: dict[str, Any], schema: DictConfig) -> dict[str, Any]:
    """``saved`` without the keys ``schema`` does not have (fields of an older release)."""
    out: dict[str, Any] = {}
    for key, value in saved.items():
        if key not in schema:
            continue
        node = schema[key]
        out[key] = (
            _known_keys(value, node)
            if isinstance(node, DictConfig) and isinstance(value, dict)
            else value
        )
    return out


def resume_config(cfg: Config, saved: dict[str, Any]) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """The configuration of a resumed run: the run's own, with the safe changes ``cfg`` asks for.

    Args:
        cfg: the configuration given for the resume (from :func:`load_config`, which
            records the keys the user set; for any other ``Config`` every value that
            differs from the run's counts as asked for).
        saved: the run's configuration as saved in its checkpoint (:func:`to_dict`).

    Returns:
        ``(configuration, {key: (run's value, new value)})`` for the keys changed.

    Raises:
        ResumeConfigError: naming the first key set to another value than the run's
            that is not in :data:`SAFE_ON_RESUME`.

    Examples:
        >>> run = to_dict(load_config(["network.actor_hidden_sizes=[64,64]"]))
        >>> cfg, changed = resume_config(load_config(["collector.total_frames=20000"]), run)
        >>> cfg.network.actor_hidden_sizes, changed
        ([64, 64], {'collector.total_frames': (10000, 20000)})
        >>> resume_config(load_config(["loss.gamma=0.9"]), run)
        Traceback (most recent call last):
        ...
        torchrl_svg.train.config.ResumeConfigError: loss.gamma=0.9 cannot change when resuming: the run has loss.gamma=0.99. A resumed run keeps its own configuration; only collector.total_frames, eval.*, logger.*, checkpoint.*, guard.*, num_threads may change.
    """
    schema = OmegaConf.structured(Config)
    run_node = _merge(schema, _known_keys(saved, schema))
    run: dict[str, Any] = _leaf_values(OmegaConf.to_container(run_node, resolve=False))
    given = _leaf_values(to_dict(cfg))
    explicit = getattr(cfg, "_explicit_keys", None)
    changed: dict[str, tuple[Any, Any]] = {}
    for key, new in given.items():
        old = run.get(key)
        if new == old or (explicit is not None and key not in explicit):
            continue
        if not _safe_on_resume(key):
            allowed = ", ".join(k + "*" if k.endswith(".") else k for k in SAFE_ON_RESUME)
            raise ResumeConfigError(
                f"{key}={new!r} cannot change when resuming: the run has {key}={old!r}. A resumed "
                f"run keeps its own configuration; only {allowed} may change."
            )
        changed[key] = (old, new)
    dotlist = OmegaConf.from_dotlist([])
    for key, (_, new) in changed.items():
        OmegaConf.update(dotlist, key, new, force_add=True)
    try:
        result: Config = OmegaConf.to_object(_merge(run_node, dotlist))  # type: ignore[assignment]
        _validate(result)
    except ResumeConfigError:
        raise
    except ConfigError as err:
        raise ResumeConfigError(f"The resumed run's configuration is not valid: {err}") from None
    result._explicit_keys = frozenset(changed)
    return result, changed
