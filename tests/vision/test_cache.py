"""The decoded-image cache on disk: the same data and batches as memory, stale/truncated/half-written files rebuilt
(never served), the memory guard's refusal, and the scaling bench's command line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from typer.testing import CliRunner

from apps.vision import cache
from apps.vision.__main__ import app
from apps.vision.cache import CacheTooLarge, DiskImages, choose_mode
from apps.vision.data import read_folder
from apps.vision.train import EvalImages, TrainImages, train
from common.errors import UserError
from common.workspace import Workspace
from tests.vision.conftest import SIZE, colour_image, make_folder, tiny_config

IMAGE_BYTES = 3 * SIZE * SIZE


def _both(folder: Path, cache_dir: Path):
    mem = read_folder(folder, image_size=SIZE, progress=False, cache="memory")
    disk = read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=cache_dir)
    return mem, disk


def _cache_file(cache_dir: Path) -> Path:
    (path,) = cache_dir.glob("*.vimg")
    return path


def test_disk_cache_gives_the_same_data_and_training_batches_as_memory(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=12)
    mem, disk = _both(folder, tmp_path / "cache")
    assert isinstance(disk.images, DiskImages) and isinstance(mem.images, torch.Tensor)
    assert torch.equal(disk.images[:], mem.images) and torch.equal(disk.labels, mem.labels)
    assert disk.paths == mem.paths and disk.classes == mem.classes and np.array_equal(disk.sizes, mem.sizes)
    # a split keeps the disk subset lazy; indexing it reads the same pixels
    idx = np.array([30, 2, 17, 5, 6, 7])
    sub_m, sub_d = mem.subset(idx), disk.subset(idx)
    assert isinstance(sub_d.images, DiskImages) and torch.equal(sub_d.images[:], sub_m.images)
    pick = torch.tensor([5, 0, 0, 3])  # unsorted, repeated
    assert torch.equal(sub_d.images[pick], sub_m.images[pick]) and torch.equal(sub_d.images[-1], sub_m.images[-1])
    # the loader the training loop builds (seeded sampler, batched fetch) yields identical batches
    for ds_m, ds_d in ((TrainImages(mem), TrainImages(disk)), (EvalImages(mem), EvalImages(disk))):
        loaders = [
            DataLoader(ds, batch_size=7, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=3))
            for ds in (ds_m, ds_d)
        ]
        for (in_m, y_m), (in_d, y_d) in zip(*loaders, strict=True):
            assert torch.equal(y_m, y_d)
            if isinstance(in_m, list):  # TrainImages: (images, indices)
                assert torch.equal(in_m[0], in_d[0]) and torch.equal(in_m[1], in_d[1])
            else:
                assert torch.equal(in_m, in_d)


def test_training_reads_from_the_disk_cache(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=12)
    disk = read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=tmp_path / "cache")
    tr, va = disk.subset(np.arange(0, 36, 2)), disk.subset(np.arange(1, 36, 2))
    model, result = train(tr, va, tiny_config(epochs=1, amp=False, channels_last=False), progress=False)
    assert len(result.history) == 1 and "val_accuracy" in result.history[0]
    assert model.predict_proba(va.images).shape == (len(va), 3)


def test_a_truncated_or_damaged_cache_is_rebuilt_not_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=4)
    mem, _ = _both(folder, tmp_path / "cache")
    path = _cache_file(tmp_path / "cache")
    whole = path.read_bytes()
    for damaged in (whole[: len(whole) - 100], whole[: 5 * IMAGE_BYTES], whole[:-1] + b"X", b""):
        path.write_bytes(damaged)
        with caplog.at_level(logging.WARNING, logger="apps.vision.cache"):
            again = read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=tmp_path / "cache")
        assert "truncated or damaged" in caplog.text
        caplog.clear()
        assert torch.equal(again.images[:], mem.images) and path.read_bytes() == whole


def test_a_stale_cache_is_rebuilt_when_the_folder_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=4)
    _, first = _both(folder, tmp_path / "cache")
    Image.fromarray(colour_image(1, np.random.default_rng(9))).save(folder / "green" / "new.png")
    with caplog.at_level(logging.WARNING, logger="apps.vision.cache"):
        again = read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=tmp_path / "cache")
    assert "stale" in caplog.text
    assert len(again) == len(first) + 1 and any(p.endswith("new.png") for p in again.paths)
    # a file rewritten in place (same name, new content and mtime) is noticed too
    target = folder / "red" / "000.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    fresh = read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=tmp_path / "cache")
    assert int(fresh.images[fresh.paths.index(str(target))].max()) == 0


def test_memory_mode_refuses_a_set_that_will_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=4)  # 12 images of 3 x 16 x 16 bytes
    need = 12 * IMAGE_BYTES
    monkeypatch.setattr(cache, "available_memory", lambda: need)  # 80 % of it is not enough
    with pytest.raises(CacheTooLarge, match=rf"12 images at 16 px need {need} bytes .* --cache disk"):
        read_folder(folder, image_size=SIZE, progress=False, cache="memory")
    # auto moves to the disk cache instead; train --cache memory refuses (a user error: one line, exit 2)
    assert choose_mode("auto", 12, SIZE) == "disk" and choose_mode("disk", 12, SIZE) == "disk"
    assert choose_mode("auto", 1, SIZE) == "memory"
    r = CliRunner().invoke(app, ["train", "--dataset", str(folder), "--image-size", str(SIZE), "--cache", "memory"])
    assert isinstance(r.exception, CacheTooLarge) and isinstance(r.exception, UserError)  # cli.run: exit 2
    assert f"need {need} bytes" in str(r.exception) and "--cache disk" in str(r.exception)


def test_a_write_killed_midway_leaves_no_cache_that_is_trusted(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=4)
    cache_dir = tmp_path / "cache"
    script = f"""
import os, signal, numpy as np
from pathlib import Path
from apps.vision import cache
def items():
    for i in range(3):
        yield f"img{{i}}", 0, np.full((3, 16, 16), i, np.uint8), (16, 16), None
    os.kill(os.getpid(), signal.SIGKILL)  # the machine dies mid-write
src = cache.fingerprint(Path({str(folder)!r}))
path = cache.cache_path(Path({str(cache_dir)!r}), Path({str(folder)!r}), image_size=16, classes=None, labelled=True,
                        max_pixels=40_000_000)
cache.write_cache(path, items(), image_size=16, classes=["a"], source=src, max_images=10)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not list(cache_dir.glob("*.vimg"))  # never renamed into place
    (tmp,) = cache_dir.glob(".*.tmp")
    mem = read_folder(folder, image_size=SIZE, progress=False)
    disk = read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=cache_dir)
    assert torch.equal(disk.images[:], mem.images) and tmp.exists()  # a fresh decode; the live-looking temp kept
    old = time.time() - cache.STALE_TMP_S - 60
    os.utime(tmp, (old, old))
    _cache_file(cache_dir).unlink()
    read_folder(folder, image_size=SIZE, progress=False, cache="disk", cache_dir=cache_dir)
    assert not tmp.exists()  # the dead writer's file is cleaned up by the next build


def test_an_error_midway_leaves_no_file_at_all(tmp_path: Path) -> None:
    def items():
        yield "a", 0, np.zeros((3, SIZE, SIZE), np.uint8), (SIZE, SIZE), None
        raise OSError("disk gone")

    path = tmp_path / "c" / "x.vimg"
    with pytest.raises(OSError, match="disk gone"):
        cache.write_cache(path, items(), image_size=SIZE, classes=["a"], source={}, max_images=2)
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "1e3"], "add --scale"),
        (["--scale", "--sizes", "abc"], "--sizes: comma-separated numbers of images"),
        (["--scale", "--sizes", "5"], "--sizes: at least 10 images"),
        (["--scale", "--sizes-224", "1e3,x"], "--sizes-224: comma-separated numbers"),
    ],
)
def test_bench_scale_argument_errors_exit_2(args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["bench", *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_scale_main_argument_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from apps.vision.scale import main

    for argv, message in ((["--modes", "ram"], "--modes: 'ram'"), (["--steps", "0"], "--steps: at least 1")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_scale_bench_at_a_tiny_size_writes_json_with_exponents(tmp_path: Path) -> None:
    from apps.vision.scale import main

    out = tmp_path / "vision-scale.json"
    argv = ["--sizes", "20,60", "--sizes-224", "", "--modes", "disk", "--steps", "1", "--batch-size", "8"]
    assert main([*argv, "--no-throughput", "--data-dir", str(tmp_path / "d"), "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    runs = doc["results"]
    assert [(r["series"], r["size"]) for r in runs] == [("disk 32px", 20), ("disk 32px", 60)]
    assert all(r["images"] == r["size"] and r["peak_rss_bytes"] > 0 and r["decode_s"] > 0 for r in runs)
    ex = doc["exponents"]["disk 32px"]
    assert ex["sizes_run"] == [20, 60] and ex["peak_rss_bytes_exponent"] is not None
    assert {"machine", "loadavg_start", "note"} <= set(doc["conditions"])
    assert doc["memory_mode_limit"]["max_images_224px_24gb"] < doc["memory_mode_limit"]["max_images_32px_24gb"]
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_refused_memory_run_is_recorded_with_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.vision.scale import run_one, write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "synth", 30, 32)
    monkeypatch.setattr(cache, "available_memory", lambda: 1000)
    r = run_one(
        "memory", folder, image_size=32, cache_dir=tmp_path / "c", steps=1, batch_size=4, widths=(8, 8, 8), seed=0
    )
    assert "30 images at 32 px need 92160 bytes" in r["refused"] and "--cache disk" in r["refused"]


def test_train_with_cache_disk_runs_the_whole_pipeline_from_the_file(tmp_path: Path) -> None:
    """train --cache disk: split, training, calibration, evaluation report and registration all read the cache."""
    folder = make_folder(tmp_path / "photos", per_class=12)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"amp": False, "channels_last": False, "tta": 1}))
    args = ["--widths", "8,16,16", "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "16"]
    args += ["--cache", "disk", "--cache-dir", str(tmp_path / "cache"), "--config", str(cfg)]
    r = CliRunner().invoke(app, ["train", "--dataset", str(folder), *args])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["version"] == "1" and out["epochs"] == 1 and Path(out["report"]).is_file()
    assert _cache_file(tmp_path / "cache").stat().st_size > 36 * IMAGE_BYTES


def test_monitor_and_retrain_read_large_image_sets_through_the_disk_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recent or newly labelled folder too large for memory goes to the disk cache, as train's does: monitor
    and retrain finish on it instead of decoding everything into RAM."""
    folder = make_folder(tmp_path / "photos", per_class=12)
    args = ["--widths", "8,16,16", "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "16"]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"amp": False, "channels_last": False, "tta": 1, "cache_dir": str(tmp_path / "c")}))
    r = CliRunner().invoke(app, ["train", "--dataset", str(folder), *args, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(cache, "available_memory", lambda: 4 * IMAGE_BYTES)  # auto: anything larger -> disk
    recent = make_folder(tmp_path / "recent", per_class=6, seed=3)
    before = set((tmp_path / "c").glob("*.vimg"))
    default_dir = Workspace.from_env().data_dir / "cache" / "vision"  # monitor takes no config: the default place
    r = CliRunner().invoke(app, ["monitor", "--dataset", str(recent)])
    assert r.exit_code in (0, 1), r.output  # a verdict (ok or alert), not a crash
    assert json.loads(r.stdout)["version"] == "1"
    assert len(list(default_dir.glob("recent-*.vimg"))) == 1
    new = make_folder(tmp_path / "new", per_class=8, seed=5)
    r = CliRunner().invoke(app, ["retrain", "--dataset", str(new), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "promoted" in json.loads(r.stdout)
    created = set((tmp_path / "c").glob("*.vimg")) - before
    assert [p.name.split("-")[0] for p in created] == ["new"]  # retrain's folder, in the configured cache_dir


class _Recording:
    """An image tensor that records the largest number of images read at once."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.shape, self.largest = images, images.shape, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: torch.Tensor) -> torch.Tensor:
        out = self.images[key]
        self.largest = max(self.largest, len(out))
        return out


def test_model_init_reads_large_images_in_bounded_chunks() -> None:
    """channel_stats and the whitening init used to take 10,000 / 5,000 images at once as floats: 6 GB and a 12 GB
    patch matrix at 224 px, whatever the cache."""
    from apps.vision.data import ImageSet
    from apps.vision.train import make_model, whitening_images

    images = _Recording(torch.randint(0, 256, (300, 3, 224, 224), dtype=torch.uint8))
    train_set = ImageSet(images, torch.arange(300) % 3, ["a", "b", "c"])  # type: ignore[arg-type]
    make_model(tiny_config(image_size=224), train_set)
    assert images.largest <= max(256, whitening_images(224)) and whitening_images(224) == 102
    assert whitening_images(32) == 5000
