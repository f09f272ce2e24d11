"""Prioritized replay without TorchRL's compiled extension, with the package's losses."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch, make_s2vg, make_svg
from tensordict import TensorDict
from torchrl.objectives import HardUpdate, SoftUpdate

from torchrl_svg.data import prioritized_replay_buffer


def test_sampling_is_proportional_to_priority_and_weights_follow_beta():
    alpha, beta = 1.0, 0.5
    rb = prioritized_replay_buffer(8, alpha=alpha, beta=beta, eps=0.0, batch_size=4000)
    rb.extend(TensorDict({"x": torch.arange(4.0)}, [4]))
    priorities = torch.tensor([1.0, 2.0, 3.0, 94.0])
    rb.update_priority(torch.arange(4), priorities)
    sample = rb.sample()
    index = sample["index"]
    freq = torch.bincount(index, minlength=4).double() / index.numel()
    expected = priorities.double() / priorities.sum()
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)
    # (p_i / min p) ** -beta, per sampled transition
    weight = (priorities[index] / priorities.min()) ** -beta
    torch.testing.assert_close(sample["priority_weight"], weight.to(sample["priority_weight"]))
    assert torch.equal(sample["x"], index.float())


def test_new_transitions_enter_with_the_highest_priority_and_state_reloads():
    rb = prioritized_replay_buffer(16, alpha=1.0, beta=0.4, eps=0.0, batch_size=2000)
    rb.extend(TensorDict({"x": torch.arange(4.0)}, [4]))
    rb.update_priority(torch.arange(4), torch.tensor([1.0, 1.0, 1.0, 5.0]))
    rb.extend(TensorDict({"x": torch.tensor([4.0])}, [1]))  # enters with the max seen, 5
    counts = torch.bincount(rb.sample()["index"], minlength=5).double() / 2000
    torch.testing.assert_close(
        counts[4], torch.tensor(5 / 13, dtype=torch.float64), atol=0.03, rtol=0
    )
    fresh = prioritized_replay_buffer(16, alpha=1.0, beta=0.4, eps=0.0, batch_size=2000)
    fresh.load_state_dict(rb.state_dict())
    torch.testing.assert_close(
        fresh.sampler._sum_tree.values, rb.sampler._sum_tree.values, rtol=0, atol=0
    )


def _filled(n: int = 64):
    rb = prioritized_replay_buffer(1000, alpha=0.7, beta=0.5, batch_size=32)
    rb.extend(make_batch((n,)))
    rb.update_priority(torch.arange(n), torch.rand(n) + 0.1)  # unequal weights
    return rb


def test_s2vg_writes_td_error_that_becomes_the_priorities_and_reads_the_weights():
    loss = make_s2vg()
    SoftUpdate(loss, tau=0.1)
    rb = _filled()
    sample = rb.sample()
    assert "priority_weight" in sample.keys()
    assert not torch.allclose(sample["priority_weight"], torch.ones(32))
    torch.manual_seed(3)
    out = loss(sample)
    td_error = sample["td_error"]
    assert td_error.shape == sample.batch_size and (td_error >= 0).all()
    rb.update_tensordict_priority(sample)
    stored = rb.sampler._sum_tree.values[sample["index"]]
    # a transition drawn twice keeps its last priority; each one stored is (td_error + eps) ** alpha
    expected = (td_error.detach() + rb.sampler._eps) ** rb.sampler.alpha
    for i, idx in enumerate(sample["index"].tolist()):
        last = max(j for j, k in enumerate(sample["index"].tolist()) if k == idx)
        torch.testing.assert_close(stored[i], expected[last].to(stored))
    # the weights enter the reduction: (l * w).sum() / w.sum()
    loss.reduction = "none"
    torch.manual_seed(3)
    per_sample = loss(sample.exclude("priority_weight"))["loss_qvalue"]
    w = sample["priority_weight"]
    torch.testing.assert_close(out["loss_qvalue"], (per_sample * w).sum() / w.sum())


def test_svg1_er_reads_the_prioritized_weights():
    loss = make_svg(horizon=1)
    HardUpdate(loss, value_network_update_interval=5)
    sample = _filled().sample()
    out = loss(sample)
    loss.reduction = "none"
    per_sample = loss(sample.exclude("priority_weight"))
    w = sample["priority_weight"]
    assert not torch.allclose(w, torch.ones_like(w))
    for key in ("loss_actor", "loss_value"):
        torch.testing.assert_close(out[key], (per_sample[key] * w).sum() / w.sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_priority_trees_live_with_a_cuda_storage():
    rb = prioritized_replay_buffer(100, batch_size=8, device="cuda")
    rb.extend(make_batch((20,)).to("cuda"))
    sample = rb.sample()
    assert sample["priority_weight"].device.type == "cuda"
    sample["td_error"] = torch.rand(8, device="cuda")
    rb.update_tensordict_priority(sample)
