"""Agents of the SVG family: SVG(0), SVG(1), SVG(1)-ER, SVG(k) and SVG(inf)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from tensordict import TensorDict, TensorDictBase
from torchrl.data import ReplayBuffer, TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule

from torchrl_svg.objectives import HardUpdate, SVG0Loss, SVGInfLoss, SVGLoss
from torchrl_svg.train.agents.base import (
    Agent,
    GuardedUpdate,
    ModelFreeAgent,
    WorldModel,
    make_actor_and_qvalue,
    make_adam,
    make_policy,
    make_state_value,
    make_update,
    trainable,
)
from torchrl_svg.train.agents.updates import _transitions
from torchrl_svg.train.config import Config
from torchrl_svg.train.fast_svginf import FastSVGInfUpdate, fast_svginf_supported

log = logging.getLogger("torchrl_svg")

__all__ = ["SVG0Agent", "SVG1Agent", "SVG1ERAgent", "SVGAgent", "SVGInfAgent", "SVGkAgent"]


class SVG0Agent(ModelFreeAgent):
    """SVG(0) with replay (Algorithm 3): a Q critic by TD with a Polyak target, no model.

    Per collected environment step: ``svg.policy_updates_per_step`` updates of
    the actor and the critic, each on a fresh replay batch.
    """

    name = "svg0"

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, the Q network and :class:`~torchrl_svg.objectives.SVG0Loss` (no alpha)."""
        cfg = self.cfg
        self.policy, qvalue = make_actor_and_qvalue(cfg, observation_spec, action_spec, self.device)
        loss = SVG0Loss(
            self.policy, qvalue, noise=cfg.svg.noise, loss_function=cfg.loss.loss_function
        )
        params = self._polyak_actor_critic(loss, trainable(loss.qvalue_network_params), alpha=False)
        self.step = self._actor_critic_step(("loss_actor", "loss_qvalue"), params)

    def updates_per_step(self) -> int:
        """``svg.policy_updates_per_step`` actor and critic updates per environment step."""
        return self.cfg.svg.policy_updates_per_step


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
    ) -> GuardedUpdate:
        """The guarded step of ``actor_optimizer``, clipped to ``svg.actor_max_grad_norm`` (App. D).

        ``eager=True``: neither compiled nor captured, whatever ``cfg.compile`` says.
        """
        step_kwargs = {"max_grad_norm": self.cfg.svg.actor_max_grad_norm, "kind": "policy"}
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

    * ``svg1``: one update per freshly observed transition, in order (no policy
      replay, as Algorithm 2 run without a database; the weights are about 1);
    * ``svg1_er`` / ``svgk``: ``n * svg.policy_updates_per_step`` updates on
      replay batches (``svgk``: real sub-trajectories of ``svg.horizon`` steps),
      importance-weighted, with the KL penalty against the policy at the start
      of the round when ``svg.kl_coef > 0``.

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
            cls = _SVG_AGENTS[cfg.algorithm]
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
        self.policy_step = self._policy_step(self._policy_losses, actor_keys)
        self.value_step = make_update(
            cfg,
            self._value_losses,
            ("loss_value",),
            self.value_optimizer,
            self._value_params,
            after_step=self.target_updater.step,
            kind="value",
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


class SVG1Agent(SVGAgent):
    """SVG(1) (Algorithm 2 without a database): one policy update per fresh transition.

    Examples:
        >>> from torchrl.data import Bounded
        >>> from torchrl_svg.train import load_config
        >>> cfg = load_config(["algorithm=svg1", "network.actor_hidden_sizes=[8]",
        ...                    "network.critic_hidden_sizes=[8]", "model.hidden_sizes=[8]"])
        >>> agent = SVG1Agent(cfg, Bounded(-1e9, 1e9, (3,)), Bounded(-2.0, 2.0, (1,)))
        >>> agent.name, agent.replays_policy, agent.slice_len
        ('svg1', False, None)
    """

    name = "svg1"
    replays_policy = False


class SVG1ERAgent(SVGAgent):
    """SVG(1)-ER (Algorithm 2 with experience replay): importance-weighted policy replay."""

    name = "svg1_er"
    replays_policy = True


class SVGkAgent(SVGAgent):
    """SVG(k): policy replay on real sub-trajectories of ``svg.horizon`` steps."""

    name = "svgk"
    replays_policy = True

    def horizon(self) -> int:
        """``svg.horizon``."""
        return self.cfg.svg.horizon


_SVG_AGENTS: dict[str, type[SVGAgent]] = {
    agent.name: agent for agent in (SVG1Agent, SVG1ERAgent, SVGkAgent)
}


class SVGInfAgent(_PolicyGradientAgent):
    """SVG(inf) (Algorithm 1): on-policy, episode by episode, no critic.

    Each collected batch holds ``svg.episodes_per_batch`` complete real
    episodes (``[N, T]``). The model is fitted for ``svg.model_updates_per_batch``
    steps on all data seen, then one policy-gradient step (clipped to
    ``svg.actor_max_grad_norm``) back-propagates through the episodes with
    inferred noise (``svg.noise="sampled"``: the planner of the paper's Fig. 2).
    """

    name = "svginf"
    episodic = True

    def build(
        self, observation_spec: TensorSpec, action_spec: TensorSpec, env: EnvBase | None
    ) -> None:
        """The actor, the world model and :class:`~torchrl_svg.objectives.SVGInfLoss`."""
        cfg, device = self.cfg, self.device
        self.policy = make_policy(cfg, observation_spec, action_spec, device)
        self.world_model = WorldModel(
            cfg, observation_spec, action_spec, device, env=env, termination=False
        )
        self._policy_optimizer(
            SVGInfLoss(
                self.policy, self.world_model.dynamics, self.world_model.reward, noise=cfg.svg.noise
            )
        )
        reason = fast_svginf_supported(self.loss) if cfg.compile.fast_update else None
        if cfg.compile.fast_update and reason is None:
            # the gradient by Algorithm 1's recursion over batched Jacobians (not compiled)
            self.policy_step = FastSVGInfUpdate(
                self.loss,
                self.actor_optimizer,
                self._actor_params,
                max_grad_norm=cfg.svg.actor_max_grad_norm,
                precision=cfg.precision,
            )
        else:
            if reason is not None:
                log.info("SVG(inf)'s policy step runs through SVGInfLoss: %s", reason)
            # the unroll is as long as an episode: it is neither compiled nor captured
            self.policy_step = self._policy_step(self.loss, ("loss_actor",), eager=True)

    def train_on_batch(self, fresh: TensorDictBase, replay: ReplayBuffer):
        """Fit the model on all data, then one policy step on the fresh episodes."""
        cfg = self.cfg
        self.world_model.fit(
            lambda k: self.sample(replay, k), cfg.svg.model_updates_per_batch, cfg.model.batch_size
        )
        out = self.policy_step(fresh)
        return out, 1, cfg.svg.model_updates_per_batch

    def _state_parts(self) -> dict[str, Any]:
        """Parameters, statistics and optimiser states."""
        return {
            "loss": self.loss,
            "world_model": self.world_model,
            "actor_optimizer": self.actor_optimizer,
        }
