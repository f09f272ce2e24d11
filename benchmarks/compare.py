r"""Overlay the mean +- std learning curves of several benchmark result folders.

Each folder is one written by ``benchmarks/learning.py`` (per-seed CSVs and a
``summary.json``). Writes a PNG and a JSON with, for each curve, the final mean
return, the area under the mean curve and the first environment step at which the
mean reaches ``--target``.

Example::

    python benchmarks/compare.py --out benchmarks/results/svg1_er_vs_svg1_InvertedPendulum \
        --target 1000 "SVG(1)-ER=benchmarks/results/svg1_er_InvertedPendulum-v5" \
        "SVG(1)=benchmarks/results/svg1_InvertedPendulum-v5"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_svg.train.records import plot_curves  # noqa: E402


def _curve(folder: Path) -> list[tuple[float, float, float]]:
    summary = json.loads((folder / "summary.json").read_text())
    return [(p["frames"], p["mean"], p["std"]) for p in summary["mean_curve"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "curves", nargs="+", help="LABEL=FOLDER (split at the last '=': labels such as H=1 work)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--title", default="")
    parser.add_argument(
        "--max-frames",
        type=float,
        default=None,
        help="compare up to this many environment steps (default: the shortest curve's end)",
    )
    args = parser.parse_args(argv)
    loaded = {}
    for item in args.curves:
        label, sep, folder = item.rpartition("=")
        if not sep or not label or not folder:
            parser.error(f"{item!r}: each curve is LABEL=FOLDER")
        loaded[label] = (folder, _curve(Path(folder)))
    # every figure over the same range of environment steps
    limit = args.max_frames or min(points[-1][0] for _, points in loaded.values())

    curves, report = {}, {}
    for label, (folder, points) in loaded.items():
        points = [p for p in points if p[0] <= limit]
        curves[label] = points
        area = sum(
            (x1 - x0) * (y0 + y1) / 2
            for (x0, y0, _), (x1, y1, _) in zip(points[:-1], points[1:], strict=True)
        )
        hit = next((x for x, y, _ in points if args.target is not None and y >= args.target), None)
        report[label] = {
            "folder": folder,
            "frames": points[-1][0],
            "final_mean_return": points[-1][1],
            "area_under_mean_curve": area,
            "first_frames_mean_at_target": hit,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, args.out / "comparison.png", title=args.title, target=args.target)
    (args.out / "comparison.json").write_text(
        json.dumps({"target": args.target, "max_frames": limit, "curves": report}, indent=2)
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
