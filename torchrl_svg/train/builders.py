"""``make_*`` factories of the training recipe: environments, collector, buffer, logger."""

from __future__ import annotations

import copy
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.collectors import BaseCollector, Collector, MultiAsyncCollector, MultiSyncCollector
from torchrl.data import (
    Bounded,
    LazyTensorStorage,
    ReplayBuffer,
    TensorDictReplayBuffer,
    TensorSpec,
)
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    Transform,
    TransformedEnv,
)

from torchrl_svg._utils import check_same_shape
from torchrl_svg.data import slice_replay_buffer
from torchrl_svg.envs import EndOnNonFinite, HandEnv, LQGEnv, hand_reward_module, lqg_reward_module
from torchrl_svg.objectives.noise import LocationScale
from torchrl_svg.train.config import OWN_ENVS, Config
from torchrl_svg.train.loggers import make_logger

__all__ = [
    "ACTIVATIONS",
    "CollectionEnv",
    "WorkerEnvFactory",
    "WorkerFailures",
    "check_against_env",
    "collector_policy",
    "episode_length",
    "make_collector",
    "make_env",
    "make_known_reward",
    "make_logger",
    "make_replay_buffer",
    "make_run_dir",
    "num_threads",
    "warm_up_frames",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}

# Entries of a collected batch that the losses read; the rest (policy loc/scale,
# episode statistics) is not stored in the replay buffer.
REPLAY_KEYS = (
    "observation",
    "action",
    "action_log_prob",
    "action_pre_tanh",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("collector", "traj_ids"),
)
BEHAVIOUR_LOG_PROB_KEY = "action_log_prob"
PRE_TANH_KEY = "action_pre_tanh"
TRAJ_KEY = ("collector", "traj_ids")


class CollectionEnv(TransformedEnv):
    """The :class:`~torchrl.envs.TransformedEnv` of :func:`make_env`: it labels random actions and reports failures.

    * A collector's warm-up step draws its action with :meth:`rand_action`; for
      an action box this also writes the uniform log-density of the box as the
      behaviour log-probability ``action_log_prob`` and the action's pre-tanh
      value ``action_pre_tanh`` (what the package's actor stores with its own
      actions), so a batch of random steps carries its own behaviour
      log-probability whichever worker collected it and whenever it arrives
      (``collector.backend=multi_async``).
    * ``steps`` counts the steps taken. When ``failure_report`` is set and the
      environment raises in a step or a reset, a JSON file there names the
      task, the ``worker``, the step and the exception before the exception
      propagates: a collector worker process dies with it, and only the file
      tells the training process what happened.

    Args:
        base_env: the environment.
        transform: its transforms.
        worker: index of the collector worker that runs it (for the report).
        failure_report: where to write the report of an exception (``None``: nowhere).
    """

    def __init__(
        self,
        base_env: EnvBase,
        transform: Transform,
        *,
        worker: int | None = None,
        failure_report: str | Path | None = None,
    ):
        super().__init__(base_env, transform)
        self.worker = worker
        self.failure_report = None if failure_report is None else Path(failure_report)
        self.steps = 0
        spec = self.action_spec
        # [*B]: the log-density of a uniform action in the box (summed over action dims only)
        self._uniform_log_prob = (
            -torch.log(spec.space.high - spec.space.low).sum(-1)
            if isinstance(spec, Bounded)
            else None
        )

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """A uniformly random action, with its log-density as ``action_log_prob`` [*B] and its pre-tanh value."""
        out = super().rand_action(tensordict)
        if self._uniform_log_prob is not None:
            log_prob = self._uniform_log_prob.to(out.device).expand(out.batch_size)
            out.set(BEHAVIOUR_LOG_PROB_KEY, log_prob.clone())
            space = self.action_spec.space
            action = out.get(self.action_key)
            box = LocationScale(action, action, space.low.to(action), space.high.to(action))
            out.set(PRE_TANH_KEY, box.unsquash(action))
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        try:
            out = super()._step(tensordict)
        except Exception as err:
            self._report(err, f"step {self.steps + 1}")
            raise
        self.steps += 1
        return out

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        try:
            return super()._reset(tensordict, **kwargs)
        except Exception as err:
            self._report(err, f"reset after step {self.steps}")
            raise

    def _report(self, err: Exception, where: str) -> None:
        if self.failure_report is None:
            return
        report = {
            "worker": self.worker,
            "where": where,
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
        try:  # the report must never hide the exception itself
            self.failure_report.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.failure_report.with_suffix(".tmp")
            tmp.write_text(json.dumps(report, indent=2))
            tmp.replace(self.failure_report)
        except OSError:
            pass


def make_env(
    cfg: Config,
    *,
    seed_offset: int = 0,
    num_envs: int | None = None,
    worker: int | None = None,
    failure_report: str | Path | None = None,
) -> CollectionEnv:
    """The task as a TorchRL env (float32 observations, step counter, episode return).

    A step with a non-finite observation or reward ends its episode
    (:class:`~torchrl_svg.envs.EndOnNonFinite`), so the collector resets it.

    ``Hand-v0`` and ``LQG-v0`` are the package's own batched tasks; any other
    name is a Gymnasium environment. With ``num_envs`` the env runs that many
    episodes side by side (batch size ``[num_envs]``; Gymnasium tasks through a
    :class:`~torchrl.envs.SerialEnv`). ``worker`` and ``failure_report`` go to
    :class:`CollectionEnv` (set for the env of a collector worker).
    """
    seed = cfg.env.seed + seed_offset
    batch = [] if num_envs is None else [num_envs]
    name, steps = cfg.env.name, cfg.env.max_episode_steps
    if name == "Hand-v0":
        base = HandEnv(
            batch_size=batch, seed=seed, **({} if steps is None else {"episode_steps": steps})
        )
    elif name == "LQG-v0":
        base = LQGEnv(batch_size=batch, seed=seed, **({} if steps is None else {"horizon": steps}))
    else:
        kwargs = {} if steps is None else {"max_episode_steps": steps}

        def make_gym() -> GymEnv:
            return GymEnv(name, device="cpu", **kwargs)

        base = make_gym() if num_envs is None else SerialEnv(num_envs, make_gym)
    env = CollectionEnv(
        base,
        Compose(DoubleToFloat(), EndOnNonFinite(), StepCounter(), RewardSum()),
        worker=worker,
        failure_report=failure_report,
    )
    env.set_seed(seed)
    return env


@dataclass(frozen=True)
class WorkerFailures:
    """Where the environments of collector workers report what they raised: one JSON file each.

    A worker process that raises dies; the collector in the training process
    then only learns that it exited. :class:`CollectionEnv` writes the
    exception, the worker and the step into ``directory`` first; the files of
    one collector share a ``token``, so reports of earlier runs in the same
    directory are not read again.

    Attributes:
        directory: where the reports go (created on the first report).
        token: tells this collector's reports apart.
    """

    directory: Path
    token: str = field(default_factory=lambda: f"{os.getpid()}-{time.time_ns()}")

    def path(self, worker: int) -> Path:
        """The report file of ``worker``."""
        return self.directory / f"worker{worker}-{self.token}.json"

    def read(self) -> list[dict[str, Any]]:
        """The reports written so far (``worker``, ``where``, ``error``, ``traceback``), by worker."""
        reports = []
        for path in sorted(self.directory.glob(f"worker*-{self.token}.json")):
            try:
                reports.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return reports


class WorkerEnvFactory:
    """Builds the environment of one collector worker, in the worker (picklable).

    Args:
        cfg: the configuration.
        worker: the worker's index.
        seed_offset: added to ``env.seed`` (the collector re-seeds the workers anyway).
        num_envs: episodes side by side in this worker (``None``: one, unbatched).
        failures: where the env reports an exception (see :class:`WorkerFailures`).
    """

    def __init__(
        self,
        cfg: Config,
        worker: int,
        *,
        seed_offset: int = 0,
        num_envs: int | None = None,
        failures: WorkerFailures | None = None,
    ):
        self.cfg = cfg
        self.worker = worker
        self.seed_offset = seed_offset
        self.num_envs = num_envs
        self.failures = failures
        # A spawned worker (or Ray actor) imports Gymnasium afresh: a task registered at run
        # time in the training process (a test, a notebook) is unknown there unless re-registered.
        self.gym_spec = None if cfg.env.name in OWN_ENVS else gym.spec(cfg.env.name)

    def __call__(self) -> CollectionEnv:
        """The worker's env (see :func:`make_env`)."""
        spec = self.gym_spec
        if spec is not None and spec.id not in gym.registry:
            gym.registry[spec.id] = spec
        return make_env(
            self.cfg,
            seed_offset=self.seed_offset,
            num_envs=self.num_envs,
            worker=self.worker,
            failure_report=None if self.failures is None else self.failures.path(self.worker),
        )


class _MergeRayBatches:
    """Ray's stacked ``[W, *B]`` worker batches as one ``[W * B[0], *B[1:]]`` batch.

    Each Ray actor numbers its trajectories from 0: they are made distinct
    across workers (``id * W + worker``), as the replay buffer's slice sampler
    needs.
    """

    def __init__(self, num_workers: int):
        self.num_workers = num_workers

    def __call__(self, data: TensorDictBase) -> TensorDictBase:
        traj = data.get(TRAJ_KEY, None)
        if traj is not None:
            worker = torch.arange(self.num_workers, device=traj.device)
            worker = worker.view(-1, *[1] * (traj.ndim - 1))
            data.set(TRAJ_KEY, traj * self.num_workers + worker)
        return data.reshape(-1, *data.shape[2:])


def collector_policy(policy: nn.Module) -> nn.Module:
    """The policy that collectors run: ``policy`` itself on CPU, else a CPU copy.

    With a copy, the training loop copies the trained weights into it before
    each :meth:`~torchrl.collectors.BaseCollector.update_policy_weights_`.
    """
    weights = TensorDict.from_module(policy)
    if all(w.device.type == "cpu" for w in weights.values(True, True)):
        return policy
    return copy.deepcopy(policy).to("cpu")


def episode_length(env: EnvBase) -> int:
    """The fixed or time-limit episode length of a task made by :func:`make_env`."""
    base = env.base_env
    for attr in ("max_steps",):  # the package's own tasks
        if hasattr(base, attr):
            return int(getattr(base, attr))
    gym_env = base._envs[0] if isinstance(base, SerialEnv) and hasattr(base, "_envs") else base
    spec = getattr(getattr(gym_env, "_env", None), "spec", None)
    if spec is not None and spec.max_episode_steps:
        return int(spec.max_episode_steps)
    raise ValueError("Cannot tell the episode length of this task; set env.max_episode_steps.")


def make_known_reward(cfg: Config, env: EnvBase | None) -> nn.Module:
    """The exact differentiable reward module of ``Hand-v0`` or ``LQG-v0``."""
    if env is None:
        raise ValueError("model.reward='known' needs the environment to build its reward module.")
    if cfg.env.name == "Hand-v0":
        return hand_reward_module(env.base_env)
    if cfg.env.name == "LQG-v0":
        return lqg_reward_module(env.base_env)
    raise ValueError(f"{cfg.env.name!r} has no known reward module; use model.reward=learned.")


def check_against_env(
    observation_spec: TensorSpec, action_spec: TensorSpec, **models: nn.Module
) -> None:
    """Check that every model's observation/action sizes match the environment's specs.

    Raises:
        ValueError: naming the model and both shapes.

    """
    for name, model in models.items():
        obs_dim = getattr(model, "observation_dim", None)
        if obs_dim is not None:
            check_same_shape(
                "environment observation_spec",
                observation_spec.shape,
                f"{name} observation",
                (obs_dim,),
            )
        act_dim = getattr(model, "action_dim", None)
        if act_dim is not None:
            check_same_shape(
                "environment action_spec", action_spec.shape, f"{name} action", (act_dim,)
            )


def make_collector(
    cfg: Config,
    env: EnvBase | None,
    policy: nn.Module,
    *,
    episodic: bool = False,
    frames_done: int = 0,
    failures: WorkerFailures | None = None,
) -> BaseCollector:
    """The TorchRL collector of ``collector.backend``.

    Off-policy agents get ``collector.frames_per_batch`` steps per batch after
    ``collector.init_random_frames`` uniformly random ones. Episodic agents
    (SVG(inf)) get whole fresh episodes: each batch is ``[N, T]`` complete
    episodes, ``N = svg.episodes_per_batch``. A resumed run passes the
    ``frames_done`` so far: the collector then runs the remaining frames (and
    the remaining warm-up frames).

    ``single`` runs a :class:`~torchrl.collectors.Collector` on ``env``
    (batched, ``[episodes_per_batch]``, for episodic agents). The other
    backends ignore ``env``: each of the ``collector.num_workers`` workers
    builds its own with :class:`WorkerEnvFactory` (seeded apart, reporting
    failures to ``failures``) and runs a copy of ``policy`` (on CPU; see
    :func:`collector_policy`) whose weights follow
    :meth:`~torchrl.collectors.BaseCollector.update_policy_weights_`. Their
    batches have the same layout as the single collector's: ``[frames]``
    transitions in worker order, or ``[N, T]`` episodes.
    """
    backend = cfg.collector.backend
    if backend != "single":
        return _make_worker_collector(
            cfg, policy, episodic=episodic, frames_done=frames_done, failures=failures
        )
    if env is None:
        raise ValueError("collector.backend='single' collects from the env it is given; got None.")
    if episodic:
        frames = env.numel() * episode_length(env)
        total = -(-cfg.collector.total_frames // frames) * frames
        return Collector(
            env,
            policy,
            frames_per_batch=frames,
            total_frames=max(total - frames_done, frames),
            reset_at_each_iter=True,
            split_trajs=False,
            device="cpu",
            storing_device="cpu",
            auto_register_policy_transforms=False,
        )
    fpb = cfg.collector.frames_per_batch
    init_random = max(0, warm_up_frames(cfg) - frames_done)
    return Collector(
        env,
        policy,
        frames_per_batch=fpb,
        total_frames=max(cfg.collector.total_frames - frames_done, fpb),
        init_random_frames=init_random or None,
        device="cpu",
        storing_device="cpu",
        auto_register_policy_transforms=False,
    )


def _make_worker_collector(
    cfg: Config,
    policy: nn.Module,
    *,
    episodic: bool,
    frames_done: int,
    failures: WorkerFailures | None,
) -> BaseCollector:
    backend, workers = cfg.collector.backend, cfg.collector.num_workers
    sync = backend != "multi_async"  # multi_sync and ray: one equal share from every worker
    if episodic:
        episodes = cfg.svg.episodes_per_batch
        per_worker = episodes // workers if sync else episodes
        probe = make_env(cfg)
        length = episode_length(probe)
        probe.close()
        batch = episodes * length if sync else per_worker * length
        total = -(-cfg.collector.total_frames // batch) * batch
        total_frames, init_random = max(total - frames_done, batch), 0
    else:
        per_worker, batch = None, cfg.collector.frames_per_batch
        total_frames = max(cfg.collector.total_frames - frames_done, batch)
        init_random = max(0, warm_up_frames(cfg) - frames_done)
    env_fns = [
        WorkerEnvFactory(
            cfg, i, seed_offset=frames_done + i, num_envs=per_worker, failures=failures
        )
        for i in range(workers)
    ]
    common: dict[str, Any] = {
        "frames_per_batch": batch,
        "total_frames": total_frames,
        "reset_at_each_iter": episodic,
        "split_trajs": False,
        "device": "cpu",
        "storing_device": "cpu",
    }
    if backend == "ray":
        from torchrl.collectors.distributed import RayCollector

        ray_init: dict[str, Any] = {"address": cfg.collector.ray_address}
        if cfg.collector.ray_address is None:  # a local cluster with a CPU for every actor
            ray_init |= {"num_cpus": max(os.cpu_count() or 1, workers), "include_dashboard": False}
        collector = RayCollector(
            env_fns,
            policy,
            init_random_frames=init_random,
            postproc=_MergeRayBatches(workers),
            collector_kwargs={"auto_register_policy_transforms": False},
            sync=True,
            ray_init_config=ray_init,
            remote_configs={"num_cpus": 1},
            **common,
        )
        collector.update_policy_weights_()  # the first sync sends the weights to the actors
        return collector
    cls = MultiSyncCollector if sync else MultiAsyncCollector
    return cls(
        env_fns,
        policy,
        init_random_frames=init_random or None,
        use_buffers=True,
        num_threads=num_threads(cfg),  # else the collector lowers the trainer's thread count
        auto_register_policy_transforms=False,
        **({"cat_results": 0} if sync else {}),  # [W * B, ...]: worker batches one after the other
        **common,
    )


def num_threads(cfg: Config) -> int:
    """The torch threads of the training process.

    ``cfg.num_threads``; else ``OMP_NUM_THREADS`` where it is set (as torch itself reads
    it); else every core this process may use. More threads than free cores costs far more
    than it saves: every multi-threaded operation then waits for a descheduled thread.
    """
    if cfg.num_threads is not None:
        return cfg.num_threads
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def warm_up_frames(cfg: Config) -> int:
    """Uniformly random warm-up frames, rounded up to whole collector batches (0 for SVG(inf))."""
    if cfg.algorithm == "svginf":
        return 0
    fpb = cfg.collector.frames_per_batch
    return -(-cfg.collector.init_random_frames // fpb) * fpb


def make_replay_buffer(
    cfg: Config, device: torch.device, *, slice_len: int | None = None
) -> ReplayBuffer:
    """The replay buffer on ``device``: uniform transitions, or real sub-trajectories ``[B, slice_len]``.

    No default batch size: agents sample with the batch size of each use
    (``replay_buffer.batch_size`` for the losses, ``model.batch_size`` for the model).
    """
    if slice_len is not None:
        return slice_replay_buffer(cfg.replay_buffer.size, slice_len=slice_len, device=device)
    return TensorDictReplayBuffer(storage=LazyTensorStorage(cfg.replay_buffer.size, device=device))


def make_run_dir(cfg: Config) -> Path:
    """The run directory (created), ``runs/<env>-<algo>-seed<seed>-<time>`` unless configured."""
    if cfg.logger.run_dir is not None:
        path = Path(cfg.logger.run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{cfg.env.name}-{cfg.algorithm}-seed{cfg.env.seed}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path
