"""TorchRL's loss-test matrix, for every loss of the package.

For each loss: each ``loss_*`` backpropagated alone reaches exactly its own
parameters; target parameters get no gradient; the input tensordict is unchanged
(apart from a documented priority entry); keys can be set and unknown keys raise;
``reduction="none"`` keeps the batch shape and the scalar reductions agree with it;
``state_dict`` round-trips; ``[B]`` and ``[B, T]`` batches work; a missing entry
raises a ``KeyError`` naming it; float64 works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from conftest import make_batch, make_s2vg, make_svg, make_svg0, make_svginf
from torchrl.objectives import HardUpdate, LossModule, SoftUpdate


@dataclass
class Case:
    """How to build, feed and update one loss."""

    name: str
    make: Callable[..., LossModule]
    owners: dict[str, str]  # loss entry -> the parameter group it must reach
    batch_shapes: tuple[tuple[int, ...], ...]
    kwargs: dict = field(default_factory=dict)
    priority_key: str | None = None
    hard_update: bool = False
    prepare: Callable[[LossModule], None] | None = None

    def build(self, **kwargs) -> LossModule:
        loss = self.make(**{**self.kwargs, **kwargs})
        if self.prepare is not None:
            self.prepare(loss)
        if any(name.startswith("target_") for name, _ in loss.named_children()):
            if self.hard_update:
                HardUpdate(loss, value_network_update_interval=5)
            else:
                SoftUpdate(loss, tau=0.1)
        return loss


def _move_policy_off_reference(loss: LossModule) -> None:
    # the KL penalty has zero gradient at its reference: step away from it first
    with torch.no_grad():
        for p in loss.actor_network_params.values(True, True):
            p.add_(0.1 * torch.randn_like(p))


CASES = [
    Case(
        "s2vg-h1",
        make_s2vg,
        {
            "loss_actor": "actor_network",
            "loss_qvalue": "qvalue_network",
            "loss_value": "value_network",
            "loss_alpha": "log_alpha",
        },
        ((8,), (3, 5)),
        dict(fixed_alpha=False),
        priority_key="td_error",
    ),
    Case(
        "s2vg-h3",
        make_s2vg,
        {
            "loss_actor": "actor_network",
            "loss_qvalue": "qvalue_network",
            "loss_value": "value_network",
            "loss_alpha": "log_alpha",
        },
        ((8,), (3, 5)),
        dict(fixed_alpha=False, horizon=3),
        priority_key="td_error",
    ),
    Case(
        "svg0",
        make_svg0,
        {"loss_actor": "actor_network", "loss_qvalue": "qvalue_network"},
        ((8,), (3, 5)),
        priority_key="td_error",
    ),
    Case(
        "svg0-sampled-twin",
        make_svg0,
        {"loss_actor": "actor_network", "loss_qvalue": "qvalue_network"},
        ((8,),),
        dict(noise="sampled", num_qvalue_nets=2),
        priority_key="td_error",
    ),
    Case(
        "svg1",
        make_svg,
        {"loss_actor": "actor_network", "loss_value": "value_network"},
        ((8,), (3, 5)),
        dict(horizon=1),
        hard_update=True,
    ),
    Case(
        "svg1-kl",
        make_svg,
        {"loss_actor": "actor_network", "loss_value": "value_network", "loss_kl": "actor_network"},
        ((8,),),
        dict(horizon=1, kl_coef=0.1),
        hard_update=True,
        prepare=_move_policy_off_reference,
    ),
    Case(
        "svg3",
        make_svg,
        {"loss_actor": "actor_network", "loss_value": "value_network"},
        ((8, 3), (2, 4, 3)),
        dict(horizon=3),
        hard_update=True,
    ),
    Case("svginf", make_svginf, {"loss_actor": "actor_network"}, ((4, 6), (2, 3, 6))),
    Case(
        "svginf-planner",
        make_svginf,
        {"loss_actor": "actor_network"},
        ((4, 6),),
        dict(noise="sampled"),
    ),
]
IDS = [c.name for c in CASES]


def _trainable(loss: LossModule) -> dict[str, list[torch.Tensor]]:
    groups = {}
    for name, module in loss.named_children():
        if (
            name.endswith("_params")
            and not name.startswith("target_")
            and name != "kl_reference_params"
        ):
            groups[name[: -len("_params")]] = [
                p for p in module.values(True, True) if isinstance(p, torch.nn.Parameter)
            ]
    if isinstance(getattr(loss, "log_alpha", None), torch.nn.Parameter):
        groups["log_alpha"] = [loss.log_alpha]
    return groups


def _loss_entries(out) -> list[str]:
    return [k for k in out.keys() if k.startswith("loss_")]


def _batch(case: Case, shape, **kwargs):
    return make_batch(shape, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_loss_reaches_exactly_its_own_parameters(case):
    loss = case.build()
    out = loss(_batch(case, case.batch_shapes[0]))
    assert sorted(_loss_entries(out)) == sorted(case.owners), _loss_entries(out)
    for entry, owner in case.owners.items():
        loss.zero_grad(set_to_none=True)
        if isinstance(getattr(loss, "log_alpha", None), torch.nn.Parameter):
            loss.log_alpha.grad = None
        torch.manual_seed(1)
        loss(_batch(case, case.batch_shapes[0]))[entry].backward()
        for group, params in _trainable(loss).items():
            grads = [p.grad for p in params]
            if group == owner:
                assert all(g is not None for g in grads), f"{entry} did not reach {group}"
                assert any(g.abs().sum() > 0 for g in grads), f"{entry} gave {group} zero gradient"
            else:
                assert all(g is None or g.abs().sum() == 0 for g in grads), (
                    f"{entry} leaked into {group}"
                )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_targets_get_no_gradient(case):
    loss = case.build()
    out = loss(_batch(case, case.batch_shapes[0]))
    sum(out[k] for k in _loss_entries(out)).backward()
    for name, module in loss.named_children():
        if name.startswith("target_") or name == "kl_reference_params":
            for value in module.values(True, True):
                assert value.grad is None and not value.requires_grad, name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_input_is_unchanged(case):
    loss = case.build()
    data = _batch(case, case.batch_shapes[0])
    reference = data.clone()
    loss(data)
    added = set(data.keys(True, True)) - set(reference.keys(True, True))
    assert added == ({case.priority_key} if case.priority_key else set())
    assert (data.select(*reference.keys(True, True)) == reference).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_set_keys_round_trip_and_unknown_key(case):
    keys = {
        "observation": "obs",
        "action": "act",
        "reward": "rew",
        "done": "end",
        "terminated": "term",
    }
    if case.make is make_svg:
        keys["sample_log_prob"] = "behaviour_lp"
    loss = case.build(keys=keys)
    for name, value in keys.items():
        assert getattr(loss.tensor_keys, name) == value
    out = loss(make_batch(case.batch_shapes[0], keys=keys))
    assert all(torch.isfinite(out[k]) for k in _loss_entries(out))
    with pytest.raises(ValueError, match="not an accepted tensordict key"):
        loss.set_keys(observaton="x")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reduction_none_keeps_the_batch_shape_and_agrees_with_mean_and_sum(case):
    for shape in case.batch_shapes:
        data = _batch(case, shape)
        elementwise = case.build(reduction="none")
        expected_shape = shape[:-1] if case.make is make_svginf or "svg3" in case.name else shape
        torch.manual_seed(2)
        none = elementwise(data.clone())
        for entry in _loss_entries(none):
            assert none[entry].shape == torch.Size(expected_shape), (entry, none[entry].shape)
        for reduction, agg in (("mean", torch.mean), ("sum", torch.sum)):
            reduced_loss = case.build(reduction=reduction)
            reduced_loss.load_state_dict(elementwise.state_dict())
            torch.manual_seed(2)
            reduced = reduced_loss(data.clone())
            for entry in _loss_entries(none):
                torch.testing.assert_close(
                    reduced[entry], agg(none[entry]), msg=f"{entry} {reduction}"
                )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip(case):
    loss = case.build()
    dynamics = getattr(loss, "dynamics_model", None)
    if dynamics is not None:
        dynamics.update_normalizer(make_batch((32,)))
    state = loss.state_dict()
    other = case.build()
    other.load_state_dict(state)
    for key, value in state.items():
        torch.testing.assert_close(other.state_dict()[key], value, msg=key)
    data = _batch(case, case.batch_shapes[0])
    torch.manual_seed(3)
    a = loss(data.clone())
    torch.manual_seed(3)
    b = other(data.clone())
    for entry in _loss_entries(a):
        torch.testing.assert_close(a[entry], b[entry])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_missing_entry_raises_key_error_naming_it(case):
    loss = case.build()
    data = _batch(case, case.batch_shapes[0]).exclude(("next", "reward"))
    with pytest.raises(KeyError) as err:
        loss(data)
    assert "('next', 'reward')" in str(err.value) and type(loss).__name__ in str(err.value)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64(case):
    loss = case.build().double()
    out = loss(_batch(case, case.batch_shapes[0], dtype=torch.float64))
    for entry in _loss_entries(out):
        assert out[entry].dtype == torch.float64 and torch.isfinite(out[entry])
