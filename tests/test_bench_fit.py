"""benchmark.py fit: the learning check runs, writes its files and refuses bad values."""

from __future__ import annotations

import json

import pytest


def test_fit_writes_three_scores_per_momentum(synthetic_root, tmp_path, run_cli):
    out = tmp_path / "results"
    done = run_cli(
        "benchmark.py", "fit", "-p", str(synthetic_root), "--size", "64,128", "--steps", "3",
        "-b", "2", "--precise-bn", "2", "--bn-momentum", "0.99", "0.5", "--output-dir", str(out),
        timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "benchmark_fit.json").read_text())
    rows = data["rows"]
    assert [r["bn_momentum"] for r in rows] == [0.99, 0.5]
    for row in rows:
        assert row["model"] == "fastscnn" and row["steps"] == 3 and row["eval_images"] == 3
        assert row["precise_bn_images"] == 2 and row["precise_bn_s"] > 0
        for key in ("moving", "precise", "training_mode"):
            assert 0.0 <= row[f"miou_{key}"] <= 1.0 and 0.0 <= row[f"acc_{key}"] <= 1.0
    page = (out / "benchmark_fit.md").read_text()
    assert "Learning check" in page and "training_mode" in page
    assert (out / "benchmark_fit.csv").read_text().count("\n") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bn-momentum", "1.5"], "--bn-momentum values must be in [0, 1)"),
        (["--optimizer", "lion"], "unknown optimizer 'lion'"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_fit_bad_values(args, message, synthetic_root, tmp_path, run_cli):
    done = run_cli(
        "benchmark.py", "fit", "-p", str(synthetic_root), *args,
        "--output-dir", str(tmp_path / "r"), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.error_lines) == 1 and message in done.error_lines[0], done.stderr
    assert not (tmp_path / "r" / "benchmark_fit.json").exists()
