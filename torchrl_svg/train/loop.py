"""The training loop: collect, fit the world model, update the agent, evaluate, record, checkpoint.

What a checkpoint holds and how a run resumes from it is :mod:`torchrl_svg.train.run_state`.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict, TensorDictBase
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from torchrl_svg._utils import NonFiniteLossError
from torchrl_svg.data import uniform_log_prob
from torchrl_svg.modules import env_specs
from torchrl_svg.train.agents import AGENTS, NonFiniteGuard, make_agent
from torchrl_svg.train.builders import (
    REPLAY_KEYS,
    TRAJ_KEY,
    WorkerFailures,
    collector_policy,
    make_collector,
    make_env,
    make_replay_buffer,
    make_run_dir,
    num_threads,
    warm_up_frames,
)
from torchrl_svg.train.checkpoint import CheckpointError, StorageError, write_atomically
from torchrl_svg.train.config import Config, to_dict
from torchrl_svg.train.errors import EnvironmentFailure
from torchrl_svg.train.interrupts import StopSignals, TrainingInterrupted, signal_name
from torchrl_svg.train.loggers import ResumableWandbLogger, make_logger
from torchrl_svg.train.records import EvalRecord, EvalRecords, TrainResult, evaluate
from torchrl_svg.train.run_state import (
    NonFiniteStateError,
    RunState,
    load_replay_state,
    replay_state,
)
from torchrl_svg.train.runlock import RunLock
from torchrl_svg.train.screening import TransitionScreen, finite_rows

__all__ = [
    "EnvironmentFailure",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "evaluate",
    "load_replay_state",
    "replay_state",
    "train",
]

log = logging.getLogger("torchrl_svg")


class Trainer(RunState):
    """The training recipe of :func:`train` as an object that can checkpoint and resume.

    Building a ``Trainer`` makes the environments, the agent of
    ``cfg.algorithm``, the collector, the replay buffer and the logger; with
    ``cfg.checkpoint.resume`` it then restores everything from the run
    directory's ``checkpoint.pt``: parameters, targets, optimiser states,
    alpha, normalisation statistics, the replay buffer's contents and writer
    position, the RNG states, the counters and the evaluation history.

    Checkpoints are written every ``checkpoint.interval`` environment steps,
    at the end, on Ctrl-C and when the environment raises, in this process or
    in a collector worker (the run then stops with :class:`EnvironmentFailure`
    naming the worker and its step, resumable with every transition already
    delivered by the collector in the checkpoint).
    With ``collector.backend`` other than ``single`` the collector's workers
    get the new policy weights after each round of updates, and the collector
    is shut down however the run ends.
    Transitions with a non-finite observation or reward are dropped before
    they enter the buffer and reported with the step; non-finite losses or
    gradients skip their update and, after ``guard.max_nonfinite_updates`` in
    a row, stop the run with the last checkpoint (written before the fault).

    Args:
        cfg: the configuration (see :mod:`torchrl_svg.train.config`).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run_dir = make_run_dir(cfg)
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.lock = RunLock(self.run_dir)
        self.lock.acquire()  # before anything in the run directory is read or written
        self.env = self.eval_env = self.collector = self.logger = None
        try:
            self._build(cfg)
        except BaseException:
            self.close()  # no worker process and no lock outlive a failed start
            raise

    def _build(self, cfg: Config) -> None:
        state = None
        if cfg.checkpoint.resume:
            state, cfg = self._read_resume_state(cfg)
            self.cfg = cfg
        torch.set_num_threads(num_threads(cfg))
        torch.manual_seed(cfg.env.seed)
        np.random.seed(cfg.env.seed)
        random.seed(cfg.env.seed)
        self.device = torch.device(cfg.device)

        self.episodic = AGENTS[cfg.algorithm].episodic
        self.frames = self.updates = self.model_updates = 0
        self.dropped_transitions = 0
        self.next_eval = cfg.eval.interval
        self.next_log = cfg.logger.log_interval
        self.next_checkpoint = cfg.checkpoint.interval
        self.pretrained = self.episodic
        self.elapsed_before = 0.0
        self.finished = False
        self.traj_offset = self.next_traj_id = 0
        self.checkpoint_frames: int | None = None
        self.screen = TransitionScreen(
            cfg.guard.max_abs_value, cfg.guard.max_deviation, cfg.guard.outlier_warmup
        )
        self.records = EvalRecords(
            self.run_dir, title=f"{cfg.algorithm.upper()} on {cfg.env.name} (seed {cfg.env.seed})"
        )
        self.eval_env = make_env(cfg, seed_offset=10_000)
        self.observation_spec, self.action_spec = env_specs(self.eval_env)
        self.agent = make_agent(
            cfg, self.observation_spec, self.action_spec, self.device, env=self.eval_env
        )
        self.agent.guard = NonFiniteGuard(cfg.guard.max_nonfinite_updates)
        self.replay = make_replay_buffer(cfg, self.device, slice_len=self.agent.slice_len)
        self.warm_up = warm_up_frames(cfg)
        self.uniform_log_prob = float(uniform_log_prob(self.action_spec))
        run_id = None
        if state is not None:
            self.load_state_dict(state)
            run_id = state.get("logger_run_id")
            # a finished run (at its total, evaluated there) is left as it is, unless
            # collector.total_frames now asks for more
            last = self.records.records[-1].frames if self.records.records else None
            self.finished = last == self.frames >= cfg.collector.total_frames
            if self.finished:
                return
            self.records.write()
        # a resumed run re-seeds its env from the step reached (the episode in flight restarts)
        single = cfg.collector.backend == "single"
        self.env = (
            make_env(
                cfg,
                seed_offset=self.frames,
                num_envs=cfg.svg.episodes_per_batch if self.episodic else None,
            )
            if single
            else None  # each collector worker builds its own
        )
        self.failures = WorkerFailures(self.run_dir / "worker_failures")
        self.collector_policy = collector_policy(self.agent.policy)
        self.collector = make_collector(
            cfg,
            self.env,
            self.collector_policy,
            episodic=self.episodic,
            frames_done=self.frames,
            failures=None if single else self.failures,
        )
        if self.episodic and state is None:
            self._say_frames_rounding()
        self.collector.set_seed(cfg.env.seed + self.frames)
        self.logger = make_logger(
            cfg, self.run_dir, run_id=run_id, resume_step=None if state is None else self.frames
        )
        if self.logger is not None and state is None:
            self.logger.log_hparams(to_dict(cfg))
        if state is not None:
            # building the env and collector drew random numbers: continue from the saved stream
            self._restore_rng(state)
        # written once every check has passed (a refused resume leaves the run's own untouched)
        write_atomically(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))

    def close(self) -> None:
        """Shut the collector down, close the environments and release the run directory.

        :meth:`run` does this however it ends; call it for a trainer that is not run.
        """
        if self.collector is not None:
            self._shutdown_collector()
        for env in (self.env, self.eval_env):
            if env is not None and not env.is_closed:  # the collector may have closed it
                env.close()
        self.lock.release()

    def _say_frames_rounding(self) -> None:
        """Episodic agents collect whole batches of episodes: say when the total rounds up."""
        total = getattr(self.collector, "total_frames", None)
        batch = getattr(self.collector, "requested_frames_per_batch", None)
        requested = self.cfg.collector.total_frames
        if total is not None and batch and total > requested:
            log.warning(
                "%s collects whole batches of %d episodes (%d environment steps per batch): "
                "collector.total_frames=%d rounds up to %d environment steps.",
                self.cfg.algorithm,
                self.cfg.svg.episodes_per_batch,
                batch,
                requested,
                total,
            )

    # --------------------------------------------------------------- pieces
    def _log(self, values: dict[str, float]) -> None:
        if self.logger is not None:
            for key, value in values.items():
                self.logger.log_scalar(key, value, step=self.frames)

    def _record_evaluation(self, returns: list[float]) -> EvalRecord:
        """Write an evaluation's returns to ``eval.csv``, the curve, the log (and a video)."""
        cfg = self.cfg
        record = EvalRecord(self.frames, self.updates, self.elapsed_before + self._elapsed, returns)
        self.records.add(record)
        tqdm.write(  # one line per evaluation, with or without the progress bar
            f"eval: {self.frames} environment steps, return {record.mean:.1f} ± {record.std:.1f} "
            f"over {len(returns)} episodes ({self.updates} updates, {record.wall_time_s:.0f} s)"
        )
        self._log({"eval/return": record.mean, "eval/return_std": record.std})
        if cfg.eval.video:
            self._record_video()
        return record

    def _record_video(self) -> None:
        """One rendered deterministic episode as a GIF (and to W&B), where a renderer exists."""
        from torchrl_svg.train.video import record_video

        path = record_video(
            self.cfg.env.name,
            self.agent.policy,
            self.run_dir / "videos" / f"eval_{self.frames}.gif",
            max_steps=self.cfg.eval.max_steps,
            seed=self.cfg.env.seed,
        )
        if (
            path is not None
            and isinstance(self.logger, ResumableWandbLogger)
            and self.logger.is_new(self.frames)
        ):
            import wandb

            self.logger.experiment.log({"eval/video": wandb.Video(str(path), format="gif")})

    def _clean(self, data: TensorDictBase) -> TensorDictBase:
        """Drop (and report) transitions with non-finite or outlying observations or rewards.

        Outliers are judged by :class:`~torchrl_svg.train.screening.TransitionScreen`
        (``guard.max_abs_value``, ``guard.max_deviation``); the rest of an episode
        that had one is dropped with it.
        """
        finite = finite_rows(data)
        keep = finite.clone()
        keep[finite] = self.screen(data[finite]).to(keep.device)
        if bool(keep.all()):
            return data
        nonfinite = int((~finite).sum())
        outliers = int((~keep).sum()) - nonfinite
        self.dropped_transitions += nonfinite + outliers
        what = []
        if nonfinite:
            what.append(f"{nonfinite} transition(s) with a non-finite observation or reward")
        if outliers:
            guard = self.cfg.guard
            what.append(
                f"{outliers} transition(s) with an outlying observation or reward, or later in an "
                f"episode that had one (beyond guard.max_abs_value={guard.max_abs_value} or "
                f"guard.max_deviation={guard.max_deviation} running standard deviations)"
            )
        log.warning(
            "Dropped %s collected up to environment step %d (%d dropped in all); they were not "
            "stored.",
            " and ".join(what),
            self.frames + data.numel(),
            self.dropped_transitions,
        )
        self._log({"data/dropped_transitions": float(self.dropped_transitions)})
        return data[keep]

    def _train(self, fresh: TensorDictBase) -> TensorDictBase | None:
        cfg = self.cfg
        if not self.pretrained:
            self.model_updates += self.agent.pretrain(
                self.replay, cfg.model.pretrain_updates, cfg.model.batch_size
            )
            self.pretrained = True
        out, n_updates, n_model = self.agent.train_on_batch(fresh.to(self.device), self.replay)
        self.updates += n_updates
        self.model_updates += n_model
        return out

    def _push_weights(self) -> None:
        """Give the collector the policy weights just trained (where it runs a copy of the policy)."""
        if self.collector_policy is not self.agent.policy:  # a CPU copy of a GPU policy
            TensorDict.from_module(self.collector_policy).data.update_(
                TensorDict.from_module(self.agent.policy).data
            )
        if self.cfg.collector.backend != "single":  # the workers' copies
            self.collector.update_policy_weights_()

    def _shutdown_collector(self) -> None:
        threads = torch.get_num_threads()  # multi-process collectors reset it on shutdown
        try:
            self.collector.shutdown()
        except Exception as err:  # never hide the error that ended the run
            log.warning("Shutting the collector down raised %s: %s", type(err).__name__, err)
        finally:
            torch.set_num_threads(threads)

    def _environment_failure(
        self, err: Exception, checkpoint: Path, *, evaluating: bool = False
    ) -> EnvironmentFailure:
        """What the environment raised, where (collector worker and its step) and how to resume."""
        if evaluating:
            return EnvironmentFailure(
                f"The evaluation environment {self.cfg.env.name!r} raised while evaluating after "
                f"environment step {self.frames}: {type(err).__name__}: {err}. The run stopped "
                f"with its state in the checkpoint {checkpoint}; resume with "
                f"checkpoint.resume=true logger.run_dir={self.run_dir}."
            )
        reports = self.failures.read()
        if reports:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            what = (
                "; ".join(
                    f"in collector worker {r['worker']} at its {r['where']}: {r['error']}"
                    for r in reports
                )
                + f" (the collector then raised {type(err).__name__}: {first_line})"
            )
        else:
            what = f"{type(err).__name__}: {err}"
        return EnvironmentFailure(
            f"The environment {self.cfg.env.name!r} raised while collecting after environment "
            f"step {self.frames}: {what}. All {len(self.replay)} transitions collected so far "
            f"are in the checkpoint {checkpoint}; resume with checkpoint.resume=true "
            f"logger.run_dir={self.run_dir}."
        )

    def _fault(self, err: NonFiniteLossError) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"{err} after {self.updates} updates and {self.model_updates} model updates "
            f"(environment step {self.frames}). No non-finite update was applied; the last "
            f"checkpoint, {self._last_checkpoint()}, holds a state checked finite when saved."
        )

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        """Train to ``collector.total_frames`` environment steps and return the evaluation records.

        Raises:
            TrainingInterrupted: after Ctrl-C, SIGTERM or SIGHUP: the updates in
                progress are finished and counted, the checkpoint is written, and
                the message says where and how to resume.
            EnvironmentFailure: when an environment raised (after writing the checkpoint).
            NonFiniteLossError: when the non-finite guard stops the run.
        """
        cfg = self.cfg
        if self.finished:
            log.warning(
                "%s is a finished run (%d of collector.total_frames=%d environment steps): nothing "
                "to do. To train it further, resume with a larger collector.total_frames.",
                self.run_dir,
                self.frames,
                cfg.collector.total_frames,
            )
            self.close()
            return TrainResult(self.run_dir, self.frames, self.updates, self.records.records)
        start = time.perf_counter()
        self._elapsed = 0.0
        last: TensorDictBase | None = None
        pbar = tqdm(
            total=cfg.collector.total_frames,
            initial=self.frames,
            disable=not cfg.logger.progress,
            unit="step",
        )
        iterator = iter(self.collector)
        completed = False
        # TorchRL's and our log lines (e.g. the replay storage's first allocation) are written
        # above the progress bar instead of breaking its line
        redirect = logging_redirect_tqdm([logging.getLogger("torchrl"), log])
        redirect.__enter__()
        stop = StopSignals().install()  # signals stop the run at a whole state (see interrupts)
        try:
            while self.frames < cfg.collector.total_frames:
                data = self._next_batch(iterator, stop, start)
                if data is None:
                    break
                last = self._step(data, last)
                self._elapsed = time.perf_counter() - start
                if stop.requested:  # the batch's updates are applied and counted: save and stop
                    raise KeyboardInterrupt
                self._log_evaluate_checkpoint(last, data.numel(), pbar, stop, start)
            self._finish_training(stop, start)
            completed = True
        except KeyboardInterrupt:
            self._elapsed = time.perf_counter() - start
            raise self._interrupted(stop.received) from None
        finally:
            pbar.close()
            redirect.__exit__(None, None, None)
            failure = self._close_run(completed, stop)
        if failure is not None:
            raise failure
        return TrainResult(self.run_dir, self.frames, self.updates, self.records.records)

    def _next_batch(
        self, iterator: Iterator[TensorDictBase], stop: StopSignals, start: float
    ) -> TensorDictBase | None:
        """The collector's next batch (``None``: it is done); a failing environment is saved."""
        try:
            with stop.interruptible():  # waiting for data: a signal abandons the batch
                return next(iterator)
        except StopIteration:
            return None
        except Exception as err:
            self._elapsed = time.perf_counter() - start
            raise self._environment_failure(err, self.save()) from err

    def _step(self, data: TensorDictBase, last: TensorDictBase | None) -> TensorDictBase | None:
        """Store one collected batch and train on it; the last updates' outputs."""
        fresh = data.select(*REPLAY_KEYS, strict=False)
        self._continue_trajectories(fresh)
        if self.frames < self.warm_up:
            # warm-up actions come from a uniform policy: store its log-density as behaviour
            fresh.set("action_log_prob", torch.full(fresh.shape, self.uniform_log_prob))
        collected = data.numel()
        transitions = self._clean(fresh.reshape(-1))
        if fresh.ndim > 1 and transitions.numel() != collected:
            fresh = None  # whole episodes with a bad step: no on-policy update on them
        elif fresh.ndim == 1:
            fresh = transitions
        self.agent.observe(transitions)
        self.replay.extend(transitions.to(self.device))
        self.frames += collected
        if self.frames > self.warm_up and fresh is not None and transitions.numel():
            try:
                out = self._train(fresh)
                last = out if out is not None else last
            except NonFiniteLossError as err:
                if not self.checkpoint_path.exists():
                    # no earlier checkpoint: the current state has no non-finite update in it
                    self.save()
                raise self._fault(err) from err
            self._push_weights()
        return last

    def _log_evaluate_checkpoint(
        self,
        last: TensorDictBase | None,
        collected: int,
        pbar: tqdm,
        stop: StopSignals,
        start: float,
    ) -> None:
        """What falls due after a batch: the training log, an evaluation, a checkpoint."""
        cfg = self.cfg
        if self.updates >= self.next_log and last is not None:
            self.next_log = self.updates + cfg.logger.log_interval
            values = {
                f"train/{k}": float(v)
                for k, v in last.items()
                if not (k == "loss_alpha" and cfg.loss.fixed_alpha)  # nothing is learned
            }
            values["train/skipped_updates"] = float(self.agent.guard.skipped)
            self._log(values)
        pbar.update(collected)
        if self.frames >= self.next_eval:
            while self.next_eval <= self.frames:
                self.next_eval += cfg.eval.interval
            record = self._evaluate_or_stop(stop, start)
            total = self.elapsed_before + self._elapsed
            pbar.set_postfix(
                eval_return=f"{record.mean:.1f}",
                env_steps_s=f"{self.frames / total:.0f}",
                updates_s=f"{self.updates / total:.0f}",
            )
        if self.frames >= self.next_checkpoint:
            while self.next_checkpoint <= self.frames:
                self.next_checkpoint += cfg.checkpoint.interval
            self.save()

    def _finish_training(self, stop: StopSignals, start: float) -> None:
        """The final evaluation (unless the last batch had one) and the guard's last word."""
        if not self.records.records or self.records.records[-1].frames != self.frames:
            self._evaluate_or_stop(stop, start)
        try:  # a kind of update that never applied once is a failed run, not a done one
            self.agent.guard.check_progress()
        except NonFiniteLossError as err:
            raise self._fault(err) from err

    def _close_run(self, completed: bool, stop: StopSignals) -> Exception | None:
        """Stop the collector, save the end, write the summary, close; the error to raise.

        Runs however the run ended. An error here is returned, to be raised once everything
        is closed (when no other error is already on its way out).
        """
        self._shutdown_collector()
        failure: Exception | None = None
        # the end of a run is checkpointed unless the last periodic checkpoint already holds
        # it (a second copy would also replace checkpoint.prev.pt with the same state)
        if completed and getattr(self, "_saved_progress", None) != self._progress():
            try:
                self.save()
            except (CheckpointError, NonFiniteStateError) as err:
                failure = err
        try:
            self._write_summary()
        except StorageError as err:
            failure = failure or err
        if failure is not None and sys.exc_info()[0] is not None:
            log.error("%s", failure)  # another error is on its way out: say this one too
        if self.logger is not None and hasattr(getattr(self.logger, "experiment", None), "finish"):
            self.logger.experiment.finish()
        self.close()
        stop.restore()
        return failure

    def _evaluate_or_stop(self, stop: StopSignals, start: float) -> EvalRecord:
        """Evaluate; a stop signal abandons the episodes, an environment that raises stops the run.

        Only the episodes are interruptible. A signal that arrives while their returns are
        written (``eval.csv``, the curve, the logger; the first plot imports matplotlib) is
        noted and acted on once they are: interrupting an import or a write there would turn
        the stop into an error and could leave a file half-written.

        Raises:
            EnvironmentFailure: as for a failure while collecting, after writing the checkpoint.
            KeyboardInterrupt: after recording, if a stop signal arrived meanwhile.
        """
        cfg = self.cfg
        try:
            with stop.interruptible():
                returns = evaluate(
                    self.eval_env, self.agent.policy, cfg.eval.episodes, cfg.eval.max_steps
                )
            record = self._record_evaluation(returns)
        except (CheckpointError, NonFiniteLossError):  # the run's own files or state: not the env
            raise
        except Exception as err:
            self._elapsed = time.perf_counter() - start
            raise self._environment_failure(err, self.save(), evaluating=True) from err
        if stop.requested:
            raise KeyboardInterrupt
        return record

    def _continue_trajectories(self, data: TensorDictBase) -> None:
        """Number the batch's trajectories after those of the run so far (a resumed collector restarts at 0)."""
        ids = data.get(TRAJ_KEY, None)
        if ids is None or not ids.numel():
            return
        if self.traj_offset:
            ids = ids + self.traj_offset
            data.set(TRAJ_KEY, ids)
        self.next_traj_id = max(self.next_traj_id, int(ids.max()) + 1)

    def _interrupted(self, signum: int | None) -> TrainingInterrupted:
        """Save the checkpoint after a stop signal and say so in one line."""
        signum = signal.SIGINT if signum is None else signum
        try:
            saved = f"checkpoint written to {self.save()}"
        except (CheckpointError, NonFiniteStateError) as err:
            saved = f"no checkpoint written: {err}"
        message = (
            f"Stopped by {signal_name(signum)} at environment step {self.frames} after "
            f"{self.updates} updates and {self.model_updates} model updates; {saved}. Resume with "
            f"checkpoint.resume=true logger.run_dir={self.run_dir}."
        )
        log.warning(message)
        return TrainingInterrupted(message, signum)


def train(cfg: Config) -> TrainResult:
    """Run the training recipe described by ``cfg`` and return its evaluation records.

    Writes into the run directory: ``config.yaml``, ``eval.csv``,
    ``learning_curve.png``, ``summary.json``, ``checkpoint.pt`` and the
    logger's files (a W&B offline run by default). With
    ``checkpoint.resume=true`` it continues the run in ``logger.run_dir``.
    """
    return Trainer(cfg).run()
