"""Cross-key checks of the recipe's configuration: the collector's batch split, S2VG's ensemble switches, keys the algorithm does not read.

Called by :func:`torchrl_svg.train.config.load_config` before anything is built; each
raises :class:`~torchrl_svg.train.errors.ConfigError` naming the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from torchrl_svg.train.config_schema import KEY_OWNERS
from torchrl_svg.train.errors import ConfigError

if TYPE_CHECKING:
    from torchrl_svg.train.config_schema import Config


def validate_collector(cfg: Config) -> None:
    """The collector backend's needs: ray installed, batches that split evenly over workers."""
    backend, workers = cfg.collector.backend, cfg.collector.num_workers
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "collector.backend='ray' needs the ray package: pip install 'torchrl_svg[distributed]'."
            )
    if backend not in ("multi_sync", "ray"):
        return
    # a synchronous batch takes the same number of steps (or episodes) from every worker
    if cfg.algorithm == "svginf":
        if cfg.svg.episodes_per_batch % workers:
            raise ConfigError(
                f"svg.episodes_per_batch={cfg.svg.episodes_per_batch} must be a multiple of "
                f"collector.num_workers={workers} with collector.backend={backend!r}."
            )
    elif cfg.collector.frames_per_batch % workers:
        raise ConfigError(
            f"collector.frames_per_batch={cfg.collector.frames_per_batch} must be a multiple of "
            f"collector.num_workers={workers} with collector.backend={backend!r}."
        )


def validate_s2vg_ensemble(cfg: Config) -> None:
    """Refuse the S2VG ensemble switches where the model has no ensemble to use them on."""
    single = cfg.model.ensemble_size < 2
    if cfg.loss.expansion_ensemble_mean and (single or cfg.loss.horizon < 2):
        raise ConfigError(
            "loss.expansion_ensemble_mean=true needs model.ensemble_size >= 2 and "
            f"loss.horizon >= 2 (got {cfg.model.ensemble_size} and {cfg.loss.horizon}): "
            "it imagines the critic targets' steps from the ensemble's average prediction."
        )
    if cfg.loss.disagreement_bound is not None and single:
        raise ConfigError(
            "loss.disagreement_bound needs model.ensemble_size >= 2 (an ensemble whose "
            f"members can disagree); got model.ensemble_size={cfg.model.ensemble_size}."
        )
    if cfg.loss.ensemble_members == "rollout" and (
        single or cfg.model.ensemble_reduction != "sample"
    ):
        raise ConfigError(
            "loss.ensemble_members=rollout needs model.ensemble_size >= 2 and "
            "model.ensemble_reduction=sample (one member drawn per rollout)."
        )


# where a key an algorithm does not read has a counterpart it does
_COUNTERPARTS = {
    ("loss", "horizon"): {"svgk": "svg.horizon"},
    ("svg", "horizon"): {"s2vg": "loss.horizon (the critic's) or loss.actor_horizon"},
    ("svg", "actor_max_grad_norm"): {"s2vg": "loss.actor_max_grad_norm"},
    ("loss", "actor_max_grad_norm"): {
        a: "svg.actor_max_grad_norm" for a in ("svg1", "svg1_er", "svgk", "svginf")
    },
    ("svg", "policy_updates_per_step"): {"s2vg": "loss.updates_per_step"},
}


def validate_key_owners(
    cfg: Config, explicit: Collection[str], without_user: Callable[[], Mapping[str, Any]]
) -> None:
    """Refuse a key set for an algorithm that does not read it (:data:`KEY_OWNERS`).

    Args:
        cfg: the resolved configuration.
        explicit: the dotted keys the user set (config file and overrides).
        without_user: gives the dotted keys' values before the user's layer (defaults,
            the example's defaults file and the preset); called only when the user set
            a key the algorithm does not read. A key set to that value changes nothing
            and passes (a saved run's full configuration does).
    """
    before: Mapping[str, Any] | None = None
    for (group, key), owners in KEY_OWNERS.items():
        dotted = f"{group}.{key}"
        if cfg.algorithm in owners or dotted not in explicit:
            continue
        if before is None:
            before = without_user()
        value = getattr(getattr(cfg, group), key)
        if value == before.get(dotted, value):
            continue
        hint = _COUNTERPARTS.get((group, key), {}).get(cfg.algorithm)
        raise ConfigError(
            f"{dotted}={value!r} does nothing with algorithm={cfg.algorithm!r}: it is read "
            f"by {', '.join(owners)} only."
            + (f" For {cfg.algorithm}, use {hint}." if hint else " Remove it.")
        )
