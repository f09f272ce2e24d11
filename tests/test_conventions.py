"""TorchRL conventions a LossModule user relies on: out_keys, select_out_keys, parameter groups."""

from __future__ import annotations

import pytest
import torch
from conftest import OBS_DIM, make_batch, make_s2vg
from test_loss_matrix import CASES, IDS
from torchrl.objectives import SoftUpdate

from torchrl_svg.modules import GaussianDynamics, LearnedTermination, RewardModel
from torchrl_svg.objectives import GaussianWorldModelLoss


def _s2vg(**kwargs):
    """A small S2VG loss with its target updater, as a user builds it."""
    loss = make_s2vg(**kwargs)
    SoftUpdate(loss, tau=0.1)
    return loss


def _model_loss(reward: bool = True, termination: bool = True, **kwargs) -> GaussianWorldModelLoss:
    return GaussianWorldModelLoss(
        GaussianDynamics(OBS_DIM, 2, hidden_sizes=(16,)),
        RewardModel(OBS_DIM, 2, hidden_sizes=(16,)) if reward else None,
        LearnedTermination(OBS_DIM, hidden_sizes=(8,)) if termination else None,
        **kwargs,
    )


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _trained_by(loss, batch) -> set[int]:
    """The parameters that the sum of the loss's ``loss_*`` entries gives a gradient."""
    for p in loss.parameters():
        p.grad = None
    out = loss(batch)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss_")).backward()
    return {id(p) for p in loss.parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("fixed_alpha", [True, False])
def test_s2vg_out_keys_are_what_forward_writes(reduction, fixed_alpha):
    loss = _s2vg(reduction=reduction, fixed_alpha=fixed_alpha)
    out = loss(make_batch())
    assert sorted(out.keys()) == sorted(loss.out_keys)
    if reduction == "mean":
        assert "model_return" in loss.out_keys


def test_s2vg_select_out_keys_narrows_the_output_and_resets():
    loss = _s2vg()
    assert loss.select_out_keys("loss_actor", "loss_qvalue") is loss
    out = loss(make_batch())
    assert sorted(out.keys()) == ["loss_actor", "loss_qvalue"]
    out["loss_actor"].backward()  # still a graph
    loss.reset_out_keys()
    assert "model_return" in loss(make_batch()).keys()
    with pytest.raises(ValueError, match="non existent key"):
        loss.select_out_keys("loss_critic")


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("reward, termination", [(True, True), (True, False), (False, False)])
def test_world_model_loss_has_out_keys_and_select_out_keys(reduction, reward, termination):
    loss = _model_loss(reward, termination, reduction=reduction)
    out = loss(make_batch())
    assert sorted(out.keys()) == sorted(loss.out_keys)
    loss.select_out_keys("loss_dynamics")
    assert list(loss(make_batch()).keys()) == ["loss_dynamics"]


def test_parameter_groups_are_exactly_what_each_loss_trains():
    loss = _s2vg(fixed_alpha=False)  # with a learned termination head
    groups = loss.parameter_groups()
    assert list(groups) == ["actor", "qvalue", "value", "alpha"]
    own = [p for params in groups.values() for p in params]
    assert len(_ids(own)) == len(own)  # no parameter in two groups
    batch = make_batch()
    assert _ids(own) == _trained_by(loss, batch)
    # the world model is in loss.parameters() but in no group of the actor-critic loss
    world = [
        p
        for name in ("dynamics_model", "reward_model", "termination_model")
        for p in getattr(loss, f"{name}_params").values(True, True)
        if isinstance(p, torch.nn.Parameter)
    ]
    assert world
    assert _ids(world) <= _ids(loss.parameters())
    assert not _ids(world) & _ids(own)
    # the target value network is trained by no one
    assert not _ids(loss.target_value_network_params.values(True, True)) & _ids(own)
    assert "alpha" not in _s2vg(fixed_alpha=True).parameter_groups()


def test_world_model_parameter_groups_are_exactly_what_it_trains():
    loss = _model_loss()
    groups = loss.parameter_groups()
    assert list(groups) == ["dynamics", "reward", "termination"]
    own = [p for params in groups.values() for p in params]
    assert _ids(own) == _trained_by(loss, make_batch())
    assert list(_model_loss(reward=False, termination=False).parameter_groups()) == ["dynamics"]


def test_an_optimiser_on_the_groups_leaves_the_world_model_alone():
    loss = _s2vg(fixed_alpha=False)
    model_loss = GaussianWorldModelLoss(loss.dynamics_model, loss.reward_model)
    optim = torch.optim.Adam([{"params": p, "lr": 1e-2} for p in loss.parameter_groups().values()])
    model_before = [p.detach().clone() for p in model_loss.parameters()]
    actor_before = [p.detach().clone() for p in loss.parameter_groups()["actor"]]
    for _ in range(3):
        # the model loss's gradients are in the world model when the actor-critic step runs
        model_loss(make_batch())["loss_dynamics"].backward()
        out = loss(make_batch())
        optim.zero_grad()
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_value"] + out["loss_alpha"]).backward()
        optim.step()
    for before, p in zip(model_before, model_loss.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), before, rtol=0, atol=0)
    assert any(
        not torch.equal(b, p)
        for b, p in zip(actor_before, loss.parameter_groups()["actor"], strict=True)
    )


# ------------------------------------------------------------------ every loss
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_loss_lists_its_outputs_and_narrows_them(case):
    batch_shape = case.batch_shapes[0]
    for reduction in ("mean", "none"):
        loss = case.build(reduction=reduction)
        out = loss(make_batch(batch_shape))
        assert sorted(out.keys()) == sorted(loss.out_keys), reduction
    loss = case.build()
    loss.select_out_keys("loss_actor")
    assert list(loss(make_batch(batch_shape)).keys()) == ["loss_actor"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_loss_groups_exactly_the_parameters_it_trains(case):
    loss = case.build()
    groups = loss.parameter_groups()
    own = [p for params in groups.values() for p in params]
    assert len(_ids(own)) == len(own)
    torch.manual_seed(1)
    assert _ids(own) == _trained_by(loss, make_batch(case.batch_shapes[0]))
    assert set(groups) == {
        {"actor_network": "actor", "log_alpha": "alpha"}.get(owner, owner.removesuffix("_network"))
        for owner in case.owners.values()
    }
