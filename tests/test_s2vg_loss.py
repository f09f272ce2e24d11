"""S2VGLoss specifics (the generic TorchRL loss matrix is in test_loss_matrix.py)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, make_batch, make_s2vg
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.objectives import SoftUpdate

from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_qvalue, make_value
from torchrl_svg.objectives import S2VGLoss

LOSS_KEYS = ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha")


def test_target_parameters_get_no_gradient_and_follow_soft_update():
    loss = make_s2vg()
    updater = SoftUpdate(loss, tau=0.5)
    out = loss(make_batch())
    sum(out[k] for k in LOSS_KEYS).backward()
    targets = list(loss.target_value_network_params.values(True, True))
    assert all(t.grad is None for t in targets)
    before = [t.clone() for t in targets]
    with torch.no_grad():
        for p in loss.value_network_params.values(True, True):
            p.add_(1.0)
    updater.step()
    after = list(loss.target_value_network_params.values(True, True))
    sources = list(loss.value_network_params.values(True, True))
    for b, a, s in zip(before, after, sources, strict=True):
        torch.testing.assert_close(a, 0.5 * b + 0.5 * s)


def test_twin_qvalues_are_independent_copies():
    loss = make_s2vg()
    weights = [p for p in loss.qvalue_network_params.values(True, True) if p.ndim >= 2]
    assert all(w.shape[0] == 2 for w in weights)
    assert not torch.equal(weights[0][0], weights[0][1])


def test_deactivate_vmap_gives_the_same_losses():
    vmapped = make_s2vg(horizon=2)
    looped = make_s2vg(horizon=2, deactivate_vmap=True)
    looped.load_state_dict(vmapped.state_dict())
    for loss in (vmapped, looped):
        SoftUpdate(loss, tau=0.1)
    data = make_batch()
    torch.manual_seed(5)
    a = vmapped(data.clone())
    torch.manual_seed(5)
    b = looped(data.clone())
    for key in LOSS_KEYS:
        torch.testing.assert_close(a[key], b[key])


def test_fixed_alpha_is_a_buffer_and_auto_alpha_learns():
    fixed = make_s2vg(fixed_alpha=True, alpha_init=0.3)
    assert "log_alpha" in dict(fixed.named_buffers())
    assert fixed._alpha.item() == pytest.approx(0.3)
    auto = make_s2vg(fixed_alpha=False)
    assert isinstance(auto.log_alpha, torch.nn.Parameter)
    assert auto.target_entropy.item() == -ACT_DIM


def test_wrong_observation_shape_names_key_and_shape():
    loss = make_s2vg()
    SoftUpdate(loss, tau=0.1)
    data = make_batch(obs_dim=OBS_DIM + 1)
    with pytest.raises(
        ValueError, match=r"'observation' has shape \(8, 5\), expected a trailing dimension of 4"
    ):
        loss(data)


def test_spec_mismatch_at_construction_names_both_shapes():
    spec = Bounded(-1.0, 1.0, (ACT_DIM,))
    actor = make_actor(OBS_DIM, spec, hidden_sizes=(8,))
    q, v = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=(8,)), make_value(OBS_DIM, hidden_sizes=(8,))
    with pytest.raises(
        ValueError,
        match=r"actor action spec has shape \(2,\) but dynamics_model action has shape \(3,\)",
    ):
        S2VGLoss(
            actor, q, v, GaussianDynamics(OBS_DIM, 3, hidden_sizes=(8,)), RewardModel(OBS_DIM, 3)
        )
    with pytest.raises(
        ValueError,
        match=r"dynamics_model observation has shape \(4,\) but reward_model observation has shape \(5,\)",
    ):
        S2VGLoss(actor, q, v, GaussianDynamics(OBS_DIM, ACT_DIM), RewardModel(OBS_DIM + 1, ACT_DIM))
    with pytest.raises(
        ValueError,
        match=r"actor action spec has shape \(2,\) but environment action spec has shape \(1,\)",
    ):
        S2VGLoss(
            actor,
            q,
            v,
            GaussianDynamics(OBS_DIM, ACT_DIM),
            RewardModel(OBS_DIM, ACT_DIM),
            action_spec=Bounded(-1.0, 1.0, (1,)),
        )


def test_non_location_scale_modules_are_refused():
    spec = Bounded(-1.0, 1.0, (ACT_DIM,))
    actor = make_actor(OBS_DIM, spec, hidden_sizes=(8,))
    q, v = make_qvalue(OBS_DIM, ACT_DIM), make_value(OBS_DIM)
    with pytest.raises(TypeError, match="dynamics_model must provide get_dist"):
        S2VGLoss(actor, q, v, make_value(OBS_DIM), RewardModel(OBS_DIM, ACT_DIM))
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        S2VGLoss(
            actor,
            q,
            v,
            GaussianDynamics(OBS_DIM, ACT_DIM),
            RewardModel(OBS_DIM, ACT_DIM),
            horizon=0,
        )


def test_works_without_a_termination_model_but_needs_the_terminated_flags():
    loss = make_s2vg(learned_termination=False)
    SoftUpdate(loss, tau=0.1)
    out = loss(make_batch().exclude(("next", "done")))
    assert all(torch.isfinite(out[k]) for k in LOSS_KEYS)
    # done alone would turn time-limit truncations into terminals: refused
    with pytest.raises(KeyError, match=re.escape("('next', 'terminated')")):
        loss(make_batch().exclude(("next", "terminated")))


def test_output_has_detached_diagnostics():
    loss = make_s2vg()
    SoftUpdate(loss, tau=0.1)
    out = loss(make_batch())
    for key in ("alpha", "entropy", "model_return"):
        assert not out[key].requires_grad
    assert isinstance(out, TensorDict) and out.batch_size == torch.Size([])
