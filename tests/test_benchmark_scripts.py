"""The benchmark scripts' own argument handling (their results live in ``benchmarks/results``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(path: Path, values: list[float]) -> Path:
    path.mkdir()
    curve = [{"frames": 1000 * (i + 1), "mean": v, "std": 0.0} for i, v in enumerate(values)]
    (path / "summary.json").write_text(json.dumps({"mean_curve": curve}))
    return path


def test_compare_takes_labels_that_hold_an_equals_sign(tmp_path):
    compare = _script("compare")
    one = _folder(tmp_path / "one", [-900.0, -300.0, -150.0])
    two = _folder(tmp_path / "two", [-800.0, -180.0])
    compare.main([f"H=1={one}", f"H=2={two}", "--target", "-200", "--out", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert report["max_frames"] == 2000  # the shorter curve's end
    assert report["curves"]["H=1"]["folder"] == str(one)
    assert report["curves"]["H=1"]["first_frames_mean_at_target"] is None  # -300 at 2k
    assert report["curves"]["H=2"]["first_frames_mean_at_target"] == 2000
    with pytest.raises(SystemExit):
        compare.main([str(one), "--out", str(tmp_path / "bad")])
