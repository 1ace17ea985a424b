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
        cfg=tiny_config(epochs=2, batch_size=32, tta=2, amp=False, channels_last=False),  # pinned: timed alone
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
    assert fixed["models"]["airnet-1ep"]["epochs"] == 1 and fixed["models"]["airnet-1ep"]["budget_s"] is None
    assert saved["serving"]["overhead_ratio"] > 0 and saved["load_before"] is not None
    assert out.with_suffix(".png").is_file() and "| airnet-1ep |" in out.with_suffix(".md").read_text()
    assert doc["output"] == str(out)


def test_fixed_epochs_over_seeds_report_mean_efficiency_and_keep_other_cpu_kinds(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "shop", per_class=12)
    out = tmp_path / "results" / "vision-shop.json"
    out.parent.mkdir(parents=True)
    other = {"cpu_model": "AMD EPYC (earlier run)", "cpu_count": 2, "models": {}, "load_before": 0.1}
    out.write_text(json.dumps({"cpu_kinds": {"some-other-kind": other}}))
    doc = run_bench(str(folder), output=out, epochs=1, seeds=2, cfg=tiny_config(batch_size=32), progress=False)
    saved = json.loads(out.read_text())
    run = saved["models"]["airnet-1ep"]
    assert set(saved["models"]) == {"airnet-1ep"} and saved["seeds"] == 2
    assert [s["seed"] for s in run["per_seed"]] == [42, 43]
    accs = [s["metrics"]["accuracy_tta"] for s in run["per_seed"]]
    assert run["metrics"]["accuracy_tta"] == pytest.approx(sum(accs) / 2, abs=1e-4)
    assert run["metrics"]["accuracy_tta_std"] >= 0
    eff = run["efficiency"]
    assert eff["train_gflop_per_image"] > 0 and eff["peak_gflops_per_s"] > 0
    assert eff["fraction_of_peak"] == pytest.approx(eff["train_gflops_per_s"] / eff["peak_gflops_per_s"], abs=2e-3)
    assert run["precision"]["name"] in {"float32", "float32+channels_last", "bfloat16", "bfloat16+channels_last"}
    prof = eff["step_profile"]  # where a training step's time goes, per operator group
    assert 0 < prof["batch"] <= 32 and prof["step_s"] > 0  # the batch size, or the whole set when smaller
    assert sum(prof["fraction"].values()) == pytest.approx(1.0, abs=0.01) and prof["fraction"]["convolution"] > 0
    kinds = saved["cpu_kinds"]
    assert kinds["some-other-kind"] == other and doc["cpu_kind"] in kinds
    assert kinds[doc["cpu_kind"]]["models"]["airnet-1ep"]["metrics"]["accuracy_tta"] == run["metrics"]["accuracy_tta"]
    md = out.with_suffix(".md").read_text()
    assert f"| {doc['cpu_kind']} |" in md and "GEMM peak" in md and "of a training step" in md


def test_training_flops_count_forward_and_backward_and_grow_with_width() -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from apps.vision.bench import train_flops_per_image
    from apps.vision.train import make_model

    cfg = tiny_config()
    images = _tiny_set(8, cfg.image_size)
    per_image = train_flops_per_image(cfg, images, batch=4)
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        make_model(cfg, images)(images.images[:4].float())
    forward = fwd.get_total_flops() / 4
    assert 2.0 * forward < per_image < 3.2 * forward  # backward costs about twice the forward
    wider = train_flops_per_image(replace(cfg, widths=(16, 32, 32)), images, batch=4)
    assert 2.0 < wider / per_image < 4.0  # doubling the widths: the inner convs x4, the fixed whitening x1-2


def test_device_cuda_without_a_gpu_is_one_error_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MLREF_HOME": str(tmp_path)}
    for args, message in [
        (["bench", "--device", "cuda", "--epochs", "1"], "error: --device cuda: no CUDA GPU is visible to torch"),
        (["train", "--device", "tpu"], "error: --device 'tpu': expected auto, cpu, cuda, cuda:N or mps"),
    ]:
        r = subprocess.run([sys.executable, "-m", "apps.vision", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[0]] and message in r.stderr


def _tiny_set(n: int, size: int):
    import torch

    from apps.vision.data import ImageSet

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    import numpy as np

    return ImageSet(images, torch.arange(n) % 3, ["a", "b", "c"], [f"{i}.png" for i in range(n)], np.full(n, size))


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


def test_lossless_cifar_from_torchvision_is_reported_and_written_apart_from_the_jpeg_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the JPEG copy, ``load`` reads torchvision's lossless batches: that run must not overwrite (or be
    labelled as) the JPEG copy's results in bench/results/vision.json."""
    import numpy as np

    from apps.vision import bench
    from apps.vision.data import CIFAR10, Dataset

    images = _tiny_set(40, 16)
    paths = [f"cifar10:train:{i}" for i in range(len(images))]
    lossless = replace(images, paths=paths, sizes=np.full((len(images), 2), 32))
    monkeypatch.setattr(bench, "load", lambda *a, **kw: Dataset(CIFAR10, lossless, lossless.subset(list(range(10)))))
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(image_size=16, batch_size=16, amp=False, channels_last=False)
    doc = bench.run_bench(epochs=1, cfg=cfg, progress=False)
    assert Path(doc["output"]) == Path("bench/results/vision-cifar10-lossless.json")
    assert not Path("bench/results/vision.json").exists()
    assert "CIFAR-10 as published" in doc["dataset"] and "JPEG" not in doc["protocol"]
