"""Fuzz every loss and replay transform with malformed TensorDicts.

Each case starts from a valid batch and breaks one thing: a required entry is
dropped, an entry gets the wrong dtype, the wrong trailing shape or a NaN/inf,
the batch is empty or its batch shape does not fit the entries. The contract
(see :mod:`torchrl_svg.objectives`): the call either works and its outputs are
finite, or it raises a ``KeyError``, ``ValueError`` or ``TypeError`` whose
message names the loss/transform and the offending entry (or, for a
batch-level fault, says what is wrong with the batch shape). Any other
exception, or a NaN in an output, fails the test.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, make_batch, make_s2vg, make_svg, make_svg0, make_svginf
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded
from torchrl.objectives import HardUpdate, SoftUpdate

from torchrl_svg.data import (
    ImportanceWeight,
    ModelNoiseInference,
    ModelRollout,
    NormalizerUpdate,
    PolicyNoiseInference,
    UnflattenSlices,
)
from torchrl_svg.modules import GaussianDynamics, LearnedTermination, RewardModel, make_actor
from torchrl_svg.objectives import GaussianWorldModelLoss

DOCUMENTED = (KeyError, ValueError, TypeError)


def _actor():
    spec = Bounded(-torch.ones(ACT_DIM), torch.ones(ACT_DIM), (ACT_DIM,))
    return make_actor(OBS_DIM, spec, hidden_sizes=(8,))


def _dynamics():
    return GaussianDynamics(OBS_DIM, ACT_DIM, hidden_sizes=(8,))


def _reward():
    return RewardModel(OBS_DIM, ACT_DIM, hidden_sizes=(8,))


def _float_leaves(td: TensorDictBase) -> list[torch.Tensor]:
    return [v for v in td.values(True, True) if v.is_floating_point()]


def _loss_outputs(loss, td: TensorDictBase) -> list[torch.Tensor]:
    return _float_leaves(loss(td))


def _written(key) -> Callable:
    def run(transform, td: TensorDictBase) -> list[torch.Tensor]:
        value = transform(td).get(key)
        return _float_leaves(value) if isinstance(value, TensorDictBase) else [value]

    return run


def _normalizer_update(transform: NormalizerUpdate, td: TensorDictBase) -> list[torch.Tensor]:
    transform.inv(td)
    return [b for m in transform.models for b in m.buffers() if b.is_floating_point()]


def _unflatten(transform: UnflattenSlices, td: TensorDictBase) -> list[torch.Tensor]:
    out = transform(td)
    assert out.shape[-1] == transform.slice_len
    return []


def _with_updater(make, hard: bool = False, **kwargs):
    def build():
        loss = make(**kwargs)
        if hard:
            HardUpdate(loss, value_network_update_interval=5)
        else:
            SoftUpdate(loss, tau=0.1)
        return loss

    return build


@dataclass
class Target:
    """A loss or transform, how to build it, its valid batch shape and how to call it."""

    name: str
    build: Callable[[], object]
    batch_shape: tuple[int, ...]
    run: Callable[[object, TensorDictBase], list[torch.Tensor]] = _loss_outputs


TARGETS = [
    Target("S2VGLoss", _with_updater(make_s2vg), (6,)),
    Target("S2VGLoss-h2", _with_updater(make_s2vg, horizon=2, learned_termination=False), (6,)),
    Target(
        "GaussianWorldModelLoss",
        lambda: GaussianWorldModelLoss(
            _dynamics(), _reward(), LearnedTermination(OBS_DIM, hidden_sizes=(8,))
        ),
        (6,),
    ),
    Target("SVG0Loss", _with_updater(make_svg0), (6,)),
    Target("SVGLoss-h1", _with_updater(make_svg, hard=True, horizon=1), (6,)),
    Target("SVGLoss-h3", _with_updater(make_svg, hard=True, horizon=3), (2, 3)),
    Target("SVGInfLoss", make_svginf, (2, 4)),
    Target(
        "ImportanceWeight",
        lambda: ImportanceWeight(_actor()),
        (6,),
        _written("importance_weight"),
    ),
    Target(
        "PolicyNoiseInference",
        lambda: PolicyNoiseInference(_actor()),
        (6,),
        _written("policy_noise"),
    ),
    Target(
        "ModelNoiseInference",
        lambda: ModelNoiseInference(_dynamics()),
        (6,),
        _written("model_noise"),
    ),
    Target(
        "ModelRollout",
        lambda: ModelRollout(_actor(), _dynamics(), _reward(), steps=2),
        (6,),
        _written("imagined"),
    ),
    Target(
        "NormalizerUpdate",
        lambda: NormalizerUpdate(
            _dynamics(), _reward(), LearnedTermination(OBS_DIM, hidden_sizes=(8,))
        ),
        (6,),
        _normalizer_update,
    ),
    Target("UnflattenSlices", lambda: UnflattenSlices(2), (6,), _unflatten),
]


# --------------------------------------------------------------------- the cases
@dataclass
class Case:
    """One malformed batch: how to derive it from a valid one and what its error must name."""

    name: str
    corrupt: Callable[[TensorDictBase, torch.Generator], TensorDictBase]
    mentions: tuple[str, ...]  # an error message must contain one of these


def _key_name(key) -> str:
    return "-".join(key) if isinstance(key, tuple) else key


def _replace(key, fn) -> Callable:
    def corrupt(td: TensorDictBase, gen: torch.Generator) -> TensorDictBase:
        out = td.clone()
        out.set(key, fn(td.get(key), gen))
        return out

    return corrupt


def _drop(key) -> Callable:
    return lambda td, gen: td.exclude(key)


def _non_finite(fill: float) -> Callable:
    def corrupt(value: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        value = value.clone()
        flat = value.view(-1)
        flat[torch.randint(flat.numel(), (1,), generator=gen)] = fill
        return value

    return corrupt


DTYPES = {
    "int64": lambda v, gen: v.round().to(torch.int64) if v.is_floating_point() else v.long(),
    "bool": lambda v, gen: v != 0,
    "float16": lambda v, gen: v.to(torch.float16),
    "float64": lambda v, gen: v.to(torch.float64),
    "complex64": lambda v, gen: v.to(torch.complex64),
}
SHAPES = {
    "wider": lambda v, gen: torch.cat([v, v[..., :1]], -1),
    "extra-dim": lambda v, gen: v.unsqueeze(-2).expand(*v.shape[:-1], 2, v.shape[-1]).clone(),
}
NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _batch_cases(batch_shape: tuple[int, ...]) -> Iterator[Case]:
    batch_words = ("batch", "shape")
    yield Case("empty-batch", lambda td, gen: td[:0], ("empty batch",))
    yield Case(
        "batch-dim-dropped",
        lambda td, gen: TensorDict(td.to_dict(), batch_size=td.batch_size[:-1]),
        batch_words,
    )
    if len(batch_shape) > 1:
        yield Case("batch-flattened", lambda td, gen: td.reshape(-1), batch_words)
    else:
        yield Case("batch-2d", lambda td, gen: td.reshape(2, -1), batch_words)


def cases(batch_shape: tuple[int, ...]) -> Iterator[Case]:
    """Every malformed variant of the valid batch of ``batch_shape``."""
    valid = make_batch(batch_shape)
    yield Case("valid", lambda td, gen: td, ())
    yield from _batch_cases(batch_shape)
    for key, value in valid.items(True, True):
        name = _key_name(key)
        mentions = (repr(key),)
        yield Case(f"drop-{name}", _drop(key), mentions)
        for dtype, fn in DTYPES.items():
            if value.dtype != getattr(torch, dtype):
                yield Case(f"{dtype}-{name}", _replace(key, fn), mentions)
        for shape, fn in SHAPES.items():
            if value.ndim > valid.ndim:
                yield Case(f"{shape}-{name}", _replace(key, fn), mentions)
        if value.ndim > valid.ndim:
            yield Case(f"squeezed-{name}", _replace(key, lambda v, gen: v[..., 0]), mentions)
        else:
            yield Case(
                f"unsqueezed-{name}", _replace(key, lambda v, gen: v.unsqueeze(-1)), mentions
            )
        if value.is_floating_point():
            for label, fill in NON_FINITE.items():
                yield Case(f"{label}-{name}", _replace(key, _non_finite(fill)), mentions)


PARAMS = [
    pytest.param(target, case, id=f"{target.name}-{case.name}")
    for target in TARGETS
    for case in cases(target.batch_shape)
]


@pytest.mark.parametrize(("target", "case"), PARAMS)
def test_malformed_input_works_or_raises_a_documented_error(target: Target, case: Case):
    gen = torch.Generator().manual_seed(zlib.crc32(case.name.encode()))
    obj = target.build()
    data = case.corrupt(make_batch(target.batch_shape), gen)
    try:
        outputs = target.run(obj, data)
    except DOCUMENTED as err:
        message = str(err)
        assert case.name != "valid", f"the valid batch raised: {message}"
        owner = target.name.split("-")[0]
        assert owner in message, f"{type(err).__name__} does not name {owner}: {message}"
        assert any(m in message for m in case.mentions), (
            f"{type(err).__name__} does not name any of {case.mentions}: {message}"
        )
    except Exception as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"undocumented {type(err).__name__}: {err}")
    else:
        for value in outputs:
            assert torch.isfinite(value).all(), f"non-finite output {value}"
