"""Algorithm bundles: the modules, losses, optimisers and the update of one algorithm."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.data import TensorSpec
from torchrl.objectives import SoftUpdate

from torchrl_svg._utils import NonFiniteLossError
from torchrl_svg.modules import (
    GaussianDynamics,
    LearnedTermination,
    RewardModel,
    make_actor,
    make_qvalue,
    make_value,
    termination_for_env,
)
from torchrl_svg.objectives import GaussianWorldModelLoss, S2VGLoss
from torchrl_svg.train.builders import ACTIVATIONS, check_against_env
from torchrl_svg.train.config import Config

__all__ = ["S2VGAgent", "guarded_step"]


def _parameters(params: TensorDictBase) -> list[nn.Parameter]:
    return [p for p in params.values(True, True) if isinstance(p, nn.Parameter) and p.requires_grad]


def guarded_step(
    optimizer: torch.optim.Optimizer,
    losses: TensorDictBase,
    keys: Sequence[str],
    *,
    max_grad_norm: float | None = None,
    parameters: Iterable[torch.Tensor] = (),
) -> None:
    """Back-propagate the sum of ``losses[keys]`` and step, refusing non-finite losses.

    Raises:
        NonFiniteLossError: naming the non-finite entries; no gradient is
            applied, so the parameters keep their last finite values.

    """
    total = sum(losses.get(k) for k in keys)
    if not torch.isfinite(total):
        bad = [k for k in keys if not torch.isfinite(losses.get(k)).all()]
        raise NonFiniteLossError(f"non-finite {', '.join(bad)}")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(parameters), max_grad_norm)
    optimizer.step()


class S2VGAgent:
    """Everything S2VG needs, built from a :class:`~torchrl_svg.train.config.Config` and an env's specs.

    Holds the actor, twin Q, V (with its Polyak target), the Gaussian dynamics
    and reward models and the termination model; the :class:`S2VGLoss` and
    :class:`GaussianWorldModelLoss`; one grouped Adam for the actor-critic
    (policy / value / alpha learning rates) and one for the world model.

    Args:
        cfg: the configuration.
        observation_spec: the environment's observation spec (``[obs_dim]``).
        action_spec: the environment's bounded action spec (``[action_dim]``).
        device: where the parameters live.

    """

    loss_keys = ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha")

    def __init__(
        self,
        cfg: Config,
        observation_spec: TensorSpec,
        action_spec: TensorSpec,
        device: torch.device | str = "cpu",
    ):
        self.cfg = cfg
        device = torch.device(device)
        obs_dim, act_dim = observation_spec.shape[-1], action_spec.shape[-1]
        act_cls = ACTIVATIONS[cfg.network.activation]
        self.actor = make_actor(
            observation_spec,
            action_spec,
            hidden_sizes=cfg.network.actor_hidden_sizes,
            activation_class=act_cls,
            scale_lb=cfg.network.scale_lb,
            device=device,
        )
        qvalue = make_qvalue(
            obs_dim,
            act_dim,
            hidden_sizes=cfg.network.critic_hidden_sizes,
            activation_class=act_cls,
            device=device,
        )
        value = make_value(
            obs_dim,
            hidden_sizes=cfg.network.critic_hidden_sizes,
            activation_class=act_cls,
            device=device,
        )
        model_act = ACTIVATIONS[cfg.model.activation]
        self.dynamics = GaussianDynamics(
            obs_dim,
            act_dim,
            hidden_sizes=cfg.model.hidden_sizes,
            activation_class=model_act,
            sigma=cfg.model.sigma,
            per_dimension=cfg.model.per_dimension,
            ensemble_size=cfg.model.ensemble_size,
            ensemble_reduction=cfg.model.ensemble_reduction,
            min_log_std=cfg.model.min_log_std,
            max_log_std=cfg.model.max_log_std,
        ).to(device)
        self.reward = RewardModel(
            obs_dim,
            act_dim,
            hidden_sizes=cfg.model.hidden_sizes,
            activation_class=model_act,
            sigma=cfg.model.sigma,
            min_log_std=cfg.model.min_log_std,
            max_log_std=cfg.model.max_log_std,
        ).to(device)
        if cfg.model.termination == "known":
            self.termination = termination_for_env(cfg.env.name)
        elif cfg.model.termination == "learned":
            self.termination = LearnedTermination(obs_dim, activation_class=model_act).to(device)
        else:
            self.termination = None
        check_against_env(
            observation_spec,
            action_spec,
            dynamics_model=self.dynamics,
            reward_model=self.reward,
            termination_model=self.termination,
        )

        target_entropy = cfg.loss.target_entropy
        self.loss = S2VGLoss(
            self.actor,
            qvalue,
            value,
            self.dynamics,
            self.reward,
            self.termination,
            horizon=cfg.loss.horizon,
            alpha_init=cfg.loss.alpha_init,
            fixed_alpha=cfg.loss.fixed_alpha,
            target_entropy=target_entropy if target_entropy == "auto" else float(target_entropy),
            action_spec=action_spec,
            loss_function=cfg.loss.loss_function,
            expansion_entropy=cfg.loss.expansion_entropy,
        )
        self.loss.make_value_estimator(gamma=cfg.loss.gamma)
        self.target_updater = SoftUpdate(self.loss, tau=cfg.loss.tau)
        self.model_loss = GaussianWorldModelLoss(self.dynamics, self.reward, self.termination)

        self._actor_params = _parameters(self.loss.actor_network_params)
        self._critic_params = _parameters(self.loss.qvalue_network_params) + _parameters(
            self.loss.value_network_params
        )
        groups = [
            {"params": self._actor_params, "lr": cfg.optim.actor_lr},
            {"params": self._critic_params, "lr": cfg.optim.critic_lr},
        ]
        if not cfg.loss.fixed_alpha:
            groups.append({"params": [self.loss.log_alpha], "lr": cfg.optim.alpha_lr})
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self._model_params = [p for p in self.model_loss.parameters() if p.requires_grad]
        self.model_optimizer = torch.optim.Adam(
            self._model_params,
            lr=cfg.optim.model_lr,
            weight_decay=cfg.optim.model_weight_decay,
            fused=True,
        )
        self.model_loss_keys = ("loss_dynamics", "loss_reward") + (
            ("loss_termination",) if self.model_loss.learns_termination else ()
        )

    @property
    def policy(self) -> nn.Module:
        """The exploration policy handed to the collector (shares the trained parameters)."""
        return self.actor

    def observe(self, data: TensorDictBase) -> None:
        """Merge a batch of real transitions into the world model's running statistics."""
        self.model_loss.update_normalizers(data)

    def update_model(self, batch: TensorDictBase) -> TensorDictBase:
        """One world-model gradient step on a replay batch; returns the detached losses."""
        out = self.model_loss(batch)
        guarded_step(
            self.model_optimizer,
            out,
            self.model_loss_keys,
            max_grad_norm=self.cfg.optim.max_grad_norm,
            parameters=self._model_params,
        )
        return out.detach()

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One actor-critic step (eqs 7, 8, 11 and alpha) and the Polyak update of the target V."""
        out = self.loss(batch)
        guarded_step(
            self.optimizer,
            out,
            self.loss_keys,
            max_grad_norm=self.cfg.optim.max_grad_norm,
            parameters=self._actor_params + self._critic_params,
        )
        self.target_updater.step()
        return out.detach()

    def state_dict(self) -> dict:
        """Parameters, targets, normalisation statistics, alpha and optimiser states."""
        return {
            "loss": self.loss.state_dict(),
            "model_loss": self.model_loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_optimizer": self.model_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.loss.load_state_dict(state["loss"])
        self.model_loss.load_state_dict(state["model_loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.model_optimizer.load_state_dict(state["model_optimizer"])
