"""The constructor keywords and tensordict keys of each loss: exactly these, with these defaults.

The options every loss shares (``reduction``, ``action_spec``, ``check_finite`` and, for
the losses that regress a critic, ``loss_function``) are taken as ``**options`` and
checked at run time: an unknown keyword raises ``TypeError`` as a missing parameter would.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
from conftest import make_s2vg, make_svg, make_svg0, make_svginf

from torchrl_svg.objectives import S2VGLoss, SVG0Loss, SVG1Loss, SVGInfLoss, SVGLoss
from torchrl_svg.objectives._base import OPTION_DEFAULTS

POSITIONAL = {
    SVG0Loss: {"actor_network": inspect.Parameter.empty, "qvalue_network": inspect.Parameter.empty},
    SVGInfLoss: dict.fromkeys(
        ("actor_network", "dynamics_model", "reward_model"), inspect.Parameter.empty
    ),
    SVGLoss: dict.fromkeys(
        ("actor_network", "value_network", "dynamics_model", "reward_model"),
        inspect.Parameter.empty,
    ),
    S2VGLoss: {
        **dict.fromkeys(
            ("actor_network", "qvalue_network", "value_network", "dynamics_model", "reward_model"),
            inspect.Parameter.empty,
        ),
        "termination_model": None,
    },
}

SHARED = {"reduction": "mean", "action_spec": None, "check_finite": None}

KEYWORDS = {
    SVG0Loss: {"num_qvalue_nets": 1, "noise": "inferred", "loss_function": "l2", **SHARED},
    SVGInfLoss: {"noise": "inferred", **SHARED},
    SVGLoss: {
        "horizon": 1,
        "max_importance_weight": 5.0,
        "importance_weights": True,
        "noise": "inferred",
        "kl_coef": 0.0,
        "kl_direction": "current_reference",
        "loss_function": "l2",
        **SHARED,
    },
    S2VGLoss: {
        "num_qvalue_nets": 2,
        "horizon": 1,
        "alpha_init": 0.2,
        "fixed_alpha": False,
        "target_entropy": "auto",
        "min_alpha": None,
        "max_alpha": None,
        "loss_function": "l2",
        "expansion_entropy": True,
        "actor_horizon": 1,
        "actor_model_noise": True,
        "observation_bounds": None,
        "disagreement_bound": None,
        "ensemble_members": "step",
        "expansion_ensemble_mean": False,
        "deactivate_vmap": False,
        **SHARED,
    },
}

TRANSITION = {
    "observation": "observation",
    "action": "action",
    "reward": "reward",
    "done": "done",
    "terminated": "terminated",
}
UNROLL = {
    **TRANSITION,
    "action_pre_tanh": "action_pre_tanh",
    "policy_noise": "policy_noise",
    "model_noise": "model_noise",
    "model_member": "ensemble_member",
}
TENSOR_KEYS = {
    SVG0Loss: {
        **TRANSITION,
        "state_action_value": "state_action_value",
        "action_pre_tanh": "action_pre_tanh",
        "policy_noise": "policy_noise",
        "priority": "td_error",
        "priority_weight": "priority_weight",
    },
    SVGInfLoss: UNROLL,
    SVGLoss: {
        **UNROLL,
        "value": "state_value",
        "sample_log_prob": "action_log_prob",
        "importance_weight": "importance_weight",
        "priority_weight": "priority_weight",
    },
    SVG1Loss: {
        **UNROLL,
        "value": "state_value",
        "sample_log_prob": "action_log_prob",
        "importance_weight": "importance_weight",
        "priority_weight": "priority_weight",
    },
    S2VGLoss: {
        **TRANSITION,
        "value": "state_value",
        "state_action_value": "state_action_value",
        "priority": "td_error",
        "priority_weight": "priority_weight",
        "imagined": "imagined",
    },
}

MAKERS = {SVG0Loss: make_svg0, SVGInfLoss: make_svginf, SVGLoss: make_svg, S2VGLoss: make_s2vg}
LOSSES = list(MAKERS)
IDS = [cls.__name__ for cls in LOSSES]


@pytest.mark.parametrize("cls", LOSSES, ids=IDS)
def test_the_signature_lists_every_keyword_with_its_default(cls):
    parameters = inspect.signature(cls).parameters
    positional = {
        name: p.default for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD
    }
    keywords = {name: p.default for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    # the shared options are ``**options: Unpack[<its options TypedDict>]``, defaulted in one table
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    shared = {name: OPTION_DEFAULTS[name] for name in cls._options_type.__annotations__}
    assert positional == POSITIONAL[cls]
    assert {**keywords, **shared} == KEYWORDS[cls]
    assert not set(keywords) & set(shared)
    assert set(parameters) == set(positional) | set(keywords) | {"options"}


@pytest.mark.parametrize("cls", LOSSES, ids=IDS)
def test_the_docstring_documents_every_keyword(cls):
    doc = inspect.getdoc(cls)
    section = doc.split("Keyword Args:\n", 1)[1]
    lines = []
    for line in section.splitlines():
        if line.strip() and not line.startswith(" "):
            break  # the next section
        lines.append(line)
    text = "\n".join(lines)
    for name in KEYWORDS[cls]:
        assert re.search(rf"\b{name}\b", text), f"{cls.__name__} does not document {name}"


@pytest.mark.parametrize("cls", LOSSES, ids=IDS)
def test_the_options_take_their_defaults_and_are_stored(cls):
    make = MAKERS[cls]
    loss = make()
    assert loss.reduction == "mean"
    assert loss.check_finite is None
    if "loss_function" in KEYWORDS[cls]:
        assert loss.loss_function == "l2"
        loss = make(reduction="sum", check_finite=False, loss_function="smooth_l1")
        assert loss.loss_function == "smooth_l1"
    else:
        assert not hasattr(loss, "loss_function")
        loss = make(reduction="sum", check_finite=False)
    assert loss.reduction == "sum"
    assert loss.check_finite is False
    with pytest.raises(ValueError, match="reduction must be"):
        make(reduction="average")


@pytest.mark.parametrize("cls", LOSSES, ids=IDS)
def test_an_unknown_keyword_raises_type_error_naming_the_loss(cls):
    message = rf"{cls.__name__}.__init__\(\) got an unexpected keyword argument 'reductoin'"
    with pytest.raises(TypeError, match=message):
        MAKERS[cls](reductoin="sum")


def test_a_keyword_of_another_loss_is_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'loss_function'"):
        make_svginf(loss_function="l2")  # SVG(inf) regresses no critic
    with pytest.raises(TypeError, match="unexpected keyword argument 'noise'"):
        make_s2vg(noise="sampled")


def test_svg1_refuses_unknown_keywords_and_a_horizon():
    with pytest.raises(TypeError, match="SVG1Loss.__init__\\(\\) got an unexpected keyword"):
        SVG1Loss(*_svg_networks(), reductoin="sum")
    with pytest.raises(TypeError, match="horizon 1"):
        SVG1Loss(*_svg_networks(), horizon=2)


def _svg_networks():
    loss = make_svg()
    return loss.actor_network, loss.value_network, loss.dynamics_model, loss.reward_model


@pytest.mark.parametrize("cls", [*LOSSES, SVG1Loss], ids=[*IDS, "SVG1Loss"])
def test_tensor_keys_are_exactly_the_documented_ones(cls):
    assert cls.default_keys is cls._AcceptedKeys or cls is SVG1Loss
    assert dataclasses.asdict(cls.default_keys()) == TENSOR_KEYS[cls]
    assert set(cls._AcceptedKeys.__dataclass_fields__) == set(TENSOR_KEYS[cls])


@pytest.mark.parametrize("cls", LOSSES, ids=IDS)
def test_set_keys_to_none_restores_the_default(cls):
    loss = MAKERS[cls]()
    for name, default in TENSOR_KEYS[cls].items():
        loss.set_keys(**{name: "renamed"})
        assert getattr(loss.tensor_keys, name) == "renamed"
        loss.set_keys(**{name: None})
        assert getattr(loss.tensor_keys, name) == default
    assert dataclasses.asdict(loss.tensor_keys) == TENSOR_KEYS[cls]
