"""Scale-out collection and an environment failing inside a collector worker.

Each multi-process test starts worker processes with TorchRL's default ``spawn``
start method (each worker imports torch and TorchRL afresh, the slow part), so
the runs themselves are kept to a few hundred steps with tiny networks.
"""

from __future__ import annotations

import math
import re

import faulty_envs  # noqa: F401  (registers EarlyCrashingPendulum-v0, only in this process)
import pytest
import torch
from torch import nn

from torchrl_svg.modules import env_specs, make_actor
from torchrl_svg.train import (
    ConfigError,
    EnvironmentFailure,
    Trainer,
    load_checkpoint,
    load_config,
)
from torchrl_svg.train.builders import make_collector, make_env

# trainings through multi-process and Ray collectors: the slow tier
pytestmark = pytest.mark.slow

TINY = [
    "network.actor_hidden_sizes=[16]",
    "network.critic_hidden_sizes=[16]",
    "model.hidden_sizes=[16]",
    "model.pretrain_updates=5",
    "loss.updates_per_step=1",
    "replay_buffer.batch_size=32",
    "model.batch_size=32",
    "eval.episodes=1",
    "eval.max_steps=10",
    "logger.progress=false",
    "logger.backend=none",
    "collector.num_workers=2",
]
UNIFORM_LOG_PROB = -math.log(4.0)  # Pendulum's action box is [-2, 2]


def _config(tmp_path, *overrides: str):
    return load_config(
        [
            *TINY,
            "collector.frames_per_batch=20",
            "collector.total_frames=200",
            "collector.init_random_frames=100",
            "eval.interval=200",
            f"logger.run_dir={tmp_path}",
            *overrides,
        ]
    )


def _stored(trainer: Trainer):
    return trainer.replay.storage.get(torch.arange(len(trainer.replay)))


def _assert_filled_by_both_workers(trainer: Trainer, frames: int) -> None:
    assert trainer.frames == frames == len(trainer.replay)  # every collected transition is stored
    data = _stored(trainer)
    for key in ("observation", "action", "action_log_prob", ("next", "observation")):
        assert torch.isfinite(data[key]).all(), key
    # warm-up steps carry the uniform behaviour log-density, policy steps their own
    warm_up = data["action_log_prob"][: trainer.warm_up]
    torch.testing.assert_close(warm_up, torch.full_like(warm_up, UNIFORM_LOG_PROB))
    assert (data["action_log_prob"][trainer.warm_up :] != UNIFORM_LOG_PROB).any()
    # each worker runs its own episode (Pendulum: 200 steps), with its own trajectory id and seed
    traj = data["collector", "traj_ids"]
    assert traj.unique().numel() >= 2
    starts = [data["observation"][traj == t][0] for t in traj.unique()[:2]]
    assert not torch.equal(*starts)
    assert trainer.updates > 0 and trainer.model_updates > 0


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["collector.backend=threads"], r"'collector\.backend': Invalid value 'threads'"),
        (["collector.backend=multi_sync", "collector.num_workers=0"], r"collector\.num_workers"),
        (
            ["collector.backend=multi_sync", "collector.num_workers=3"],
            r"collector\.frames_per_batch=10 must be a multiple of collector\.num_workers=3",
        ),
        (
            ["algorithm=svginf", "collector.backend=ray", "collector.num_workers=3"],
            r"svg\.episodes_per_batch=8 must be a multiple of collector\.num_workers=3",
        ),
    ],
)
def test_bad_collector_configuration_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_the_default_backend_is_the_single_collector():
    cfg = load_config([])
    assert (cfg.collector.backend, cfg.collector.num_workers) == ("single", 2)
    assert cfg.collector.ray_address is None


# ------------------------------------------------------------------ multi-process
@pytest.mark.parametrize("backend", ["multi_sync", "multi_async"])
def test_multi_process_collectors_fill_the_replay_buffer_and_train(tmp_path, backend):
    trainer = Trainer(_config(tmp_path, f"collector.backend={backend}"))
    trainer.run()
    _assert_filled_by_both_workers(trainer, frames=200)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["counters"]["frames"] == 200


def test_workers_act_with_the_weights_pushed_after_an_update(tmp_path):
    cfg = _config(tmp_path, "collector.backend=multi_sync", "collector.init_random_frames=0")
    env = make_env(cfg)
    observation_spec, action_spec = env_specs(env)
    policy = make_actor(observation_spec.shape[-1], action_spec, hidden_sizes=(8,))
    collector = make_collector(cfg, None, policy)
    try:
        batches = iter(collector)
        before = next(batches)["action"]
        with torch.no_grad():  # a policy that always pushes to the upper bound
            for param in policy.parameters():
                param.zero_()
            last = [m for m in policy.modules() if isinstance(m, nn.Linear)][-1]
            last.bias[: action_spec.shape[-1]] = 50.0
        collector.update_policy_weights_()
        after = next(batches)["action"]
    finally:
        threads = torch.get_num_threads()
        collector.shutdown()
        torch.set_num_threads(threads)  # the collector's shutdown changes it
    high = action_spec.space.high
    assert not (before > 0.95 * high).all()
    assert (after > 0.95 * high).all()


# ------------------------------------------------------------------ ray
@pytest.fixture
def local_ray_cluster():
    ray = pytest.importorskip(
        "ray", reason="collector.backend=ray needs ray: pip install 'torchrl_svg[distributed]'"
    )
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_collector_fills_the_replay_buffer_and_trains(tmp_path, local_ray_cluster):
    trainer = Trainer(_config(tmp_path, "collector.backend=ray"))
    trainer.run()
    _assert_filled_by_both_workers(trainer, frames=200)
    assert local_ray_cluster.is_initialized()  # the collector leaves a cluster it did not start


# ------------------------------------------------------------------ faults
# each worker's env raises on its own 30th step: in the third batch of 2 x 10 steps
CRASHING = [
    "env.name=EarlyCrashingPendulum-v0",
    "model.termination=none",  # a test task: no known termination rule
    "collector.backend=multi_sync",
    "collector.total_frames=80",
    "collector.init_random_frames=20",
    "eval.interval=80",
]


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A multi_sync run whose workers' envs raise: (run_dir, the error, its checkpoint)."""
    run_dir = tmp_path_factory.mktemp("failed_run")
    with pytest.raises(EnvironmentFailure) as err:
        Trainer(_config(run_dir, *CRASHING)).run()
    return run_dir, err.value, load_checkpoint(run_dir / "checkpoint.pt")


def test_an_environment_failing_in_a_worker_is_reported_with_worker_and_step(failed_run):
    _, error, checkpoint = failed_run
    assert re.search(
        r"'EarlyCrashingPendulum-v0' raised while collecting after environment step 40: "
        r"in collector worker \d at its step 30: "
        r"RuntimeError: simulated physics failure at step 30",
        str(error),
    ), str(error)
    assert "checkpoint.resume=true" in str(error)
    assert checkpoint["counters"]["frames"] == 40
    # every transition the collector delivered before the failure is in the checkpoint
    assert len(checkpoint["replay"]["data"]) == 40


def test_a_run_stopped_by_a_worker_failure_resumes(failed_run):
    run_dir, _, checkpoint = failed_run
    # a fresh pair of workers (their envs count from 0 again) collects the remaining 40 steps
    resumed = Trainer(_config(run_dir, *CRASHING, "checkpoint.resume=true"))
    resumed.run()
    assert resumed.frames == len(resumed.replay) == 80
    data = _stored(resumed)
    assert torch.equal(data["observation"][:40], checkpoint["replay"]["data"]["observation"])
    assert torch.isfinite(data["observation"]).all()
    assert resumed.updates > checkpoint["counters"]["updates"]
