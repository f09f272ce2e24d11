"""A run's state on disk: its checkpoint, the resume from it, and its summary.

:class:`RunState` is the part of :class:`~torchrl_svg.train.loop.Trainer` that
turns the training state into a checkpoint and back (parameters, replay
buffer, RNG streams, counters, evaluation history) and writes ``summary.json``;
the functions below it save and restore the pieces that are not modules.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrl.data import ReplayBuffer

from torchrl_svg._utils import NonFiniteLossError
from torchrl_svg.train.builders import TRAJ_KEY
from torchrl_svg.train.checkpoint import load_latest_checkpoint, save_checkpoint, write_atomically
from torchrl_svg.train.config import Config, resume_config, to_dict
from torchrl_svg.train.records import EvalRecord

__all__ = ["NonFiniteStateError", "RunState", "load_replay_state", "replay_state"]

log = logging.getLogger("torchrl_svg")


class NonFiniteStateError(NonFiniteLossError):
    """The training state holds NaN or infinite values; it was not saved over the last checkpoint."""


def _non_finite_entries(state: Any, prefix: str = "") -> list[str]:
    """The names of the floating-point tensors of a nested state that hold NaN or inf."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return [] if finite else [prefix]
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [
        bad
        for k, v in items
        for bad in _non_finite_entries(v, f"{prefix}.{k}" if prefix else str(k))
    ]


def replay_state(replay: ReplayBuffer) -> dict[str, Any]:
    """The stored transitions (filled rows only, in storage order) and the writer's position."""
    n = len(replay)
    data = replay.storage.get(torch.arange(n)) if n else None
    if data is not None and "index" in data.keys():
        data = data.exclude("index")
    return {"data": None if data is None else data.cpu(), "writer": replay._writer.state_dict()}


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not np.isfinite(value)


def _numpy_rng_state() -> dict[str, Any]:
    """The global numpy RNG state as tensors and numbers (a checkpoint holds no numpy arrays)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _set_numpy_rng_state(state: dict[str, Any] | tuple) -> None:
    if isinstance(state, tuple):  # checkpoints of earlier releases kept numpy's own tuple
        np.random.set_state(state)
        return
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )


def load_replay_state(replay: ReplayBuffer, state: dict[str, Any], device: torch.device) -> None:
    """Refill an empty buffer with :func:`replay_state`'s rows and restore the writer's position."""
    if state["data"] is not None:
        replay.extend(state["data"].to(device))
    replay._writer.load_state_dict(state["writer"])


class RunState:
    """Checkpointing, resuming and the summary of a :class:`~torchrl_svg.train.loop.Trainer`.

    A base of the trainer: its methods read and set the trainer's attributes
    (``cfg``, ``run_dir``, ``checkpoint_path``, ``agent``, ``replay``, ``records``,
    ``screen``, ``logger``, ``device`` and the counters), which the trainer builds.
    """

    def _read_resume_state(self, cfg: Config) -> tuple[dict[str, Any], Config]:
        """The newest complete checkpoint and the run's own configuration with ``cfg``'s safe changes."""
        state, source = load_latest_checkpoint(self.checkpoint_path)
        cfg, changed = resume_config(cfg, state.get("config", {}))
        counters = state.get("counters", {})
        log.info(
            "Resuming %s from %s at environment step %s%s.",
            self.run_dir,
            source.name,
            counters.get("frames", "?"),
            "; changed: "
            + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            if changed
            else "",
        )
        return state, cfg

    def state_dict(self) -> dict[str, Any]:
        """The full training state (see the class docstring)."""
        logger_id = getattr(getattr(self.logger, "experiment", None), "id", None)
        return {
            "config": to_dict(self.cfg),
            "agent": self.agent.state_dict(),
            "replay": replay_state(self.replay),
            "counters": {
                "frames": self.frames,
                "updates": self.updates,
                "model_updates": self.model_updates,
                "dropped_transitions": self.dropped_transitions,
                "skipped_updates": self.agent.guard.skipped,
                "next_eval": self.next_eval,
                "next_log": self.next_log,
                "next_checkpoint": self.next_checkpoint,
                "pretrained": self.pretrained,
                "elapsed": self.elapsed_before + getattr(self, "_elapsed", 0.0),
                "next_traj_id": self.next_traj_id,
            },
            "records": [vars(r) for r in self.records.records],
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": _numpy_rng_state(),
                "random": random.getstate(),
            },
            "logger_run_id": logger_id,
            "screen": self.screen.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (into a freshly built trainer)."""
        self.agent.load_state_dict(state["agent"])
        load_replay_state(self.replay, state["replay"], self.device)
        c = state["counters"]
        self.frames, self.updates, self.model_updates = (
            c["frames"],
            c["updates"],
            c["model_updates"],
        )
        self.dropped_transitions = c["dropped_transitions"]
        self.agent.guard.skipped = c["skipped_updates"]
        self.next_eval, self.next_log = c["next_eval"], c["next_log"]
        self.next_checkpoint, self.pretrained = c["next_checkpoint"], c["pretrained"]
        self.elapsed_before = c["elapsed"]
        self.records.records = [EvalRecord(**r) for r in state["records"]]
        # the collector numbers trajectories from 0 again: continue after the stored ones
        data = state["replay"]["data"]
        ids = None if data is None else data.get(TRAJ_KEY, None)
        stored = 0 if ids is None or not ids.numel() else int(ids.max()) + 1
        self.next_traj_id = self.traj_offset = max(c.get("next_traj_id", 0), stored)
        if "screen" in state:
            self.screen.load_state_dict(state["screen"])
        elif data is not None:  # checkpoints of earlier releases: the statistics of what was kept
            self.screen.fit(data)
        self.checkpoint_frames = self.frames
        self._restore_rng(state)
        self._saved_progress = self._progress()  # what the checkpoint read already holds

    @staticmethod
    def _restore_rng(state: dict[str, Any]) -> None:
        torch.set_rng_state(state["rng"]["torch"])
        _set_numpy_rng_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["random"])

    def _progress(self) -> tuple[int, int, int, int]:
        return (self.frames, self.updates, self.model_updates, len(self.records.records))

    def save(self) -> Path:
        """Write the checkpoint atomically (the previous one is kept as ``checkpoint.prev.pt``).

        Raises:
            NonFiniteStateError: if a parameter, optimiser state or statistic holds
                NaN or inf: the last checkpoint, a finite state, is then kept.
        """
        state = self.state_dict()
        bad = _non_finite_entries(state["agent"])
        if bad:
            raise NonFiniteStateError(
                f"The training state at environment step {self.frames} holds non-finite values "
                f"in {', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''}; it was not saved "
                f"over the last checkpoint, {self._last_checkpoint()}."
            )
        path = save_checkpoint(self.checkpoint_path, state)
        self.checkpoint_frames = self.frames
        self._saved_progress = self._progress()
        if self.cfg.checkpoint.keep:
            _keep_copy(path, path.parent / "checkpoints" / f"checkpoint_{self.frames}.pt")
        return path

    def _last_checkpoint(self) -> str:
        if self.checkpoint_frames is None:
            return "none (no finite state was saved yet)"
        return f"{self.checkpoint_path} (environment step {self.checkpoint_frames})"

    def _write_summary(self) -> None:
        cfg = self.cfg
        summary = {
            "env": cfg.env.name,
            "algorithm": cfg.algorithm,
            "seed": cfg.env.seed,
            "frames": self.frames,
            "updates": self.updates,
            "model_updates": self.model_updates,
            "dropped_transitions": self.dropped_transitions,
            "skipped_updates": self.agent.guard.skipped,
            "wall_time_s": self.elapsed_before + getattr(self, "_elapsed", 0.0),
            "final_return": self.records.records[-1].mean if self.records.records else None,
        }
        summary = {k: None if _nonfinite(v) else v for k, v in summary.items()}
        last = self.records.records[-1] if self.records.records else None
        summary["final_nonfinite_episodes"] = last.nonfinite_episodes if last else 0
        write_atomically(
            self.run_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False)
        )


def _keep_copy(path: Path, kept: Path) -> None:
    """``path`` also at ``kept``: a hard link (the next save renames ``path``, not rewrites it)."""
    kept.parent.mkdir(exist_ok=True)
    kept.unlink(missing_ok=True)  # a resumed run saves the same step again
    try:
        os.link(path, kept)
    except OSError:
        shutil.copy2(path, kept)
