"""``python -m torchrl_svg.train [--config FILE] [group.key=value ...]``."""

from __future__ import annotations

import argparse
import sys

from torchrl_svg.train.config import ConfigError, load_config
from torchrl_svg.train.loop import train


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, validate the configuration, train."""
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_svg.train",
        description="Train an SVG-family agent (S2VG by default) on a Gymnasium task.",
        epilog="Overrides use dot-list syntax, e.g. env.name=InvertedPendulum-v5 loss.horizon=3.",
    )
    parser.add_argument("--config", default=None, help="YAML file with configuration values")
    parser.add_argument("overrides", nargs="*", help="group.key=value overrides")
    args, unknown = parser.parse_known_args(argv)
    try:
        cfg = load_config([*args.overrides, *unknown], config_file=args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = train(cfg)
    print(
        f"done: {result.frames} environment steps, {result.updates} updates, "
        f"final evaluation return {result.final_return:.1f}; results in {result.run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
