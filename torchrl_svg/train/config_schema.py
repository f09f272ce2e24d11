"""The configuration's schema: one dataclass per group of keys, and the allowed values.

:class:`Config` is the whole tree; each group (``env``, ``collector``, ``model``,
``loss``, ...) is a dataclass whose ``Attributes:`` section documents its keys
(``--help`` prints them, see :mod:`torchrl_svg.train.config_reference`). The
schema imports no torch: the command line reads it for ``--help``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = [
    "CHOICES",
    "KEY_OWNERS",
    "Activation",
    "Algorithm",
    "CheckpointConfig",
    "CollectorBackend",
    "CollectorConfig",
    "CompileConfig",
    "CompileMode",
    "Config",
    "CriticLoss",
    "EnsembleMembers",
    "EnsembleReduction",
    "EnvConfig",
    "EvalConfig",
    "GuardConfig",
    "LoggerBackend",
    "LoggerConfig",
    "LossConfig",
    "ModelConfig",
    "ModelSigma",
    "NetworkConfig",
    "Noise",
    "ObservationBounds",
    "OptimConfig",
    "Precision",
    "ReplayBufferConfig",
    "RewardSource",
    "SVGConfig",
    "Termination",
    "WandbMode",
]


#: The values a key that takes one of a few may have (OmegaConf checks them on every merge).
Algorithm = Literal["s2vg", "svg0", "svg1", "svg1_er", "svgk", "svginf", "sac"]
Precision = Literal["fp32", "bf16"]
Activation = Literal["relu", "tanh", "elu", "silu"]
ModelSigma = Literal["state", "constant"]
EnsembleReduction = Literal["sample", "mean", "average"]
Termination = Literal["known", "learned", "none"]
RewardSource = Literal["learned", "known"]
ObservationBounds = Literal["none", "known"]
Noise = Literal["inferred", "sampled"]
CriticLoss = Literal["l2", "smooth_l1", "l1"]
EnsembleMembers = Literal["step", "rollout"]
LoggerBackend = Literal["wandb", "csv", "tensorboard", "none"]
WandbMode = Literal["offline", "online", "disabled"]
CollectorBackend = Literal["single", "multi_sync", "multi_async", "ray"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


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
    backend: CollectorBackend = "single"
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
        critic_layer_norm: a ``LayerNorm`` after each hidden layer of the critics (Q and V),
            before its activation.
        activation: hidden activation of the policy and the critics.
        scale_lb: lower bound of the policy's Normal scale (before the tanh).

    """

    actor_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    critic_layer_norm: bool = False
    activation: Activation = "relu"
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
            per sample), ``"mean"`` (the moment-matched mixture) or ``"average"`` (the
            members' mean location and variance, their disagreement left out).
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
    activation: Activation = "relu"
    sigma: ModelSigma = "state"
    per_dimension: bool = False
    ensemble_size: int = 1
    ensemble_reduction: EnsembleReduction = "sample"
    min_log_std: float = -5.0
    max_log_std: float = 0.5
    termination: Termination = "known"
    updates_per_step: int = 1
    pretrain_updates: int = 500
    batch_size: int = 256
    reward: RewardSource = "learned"


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
        actor_model_noise: S2VG's actor: draw its imagined next states with fresh model
            noise (the paper) or take the model's mean (``false``: only the policy's draws
            are random along the rollout, a lower-variance gradient through H steps).
        observation_bounds: S2VG's imagined states: ``"known"`` clips them to the box the
            task clips its observations to (e.g. Hopper's and Walker2d's joint velocities,
            Ant-v5's contact forces; see
            :func:`~torchrl_svg.modules.observation_bounds_for_env`, refused for a task
            without known bounds) or ``"none"``.
        disagreement_bound: with a model ensemble, stop the actor's imagined rollouts where
            the members disagree by more than this (normalised units; ``None``: never).
        ensemble_members: with a sampling model ensemble, the actor's imagined rollouts draw a
            member at every ``"step"`` or keep one per ``"rollout"``.
        expansion_ensemble_mean: with a model ensemble and ``horizon >= 2``, imagine the
            critic targets' steps from the members' average prediction (no single member's
            error in the targets).
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
    loss_function: CriticLoss = "l2"
    actor_horizon: int = 1
    actor_model_noise: bool = True
    observation_bounds: ObservationBounds = "none"
    disagreement_bound: float | None = None
    ensemble_members: EnsembleMembers = "step"
    expansion_ensemble_mean: bool = False
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
            ``svg0``, ``svg1_er`` and ``svgk``. ``svg1`` makes one update per freshly
            collected transition, in the order they came (no policy replay), as in the
            paper's comparison.
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
    noise: Noise = "inferred"
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
            the fast steps do not cover (a known reward) use the LossModules either way.
    """

    compile: bool = False
    mode: CompileMode | None = None
    cudagraphs: bool = False
    fast_update: bool = True


@dataclass
class CheckpointConfig:
    """Checkpoints and resuming.

    Attributes:
        interval: environment steps between checkpoints (one is also written at the end,
            on Ctrl-C and when the environment fails).
        resume: continue the run in ``logger.run_dir`` from its ``checkpoint.pt``.
        keep: also keep every checkpoint as ``checkpoints/checkpoint_<frames>.pt`` in the run
            directory (a hard link where the file system allows, else a copy), to measure
            a run along its training afterwards; ``checkpoint.pt`` is the newest either way.
    """

    interval: int = 10_000
    resume: bool = False
    keep: bool = False


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

    backend: LoggerBackend = "wandb"
    project: str = "torchrl_svg"
    mode: WandbMode | None = None
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
        num_threads: torch intra-op threads (``None``: ``OMP_NUM_THREADS`` where it is
            set, else every core this process may use; set 1 when several runs share the
            machine).
        precision: ``"fp32"`` or ``"bf16"``: bf16 autocast of the networks' matrix
            multiplies in the fast update steps (fp32 parameters, optimiser state,
            losses and targets); the LossModule steps always run in fp32.
        use_preset: apply the per-task preset of the algorithm.

    """

    algorithm: Algorithm = "s2vg"
    device: str = "cpu"
    num_threads: int | None = None
    precision: Precision = "fp32"
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


_SOFT = ("s2vg", "sac")
_SVG_CRITIC = ("svg1", "svg1_er", "svgk")
#: Whose keys the ``loss`` and ``svg`` groups hold: each key and the algorithms that read it
#: (a key not listed here is read by every algorithm). Setting a key away from its default
#: for an algorithm that does not read it is refused (``config_checks.validate_key_owners``).
KEY_OWNERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("loss", "horizon"): ("s2vg",),
    ("loss", "alpha_init"): _SOFT,
    ("loss", "fixed_alpha"): _SOFT,
    ("loss", "target_entropy"): _SOFT,
    ("loss", "tau"): (*_SOFT, "svg0"),
    ("loss", "updates_per_step"): _SOFT,
    ("loss", "expansion_entropy"): ("s2vg",),
    ("loss", "loss_function"): (*_SOFT, "svg0", *_SVG_CRITIC),
    ("loss", "actor_horizon"): ("s2vg",),
    ("loss", "actor_model_noise"): ("s2vg",),
    ("loss", "observation_bounds"): ("s2vg",),
    ("loss", "disagreement_bound"): ("s2vg",),
    ("loss", "ensemble_members"): ("s2vg",),
    ("loss", "expansion_ensemble_mean"): ("s2vg",),
    ("loss", "actor_max_grad_norm"): ("s2vg",),
    ("svg", "horizon"): ("svgk",),
    ("svg", "max_importance_weight"): _SVG_CRITIC,
    ("svg", "kl_coef"): ("svg1_er", "svgk"),
    ("svg", "value_target_interval"): _SVG_CRITIC,
    ("svg", "critic_updates_per_step"): _SVG_CRITIC,
    ("svg", "policy_updates_per_step"): ("svg0", "svg1_er", "svgk"),
    ("svg", "noise"): ("svg0", *_SVG_CRITIC, "svginf"),
    ("svg", "actor_max_grad_norm"): (*_SVG_CRITIC, "svginf"),
    ("svg", "episodes_per_batch"): ("svginf",),
    ("svg", "model_updates_per_batch"): ("svginf",),
}


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    """The values a ``Literal`` (or ``Literal | None``) annotation allows; ``None`` for others."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (Union, type(int | None)):
        parts = [_literal_values(arg) for arg in get_args(hint) if arg is not type(None)]
        if len(parts) == 1 and parts[0] is not None:
            return (*parts[0], None)
    return None


def _choices(cls: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[Any, ...]]:
    hints = get_type_hints(cls)
    out: dict[tuple[str, ...], tuple[Any, ...]] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            out.update(_choices(f.default_factory, (*prefix, f.name)))
        elif (values := _literal_values(hints[f.name])) is not None:
            out[(*prefix, f.name)] = values
    return out


#: The allowed values of the keys that take one of a few, read from their ``Literal`` types.
CHOICES: dict[tuple[str, ...], tuple[Any, ...]] = _choices(Config)


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
