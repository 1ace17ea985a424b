"""Issue #17 (vision): memory bounded whatever clients do, hostile files reported rather than crashing, config and
JSON limits. Each test failed before its fix."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from apps.vision.config import Config
from apps.vision.data import read_folder
from apps.vision.service import build_app, decode_budget
from common import serving
from common.data import DataError
from tests.vision.conftest import colour_image, make_folder, png_bytes, tiny_config
from tests.vision.helpers import register_copy

URL = "/v1/images:classify"
REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture
def cfg() -> Config:
    return replace(tiny_config(), max_upload_bytes=2 * MiB, max_batch_images=4, max_request_bytes=8 * MiB)


@pytest.fixture
def client(tiny_trained, cfg: Config):
    app = build_app(refresh_interval_s=None, cfg=cfg, prediction_log=False)
    app.state.holder.set(serving.Loaded(tiny_trained[0], None))
    with TestClient(app) as c:
        yield c


def _png(seed: int = 0) -> bytes:
    return png_bytes(colour_image(seed % 3, np.random.default_rng(seed)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "apps.vision", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


# ------------------------------------------------------------------------------------------ service memory


def test_decoding_budget_is_per_process_full_budget_is_503_with_retry_after(tiny_trained, cfg: Config) -> None:
    """Another request holding the whole process-wide decoding budget: this one waits ``decode_wait_s``, then 503."""
    cfg = replace(cfg, max_pixels=1_000_000, max_decode_pixels=1_000_000, decode_wait_s=0.0)
    app = build_app(refresh_interval_s=None, cfg=cfg, prediction_log=False)
    app.state.holder.set(serving.Loaded(tiny_trained[0], None))
    budget = decode_budget(cfg)
    with TestClient(app) as c:
        with budget.hold(cfg.max_decode_pixels, wait_s=0):
            busy = c.post(URL, files={"file": ("a.png", _png(), "image/png")})
            assert budget.pixels == cfg.max_decode_pixels  # the refused request holds nothing
        ok = c.post(URL, files={"file": ("a.png", _png(), "image/png")})
    assert busy.status_code == 503, busy.text
    assert int(busy.headers["retry-after"]) >= 1
    assert "busy decoding" in busy.json()["message"]
    assert ok.status_code == 200 and budget.pixels == 0 and budget.decodes == 0


def test_large_jpeg_is_decoded_at_a_reduced_scale(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4000x3000 JPEG for a 16-pixel model is decoded at 1/8 scale (Image.draft), not at full size."""
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(buf, format="JPEG", quality=70)
    r = client.post(URL, files={"file": ("big.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert decoded and max(w * h for w, h in decoded) <= 500 * 375


# ------------------------------------------------------------------------------------------ service input


def test_deeply_nested_json_is_422_not_500(client: TestClient) -> None:
    body = b'{"images":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = client.post(URL, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text[:300]
    assert "nested too deeply" in r.json()["message"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"files": {"file": ("n.txt", b"hello", "text/plain")}}, 400),
        ({"files": [("field", (None, "value"))]}, 400),
        ({"content": b"x" * (3 * MiB), "headers": {"content-type": "image/png"}}, 413),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ],
)
def test_every_error_answer_carries_message(client: TestClient, kwargs, status: int) -> None:
    r = client.post(URL, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["message"], str) and body["message"] == body["detail"]


# ------------------------------------------------------------------------------------------ readers


def _zip_of_big_entries(path: Path, n: int, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"incoming/blob{i:02d}.bin", bytes(size))
        zf.writestr("incoming/good.png", _png())
    return path


def test_readers_stream_one_file_at_a_time(tmp_path: Path, tiny_trained) -> None:
    """A zip of 8 x 8 MiB entries (tiny compressed): peak Python memory stays near one entry, in read_folder and
    in batch scoring (before: every entry's bytes were read first, 64 MiB and more)."""
    from apps.vision.lifecycle import batch_score

    archive = _zip_of_big_entries(tmp_path / "big.zip", 8, 8 * MiB)
    tracemalloc.start()
    try:
        images = read_folder(archive, image_size=16, labelled=False, progress=False)
        _, peak_read = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        res = batch_score(tiny_trained[0], archive, tmp_path / "out.csv", chunksize=2)
        _, peak_batch = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(images) == 1 and len(images.problems) == 8
    assert res["scored"] == 1 and res["skipped"] == 8
    assert peak_read < 3 * 8 * MiB, peak_read
    assert peak_batch < 3 * 8 * MiB, peak_batch


def test_unreadable_and_special_files_are_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folder(tmp_path / "ds", per_class=3)
    (root / "red" / "mem.png").symlink_to("/proc/self/mem")
    (root / "red" / "locked.png").write_bytes(_png())
    os.mkfifo(root / "green" / "pipe.png")
    outside = make_folder(tmp_path / "elsewhere", per_class=1)
    (root / "blue" / "linked").symlink_to(outside / "blue")  # leaves the root: refused
    (root / "green" / "inside").symlink_to(root / "red")  # a folder of the dataset: read at its own place only
    (root / "blue" / "loop").symlink_to(root / "blue")  # a loop: reported, not followed
    (root / "blue" / "again.png").symlink_to(root / "blue" / "000.png")  # a file link inside the root: followed
    # a file the process may not read (as root chmod 000 is not enough: refuse the open itself)
    real_open, real_read_bytes = os.open, Path.read_bytes

    def guarded_open(path, *a, **kw):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    def guarded_read_bytes(self):
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(Path, "read_bytes", guarded_read_bytes)
    s = read_folder(root, image_size=16, progress=False)
    reasons = {p.path.split(str(root) + "/")[-1]: p.reason for p in s.problems}
    assert "leaves the dataset root" in reasons["red/mem.png"]
    assert "leaves the dataset root" in reasons["blue/linked"]
    assert "Permission denied" in reasons["red/locked.png"]
    assert "not a regular file" in reasons["green/pipe.png"]
    assert "folder of the dataset (blue), read there" in reasons["blue/loop"]
    assert "folder of the dataset (red), read there" in reasons["green/inside"]
    assert len(reasons) == 6
    assert str(root / "blue" / "again.png") in s.paths and len(s) == 9 + 1
    assert s.counts() == {"blue": 4, "green": 3, "red": 3}


def test_batch_over_a_special_file_reports_it_and_exits_0(tmp_path: Path, tiny_trained) -> None:
    register_copy(tiny_trained)
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png())
    (folder / "mem.png").symlink_to("/proc/self/mem")
    out = tmp_path / "p.csv"
    r = _cli("batch", "--input", str(folder), "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    frame = pd.read_csv(out).fillna("")
    assert frame.set_index("path").loc[str(folder / "mem.png"), "error"].startswith("symbolic link leaves")


# ------------------------------------------------------------------------------------------ command line


def test_bad_config_values_and_a_non_dataset_file_are_one_error_line_exit_2(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(_png())
    for doc, field in [({"widths": "abc"}, "widths"), ({"image_size": 100_000}, "image_size")]:
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(doc))
        r = _cli("train", "--config", str(path), "--epochs", "1")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, r.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"{field}:" in lines[0], lines
    r = _cli("train", "-d", str(photo), "--epochs", "1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "not a folder or an archive" in lines[0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("widths", "abc", "not a list"),
        ("widths", [64, "x", 3], "not a valid int"),
        ("widths", [10**7], "out of bounds"),
        ("image_size", 100_000, "out of bounds"),
        ("batch_size", True, "not a valid int"),
        ("lr", float("nan"), "not a valid float"),
        ("max_pixels", 10**12, "out of bounds"),
        ("max_decode_pixels", 1000, "at least one image"),
        ("val_fraction", 0.6, "must be < 1"),
    ],
)
def test_config_values_are_validated(tmp_path: Path, field: str, value, message: str) -> None:
    path = tmp_path / "cfg.json"
    doc = {field: value, "test_fraction": 0.5} if field == "val_fraction" else {field: value}
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as err:
        Config.from_file(path)
    assert str(err.value).startswith(f"config {path}: {field if field != 'val_fraction' else 'val_fraction +'}")
    assert Config().validate() == Config()
