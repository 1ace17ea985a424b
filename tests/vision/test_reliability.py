"""Memory under concurrent hostile-but-valid load (issue #17): a real ``serve`` process, 12 concurrent requests of
two near-limit (6300x6300, 39.7 M of the 40 M pixel limit) progressive JPEGs each. Every request is answered 200 or
503 (decoding budget full: ``Retry-After``), and the server's peak RSS, sampled with psutil while the requests run,
stays under :data:`RSS_BOUND`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from mlref_testing import probe
from tests.vision.helpers import register_copy

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]
SIDE = 6300  # 39.69 M pixels: just under Config.max_pixels (40 M)
REQUESTS = 12
RSS_BOUND = 3 * 1024**3  # bytes: the documented bound of the service's peak RSS under this load
URL = "/v1/images:classify"


def near_limit_jpeg(seed: int) -> bytes:
    """A progressive 6300x6300 JPEG (~1-3 MB): gradients plus a noise texture, so it is not trivially small."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    tile = rng.integers(0, 255, (63, 63, 3)).astype(np.float32)
    arr = np.tile(tile, (SIDE // 63, SIDE // 63, 1)) * 0.12
    arr[..., 0] += ramp[None, :] * 0.5
    arr[..., 1] += ramp[:, None] * 0.5
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=75, progressive=True)
    return buf.getvalue()


class RssSampler:
    """The peak RSS of one process (bytes), sampled every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.proc, self.interval_s = psutil.Process(pid), interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server not ready in time")


def test_concurrent_near_limit_jpegs_keep_the_server_rss_bounded(tiny_trained, free_port: int) -> None:
    register_copy(tiny_trained)
    images = [near_limit_jpeg(0), near_limit_jpeg(1)]
    url = f"http://127.0.0.1:{free_port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "apps.vision", "serve", "--port", str(free_port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(url, proc)
        ps = psutil.Process(proc.pid)
        idle = ps.memory_info().rss

        def one(i: int) -> httpx.Response:
            files = [("files", (f"{i}-{j}.jpg", data, "image/jpeg")) for j, data in enumerate(images)]
            return httpx.post(url + URL, files=files, timeout=120)

        with RssSampler(proc.pid) as rss, ThreadPoolExecutor(REQUESTS) as pool:
            answers = list(pool.map(one, range(REQUESTS)))
        time.sleep(1.0)
        after = ps.memory_info().rss
        statuses = [r.status_code for r in answers]
        mib = 1024**2
        probe.record(
            [
                probe.Probe(
                    "vision",
                    "memory under concurrent near-limit images (served process)",
                    f"{REQUESTS} concurrent requests x 2 progressive {SIDE}x{SIDE} JPEGs",
                    f"every answer 200 or 503; peak RSS < {RSS_BOUND // mib} MiB",
                    f"peak {rss.peak // mib} MiB (idle {idle // mib} MiB, after {after // mib} MiB); "
                    f"statuses {sorted(set(statuses))}",
                    set(statuses) <= {200, 503} and rss.peak < RSS_BOUND,
                )
            ]
        )
        print(f"rss idle {idle // mib} MiB, peak {rss.peak // mib} MiB, after {after // mib} MiB; {statuses}")
        assert set(statuses) <= {200, 503}, [(r.status_code, r.text[:200]) for r in answers]
        assert 200 in statuses
        for r in answers:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1 and "message" in r.json()
        assert rss.peak < RSS_BOUND, f"peak RSS {rss.peak // mib} MiB >= {RSS_BOUND // mib} MiB"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
