"""The input-validation contract of every loss and replay transform (see ``torchrl_svg.objectives``).

Missing entry -> ``KeyError`` naming it and the loss; wrong shape -> ``ValueError``
naming both shapes; wrong dtype -> ``TypeError`` naming the entry and both dtypes;
empty batch -> ``ValueError("... empty batch ...")``; NaN/inf -> ``ValueError``
naming the entry (per ``check_finite``); policies that are not location-scale and
action bounds that differ from the spec are refused at construction.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, _networks, make_batch, make_s2vg, make_svg, make_svg0
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.modules import (
    Delta,
    IndependentNormal,
    NormalParamExtractor,
    OneHotCategorical,
    ProbabilisticActor,
    TanhNormal,
)
from torchrl.objectives import HardUpdate, SoftUpdate

from torchrl_svg._validation import Entry, check_finite_entries, validate
from torchrl_svg.data import (
    ImportanceWeight,
    ModelNoiseInference,
    ModelRollout,
    NormalizerUpdate,
    PolicyNoiseInference,
    UnflattenSlices,
)
from torchrl_svg.modules import GaussianDynamics, RewardModel, make_actor, make_value
from torchrl_svg.objectives import (
    GaussianWorldModelLoss,
    S2VGLoss,
    SVG0Loss,
    SVG1Loss,
    SVGInfLoss,
    SVGLoss,
)

SPEC = Bounded(-torch.ones(ACT_DIM), torch.ones(ACT_DIM), (ACT_DIM,))


# -------------------------------------------------------------------- builders
def _s2vg(**kwargs):
    loss = make_s2vg(**kwargs)
    SoftUpdate(loss, tau=0.1)
    return loss


def _svg0(**kwargs):
    loss = make_svg0(**kwargs)
    SoftUpdate(loss, tau=0.1)
    return loss


def _svg(**kwargs):
    loss = make_svg(**kwargs)
    HardUpdate(loss, value_network_update_interval=5)
    return loss


def _svg1(**kwargs):
    nets = _networks(OBS_DIM, ACT_DIM, {})
    loss = SVG1Loss(nets["actor"], nets["value"], nets["dynamics"], nets["reward"], **kwargs)
    loss.make_value_estimator(gamma=0.9)
    HardUpdate(loss, value_network_update_interval=5)
    return loss


def _svginf(**kwargs):
    nets = _networks(OBS_DIM, ACT_DIM, {})
    loss = SVGInfLoss(nets["actor"], nets["dynamics"], nets["reward"], **kwargs)
    loss.make_value_estimator(gamma=0.9)
    return loss


def _world_model(**kwargs):
    nets = _networks(OBS_DIM, ACT_DIM, {})
    return GaussianWorldModelLoss(nets["dynamics"], nets["reward"], **kwargs)


def _actor(obs_dim: int = OBS_DIM, spec=SPEC):
    return make_actor(obs_dim, spec, hidden_sizes=(8,))


def _dynamics():
    return GaussianDynamics(OBS_DIM, ACT_DIM, hidden_sizes=(8,))


def _reward():
    return RewardModel(OBS_DIM, ACT_DIM, hidden_sizes=(8,))


# name, builder, valid batch shape, how to call it
LOSSES = [
    ("S2VGLoss", _s2vg, (8,)),
    ("SVG0Loss", _svg0, (8,)),
    ("SVGLoss", lambda **kw: _svg(horizon=2, **kw), (4, 2)),
    ("SVG1Loss", _svg1, (8,)),
    ("SVGInfLoss", _svginf, (2, 5)),
    ("GaussianWorldModelLoss", _world_model, (8,)),
]
TRANSFORMS = [
    ("ImportanceWeight", lambda **kw: ImportanceWeight(_actor(), **kw)),
    ("PolicyNoiseInference", lambda **kw: PolicyNoiseInference(_actor(), **kw)),
    ("ModelNoiseInference", lambda **kw: ModelNoiseInference(_dynamics(), **kw)),
    ("ModelRollout", lambda **kw: ModelRollout(_actor(), _dynamics(), _reward(), steps=2, **kw)),
]
LOSS_IDS = [name for name, *_ in LOSSES]
TRANSFORM_IDS = [name for name, _ in TRANSFORMS]


# ------------------------------------------------------------------ missing keys
@pytest.mark.parametrize(("name", "build", "shape"), LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("key", ["observation", "action", ("next", "observation")])
def test_missing_entry_raises_key_error_naming_the_entry_and_the_loss(name, build, shape, key):
    data = make_batch(shape).exclude(key)
    with pytest.raises(
        KeyError, match=re.escape(f"{name} needs the entry {key!r}, which is missing")
    ):
        build()(data)


@pytest.mark.parametrize(("name", "build"), TRANSFORMS, ids=TRANSFORM_IDS)
def test_transforms_name_a_missing_entry(name, build):
    key = ("next", "observation") if name in ("ModelNoiseInference", "ModelRollout") else "action"
    with pytest.raises(KeyError, match=re.escape(f"{name} needs the entry {key!r}")):
        build()(make_batch((8,)).exclude(key))


def test_terminated_is_needed_and_done_does_not_stand_in_for_it():
    loss = _s2vg(learned_termination=False)
    loss(make_batch().exclude(("next", "done")))  # terminated is there
    message = re.escape("S2VGLoss needs the entry ('next', 'terminated')")
    with pytest.raises(KeyError, match=message):
        loss(make_batch().exclude(("next", "terminated")))


def test_svg_needs_the_behaviour_log_prob_unless_weights_are_stored_or_off():
    data = make_batch().exclude("action_log_prob")
    with pytest.raises(KeyError, match="SVGLoss needs the entry 'action_log_prob'"):
        _svg()(data)
    _svg(importance_weights=False)(data)
    _svg()(data.update({"importance_weight": torch.ones(8)}))


# ------------------------------------------------------------------------ shapes
def test_wrong_trailing_size_names_the_entry_and_both_shapes():
    data = make_batch(act_dim=ACT_DIM + 1)
    with pytest.raises(
        ValueError,
        match=r"S2VGLoss: entry 'action' has shape \(8, 3\), expected a trailing dimension of 2 "
        r"\(shape \(8, 2\) for the batch shape \(8,\)\)",
    ):
        _s2vg()(data)


@pytest.mark.parametrize(("name", "build", "shape"), LOSSES, ids=LOSS_IDS)
def test_reward_without_its_trailing_dimension_is_refused(name, build, shape):
    data = make_batch(shape)
    data["next", "reward"] = data["next", "reward"].squeeze(-1)
    expected = re.escape(
        f"{name}: entry ('next', 'reward') has shape {tuple(shape)}, expected shape {(*shape, 1)}"
    )
    with pytest.raises(ValueError, match=expected):
        build()(data)


def test_batch_size_that_does_not_fit_the_entries_names_both_shapes():
    data = make_batch((8,))
    flat = TensorDict(data.to_dict(), batch_size=[])  # entries [8, F] in a batch of shape ()
    with pytest.raises(
        ValueError, match=r"entry 'observation' has shape \(8, 4\), expected shape \(4,\)"
    ):
        _svg0()(flat)


def test_methods_that_need_a_time_dimension_say_so():
    with pytest.raises(ValueError, match=r"needs sub-trajectories of batch shape \[\*B, 2\]"):
        _svg(horizon=2)(make_batch((8,)))
    with pytest.raises(ValueError, match=r"SVGInfLoss: the batch shape \(\) has 0 dimension"):
        _svginf()(make_batch((2, 5))[0, 0])


def test_entries_of_unknown_size_must_agree_with_each_other():
    entries = [Entry("observation", "obs_dim"), Entry(("next", "observation"), "obs_dim")]
    data = make_batch()
    data["next", "observation"] = torch.zeros(8, OBS_DIM + 1)
    with pytest.raises(
        ValueError,
        match=r"entry \('next', 'observation'\) has shape \(8, 5\) but 'observation' has shape "
        r"\(8, 4\): their trailing dimensions \(obs_dim\) must agree",
    ):
        validate("MyLoss", data, entries)


def test_optional_entries_are_checked_when_present():
    data = make_batch((4, 2))
    data["policy_noise"] = torch.zeros(4, 2, ACT_DIM + 1)
    with pytest.raises(ValueError, match="SVGLoss: entry 'policy_noise' has shape"):
        _svg(horizon=2)(data)
    data = make_batch()
    data["priority_weight"] = torch.ones(8, dtype=torch.complex64)
    with pytest.raises(TypeError, match="SVG0Loss: entry 'priority_weight' has dtype"):
        _svg0()(data)


# ------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float16, torch.complex64])
def test_wrong_dtype_names_the_entry_and_both_dtypes(dtype):
    data = make_batch()
    data["observation"] = data["observation"].to(dtype)
    expected = re.escape(f"S2VGLoss: entry 'observation' has dtype {dtype}, expected torch.float32")
    with pytest.raises(TypeError, match=expected):
        _s2vg()(data)


def test_flags_take_any_real_dtype_but_not_complex():
    loss = _s2vg()
    data = make_batch()
    data["next", "terminated"] = data["next", "terminated"].long()
    data["next", "done"] = data["next", "done"].float()
    loss(data)
    data["next", "terminated"] = data["next", "terminated"].to(torch.complex64)
    with pytest.raises(TypeError, match=r"\('next', 'terminated'\) has dtype torch.complex64"):
        loss(data)


def test_the_expected_dtype_follows_the_loss_parameters():
    loss = _svg0()
    loss(make_batch())  # caches float32
    loss.double()
    with pytest.raises(TypeError, match=r"has dtype torch.float32, expected torch.float64"):
        loss(make_batch())
    out = loss(make_batch(dtype=torch.float64))
    assert out["loss_actor"].dtype == torch.float64


# ------------------------------------------------------------------- empty batch
@pytest.mark.parametrize(("name", "build", "shape"), LOSSES, ids=LOSS_IDS)
def test_empty_batch_is_refused_by_every_loss(name, build, shape):
    with pytest.raises(ValueError, match=f"{name}: empty batch"):
        build()(make_batch(shape)[:0])


@pytest.mark.parametrize(("name", "build"), TRANSFORMS, ids=TRANSFORM_IDS)
def test_empty_batch_is_refused_by_every_sample_transform(name, build):
    with pytest.raises(ValueError, match=f"{name}: empty batch"):
        build()(make_batch((8,))[:0])


def test_unflatten_slices_refuses_empty_and_ragged_samples():
    with pytest.raises(ValueError, match="UnflattenSlices: empty batch"):
        UnflattenSlices(2)(make_batch((4,))[:0])
    with pytest.raises(
        ValueError, match=r"batch shape \(5,\) \(5 transition\(s\)\) is not a whole"
    ):
        UnflattenSlices(2)(make_batch((5,)))


def test_normalizer_update_treats_an_empty_write_as_a_no_op():
    model = _dynamics()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    NormalizerUpdate(model).inv(make_batch((8,))[:0])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


# -------------------------------------------------------------------- non-finite
@pytest.mark.parametrize(("name", "build", "shape"), LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_non_finite_input_is_refused_naming_the_entry(name, build, shape, fill):
    data = make_batch(shape)
    data["next", "observation"].view(-1)[3] = fill
    with pytest.raises(
        ValueError, match=rf"{name}: entry \('next', 'observation'\) holds 1 non-finite value"
    ):
        build()(data)


def test_a_refused_batch_is_left_unchanged():
    data = make_batch()
    data["action"][0, 0] = float("nan")
    reference = data.clone()
    with pytest.raises(ValueError, match="'action' holds 1 non-finite"):
        _s2vg()(data)
    assert set(data.keys(True, True)) == set(reference.keys(True, True))  # no td_error written
    assert (data == reference).exclude("action").all()


def test_check_finite_false_lets_the_nan_reach_the_loss_outputs():
    data = make_batch()
    data["next", "reward"][0] = float("nan")
    out = _s2vg(check_finite=False)(data)
    assert not torch.isfinite(out["loss_qvalue"])  # reported by the guarded update, never silent
    loss = _s2vg()
    loss.check_finite = False  # also a settable attribute
    assert not torch.isfinite(loss(data)["loss_qvalue"])


def test_finiteness_is_not_checked_while_compiling(monkeypatch):
    data = make_batch()
    data["next", "reward"][0] = float("nan")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = _s2vg(check_finite=True)(data)
    assert not torch.isfinite(out["loss_qvalue"])


def test_default_finiteness_check_costs_no_device_sync():
    # entries off the CPU: the default skips the check (it would synchronise the device)
    meta = torch.empty(4, 3, device="meta")
    check_finite_entries("MyLoss", [("observation", meta)], None)
    check_finite_entries("MyLoss", [("observation", torch.full((4, 3), float("nan")))], False)
    with pytest.raises(ValueError, match="MyLoss: entry 'observation' holds 12 non-finite"):
        check_finite_entries("MyLoss", [("observation", torch.full((4, 3), float("nan")))], None)


@pytest.mark.parametrize(("name", "build"), TRANSFORMS, ids=TRANSFORM_IDS)
def test_transforms_refuse_non_finite_inputs(name, build):
    data = make_batch((8,))
    key = ("next", "observation") if name in ("ModelNoiseInference", "ModelRollout") else "action"
    data.get(key)[0, 0] = float("nan")
    with pytest.raises(
        ValueError, match=rf"{name}: entry {re.escape(repr(key))} holds 1 non-finite"
    ):
        build()(data)


def test_normalizer_update_refuses_non_finite_writes_and_keeps_its_statistics():
    model = _dynamics()
    data = make_batch((8,))
    data["observation"][2, 1] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match="NormalizerUpdate: entry 'observation' holds 1 non-finite"
    ):
        NormalizerUpdate(model).inv(data)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


# ------------------------------------------------------------------ constructors
def _categorical_actor():
    module = TensorDictModule(nn.Linear(OBS_DIM, 3), in_keys=["observation"], out_keys=["logits"])
    return ProbabilisticActor(
        module, in_keys=["logits"], distribution_class=torch.distributions.Categorical
    )


def _one_hot_actor():
    module = TensorDictModule(nn.Linear(OBS_DIM, 3), in_keys=["observation"], out_keys=["logits"])
    return ProbabilisticActor(module, in_keys=["logits"], distribution_class=OneHotCategorical)


def _delta_actor():
    module = TensorDictModule(
        nn.Linear(OBS_DIM, ACT_DIM), in_keys=["observation"], out_keys=["param"]
    )
    return ProbabilisticActor(module, in_keys=["param"], distribution_class=Delta)


def _gaussian_actor(distribution_class, **kwargs):
    net = nn.Sequential(nn.Linear(OBS_DIM, 2 * ACT_DIM), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module, in_keys=["loc", "scale"], distribution_class=distribution_class, **kwargs
    )


def _with_actor(actor, spec=None):
    """Every constructor that takes a policy, as ``(name, thunk)``."""
    nets = _networks(OBS_DIM, ACT_DIM, {})
    dyn, rew, q, v = nets["dynamics"], nets["reward"], nets["qvalue"], nets["value"]
    return [
        ("S2VGLoss", lambda: S2VGLoss(actor, q, v, dyn, rew, action_spec=spec)),
        ("SVG0Loss", lambda: SVG0Loss(actor, q, action_spec=spec)),
        ("SVGLoss", lambda: SVGLoss(actor, v, dyn, rew, horizon=2, action_spec=spec)),
        ("SVG1Loss", lambda: SVG1Loss(actor, v, dyn, rew, action_spec=spec)),
        ("SVGInfLoss", lambda: SVGInfLoss(actor, dyn, rew, action_spec=spec)),
        ("ImportanceWeight", lambda: ImportanceWeight(actor, action_spec=spec)),
        ("PolicyNoiseInference", lambda: PolicyNoiseInference(actor, action_spec=spec)),
        ("ModelRollout", lambda: ModelRollout(actor, dyn, rew, steps=1, action_spec=spec)),
    ]


POLICY_OWNERS = [name for name, _ in _with_actor(None)]


@pytest.mark.parametrize("owner", POLICY_OWNERS)
@pytest.mark.parametrize(
    ("make", "dist_name"),
    [
        (_categorical_actor, "Categorical"),
        (_one_hot_actor, "OneHotCategorical"),
        (_delta_actor, "Delta"),
    ],
)
def test_policies_that_are_not_location_scale_are_refused(owner, make, dist_name):
    build = dict(_with_actor(make()))[owner]
    with pytest.raises(
        TypeError,
        match=rf"{owner}: actor(_network)? draws its actions from {dist_name}, which is not a "
        "location-scale distribution",
    ):
        build()


@pytest.mark.parametrize(
    "actor",
    [
        _gaussian_actor(torch.distributions.Normal),
        _gaussian_actor(IndependentNormal),
        _gaussian_actor(TanhNormal, distribution_kwargs={"low": -1.0, "high": 1.0}),
        # a factory, not a class: checked when the policy is inverted
        _gaussian_actor(lambda loc, scale: IndependentNormal(loc, scale)),
    ],
    ids=["Normal", "IndependentNormal", "TanhNormal", "factory"],
)
def test_location_scale_policies_are_accepted_and_work(actor):
    for _, build in _with_actor(actor):
        build()
    loss = SVG0Loss(actor, _networks(OBS_DIM, ACT_DIM, {})["qvalue"])
    loss.make_value_estimator(gamma=0.9)
    SoftUpdate(loss, tau=0.1)
    out = loss(make_batch())
    assert torch.isfinite(out["loss_actor"]) and torch.isfinite(out["loss_qvalue"])


@pytest.mark.parametrize("owner", POLICY_OWNERS)
def test_action_bounds_that_differ_from_the_env_spec_are_refused_naming_both(owner):
    wide = Bounded(-2 * torch.ones(ACT_DIM), 2 * torch.ones(ACT_DIM), (ACT_DIM,))
    build = dict(_with_actor(_actor(), spec=wide))[owner]
    with pytest.raises(
        ValueError,
        match=rf"{owner}: the TanhNormal bounds of actor(_network)? \(low=\[-1.0, -1.0\], "
        r"high=\[1.0, 1.0\]\) do not match the environment action spec \(low=\[-2.0, -2.0\], "
        r"high=\[2.0, 2.0\]\)",
    ):
        build()


@pytest.mark.parametrize(
    "spec",
    [SPEC, Composite(action=SPEC), Unbounded((ACT_DIM,))],
    ids=["bounded", "composite", "unbounded"],
)
def test_matching_or_unbounded_specs_are_accepted(spec):
    for _, build in _with_actor(_actor(), spec=spec):
        build()


def test_an_actor_whose_bounds_differ_from_its_own_spec_is_refused():
    actor = _gaussian_actor(
        TanhNormal, spec=Bounded(-2.0, 2.0, (ACT_DIM,)), distribution_kwargs={"tanh_loc": False}
    )
    with pytest.raises(ValueError, match=r"do not match the actor's own action spec"):
        SVG0Loss(actor, _networks(OBS_DIM, ACT_DIM, {})["qvalue"])


def test_action_and_observation_sizes_are_cross_checked():
    q = _networks(OBS_DIM, ACT_DIM, {})["qvalue"]
    with pytest.raises(
        ValueError,
        match=r"actor action spec has shape \(2,\) but environment action spec has shape \(3,\)",
    ):
        SVG0Loss(_actor(), q, action_spec=Bounded(-1.0, 1.0, (3,)))
    with pytest.raises(
        ValueError,
        match=r"actor observation has shape \(5,\) but dynamics_model observation has shape \(4,\)",
    ):
        SVGInfLoss(_actor(obs_dim=OBS_DIM + 1), _dynamics(), _reward())


def test_models_without_get_dist_are_refused():
    for build in (
        lambda: GaussianWorldModelLoss(make_value(OBS_DIM)),
        lambda: SVGInfLoss(_actor(), make_value(OBS_DIM), _reward()),
        lambda: ModelNoiseInference(make_value(OBS_DIM)),
    ):
        with pytest.raises(TypeError, match="dynamics_model must provide get_dist"):
            build()


def test_validate_input_is_public_and_passes_a_valid_batch():
    for _, build, shape in LOSSES:
        build().validate_input(make_batch(shape))
