"""compile=true (and cudagraphs=true on a GPU) give the same losses and updates as eager."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch

from torchrl_svg.modules import env_specs
from torchrl_svg.train import load_config, make_agent
from torchrl_svg.train.builders import make_env

# torch.compile and CUDA-graph captures of whole updates: the slow tier
pytestmark = pytest.mark.slow

SMALL = [
    "network.actor_hidden_sizes=[32,32]",
    "network.critic_hidden_sizes=[32,32]",
    "model.hidden_sizes=[16,16]",
    "logger.backend=none",
]


def _agent(*overrides: str):
    cfg = load_config([*SMALL, *overrides])
    env = make_env(cfg)
    torch.manual_seed(0)
    agent = make_agent(cfg, *env_specs(env), device=cfg.device, env=env)
    return agent


@pytest.fixture
def fallback_random(monkeypatch):
    import torch._inductor.config as inductor_config

    # compiled random ops draw the same numbers as eager ones
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    yield
    torch._dynamo.reset()


def test_compiled_s2vg_update_matches_eager_on_a_fixed_batch(fallback_random):
    eager = _agent()
    compiled = _agent("compile.compile=true")
    compiled.loss.load_state_dict(eager.loss.state_dict())
    batch = make_batch((64,), 3, 1)
    batch["action"] = batch["action"] * 2  # Pendulum actions are in [-2, 2]
    for agent in (eager, compiled):
        agent.observe(batch)
    for _ in range(3):  # several updates: the compiled graph is reused after the first
        torch.manual_seed(1)
        out_eager = eager.update(batch.clone())
        torch.manual_seed(1)
        out_compiled = compiled.update(batch.clone())
        for key in ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha"):
            torch.testing.assert_close(
                out_compiled[key], out_eager[key], rtol=1e-4, atol=1e-5, msg=key
            )
    for key, value in eager.loss.state_dict().items():
        torch.testing.assert_close(
            compiled.loss.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key
        )


def test_compile_options_are_validated():
    from torchrl_svg.train import ConfigError

    with pytest.raises(ConfigError, match="compile.cudagraphs=true needs device=cuda"):
        load_config(["compile.cudagraphs=true"])
    with pytest.raises(ConfigError, match="'compile.mode': Invalid value 'fastest'"):
        load_config(["compile.mode=fastest"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_s2vg_update_matches_eager():
    eager = _agent("device=cuda")
    graphed = _agent("device=cuda", "compile.cudagraphs=true")
    graphed.loss.load_state_dict(eager.loss.state_dict())
    batch = make_batch((64,), 3, 1).to("cuda")
    for agent in (eager, graphed):
        agent.observe(batch)
    for step in range(8):  # warm-up (5 eager calls), capture, then replays
        torch.manual_seed(step)
        out_eager = eager.update(batch.clone())
        torch.manual_seed(step)
        out_graphed = graphed.update(batch.clone())
        for key in ("loss_qvalue", "loss_value"):
            torch.testing.assert_close(out_graphed[key], out_eager[key], rtol=1e-3, atol=1e-4)
