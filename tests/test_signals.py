"""Ctrl-C, SIGTERM and SIGHUP: the run finishes its updates, saves and exits with one line.

Each test runs the training in a child process and delivers a real signal to it.
The child first gives SIGINT back its default handler: a shell that starts a job in
the background starts it with SIGINT ignored, and the trainer leaves an ignored
signal ignored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

from torchrl_svg.train import load_checkpoint

# training subprocesses stopped by signals: the slow tier
pytestmark = pytest.mark.slow

TINY = [
    *TINY_RUN,
    "checkpoint.interval=1000000",  # no periodic checkpoint: only the stop writes one
]

# A background shell starts its children with SIGINT ignored, and nohup with SIGHUP ignored;
# the run leaves an ignored signal ignored, so the child first gives both their defaults.
SIGINT_DEFAULT = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
)

CLI = SIGINT_DEFAULT + textwrap.dedent(
    """
    import sys
    from torchrl_svg.train.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)

# A signal delivered from inside the value network's forward pass, which S2VGLoss runs
# inside ``params.to_module(...)``: os.kill runs the Python handler before it returns.
INSIDE_A_LOSS = SIGINT_DEFAULT + textwrap.dedent(
    """
    import os, sys
    from torchrl_svg.train import Trainer, load_config
    signum, at_call, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    trainer = Trainer(load_config(overrides))
    calls = 0
    def deliver(module, args):
        global calls
        calls += 1
        if calls == at_call:
            print(f"signal at value-network call {calls}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signum)
    trainer.agent.loss.value_network.register_forward_pre_hook(deliver)
    trainer.run()
    """
)

# A signal delivered while the first evaluation's curve is drawn (its first plot imports
# matplotlib: a KeyboardInterrupt inside an import surfaces as an unrelated RuntimeError).
WHILE_RECORDING = SIGINT_DEFAULT + textwrap.dedent(
    """
    import os, sys
    from torchrl_svg.train import Trainer, load_config, records
    signum, overrides = int(sys.argv[1]), sys.argv[2:]
    trainer = Trainer(load_config(overrides))
    plot_curves = records.plot_curves
    def deliver(*args, **kwargs):
        print("signal while drawing the curve", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signum)
        return plot_curves(*args, **kwargs)
    records.plot_curves = deliver
    trainer.run()
    """
)


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _run_script(script: str, run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a child script that trains with ``args`` (its own first, then overrides) to the end."""
    return subprocess.run(
        [sys.executable, "-c", script, *args, f"logger.run_dir={run_dir}"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=run_dir.parent,
        timeout=600,
    )


def _assert_counted(state: dict) -> None:
    """The counters say exactly how many optimiser steps the saved parameters have taken."""
    counters, agent = state["counters"], state["agent"]
    actor_critic = {float(s["step"]) for s in agent["optimizer"]["state"].values()}
    model = {float(s["step"]) for s in agent["world_model"]["optimizer"]["state"].values()}
    assert actor_critic == {counters["updates"] - counters["skipped_updates"]}
    assert model == {counters["model_updates"]}
    assert len(state["replay"]["data"]) == counters["frames"] - counters["dropped_transitions"]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["SIGTERM", "SIGHUP", "SIGINT"]
)
def test_a_stop_signal_saves_a_checkpoint_and_exits_with_one_line(tmp_path: Path, signum):
    run_dir = tmp_path / "run"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            *TINY,
            "collector.total_frames=100000",
            "eval.interval=100",
            f"logger.run_dir={run_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
    ) as proc:
        deadline = time.time() + 300
        while not (run_dir / "eval.csv").exists() and proc.poll() is None:
            assert time.time() < deadline, "no evaluation within 300 s"
            time.sleep(0.1)  # the first evaluation: training is under way
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signum)
        try:
            _, err = proc.communicate(timeout=300)
        finally:
            proc.kill()  # a no-op once it has exited
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"Stopped by {name} at environment step" in err
    assert "Traceback" not in err
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert 100 <= state["counters"]["frames"] < 100000
    assert state["counters"]["updates"] > 0
    _assert_counted(state)
    assert f"environment step {state['counters']['frames']} " in err


def test_ctrl_c_inside_a_loss_finishes_the_update_saves_and_counts_it(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = _run_script(
        INSIDE_A_LOSS,
        run_dir,
        str(int(signal.SIGINT)),
        "25",
        *TINY,
        "compile.fast_update=false",  # the LossModule steps, with params.to_module(...)
        "collector.total_frames=100000",
        "eval.interval=100000",
    )
    assert "signal at value-network call 25" in proc.stderr
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Stopped by SIGINT" in proc.stderr
    assert "Converting a tensordict to boolean" not in proc.stderr
    state = load_checkpoint(run_dir / "checkpoint.pt")
    # the update in progress was finished, and so were the rest of its batch's: all counted
    assert state["counters"]["updates"] >= 25
    assert state["counters"]["frames"] % 10 == 0
    _assert_counted(state)
    assert torch.isfinite(state["agent"]["loss"]["value_network_params.module.0.weight"]).all()


def test_a_stop_signal_while_an_evaluation_is_recorded_lets_it_finish_then_stops(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = _run_script(
        WHILE_RECORDING,
        run_dir,
        str(int(signal.SIGHUP)),
        *TINY,
        "collector.total_frames=100000",
        "eval.interval=100",
    )
    assert "signal while drawing the curve" in proc.stderr
    assert proc.returncode == 128 + signal.SIGHUP, proc.stderr[-3000:]
    assert "Stopped by SIGHUP at environment step 100 " in proc.stderr
    assert "Traceback" not in proc.stderr
    # the evaluation in progress was written whole: its row, its curve, no file left aside
    rows = (run_dir / "eval.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("100,")
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    assert not list(run_dir.glob(".learning_curve.tmp*"))
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["counters"]["frames"] == 100
    _assert_counted(state)
