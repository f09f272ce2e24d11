"""A run directory belongs to one run: its lock, its configuration, its files on resume."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN
from omegaconf import OmegaConf

from torchrl_svg.train import ConfigError, Trainer, load_checkpoint, load_config, train
from torchrl_svg.train.builders import make_env
from torchrl_svg.train.runlock import RunDirectoryInUse

# end-to-end trainings in run directories: the slow tier
pytestmark = pytest.mark.slow

TINY = TINY_RUN


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # a W&B run made earlier in this process left its service's address here; a child
    # would join that service instead of starting its own, as a separate job does
    env.pop("WANDB_SERVICE", None)
    return env


def _files(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------ lock
def test_a_second_process_is_refused_naming_the_holder_and_a_dead_ones_lock_is_recovered(
    tmp_path, caplog
):
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "collector.total_frames=100000",
        "eval.interval=100",
        f"logger.run_dir={run_dir}",
    ]
    holder = subprocess.Popen(
        [sys.executable, "-m", "torchrl_svg.train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 300
        while not (run_dir / "eval.csv").exists() and time.time() < deadline:
            assert holder.poll() is None
            time.sleep(0.1)
        config_yaml = (run_dir / "config.yaml").read_bytes()
        for extra in ([], ["checkpoint.resume=true"]):  # a second fresh run, or a resume
            with pytest.raises(
                RunDirectoryInUse, match=rf"in use by another run: PID {holder.pid} on host "
            ):
                Trainer(load_config([*args, *extra]))
        assert (run_dir / "config.yaml").read_bytes() == config_yaml
        # the command line says so in one line, before building anything
        proc = subprocess.run(
            [sys.executable, "-m", "torchrl_svg.train", *args],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 2
        assert f"PID {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock
        holder.wait()
    assert (run_dir / ".lock").exists()
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        trainer = Trainer(load_config([*args, "collector.total_frames=10"]))
    assert any(
        f"left by PID {holder.pid}" in r.getMessage() and "no longer running" in r.getMessage()
        for r in caplog.records
    )
    trainer.close()
    assert not (run_dir / ".lock").exists()


# ---------------------------------------------------------------------- resume
def test_resume_uses_the_runs_own_configuration(tmp_path):
    run_dir = tmp_path / "run"
    train(
        load_config(
            [
                *TINY,
                "network.actor_hidden_sizes=[24,8]",
                "loss.gamma=0.9",
                "collector.total_frames=100",
                "eval.interval=100",
                f"logger.run_dir={run_dir}",
            ]
        )
    )
    # only where the run is and how long it should now run: the rest is the run's own
    result = train(
        load_config(
            ["checkpoint.resume=true", f"logger.run_dir={run_dir}", "collector.total_frames=120"]
        )
    )
    assert result.frames == 120
    saved = load_checkpoint(run_dir / "checkpoint.pt")["config"]
    assert saved["network"]["actor_hidden_sizes"] == [24, 8] and saved["loss"]["gamma"] == 0.9
    assert saved["collector"]["total_frames"] == 120
    written = OmegaConf.load(run_dir / "config.yaml")
    assert written.network.actor_hidden_sizes == [24, 8] and written.loss.gamma == 0.9
    assert written.collector.total_frames == 120


@pytest.mark.parametrize(
    "override", ["loss.gamma=0.5", "network.critic_hidden_sizes=[64,64]", "env.seed=3"]
)
def test_a_resume_that_would_change_the_run_is_refused_naming_the_key(tmp_path, override):
    run_dir = tmp_path / "run"
    train(
        load_config(
            [*TINY, "collector.total_frames=60", "eval.interval=60", f"logger.run_dir={run_dir}"]
        )
    )
    before = _files(run_dir)
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=.* cannot change when resuming: the run has"):
        Trainer(load_config(["checkpoint.resume=true", f"logger.run_dir={run_dir}", override]))
    assert _files(run_dir) == before  # config.yaml included: nothing was written


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, caplog):
    run_dir = tmp_path / "run"
    first = train(
        load_config(
            [*TINY, "collector.total_frames=60", "eval.interval=60", f"logger.run_dir={run_dir}"]
        )
    )
    before = _files(run_dir)
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        again = train(
            load_config(
                [
                    *TINY,
                    "collector.total_frames=60",
                    "eval.interval=60",
                    f"logger.run_dir={run_dir}",
                    "checkpoint.resume=true",
                ]
            )
        )
    assert any("is a finished run" in r.getMessage() for r in caplog.records)
    assert (again.frames, again.updates, again.final_return) == (
        first.frames,
        first.updates,
        first.final_return,
    )
    assert _files(run_dir) == before


def test_trajectory_ids_continue_after_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    # Pendulum's episodes last 200 steps: the first run stops inside trajectory 0
    train(
        load_config(
            [*TINY, "collector.total_frames=100", "eval.interval=100", f"logger.run_dir={run_dir}"]
        )
    )
    trainer = Trainer(
        load_config(
            [
                *TINY,
                "collector.total_frames=200",
                "eval.interval=100",
                f"logger.run_dir={run_dir}",
                "checkpoint.resume=true",
            ]
        )
    )
    trainer.run()
    data = trainer.replay.storage.get(torch.arange(len(trainer.replay)))
    ids = data["collector", "traj_ids"]
    assert ids[99] != ids[100]  # the resumed env started a new episode
    # from the seed and the step reached (the README's promise), not the run's first start
    env = make_env(trainer.cfg, seed_offset=100)
    env.set_seed(trainer.cfg.env.seed + 100)
    assert torch.equal(data["observation"][100], env.reset()["observation"])
    env.set_seed(trainer.cfg.env.seed)
    assert not torch.equal(data["observation"][100], env.reset()["observation"])
    env.close()
    same = ids[1:] == ids[:-1]
    # consecutive rows of one trajectory are consecutive steps of one episode
    assert torch.equal(data["next", "observation"][:-1][same], data["observation"][1:][same])
    assert len(ids.unique()) == int(ids.max()) + 1  # and no id labels two of them


def _csv_steps(run_dir: Path, name: str) -> list[int]:
    """The steps of a CSV logger file's ``step,value`` rows."""
    path = run_dir / "run" / "scalars" / f"{name}.csv"
    return [int(row[0]) for row in csv.reader(path.read_text().splitlines())]


def _tensorboard_steps(run_dir: Path, name: str) -> list[int]:
    """The steps TensorBoard's own reader shows for ``name`` (it honours purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir / "run"))
    reader.Reload()
    return [event.step for event in reader.Scalars(name)]


def _wandb_records(path: Path):
    """The records of a ``.wandb`` file: W&B's LevelDB-style log of protobuf records.

    The file starts with a 7-byte header (``:W&B``, magic, version); records are written
    in 32 KiB blocks, each chunk behind a 7-byte header (CRC, length, type: full, first,
    middle or last piece of a record).
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, pieces = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # the block's zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pieces = chunk
        else:
            pieces += chunk
        if kind in (1, 4):
            yield pieces


def _wandb_steps(run_dir: Path, name: str) -> list[int]:
    """The step of every W&B history row holding ``name``, over all the run's offline files."""
    from wandb.proto import wandb_internal_pb2

    steps = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for raw in _wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") != "history":
                continue
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            if name in row:
                (step_key,) = [k for k in row if k.endswith("step") and k != "_step"]
                steps.append(int(row[step_key]))
    return steps


LOGGED_STEPS = {"csv": _csv_steps, "tensorboard": _tensorboard_steps, "wandb": _wandb_steps}


KILLED_MID_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import psutil
    from torchrl_svg.train import Trainer, load_config
    trainer = Trainer(load_config(sys.argv[1:]))
    def kill_after_390_steps(module, args):
        if trainer.frames >= 390:
            # the helper processes (W&B's service) outlive this one for a moment: say which
            children = psutil.Process().children(recursive=True)
            with open("children.txt", "w") as f:
                f.write(" ".join(str(child.pid) for child in children))
            os.kill(os.getpid(), signal.SIGKILL)
    trainer.agent.policy.register_forward_pre_hook(kill_after_390_steps)
    trainer.run()
    """
)


def _wait_for_the_killed_runs_helpers(children_file: Path) -> None:
    """Wait until the killed run's helper processes are gone, as a resumed job would.

    W&B's service runs in its own session and exits a moment after its parent dies; until
    then it holds the run's ID, and a resume that starts at once is refused as "in use".
    """
    psutil = pytest.importorskip("psutil")
    alive = []
    for pid in children_file.read_text().split():
        try:
            alive.append(psutil.Process(int(pid)))
        except psutil.NoSuchProcess:
            pass
    _, still_alive = psutil.wait_procs(alive, timeout=120)
    assert not still_alive, still_alive


@pytest.mark.parametrize("backend", ["csv", "tensorboard", "wandb"])
def test_the_loggers_files_have_no_duplicated_rows_after_a_resume(tmp_path, backend):
    if backend == "tensorboard":
        pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        f"logger.backend={backend}",
        "logger.mode=offline",
        "collector.total_frames=1000",
        "eval.interval=1000",
        "logger.log_interval=1",  # a row after every batch
        # W&B's own process writes its file in 32 KiB blocks and a kill loses the last,
        # partial one: 190 steps of rows after the checkpoint fill more than a block
        "checkpoint.interval=200",
        f"logger.run_dir={run_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_RUN, *args],
        capture_output=True,
        env=_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    _wait_for_the_killed_runs_helpers(tmp_path / "children.txt")
    assert load_checkpoint(run_dir / "checkpoint.pt")["counters"]["frames"] == 200
    steps = LOGGED_STEPS[backend]
    killed_at = steps(run_dir, "train/loss_actor")
    assert max(killed_at) > 200  # rows logged after the checkpoint
    assert killed_at == sorted(set(killed_at))

    train(
        load_config(
            [
                *args[:-1],
                f"logger.run_dir={run_dir}",
                "checkpoint.resume=true",
                "collector.total_frames=500",
            ]
        )
    )
    for name in ("train/loss_actor", "eval/return"):
        logged = steps(run_dir, name)
        assert logged == sorted(set(logged)), (name, logged)
    logged = steps(run_dir, "train/loss_actor")
    assert logged[-1] == 500
    assert set(killed_at) <= set(logged)


# ------------------------------------------------------------ what is written
@pytest.mark.parametrize("name", ["..", "../..", "../elsewhere", "a/b", "/tmp/x", "."])
def test_an_exp_name_that_leaves_the_run_directory_is_refused(name):
    with pytest.raises(ConfigError, match=r"logger.exp_name=.* must be a plain name"):
        load_config([f"logger.exp_name={name}"])


def test_interpolations_in_values_are_refused_not_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHRL_SVG_TEST_SECRET", "hunter2")
    with pytest.raises(ConfigError, match=r"logger.project=.*is an interpolation"):
        load_config(["logger.project=${oc.env:TORCHRL_SVG_TEST_SECRET}"])
    with pytest.raises(ConfigError, match=r"network.actor_hidden_sizes=.*is an interpolation"):
        load_config(["network.actor_hidden_sizes=[64,'${oc.env:TORCHRL_SVG_TEST_SECRET}']"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text("logger:\n  exp_name: ${oc.env:TORCHRL_SVG_TEST_SECRET}\n")
    with pytest.raises(ConfigError, match=r"logger.exp_name=.*is an interpolation"):
        load_config([], config_file=config_file)
