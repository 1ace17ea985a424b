"""The bench pipeline on a tiny ImageFolder (fast), and the real CIFAR-10 benchmark (marked bench)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from apps.vision.bench import BENCH_CONFIG, run_bench, time_to
from tests.vision.conftest import make_folder, tiny_config


def test_bench_pipeline_writes_json_curve_and_table(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "my-shop", per_class=20)
    out = tmp_path / "results" / "vision-my-shop.json"
    doc = run_bench(
        str(folder),
        output=out,
        runs=("short", "long"),
        budget_s=3.0,
        short_budget_s=2.0,
        cfg=tiny_config(epochs=2, batch_size=32, tta=2),
        progress=False,
    )
    saved = json.loads(out.read_text())
    assert saved["app"] == "vision" and saved["dataset"].startswith("my-shop")
    assert set(saved["models"]) == {"airnet-short", "airnet-long"}
    short = saved["models"]["airnet-short"]
    assert short["epochs"] >= 1 and len(short["curve"]) == short["epochs"] and short["train_s"] > 0
    assert short["budget_s"] == 2.0 and short["probe_s"] > 0
    assert set(short["time_to"]) == {"85%", "90%", "92%"}
    assert {"accuracy_tta", "accuracy", "train_images_per_s", "infer_images_per_s"} <= set(short["metrics"])
    assert saved["models"]["airnet-long"]["budget_s"] == 3.0
    fixed = run_bench(
        str(folder), output=out, runs=("short",), epochs=1, cfg=tiny_config(batch_size=32), progress=False
    )
    assert fixed["models"]["airnet-short"]["epochs"] == 1 and fixed["models"]["airnet-short"]["budget_s"] is None
    assert saved["serving"]["overhead_ratio"] > 0 and saved["load_before"] is not None
    assert out.with_suffix(".png").is_file() and "| airnet-short |" in out.with_suffix(".md").read_text()
    assert doc["output"] == str(out)


def test_time_to_thresholds() -> None:
    curve = [{"train_s": 10, "accuracy": 0.80}, {"train_s": 20, "accuracy": 0.86}, {"train_s": 30, "accuracy": 0.91}]
    assert time_to(curve, {"train_s": 31, "accuracy_tta": 0.925}) == {"85%": 20, "90%": 30, "92%": 31}
    assert time_to(curve, {"train_s": 31, "accuracy_tta": 0.915})["92%"] is None


@pytest.mark.bench
def test_cifar10_jpeg_benchmark(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real benchmark (about 45 minutes on 2 quiet cores): writes bench/results/vision.json."""
    monkeypatch.setenv("MLREF_DATA_DIR", str(shared_data))
    doc = run_bench(None, cfg=replace(BENCH_CONFIG))
    short = doc["models"]["airnet-short"]["metrics"]
    assert short["accuracy_tta"] > 0.85
