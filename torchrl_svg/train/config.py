"""Training configuration: typed defaults, per-task presets, a config file and CLI overrides.

The configuration is a tree of dataclasses validated by OmegaConf: an unknown
key or a value of the wrong type fails before anything is built, with a
message that names the key. Values are resolved in this order, later ones
winning:

1. the dataclass defaults (:mod:`~torchrl_svg.train.config_schema`);
2. a file of defaults (``--defaults``; the examples' ``examples/configs/*.yaml``; ``defaults_file``);
3. the per-task preset of the chosen algorithm (e.g. the S2VG paper's Table 2;
   :mod:`~torchrl_svg.train.presets`);
4. a YAML config file (``--config path.yaml``);
5. command-line overrides ``group.key=value`` (dot-list syntax, as W&B sweeps
   and Hydra pass them).

This module loads, validates and resumes a configuration; the schema, the
presets and the ``--help`` reference (:mod:`~torchrl_svg.train.config_reference`)
live in their own modules and are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchrl_svg.train.config_checks import (
    validate_collector,
    validate_key_owners,
    validate_s2vg_ensemble,
)
from torchrl_svg.train.config_reference import config_help, describe_config
from torchrl_svg.train.config_schema import (
    CHOICES,
    CheckpointConfig,
    CollectorConfig,
    CompileConfig,
    Config,
    EnvConfig,
    EvalConfig,
    GuardConfig,
    LoggerConfig,
    LossConfig,
    ModelConfig,
    NetworkConfig,
    OptimConfig,
    ReplayBufferConfig,
    SVGConfig,
    _field_type,
)
from torchrl_svg.train.errors import CheckpointError, ConfigError
from torchrl_svg.train.presets import (
    ALGORITHM_DEFAULTS,
    KNOWN_REWARD_ENVS,
    OWN_ENVS,
    PRESETS,
    SAC_SETTINGS,
)

__all__ = [
    "ALGORITHM_DEFAULTS",
    "CheckpointConfig",
    "CollectorConfig",
    "CompileConfig",
    "Config",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "GuardConfig",
    "KNOWN_REWARD_ENVS",
    "LoggerConfig",
    "LossConfig",
    "ModelConfig",
    "NetworkConfig",
    "OWN_ENVS",
    "OptimConfig",
    "PRESETS",
    "ReplayBufferConfig",
    "ResumeConfigError",
    "SAC_SETTINGS",
    "SAFE_ON_RESUME",
    "SVGConfig",
    "config_help",
    "describe_config",
    "load_config",
    "resume_config",
    "to_dict",
    "wandb_mode",
]


_POSITIVE_INTS: tuple[tuple[str, ...], ...] = (
    ("collector", "total_frames"),
    ("collector", "frames_per_batch"),
    ("collector", "num_workers"),
    ("replay_buffer", "size"),
    ("replay_buffer", "batch_size"),
    ("model", "ensemble_size"),
    ("model", "batch_size"),
    ("loss", "horizon"),
    ("loss", "actor_horizon"),
    ("eval", "interval"),
    ("eval", "episodes"),
    ("eval", "max_steps"),
    ("logger", "log_interval"),
    ("svg", "horizon"),
    ("svg", "value_target_interval"),
    ("svg", "episodes_per_batch"),
    ("checkpoint", "interval"),
)


def _get(cfg: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        cfg = getattr(cfg, p)
    return cfg


def _validate(cfg: Config) -> None:
    for path, choices in CHOICES.items():  # OmegaConf checks them too, on every merge
        value = _get(cfg, path)
        if value not in choices:
            raise ConfigError(f"{'.'.join(path)}={value!r} is not one of {list(choices)}.")
    for path in _POSITIVE_INTS:
        value = _get(cfg, path)
        if value < 1:
            raise ConfigError(f"{'.'.join(path)} must be a positive integer, got {value}.")
    for path in (
        ("collector", "init_random_frames"),
        ("model", "updates_per_step"),
        ("model", "pretrain_updates"),
        ("loss", "updates_per_step"),
    ):
        if _get(cfg, path) < 0:
            raise ConfigError(f"{'.'.join(path)} must be >= 0, got {_get(cfg, path)}.")
    if cfg.num_threads is not None and cfg.num_threads < 1:
        raise ConfigError(f"num_threads must be a positive integer, got {cfg.num_threads}.")
    if not 0.0 < cfg.loss.gamma <= 1.0:
        raise ConfigError(f"loss.gamma must be in (0, 1], got {cfg.loss.gamma}.")
    if not 0.0 < cfg.loss.tau <= 1.0:
        raise ConfigError(f"loss.tau must be in (0, 1], got {cfg.loss.tau}.")
    if cfg.loss.alpha_init <= 0:
        raise ConfigError(f"loss.alpha_init must be positive, got {cfg.loss.alpha_init}.")
    if cfg.loss.target_entropy != "auto":
        try:
            float(cfg.loss.target_entropy)
        except ValueError:
            raise ConfigError(
                f"loss.target_entropy must be 'auto' or a number, got {cfg.loss.target_entropy!r}."
            ) from None
    for name in ("actor_lr", "critic_lr", "alpha_lr", "model_lr"):
        if getattr(cfg.optim, name) <= 0:
            raise ConfigError(f"optim.{name} must be positive, got {getattr(cfg.optim, name)}.")
    if not (cfg.device == "cpu" or cfg.device.startswith("cuda")):
        raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {cfg.device!r}.")
    if cfg.device.startswith("cuda"):
        _validate_cuda(cfg.device)
    if cfg.svg.max_importance_weight <= 0:
        raise ConfigError(
            f"svg.max_importance_weight must be positive, got {cfg.svg.max_importance_weight}."
        )
    _validate_env_name(cfg.env.name)
    validate_collector(cfg)
    _validate_exp_name(cfg.logger.exp_name)
    if cfg.compile.cudagraphs and not cfg.device.startswith("cuda"):
        raise ConfigError(
            "compile.cudagraphs=true needs device=cuda (CUDA graphs capture GPU work)."
        )
    if cfg.checkpoint.resume and cfg.logger.run_dir is None:
        raise ConfigError(
            "checkpoint.resume=true needs logger.run_dir: the run directory to continue."
        )
    if cfg.logger.backend == "wandb":
        wandb_mode(cfg.logger.mode)  # a bad WANDB_MODE fails here, before anything is built
    if cfg.algorithm == "s2vg":
        validate_s2vg_ensemble(cfg)
    if cfg.algorithm == "s2vg" and cfg.loss.observation_bounds == "known":
        from torchrl_svg.modules.bounds import KNOWN_OBSERVATION_BOUNDS_ENVS

        if cfg.env.name not in KNOWN_OBSERVATION_BOUNDS_ENVS:
            raise ConfigError(
                f"loss.observation_bounds='known' needs a task whose observation clipping is "
                f"known ({sorted(KNOWN_OBSERVATION_BOUNDS_ENVS)}); {cfg.env.name!r} has none: "
                "use loss.observation_bounds=none."
            )
    if cfg.model.reward == "known" and cfg.env.name not in KNOWN_REWARD_ENVS:
        raise ConfigError(
            f"model.reward='known' needs a task with a known differentiable reward "
            f"({sorted(KNOWN_REWARD_ENVS)}); {cfg.env.name!r} has none: use model.reward=learned."
        )


# W&B's own spellings of its modes (``WANDB_MODE``), as the mode passed to ``wandb.init``.
_WANDB_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
    "shared": "shared",
}


def wandb_mode(mode: str | None) -> str:
    """The W&B mode of a run: ``logger.mode`` if given, else ``WANDB_MODE``, else ``"offline"``.

    Args:
        mode: the configured ``logger.mode`` (``None``: not given).

    Raises:
        ConfigError: ``WANDB_MODE`` holds a value W&B does not know.

    Examples:
        >>> import os
        >>> saved = os.environ.pop("WANDB_MODE", None)
        >>> wandb_mode(None)
        'offline'
        >>> os.environ["WANDB_MODE"] = "disabled"
        >>> wandb_mode(None), wandb_mode("offline")
        ('disabled', 'offline')
        >>> _ = os.environ.pop("WANDB_MODE") if saved is None else os.environ.update(WANDB_MODE=saved)
    """
    if mode is not None:
        return mode
    import os

    env = os.environ.get("WANDB_MODE")
    if env is None or env == "":
        return "offline"
    if env.lower() not in _WANDB_MODES:
        raise ConfigError(
            f"WANDB_MODE={env!r} is not a W&B mode ({sorted(_WANDB_MODES)}); unset it or set "
            "logger.mode."
        )
    return _WANDB_MODES[env.lower()]


def _validate_cuda(device: str) -> None:
    import torch

    if not torch.cuda.is_available():
        build = (
            "this torch is a CPU-only build"
            if torch.version.cuda is None
            else f"this torch is built for CUDA {torch.version.cuda} but finds no GPU"
        )
        raise ConfigError(
            f"device={device!r} but CUDA is not available ({build}, torch {torch.__version__}); "
            "use device=cpu."
        )
    _, _, index = device.partition(":")
    if index:
        if not index.isdigit():
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}.")
        if int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )


def _validate_env_name(name: str) -> None:
    import gymnasium as gym

    if name not in gym.envs.registry and name not in OWN_ENVS:
        close = sorted(
            k for k in gym.envs.registry if k.split("-")[0].lower() == name.split("-")[0].lower()
        )
        hint = f" Did you mean one of {close}?" if close else ""
        raise ConfigError(f"env.name={name!r} is not a registered Gymnasium environment.{hint}")
    if name not in OWN_ENVS:
        problem = _gym_spaces_problem(name)
        if problem is not None:
            raise ConfigError(f"env.name={name!r} {problem}")


def _gym_spaces_problem(name: str) -> str | None:
    """What rules a Gymnasium task out (``None``: a Box action space and flat Box observations).

    The SVG family and S2VG differentiate through continuous actions; the actor and the
    models read one flat observation vector. The task is made (and closed) once per
    process to read its spaces.
    """
    import warnings

    import gymnasium as gym

    spec = gym.spec(name)
    key = (name, spec.entry_point if isinstance(spec.entry_point, str) else id(spec.entry_point))
    if key in _SPACES_PROBLEMS:
        return _SPACES_PROBLEMS[key]
    try:
        with warnings.catch_warnings():  # the real build, later, warns as it will
            warnings.simplefilter("ignore")
            env = gym.make(name, disable_env_checker=True)
    except Exception as err:  # a missing optional dependency (Box2D, Atari ROMs, ...)
        return f"cannot be made: {type(err).__name__}: {err}"
    try:
        action, observation = env.action_space, env.observation_space
    finally:
        env.close()
    problem = None
    if not isinstance(action, gym.spaces.Box):
        problem = (
            f"has a {type(action).__name__} action space; the SVG family and S2VG need "
            "continuous actions (a Box action space)."
        )
    elif not isinstance(observation, gym.spaces.Box) or len(observation.shape) != 1:
        problem = (
            f"has a {type(observation).__name__} observation space of shape "
            f"{getattr(observation, 'shape', None)}; the recipe needs one flat vector "
            "observation (a 1-D Box)."
        )
    _SPACES_PROBLEMS[key] = problem
    return problem


_SPACES_PROBLEMS: dict[tuple[str, Any], str | None] = {}


def _check_list_syntax(item: str) -> None:
    """``group.key=64,64`` for a list key: say how a list is written."""
    key, _, value = item.partition("=")
    kind = _field_type(key.split("."))
    value = value.strip()
    if kind is not None and kind.startswith("list") and not value.startswith("["):
        items = ",".join(v.strip() for v in value.split(","))
        raise ConfigError(
            f"{key}={value!r}: {key} is a list; write it in brackets: {key}=[{items}] "
            f"(quote it in a shell that expands brackets: '{key}=[{items}]')."
        )


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    cleaned = []
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"Override {item!r} is not of the form group.key=value.")
        _check_list_syntax(item)
        cleaned.append(item)
    try:
        return OmegaConf.from_dotlist(cleaned)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Could not parse overrides {cleaned}: {err}") from None


def _merge(base: DictConfig, *others: Any) -> DictConfig:
    try:
        return OmegaConf.merge(base, *others)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = str(err).splitlines()[0]
        raise ConfigError(f"Invalid configuration key {key!r}: {msg}" if key else msg) from None


def _read_yaml(config_file: str | Path) -> DictConfig:
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        return OmegaConf.load(path)  # type: ignore[return-value]
    except Exception as err:  # a YAML syntax error
        raise ConfigError(f"Could not read config file {str(path)!r}: {err}") from None


def load_config(
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    *,
    defaults_file: str | Path | None = None,
) -> Config:
    """Build and validate a :class:`Config`.

    Args:
        overrides: ``group.key=value`` strings (a leading ``--`` is accepted).
        config_file: an optional YAML file with (a subset of) the same tree.
        defaults_file: an optional YAML file of defaults that sits *below* the
            per-task preset (``--defaults``, e.g. ``examples/configs/*.yaml``): it may choose the
            algorithm and the task, and set what the preset leaves open, but the
            preset of the task finally chosen wins over it.

    Raises:
        ConfigError: for an unknown key, a value of the wrong type or out of
            range, or an unknown environment; nothing has been built yet.

    Examples:
        >>> cfg = load_config(["env.name=InvertedPendulum-v5", "loss.horizon=3"])
        >>> cfg.env.name, cfg.loss.horizon, cfg.loss.alpha_init  # alpha from the preset
        ('InvertedPendulum-v5', 3, 0.1)
        >>> load_config(["loss.horzion=3"])
        Traceback (most recent call last):
        ...
        torchrl_svg.train.errors.ConfigError: Invalid configuration key 'loss.horzion': Key 'horzion' not in 'LossConfig'. Did you mean one of: 'horizon', 'actor_horizon'?

    """
    schema = OmegaConf.structured(Config)
    user = OmegaConf.create()
    if config_file is not None:
        user = _read_yaml(config_file)
    user = OmegaConf.merge(user, _parse_overrides(overrides))
    _refuse_interpolations(user)
    defaults = OmegaConf.create() if defaults_file is None else _read_yaml(defaults_file)
    # Validate the keys and types against the schema before choosing a preset.
    _merge(schema, defaults)
    merged = _merge(schema, defaults, user)
    layers: list[Any] = [schema]
    if merged.algorithm in ALGORITHM_DEFAULTS:
        layers.append(OmegaConf.create(ALGORITHM_DEFAULTS[merged.algorithm]))
    layers.append(defaults)
    if merged.use_preset:
        preset = PRESETS.get(merged.algorithm, {}).get(merged.env.name)
        if preset is not None:
            layers.append(OmegaConf.create(preset))
    base_layers = list(layers)
    layers.append(user)
    cfg_node = _merge(*layers)
    cfg: Config = OmegaConf.to_object(cfg_node)  # type: ignore[assignment]
    _validate(cfg)
    # what the user set, as opposed to defaults and presets (a resume keeps the run's own)
    cfg._explicit_keys = frozenset(_leaf_values(OmegaConf.to_container(user, resolve=False)))
    validate_key_owners(
        cfg,
        cfg._explicit_keys,
        lambda: _leaf_values(OmegaConf.to_container(_merge(*base_layers), resolve=False)),
    )
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """A plain nested dict of the configuration (for loggers and checkpoints)."""
    return dataclasses.asdict(cfg)


def _validate_exp_name(exp_name: str | None) -> None:
    """The logger writes into ``<run_dir>/<exp_name>``: one plain path component, no escape."""
    if exp_name is None:
        return
    if (
        not exp_name
        or exp_name in (".", "..")
        or "/" in exp_name
        or "\\" in exp_name
        or "\0" in exp_name
        or Path(exp_name).is_absolute()
    ):
        raise ConfigError(
            f"logger.exp_name={exp_name!r} must be a plain name (no '/', '\\', '.' or '..'): the "
            "logger writes into <logger.run_dir>/<logger.exp_name>."
        )


def _leaf_values(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"group.key": value}`` of a nested dict (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= _leaf_values(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _refuse_interpolations(user: DictConfig) -> None:
    """Refuse ``${...}`` in user values: they would be resolved (``oc.env`` reads the environment)."""
    for key, value in _leaf_values(OmegaConf.to_container(user, resolve=False)).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "${" in v for v in values):
            raise ConfigError(
                f"{key}={value!r} is an interpolation; configuration values are taken literally "
                "(write the value itself: interpolations such as ${oc.env:...} would read the "
                "environment into config.yaml and the logged hyperparameters)."
            )


class ResumeConfigError(ConfigError, CheckpointError):
    """A resume that would change what the run is (the message names the key).

    A :class:`ConfigError` about the key, and a
    :class:`~torchrl_svg.train.checkpoint.CheckpointError`: the run in the
    checkpoint cannot be continued with it.
    """


#: Keys that a resumed run may change (``group.`` covers the whole group): how long it runs,
#: what and where it logs, how it evaluates and checkpoints, and its fault limits. Everything
#: else is part of what was trained and is taken from the run itself.
SAFE_ON_RESUME: tuple[str, ...] = (
    "collector.total_frames",
    "eval.",
    "logger.",
    "checkpoint.",
    "guard.",
    "num_threads",
)


def _safe_on_resume(key: str) -> bool:
    return any(
        key == safe or (safe.endswith(".") and key.startswith(safe)) for safe in SAFE_ON_RESUME
    )


def _known_keys(saved: dict[str, Any], schema: DictConfig) -> dict[str, Any]:
    """``saved`` without the keys ``schema`` does not have (fields of an older release)."""
    out: dict[str, Any] = {}
    for key, value in saved.items():
        if key not in schema:
            continue
        node = schema[key]
        out[key] = (
            _known_keys(value, node)
            if isinstance(node, DictConfig) and isinstance(value, dict)
            else value
        )
    return out


def resume_config(cfg: Config, saved: dict[str, Any]) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """The configuration of a resumed run: the run's own, with the safe changes ``cfg`` asks for.

    Args:
        cfg: the configuration given for the resume (from :func:`load_config`, which
            records the keys the user set; for any other ``Config`` every value that
            differs from the run's counts as asked for).
        saved: the run's configuration as saved in its checkpoint (:func:`to_dict`).

    Returns:
        ``(configuration, {key: (run's value, new value)})`` for the keys changed.

    Raises:
        ResumeConfigError: naming the first key set to another value than the run's
            that is not in :data:`SAFE_ON_RESUME`.

    Examples:
        >>> run = to_dict(load_config(["network.actor_hidden_sizes=[64,64]"]))
        >>> cfg, changed = resume_config(load_config(["collector.total_frames=20000"]), run)
        >>> cfg.network.actor_hidden_sizes, changed
        ([64, 64], {'collector.total_frames': (10000, 20000)})
        >>> resume_config(load_config(["loss.gamma=0.9"]), run)
        Traceback (most recent call last):
        ...
        torchrl_svg.train.config.ResumeConfigError: loss.gamma=0.9 cannot change when resuming: the run has loss.gamma=0.99. A resumed run keeps its own configuration; only collector.total_frames, eval.*, logger.*, checkpoint.*, guard.*, num_threads may change.
    """
    schema = OmegaConf.structured(Config)
    run_node = _merge(schema, _known_keys(saved, schema))
    run: dict[str, Any] = _leaf_values(OmegaConf.to_container(run_node, resolve=False))
    given = _leaf_values(to_dict(cfg))
    explicit = getattr(cfg, "_explicit_keys", None)
    changed: dict[str, tuple[Any, Any]] = {}
    for key, new in given.items():
        old = run.get(key)
        if new == old or (explicit is not None and key not in explicit):
            continue
        if not _safe_on_resume(key):
            allowed = ", ".join(k + "*" if k.endswith(".") else k for k in SAFE_ON_RESUME)
            raise ResumeConfigError(
                f"{key}={new!r} cannot change when resuming: the run has {key}={old!r}. A resumed "
                f"run keeps its own configuration; only {allowed} may change."
            )
        changed[key] = (old, new)
    dotlist = OmegaConf.from_dotlist([])
    for key, (_, new) in changed.items():
        OmegaConf.update(dotlist, key, new, force_add=True)
    try:
        result: Config = OmegaConf.to_object(_merge(run_node, dotlist))  # type: ignore[assignment]
        _validate(result)
    except ResumeConfigError:
        raise
    except ConfigError as err:
        raise ResumeConfigError(f"The resumed run's configuration is not valid: {err}") from None
    result._explicit_keys = frozenset(changed)
    return result, changed
