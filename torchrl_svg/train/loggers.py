"""The recipe's TorchRL loggers, made safe to resume.

A run killed after its last checkpoint has already logged the steps between that
checkpoint and the kill; the resumed run computes and logs them again. Each backend
keeps one row per step in its own way:

- CSV: the rows after the checkpoint are cut from the files (:func:`trim_csv_rows`).
- TensorBoard: the writer opens with ``purge_step`` = checkpoint step + 1, TensorBoard's
  own mechanism, so readers hide the earlier events from that step on
  (:class:`ResumableTensorboardLogger`).
- W&B: its history is append-only, so the logger remembers the last step it logged in
  the run directory and does not log a step again (:class:`ResumableWandbLogger`). A
  resumed run is deterministic on CPU, so the rows it skips equal the ones already there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchrl.record.loggers import CSVLogger, Logger, TensorboardLogger, WandbLogger

from torchrl_svg.train.checkpoint import write_atomically
from torchrl_svg.train.config import Config, ConfigError, wandb_mode

__all__ = [
    "LOGGED_STEP_FILE",
    "ResumableTensorboardLogger",
    "ResumableWandbLogger",
    "make_logger",
    "trim_csv_rows",
]

LOGGED_STEP_FILE = "logged_step.txt"


class ResumableTensorboardLogger(TensorboardLogger):
    """TorchRL's :class:`~torchrl.record.loggers.TensorboardLogger` that can continue a run.

    Args:
        exp_name: the experiment's name (a folder of ``log_dir``).
        log_dir: where the event files go.
        purge_step: the first step the resumed run logs again (checkpoint step + 1), or
            ``None`` for a fresh run. TensorBoard readers hide every earlier event at or
            after it, so each step shows once.

    Examples:
        >>> import tempfile
        >>> logger = ResumableTensorboardLogger(exp_name="run", log_dir=tempfile.mkdtemp())
        >>> logger.log_scalar("train/loss", 1.0, step=10)
        >>> logger.experiment.close()
    """

    def __init__(self, exp_name: str, log_dir: str, purge_step: int | None = None) -> None:
        self.purge_step = purge_step
        super().__init__(exp_name=exp_name, log_dir=log_dir)

    def _create_experiment(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(
            log_dir=os.path.join(self.log_dir, self.exp_name), purge_step=self.purge_step
        )

    def log_hparams(self, cfg: dict[str, Any]) -> None:
        """Log a (nested) configuration as TensorBoard hyperparameters.

        TensorBoard takes only flat numbers, strings and booleans: groups become
        ``group.key`` names, and lists and ``None`` are written as text.
        """
        super().log_hparams(dict(_flat_hparams(cfg)))


class ResumableWandbLogger(WandbLogger):
    """TorchRL's :class:`~torchrl.record.loggers.WandbLogger` that logs each step once.

    W&B's history only grows, so a resumed run cannot take back the rows logged after
    its checkpoint. This logger writes the last step it logged to ``step_file`` and, on
    resume, skips the steps up to it.

    Args:
        step_file: where the last logged step is kept (in the run directory).
        **kwargs: passed to :class:`~torchrl.record.loggers.WandbLogger`.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> logger = ResumableWandbLogger(
        ...     step_file=run_dir / "logged_step.txt", exp_name="run", save_dir=str(run_dir),
        ...     offline=False, mode="offline", project="demo")
        >>> logger.log_scalar("train/loss", 1.0, step=10)
        >>> logger.log_scalar("train/loss", 2.0, step=10)  # already logged: skipped
        >>> logger.logged_step
        10
        >>> logger.experiment.finish()
    """

    def __init__(self, step_file: str | Path, **kwargs: Any) -> None:
        self.step_file = Path(step_file)
        self.logged_step = _read_step(self.step_file)
        self._step_open = False  # several scalars of one step may follow each other
        super().__init__(**kwargs)

    def is_new(self, step: int | None) -> bool:
        """Whether a row for ``step`` may be logged (it was not, before a resume)."""
        if step is None or self.logged_step is None or step > self.logged_step:
            return True
        return step == self.logged_step and self._step_open

    def log_scalar(self, name: str, value: float, step: int | None = None, **kwargs: Any) -> None:
        """Log ``value`` at ``step`` unless this run's history already holds that step."""
        if not self.is_new(step):
            return
        super().log_scalar(name, value, step=step, **kwargs)
        if step is not None and step != self.logged_step:
            self.logged_step = step
            write_atomically(self.step_file, str(step))
        self._step_open = step is not None


def _flat_hparams(cfg: dict[str, Any], prefix: str = ""):
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat_hparams(value, f"{name}.")
        elif isinstance(value, bool | int | float | str):
            yield name, value
        else:
            yield name, str(value)


def _read_step(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def trim_csv_rows(scalars_dir: Path, last_step: int) -> None:
    """Drop the ``step,value`` rows after ``last_step`` from a CSV logger's files."""
    if not scalars_dir.is_dir():
        return
    for path in sorted(scalars_dir.rglob("*.csv")):
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= last_step]
        if len(kept) != len(lines):
            write_atomically(path, "".join(kept))


def _logged_step(line: str) -> float:
    """The step of a ``step,value`` row of a CSV logger file (rows that are not count as step 0)."""
    try:
        return float(line.split(",", 1)[0])
    except ValueError:
        return 0.0


def make_logger(
    cfg: Config,
    run_dir: Path,
    run_id: str | None = None,
    resume_step: int | None = None,
) -> Logger | None:
    """A TorchRL logger writing into ``run_dir``; ``run_id`` resumes a W&B run.

    ``resume_step`` is the step of the checkpoint a resumed run continues from: the
    logger then shows each step once (see the module docstring). W&B runs in
    ``logger.mode``; when that is not given, in the mode of W&B's own ``WANDB_MODE``
    environment variable, and offline when neither is set.
    """
    exp_name = cfg.logger.exp_name or run_dir.name
    if Path(run_dir, exp_name).resolve().parent != Path(run_dir).resolve():
        raise ConfigError(
            f"logger.exp_name={exp_name!r} must be a plain name: the logger writes into "
            f"{run_dir}/<logger.exp_name>, and this one leads out of it."
        )
    backend = cfg.logger.backend
    if backend == "none":
        return None
    if backend == "csv":
        if resume_step is not None:
            trim_csv_rows(Path(run_dir, exp_name, "scalars"), resume_step)
        return CSVLogger(exp_name=exp_name, log_dir=str(run_dir))
    if backend == "tensorboard":
        return ResumableTensorboardLogger(
            exp_name=exp_name,
            log_dir=str(run_dir),
            purge_step=None if resume_step is None else resume_step + 1,
        )
    step_file = Path(run_dir, LOGGED_STEP_FILE)
    if resume_step is None:
        step_file.unlink(missing_ok=True)  # a fresh run in a reused directory logs everything
    # The mode goes to wandb.init itself: TorchRL's offline=True would also overwrite the
    # process's WANDB_MODE, which later runs in the same process then read.
    return ResumableWandbLogger(
        step_file=step_file,
        exp_name=exp_name,
        offline=False,
        save_dir=str(run_dir),
        project=cfg.logger.project,
        id=run_id,
        mode=wandb_mode(cfg.logger.mode),
    )
