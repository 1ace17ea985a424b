"""The scaling bench (apps/fraud/scale.py, ``python -m apps.fraud bench --scale``): arguments, refusals, a tiny run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from apps.fraud import scale
from apps.fraud.synth import dataset_for
from common.scaling import REFUSED_EXIT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "--sizes", "abc"], "--sizes: comma-separated numbers of transactions"),
        (["--scale", "--sizes", "10"], "--sizes: at least 2000 transactions each"),
        (["--sizes", "1e5"], "--sizes goes with --scale"),
        (["--scale", "--dataset", "x.csv"], "--scale measures simulated worlds"),
        (["--scale", "--draws", "3"], "--scale measures simulated worlds at --sizes: drop --dataset/--tune/--draws"),
    ],
)
def test_bench_scale_argument_errors_exit_2(args, message) -> None:
    from apps.fraud.__main__ import app

    res = CliRunner().invoke(app, ["bench", *args])
    assert res.exit_code == 2, res.output
    assert f"error: {message}" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "fit"], "--steps: unknown ['fit']; choose from features,train,score"),
        (["--engines", "spark"], "--engines: unknown ['spark']; choose from pandas,dask"),
        (["--workers", "0"], "--workers: must be > 0"),
        (["--sizes", "1e9x"], "--sizes: comma-separated numbers"),
    ],
)
def test_scale_module_argument_errors_exit_2(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        scale.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_in_memory_step_refuses_what_will_not_fit(tmp_path) -> None:
    data = dataset_for(3000, tmp_path)
    r = scale.run_step("features", "pandas", data, tmp_path, n_workers=1, n_estimators=5, available=2**20)
    assert "step_s" not in r and r["series"] == "features/pandas"
    assert "the in-memory path needs about" in r["refused"] and "only 1 MiB is available" in r["refused"]
    assert "--engine dask" in r["refused"]


def test_scale_bench_end_to_end_at_a_tiny_size(tmp_path, capsys) -> None:
    out = tmp_path / "fraud-scale.json"
    args = ["--sizes", "3000,12000", "--steps", "features", "--engines", "pandas", "--output", str(out)]
    assert scale.main([*args, "--data-dir", str(tmp_path / "data"), "--n-estimators", "5"]) == 0
    doc = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    rows = [r for r in doc["results"] if r["series"] == "features/pandas"]
    assert len(rows) == 2 and all(r["step_s"] > 0 and r["peak_rss_bytes"] > 0 for r in rows)
    assert rows[0]["rows"] < rows[1]["rows"]
    fit = doc["exponents"]["features/pandas"]
    assert fit["sizes_run"] == [r["rows"] for r in rows] and fit["not_run"] == []
    assert isinstance(fit["step_s_exponent"], float) and isinstance(fit["peak_rss_bytes_exponent"], float)
    assert doc["conditions"]["machine"] and "loadavg_start" in doc["conditions"]
    assert doc["memory_guard"]["in_memory_limit_rows_24gib"] > 10_000_000
    assert [c["rows"] for c in doc["memory_guard"]["checks"]] == [r["rows"] for r in rows]
    assert json.loads(capsys.readouterr().out)["output"] == str(out)


def test_a_refusing_child_prints_its_refusal_and_exits_2(tmp_path, capsys) -> None:
    """What run_measured reads from a child that will not fit (common.scaling records it as not run)."""
    data = dataset_for(3000, tmp_path)
    args = ["--child", "train/pandas", "--data", str(data), "--work", str(tmp_path), "--available-gib", "0.0001"]
    assert scale.main(args) == REFUSED_EXIT == 2
    r = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert r["series"] == "train/pandas" and "only 0 MiB is available" in r["refused"]
