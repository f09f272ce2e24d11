"""``python -m torchrl_svg.train [--defaults FILE] [--config FILE] [--print-config] [group.key=value ...]``.

Only the configuration schema is imported before the command line is parsed: ``--help``
and ``--version`` answer without importing torch; training imports the rest.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
from collections.abc import Sequence

from torchrl_svg.train.config import ConfigError, config_help, describe_config, load_config

_EXAMPLES = """\
examples:
  python -m torchrl_svg.train                                   # S2VG on Pendulum-v1
  python -m torchrl_svg.train env.name=InvertedPendulum-v5 loss.horizon=3
  python -m torchrl_svg.train algorithm=svg1_er env.name=InvertedPendulum-v5
  python -m torchrl_svg.train 'network.actor_hidden_sizes=[64,64]' logger.backend=csv
  python -m torchrl_svg.train --config my.yaml env.seed=3       # YAML file, then overrides
  python -m torchrl_svg.train --defaults examples/configs/svgk.yaml svg.horizon=5
  python -m torchrl_svg.evaluate runs/<run> --episodes 10       # score a finished run
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from torchrl_svg import __version__

    parts = []
    for dist in ("torch", "torchrl", "tensordict"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return f"torchrl_svg {__version__} ({', '.join(parts)})"


def _unknown_option(arg: str, parser: argparse.ArgumentParser) -> str | None:
    """The error for a ``-x``/``--x`` argument that is neither an option nor an override."""
    if not arg.startswith("-"):
        return None
    key, eq, _ = arg.lstrip("-").partition("=")
    top_level = {row["key"] for row in describe_config() if "." not in row["key"]}
    if eq and ("." in key or key in top_level):
        return None  # --group.key=value, as W&B sweeps pass overrides
    options = {
        s.lstrip("-"): s for action in parser._actions for s in action.option_strings if len(s) > 2
    }
    keys = {row["key"]: f"{row['key']}=..." for row in describe_config()}
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.7)
    if close:
        hint = f"; did you mean {options[close[0]]}?"
    else:
        close = [k for k in keys if k.rsplit(".", 1)[-1] == key.replace("-", "_")]
        close = close or difflib.get_close_matches(key, list(keys), n=1, cutoff=0.7)
        hint = f"; did you mean the override {keys[close[0]]}?" if close else ""
    return f"unrecognized option {arg.partition('=')[0]!r}{hint} (see --help)"


def main(
    argv: Sequence[str] | None = None, *, default_config: str | None = None, prog: str | None = None
) -> int:
    """Parse the command line, validate the configuration, train.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``). Overrides are
            ``group.key=value`` or ``--group.key=value`` (as W&B sweeps pass them).
        default_config: the default of ``--defaults``, a YAML file of defaults below
            the per-task preset (for a script that wraps this command line);
            ``--config`` and overrides win over both.
        prog: the program name shown in ``--help``.

    Returns:
        The exit status: 0 on success, 2 for a bad command line, configuration or checkpoint.
    """
    parser = argparse.ArgumentParser(
        prog=prog or "python -m torchrl_svg.train",
        description=textwrap.fill(
            "Train an SVG-family agent (S2VG by default) on a Gymnasium task. Values come from "
            "the defaults below, then the per-task preset, then --config FILE, then "
            "group.key=value overrides."
            + (
                f" This script's own file {default_config} sits below the preset."
                if default_config
                else ""
            ),
            100,
        ),
        epilog=f"{_EXAMPLES}\n{config_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML file with configuration values")
    parser.add_argument(
        "--defaults",
        default=default_config,
        metavar="FILE",
        help="YAML file of defaults that sits below the per-task preset (the examples' "
        "examples/configs/<algorithm>.yaml): it may choose the algorithm and the task, and the "
        "chosen task's preset still wins over it",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("overrides", nargs="*", help="group.key=value overrides")
    args, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        error = _unknown_option(arg, parser)
        if error is not None:
            parser.error(error)
    try:
        cfg = load_config(
            [*args.overrides, *unknown], config_file=args.config, defaults_file=args.defaults
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return 0

    from torchrl_svg.train.checkpoint import CheckpointError
    from torchrl_svg.train.loop import train

    try:
        result = train(cfg)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"done: {result.frames} environment steps, {result.updates} updates, "
        f"final evaluation return {result.final_return:.1f}; results in {result.run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
