"""``python -m torchrl_svg.train [--config FILE] [--print-config] [group.key=value ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from torchrl_svg.train.checkpoint import CheckpointError
from torchrl_svg.train.config import ConfigError, load_config
from torchrl_svg.train.loop import train


def main(
    argv: Sequence[str] | None = None, *, default_config: str | None = None, prog: str | None = None
) -> int:
    """Parse the command line, validate the configuration, train.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``). Overrides are
            ``group.key=value`` or ``--group.key=value`` (as W&B sweeps pass them).
        default_config: a YAML file applied when ``--config`` is not given
            (the example scripts pass their own).
        prog: the program name shown in ``--help``.

    Returns:
        The exit status: 0 on success, 2 for a bad configuration or checkpoint.
    """
    parser = argparse.ArgumentParser(
        prog=prog or "python -m torchrl_svg.train",
        description="Train an SVG-family agent (S2VG by default) on a Gymnasium task.",
        epilog="Overrides use dot-list syntax, e.g. env.name=InvertedPendulum-v5 loss.horizon=3.",
    )
    parser.add_argument(
        "--config", default=default_config, help="YAML file with configuration values"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    parser.add_argument("overrides", nargs="*", help="group.key=value overrides")
    args, unknown = parser.parse_known_args(argv)
    try:
        cfg = load_config([*args.overrides, *unknown], config_file=args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return 0
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
