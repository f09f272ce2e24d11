"""SVG-family LossModules, the world-model loss and the noise-inference helpers.

Input validation: the exception contract
-----------------------------------------
Every loss here (its ``forward``) and every replay transform of
:mod:`torchrl_svg.data` checks its input TensorDict before computing anything
and refuses a bad one with one of three exception types; each message names the
loss or transform and the offending entry:

* **missing entry** -> :class:`KeyError` naming the entry and the loss, with the
  keys that are present;
* **wrong dtype** -> :class:`TypeError` naming the entry, its dtype and the
  expected one. Observations, actions, rewards, log-probabilities and noises
  must have the floating dtype of the module's parameters (an integer, boolean,
  complex, float16 or float64 entry in a float32 loss is refused); flags
  (``done``, ``terminated``, masks) may be boolean, integer or real floating;
* **wrong shape** -> :class:`ValueError` naming the entry, its shape and the
  expected shape: ``[*B, F]`` with ``[*B]`` the tensordict's batch size and
  ``F`` the feature size the networks were built for (``[*B, 1]`` for rewards
  and flags, ``[*B]`` or ``[*B, 1]`` for per-sample values such as
  ``action_log_prob``), or a batch shape the loss cannot use (``SVGLoss(horizon=k)``
  needs ``[*B, k]``, ``SVGInfLoss`` ``[*B, T]``);
* **empty batch** (a zero in the batch shape) -> :class:`ValueError` saying
  ``"empty batch"`` (a mean over no samples would be a silent NaN). Only
  :class:`~torchrl_svg.data.NormalizerUpdate` accepts empty writes, as a no-op;
* **NaN or inf in an entry** -> :class:`ValueError` naming the entry, when
  finiteness is checked, which ``check_finite`` (a keyword of every loss and
  transform, also a settable attribute) controls:

  - ``None``, the default: checked when it is free, i.e. the entries are on the
    CPU (reading them needs no device synchronisation) and the call is not
    traced by :func:`torch.compile`. On an accelerator the default adds no
    host-device sync to the update: a non-finite input then makes the
    ``loss_*`` entries non-finite, which the training recipe's guarded update
    reports (:class:`~torchrl_svg.NonFiniteLossError`, naming the entries) and
    never applies; the recipe also drops non-finite transitions before they
    enter the replay buffer. Either way a NaN input is never silent.
  - ``True``: always checked in eager mode (one reduction and one host read per
    call); still skipped under compile and CUDA-graph capture.
  - ``False``: never checked (NaN inputs give non-finite losses).

The structural checks (keys, dtypes, shapes, empty batch) read metadata only:
no kernel, no synchronisation, traced away by :func:`torch.compile`. Only the
finiteness check reads values, in one fused reduction per dtype.

Constructors refuse, with a message, a policy that is not location-scale (the
losses infer its noise from replayed actions and re-parameterise through it: a
``ProbabilisticActor`` over a Categorical, OneHotCategorical, Delta, ...
distribution raises :class:`TypeError`), TanhNormal bounds that differ from the
environment's ``action_spec`` when one is given (else from the actor's own
spec), and action or observation sizes on which the actor, the spec and the
world models disagree (:class:`ValueError` naming both sides).
"""

from torchrl_svg.objectives.noise import LocationScale, location_scale
from torchrl_svg.objectives.s2vg import S2VGLoss
from torchrl_svg.objectives.svg import SVG0Loss, SVG1Loss, SVGInfLoss, SVGLoss
from torchrl_svg.objectives.utils import HardUpdate
from torchrl_svg.objectives.world_model import GaussianWorldModelLoss

__all__ = [
    "GaussianWorldModelLoss",
    "HardUpdate",
    "LocationScale",
    "S2VGLoss",
    "SVG0Loss",
    "SVG1Loss",
    "SVGInfLoss",
    "SVGLoss",
    "location_scale",
]
