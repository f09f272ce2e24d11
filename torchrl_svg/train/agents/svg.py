"""What the SVG family's agents share: the policy's optimiser and step, and SVGAgent.

:class:`SVGAgent` is SVG(1), SVG(1)-ER and SVG(k) with a learned model and a V critic; each
algorithm is a subclass in its own module (``svg1.py``, ``svg1_er.py``, ``svgk.py``), beside
``svg0.py`` and ``svginf.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from tensordict import TensorDict, TensorDictBase
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule

from torchrl_svg.objectives import HardUpdate, SVGLoss
from torchrl_svg.train.agents.base import (
    Agent,
    GuardedUpdate,
    WorldModel,
    make_adam,
    make_policy,
    make_state_value,
    make_update,
    trainable,
)
from torchrl_svg.train.agents.updates import _transitions
from torchrl_svg.train.config import Config

__all__ = ["SVGAgent"]

#: the agents that lived in this module before each algorithm had its own (still importable)
_MOVED = {
    "SVG0Agent": "svg0",
    "SVG1Agent": "svg1",
    "SVG1ERAgent": "svg1_er",
    "SVGkAgent": "svgk",
    "SVGInfAgent": "svginf",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"torchrl_svg.train.agents.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _PolicyGradientAgent(Agent):
    """What SVG(1), SVG(k) and SVG(inf) share: the policy's own Adam and its clipped step."""

    def _policy_optimizer(self, loss: LossModule) -> None:
        """Take ``loss`` (discounting by ``loss.gamma``) and make the policy's Adam.

        Sets ``self.loss``, ``self._actor_params`` and ``self.actor_optimizer``
        (at ``optim.actor_lr``).
        """
        cfg = self.cfg
        self.loss = loss
        loss.make_value_estimator(gamma=cfg.loss.gamma)
        self._actor_params = trainable(loss.actor_network_params)
        self.actor_optimizer = make_adam(
            self._actor_params, cfg, self.device, lr=cfg.optim.actor_lr
        )

    def _policy_step(
        self,
        loss_fn: Callable[[TensorDictBase], TensorDictBase],
        keys: Sequence[str],
        *,
        eager: bool = False,
        validate: Callable[[TensorDictBase], None] | None = None,
    ) -> GuardedUpdate:
        """The guarded step of ``actor_optimizer``, clipped to ``svg.actor_max_grad_norm`` (App. D).

        ``eager=True``: neither compiled nor captured, whatever ``cfg.compile`` says.
        ``validate``: the loss's input check, for a ``loss_fn`` of its term methods.
        """
        step_kwargs = {
            "max_grad_norm": self.cfg.svg.actor_max_grad_norm,
            "kind": "policy",
            "validate": validate,
        }
        params = self._actor_params
        if eager:
            return GuardedUpdate(loss_fn, keys, self.actor_optimizer, params, **step_kwargs)
        return make_update(self.cfg, loss_fn, keys, self.actor_optimizer, params, **step_kwargs)


class SVGAgent(_PolicyGradientAgent):
    """SVG(1), SVG(1)-ER and SVG(k) (Algorithms 2 and 4) with a learned model and a V critic.

    Per collected batch of ``n`` environment steps: ``n * model.updates_per_step``
    model updates and ``n * svg.critic_updates_per_step`` value updates (fitted
    policy evaluation with truncated importance weights and a hard target copy
    every ``svg.value_target_interval`` updates), all from replay; then the policy:

    one update per freshly observed transition (:class:`SVG1Agent`), or
    ``n * svg.policy_updates_per_step`` importance-weighted updates on replay batches
    (:class:`SVG1ERAgent`; :class:`SVGkAgent` on real sub-trajectories).

    The policy gradient is clipped to ``svg.actor_max_grad_norm`` (App. D).

    The three algorithms are the subclasses :class:`SVG1Agent`, :class:`SVG1ERAgent` and
    :class:`SVGkAgent`, which differ only in :attr:`replays_policy` and :meth:`horizon`.
    ``SVGAgent(cfg, ...)`` itself builds the one of ``cfg.algorithm`` and is deprecated.
    """

    #: whether the policy learns from replay (importance-weighted) or fresh transitions
    replays_policy: ClassVar[bool] = False

    def __new__(cls, cfg: Config, *args: Any, **kwargs: Any) -> SVGAgent:
        """``SVGAgent`` itself: the subclass of ``cfg.algorithm`` (deprecated)."""
        if cls is SVGAgent:
            warnings.warn(
                "SVGAgent(cfg, ...) is deprecated: build SVG1Agent, SVG1ERAgent or SVGkAgent "
                "(AGENTS[cfg.algorithm] is the one of cfg.algorithm).",
                DeprecationWarning,
                stacklevel=2,
            )
            from torchrl_svg.train.agents import AGENTS

            cls = AGENTS[cfg.algorithm]
            if not issubclass(cls, SVGAgent):
                raise ValueError(f"SVGAgent builds svg1, svg1_er or svgk, not {cfg.algorithm!r}.")
        return super().__new__(cls)

    def horizon(self) -> int:
        """Real steps per policy-gradient sub-trajectory (1: single transitions)."""
        return 1

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, V, the world model and :class:`~torchrl_svg.objectives.SVGLoss`."""
        cfg, device = self.cfg, self.device
        horizon = self.horizon()
        self.slice_len = horizon if horizon > 1 else None
        self.policy = make_policy(cfg, observation_spec, action_spec, device)
        value = make_state_value(cfg, observation_spec, device)
        self.world_model = WorldModel(
            cfg, observation_spec, action_spec, device, env=env, termination=False
        )
        self._policy_optimizer(
            SVGLoss(
                self.policy,
                value,
                self.world_model.dynamics,
                self.world_model.reward,
                horizon=horizon,
                max_importance_weight=cfg.svg.max_importance_weight,
                noise=cfg.svg.noise,
                kl_coef=cfg.svg.kl_coef if self.replays_policy else 0.0,
                loss_function=cfg.loss.loss_function,
            )
        )
        self.target_updater = HardUpdate(
            self.loss, value_network_update_interval=cfg.svg.value_target_interval
        )
        self._value_params = trainable(self.loss.value_network_params)
        self.value_optimizer = make_adam(self._value_params, cfg, device, lr=cfg.optim.critic_lr)
        actor_keys = ("loss_actor", "loss_kl") if self.loss.kl_coef > 0 else ("loss_actor",)
        # the steps call the loss's term methods: its input check runs on their first batch
        self.policy_step = self._policy_step(
            self._policy_losses, actor_keys, validate=self.loss.validate_input
        )
        self.value_step = make_update(
            cfg,
            self._value_losses,
            ("loss_value",),
            self.value_optimizer,
            self._value_params,
            after_step=self.target_updater.step,
            kind="value",
            validate=self.loss.validate_input,
        )

    def _policy_losses(self, batch: TensorDictBase) -> TensorDictBase:
        loss_actor, meta = self.loss.actor_loss(batch)
        out = TensorDict(
            {"loss_actor": loss_actor, "importance_weight": meta["importance_weight"].mean()}, []
        )
        if self.loss.kl_coef > 0:
            out["loss_kl"] = self.loss.kl_loss(batch)
        return out

    def _value_losses(self, batch: TensorDictBase) -> TensorDictBase:
        return TensorDict({"loss_value": self.loss.value_loss(batch)[0]}, [])

    def train_on_batch(self, fresh: TensorDictBase, replay: ReplayBuffer):
        """Model and value updates from replay, then the policy (fresh data or replay)."""
        cfg = self.cfg
        n = fresh.numel()
        model_updates = n * cfg.model.updates_per_step
        self.world_model.fit(lambda k: self.sample(replay, k), model_updates, cfg.model.batch_size)
        value_out = None
        for _ in range(n * cfg.svg.critic_updates_per_step):
            value_out = self.value_step(self.sample(replay, cfg.replay_buffer.batch_size))
        if self.replays_policy:
            if self.loss.kl_coef > 0:
                self.loss.update_reference_policy()
            policy_updates = n * cfg.svg.policy_updates_per_step
            out = None
            for _ in range(policy_updates):
                out = self.policy_step(self.sample(replay, cfg.replay_buffer.batch_size))
        else:
            # no policy replay: one update per observed transition, in the order they came
            transitions = _transitions(fresh)
            policy_updates = transitions.numel()
            for i in range(policy_updates):
                out = self.policy_step(transitions[i : i + 1])
        if value_out is not None and out is not None:
            out["loss_value"] = value_out["loss_value"]
        return out, policy_updates, model_updates

    def _state_parts(self) -> dict[str, Any]:
        """Parameters, targets, statistics and optimiser states."""
        return {
            "loss": self.loss,
            "world_model": self.world_model,
            "actor_optimizer": self.actor_optimizer,
            "value_optimizer": self.value_optimizer,
        }
