"""Checkpoint files: no code runs on load, saving costs a plain save, kills between renames."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN
from tensordict import TensorDict
from tensordict._reductions import _make_td

from torchrl_svg.train import CheckpointError, Trainer, load_checkpoint, load_config, train
from torchrl_svg.train.checkpoint import (
    CHECKPOINT_FORMAT,
    HEADER_SIZE,
    load_latest_checkpoint,
    previous_checkpoint,
    save_checkpoint,
    temporary_checkpoint,
)

TINY = [
    *TINY_RUN,
    "collector.total_frames=100",
    "eval.interval=100",
]


class _Payload:
    """Unpickling this creates ``marker``: what a crafted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _version1_file(path: Path, state) -> None:
    """A checkpoint in the layout of earlier releases: ``torch.save({"header", "payload"})``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    torch.save({"header": header, "payload": payload}, path)


def _version2_file(path: Path, state) -> None:
    """A file in the current layout with a valid header and checksum around any pickle."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": 2,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "written_ns": time.time_ns(),
    }
    text = (CHECKPOINT_FORMAT + "\n" + json.dumps(header) + "\n").encode()
    path.write_bytes(text.ljust(HEADER_SIZE, b" ") + payload)


# --------------------------------------------------------------- crafted files
@pytest.mark.parametrize("layout", [_version1_file, _version2_file], ids=["version1", "version2"])
@pytest.mark.slow
def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, layout):
    marker = tmp_path / "code-ran"
    path = tmp_path / "checkpoint.pt"
    layout(path, {"counters": {"frames": 1}, "agent": _Payload(marker)})
    with pytest.raises(CheckpointError, match=r"refused.*GLOBAL .*open.*nothing in it was run"):
        load_checkpoint(path)
    assert not marker.exists()
    cfg = load_config([*TINY, f"logger.run_dir={tmp_path}", "checkpoint.resume=true"])
    with pytest.raises(CheckpointError, match="refused"):
        Trainer(cfg)
    assert not marker.exists()
    assert not (tmp_path / "config.yaml").exists()


def test_a_checkpoint_of_an_earlier_release_still_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    data = TensorDict({"observation": torch.randn(5, 3), "next": {"reward": torch.ones(5, 1)}}, [5])
    _version1_file(path, {"replay": {"data": data}, "rng": {"numpy": np.random.get_state()}})
    state = load_checkpoint(path)
    assert torch.equal(state["replay"]["data"]["observation"], data["observation"])
    assert np.array_equal(state["rng"]["numpy"][1], np.random.get_state()[1])


def test_save_refuses_what_it_could_not_load_back(tmp_path):
    with pytest.raises(TypeError, match=r"state\['rng'\]\['numpy'\]\[1\] is a ndarray"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"rng": {"numpy": np.random.get_state()}})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------- speed
def _best_of(n, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_saving_and_loading_cost_about_what_a_plain_torch_save_costs(tmp_path):
    state = {
        "replay": TensorDict({"observation": torch.randn(400_000, 32)}, [400_000]),  # 51 MB
        "agent": {f"w{i}": torch.randn(256, 256) for i in range(16)},
    }
    plain_path, path = tmp_path / "plain.pt", tmp_path / "checkpoint.pt"

    def plain_durable_save():  # what any save that survives a crash costs
        with plain_path.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    plain_save = _best_of(3, plain_durable_save)
    save = _best_of(3, lambda: save_checkpoint(path, state))
    with torch.serialization.safe_globals([_make_td, TensorDict]):
        plain_load = _best_of(3, lambda: torch.load(plain_path, weights_only=True))
    load = _best_of(3, lambda: load_checkpoint(path))
    # a checksum pass on top of a plain save and load (earlier releases took 10-20x); the
    # margin is for a machine shared with other jobs
    assert save < 5 * plain_save + 0.2, (save, plain_save)
    assert load < 5 * plain_load + 0.2, (load, plain_load)
    assert path.stat().st_size < 1.01 * plain_path.stat().st_size + HEADER_SIZE


# ---------------------------------------------------------- kills mid-write
KILL_BETWEEN_RENAMES = textwrap.dedent(
    """
    import os, signal, sys
    from torchrl_svg.train import checkpoint
    path = sys.argv[1]
    state = checkpoint.load_checkpoint(path)
    state["counters"]["elapsed"] = 12345.0  # tells the newer state apart
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".prev.pt"):  # the first of the two renames is done
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    checkpoint.save_checkpoint(path, state)
    """
)


@pytest.mark.slow
def test_a_kill_between_the_two_renames_resumes_from_the_newest_complete_file(tmp_path, caplog):
    run_dir = tmp_path / "run"
    train(load_config([*TINY, f"logger.run_dir={run_dir}"]))
    path = run_dir / "checkpoint.pt"
    save_checkpoint(path, load_checkpoint(path))  # an older complete one in .prev
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_RENAMES, str(path)], capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not path.exists()
    assert temporary_checkpoint(path).is_file() and previous_checkpoint(path).is_file()

    cfg = load_config([f"logger.run_dir={run_dir}", "checkpoint.resume=true"])
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        trainer = Trainer(cfg)
    assert trainer.elapsed_before == 12345.0  # the state of the save that was cut
    assert trainer.frames == 100
    assert any(
        "Resuming from" in r.getMessage() and ".tmp" in r.getMessage() for r in caplog.records
    )
    trainer.close()


def test_the_newest_complete_file_wins_and_the_others_are_named(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_latest_checkpoint(path) == ({"step": 2}, path)
    temporary_checkpoint(path).write_bytes(path.read_bytes()[:100])  # a save cut mid-write
    assert load_latest_checkpoint(path)[0] == {"step": 2}
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the newest
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="torchrl_svg"):
        state, source = load_latest_checkpoint(path)
    assert (state, source) == ({"step": 1}, previous_checkpoint(path))
    (message,) = [r.getMessage() for r in caplog.records]
    assert "checkpoint.pt: " in message and "corrupted" in message and "truncated" in message
    previous_checkpoint(path).unlink()
    with pytest.raises(CheckpointError, match=r"No usable checkpoint.*corrupted.*truncated"):
        load_latest_checkpoint(path)


# ------------------------------------------------------ what was found, named
def test_a_directory_a_cut_write_and_flipped_bytes_are_each_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(path)
    path.rmdir()

    save_checkpoint(path, {"w": torch.arange(1000.0)})
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupted: its checksum does not match"):
        load_checkpoint(path)
    path.write_bytes(good[: len(good) - 7])
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(path)
    path.write_bytes(b"\0" * HEADER_SIZE + good[HEADER_SIZE:])
    with pytest.raises(CheckpointError, match="write was interrupted before the header"):
        load_checkpoint(path)

    _version1_file(path, {"w": torch.arange(1000.0)})  # earlier releases' layout
    v1 = bytearray(path.read_bytes())
    v1[len(v1) // 2] ^= 0x10
    path.write_bytes(bytes(v1))
    with pytest.raises(CheckpointError, match="is corrupted") as err:
        load_checkpoint(path)
    assert "truncated" not in str(err.value)
    path.write_bytes(bytes(v1[: len(v1) // 2]))
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps({"not": "ours"}))
    with pytest.raises(CheckpointError, match="not a torchrl_svg checkpoint"):
        load_checkpoint(path)
