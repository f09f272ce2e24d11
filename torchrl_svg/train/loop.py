"""The training loop: collect, fit the world model, update the actor-critic, evaluate, record."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm import tqdm

from torchrl_svg._utils import NonFiniteLossError
from torchrl_svg.modules import env_specs
from torchrl_svg.train.agents import AGENTS, make_agent
from torchrl_svg.train.builders import (
    REPLAY_KEYS,
    make_collector,
    make_env,
    make_logger,
    make_replay_buffer,
    make_run_dir,
)
from torchrl_svg.train.config import Config, to_dict
from torchrl_svg.train.records import EvalRecord, EvalRecords

__all__ = ["TrainResult", "evaluate", "train"]


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    run_dir: Path
    frames: int
    updates: int
    records: list[EvalRecord] = field(default_factory=list)

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return self.records[-1].mean


@torch.no_grad()
def evaluate(env: EnvBase, policy: torch.nn.Module, episodes: int, max_steps: int) -> list[float]:
    """Returns of ``episodes`` episodes of the deterministic policy (mean action)."""
    returns = []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            rollout = env.rollout(
                max_steps, policy, break_when_any_done=True, auto_cast_to_device=True
            )
            returns.append(float(rollout.get(("next", "reward")).sum()))
    return returns


def _save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _log(logger, values: dict[str, float], step: int) -> None:
    if logger is None:
        return
    for key, value in values.items():
        logger.log_scalar(key, value, step=step)


def _uniform_log_prob(action_spec) -> float:
    """Log-density of the uniform warm-up policy over the action box."""
    low, high = action_spec.space.low, action_spec.space.high
    return float(-torch.log(high - low).sum())


def train(cfg: Config) -> TrainResult:
    """Run the training recipe described by ``cfg`` and return its evaluation records.

    Writes into the run directory: ``config.yaml``, ``eval.csv``,
    ``learning_curve.png``, ``summary.json``, ``checkpoint.pt`` and the
    logger's files (a W&B offline run by default).
    """
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.env.seed)
    device = torch.device(cfg.device)
    run_dir = make_run_dir(cfg)
    OmegaConf.save(OmegaConf.structured(cfg), run_dir / "config.yaml")

    episodic = AGENTS[cfg.algorithm].episodic
    env = make_env(cfg, num_envs=cfg.svg.episodes_per_batch if episodic else None)
    eval_env = make_env(cfg, seed_offset=10_000)
    observation_spec, action_spec = env_specs(eval_env)
    agent = make_agent(cfg, observation_spec, action_spec, device, env=eval_env)
    collector = make_collector(cfg, env, agent.policy, episodic=episodic)
    collector.set_seed(cfg.env.seed)
    replay = make_replay_buffer(cfg, device, slice_len=agent.slice_len)
    logger = make_logger(cfg, run_dir)
    if logger is not None:
        logger.log_hparams(to_dict(cfg))
    records = EvalRecords(
        run_dir, title=f"{cfg.algorithm.upper()} on {cfg.env.name} (seed {cfg.env.seed})"
    )

    fpb = cfg.collector.frames_per_batch
    random_frames = 0 if episodic else -(-cfg.collector.init_random_frames // fpb) * fpb
    uniform_log_prob = _uniform_log_prob(action_spec)
    frames = updates = model_updates = 0
    next_eval = cfg.eval.interval
    next_log = cfg.logger.log_interval
    pretrained = episodic
    start = time.perf_counter()
    last_losses: TensorDictBase | None = None
    pbar = tqdm(total=cfg.collector.total_frames, disable=not cfg.logger.progress, unit="step")

    def run_eval() -> EvalRecord:
        returns = evaluate(eval_env, agent.policy, cfg.eval.episodes, cfg.eval.max_steps)
        record = EvalRecord(frames, updates, time.perf_counter() - start, returns)
        records.add(record)
        _log(logger, {"eval/return": record.mean, "eval/return_std": record.std}, frames)
        return record

    def fault(err: NonFiniteLossError) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"{err} after {updates} updates and {model_updates} model updates "
            f"(environment step {frames}). The update was not applied; the last checkpoint "
            f"is {run_dir / 'checkpoint.pt'}."
        )

    try:
        for data in collector:
            fresh = data.select(*REPLAY_KEYS, strict=False)
            if frames < random_frames:
                # warm-up actions come from a uniform policy: store its log-density as behaviour
                fresh.set("action_log_prob", torch.full(fresh.shape, uniform_log_prob))
            transitions = fresh.reshape(-1)
            agent.observe(transitions)
            replay.extend(transitions.to(device))
            frames += transitions.numel()
            try:
                if frames > random_frames:
                    if not pretrained:
                        model_updates += agent.pretrain(
                            replay, cfg.model.pretrain_updates, cfg.model.batch_size
                        )
                        pretrained = True
                    out, n_updates, n_model = agent.train_on_batch(fresh.to(device), replay)
                    updates += n_updates
                    model_updates += n_model
                    last_losses = out if out is not None else last_losses
            except NonFiniteLossError as err:
                raise fault(err) from err
            if updates >= next_log and last_losses is not None:
                next_log = updates + cfg.logger.log_interval
                _log(logger, {f"train/{k}": float(v) for k, v in last_losses.items()}, frames)
            pbar.update(transitions.numel())
            if frames >= next_eval:
                next_eval += cfg.eval.interval * max(
                    1, -(-transitions.numel() // cfg.eval.interval)
                )
                record = run_eval()
                elapsed = time.perf_counter() - start
                pbar.set_postfix(
                    eval_return=f"{record.mean:.1f}",
                    env_steps_s=f"{frames / elapsed:.0f}",
                    updates_s=f"{updates / elapsed:.0f}",
                )
        if not records.records or records.records[-1].frames != frames:
            run_eval()
    finally:
        pbar.close()
        collector.shutdown()
        elapsed = time.perf_counter() - start
        _save_checkpoint(
            run_dir / "checkpoint.pt",
            {
                "config": to_dict(cfg),
                "agent": agent.state_dict(),
                "frames": frames,
                "updates": updates,
                "model_updates": model_updates,
            },
        )
        summary = {
            "env": cfg.env.name,
            "algorithm": cfg.algorithm,
            "seed": cfg.env.seed,
            "frames": frames,
            "updates": updates,
            "model_updates": model_updates,
            "wall_time_s": elapsed,
            "final_return": records.records[-1].mean if records.records else None,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if (
            logger is not None
            and hasattr(logger, "experiment")
            and hasattr(logger.experiment, "finish")
        ):
            logger.experiment.finish()
        for e in (env, eval_env):
            if not e.is_closed:  # the collector may have closed its env already
                e.close()
    return TrainResult(run_dir, frames, updates, records.records)
