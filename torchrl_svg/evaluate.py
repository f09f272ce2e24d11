"""``python -m torchrl_svg.evaluate RUN_DIR [--episodes N] [--video]``: score a trained policy.

Loads the policy of a run directory written by ``python -m torchrl_svg.train``
(:func:`torchrl_svg.load_policy`), runs it on the run's task and prints the
mean ± standard deviation of the episode returns; ``--video`` also renders one
episode to a GIF where the task has an off-screen renderer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, evaluate, print the result.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a run directory without a readable checkpoint.
    """
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_svg.evaluate",
        description="Evaluate the trained policy of a run directory on its task.",
    )
    parser.add_argument("run_dir", help="a run directory written by python -m torchrl_svg.train")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cap on an episode's length (default: the run's eval.max_steps)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="environment seed (default: the run's evaluation seed, env.seed + 10000)",
    )
    parser.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions instead of taking the mode of the policy",
    )
    parser.add_argument(
        "--video",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write a GIF of one episode (default path RUN_DIR/videos/evaluate.gif)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file of the run (default checkpoint.pt; e.g. checkpoint.prev.pt)",
    )
    parser.add_argument("--device", default="cpu", help="where the policy runs (default cpu)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be a positive integer, got {args.episodes}")

    from torchrl_svg.train.checkpoint import CheckpointError
    from torchrl_svg.train.config import ConfigError
    from torchrl_svg.train.policy import evaluate_run

    try:
        result = evaluate_run(
            args.run_dir,
            episodes=args.episodes,
            max_steps=args.max_steps,
            seed=args.seed,
            deterministic=not args.stochastic,
            video=args.video,
            checkpoint=args.checkpoint,
            device=args.device,
        )
    except (CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    policy = "stochastic" if args.stochastic else "deterministic"
    print(
        f"{result.env_name}, {result.algorithm} after {result.frames} environment steps: "
        f"return {result.mean:.1f} ± {result.std:.1f} over {len(result.returns)} episodes "
        f"({policy} policy)"
    )
    if args.video:
        if result.video is not None:
            print(f"video: {result.video}")
        else:
            print(f"video: none written ({result.env_name} has no off-screen renderer here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
