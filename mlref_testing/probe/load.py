"""A bounded, open-loop load test of a service on 127.0.0.1, from a separate client process.

Request ``i`` is due at ``t0 + i / rate`` whatever happened to earlier ones (open loop); ``clients`` threads with
keep-alive ``http.client`` connections send each one when due, and its latency is measured **from the due time**,
so time spent queued behind a slow answer counts (no coordinated omission). The client runs in its own process
(``python -m mlref_testing.probe.load``) so that it does not share the server's GIL. The machine's load average before
and after is recorded beside the percentiles: on a shared machine the tail is often the neighbours, not the
service.

    result = run_load("http://127.0.0.1:8000", "/v1/transactions/score", bodies, rate=200, n=2000)
    result.p99_ms, result.errors, result.achieved_rate_per_s, result.loadavg_before

Bounds: loopback URLs only, at most :data:`MAX_REQUESTS` requests and :data:`MAX_DURATION_S` seconds of
schedule; the client process is killed if it overruns.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_REQUESTS = 100_000
MAX_DURATION_S = 600.0
MAX_CLIENTS = 64
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class LoadResult:
    """Latency in milliseconds from each request's scheduled send time; ``errors`` = answers other than 2xx
    plus failed connections (status 0 in ``statuses``)."""

    url: str
    method: str
    path: str
    target_rate_per_s: float
    requests: int
    clients: int
    duration_s: float
    achieved_rate_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int] = field(default_factory=dict)
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    cpu_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        la = ", ".join(f"{x:.2f}" for x in self.loadavg_before)
        return (
            f"{self.requests} requests at {self.target_rate_per_s:g}/s "
            f"(achieved {self.achieved_rate_per_s:.1f}/s): "
            f"p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"{self.errors} errors; load average before {la} on {self.cpu_count} CPUs"
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation (numpy's default)."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _check_target(url: str, rate: float, n: int, clients: int) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"load tests run against http://127.0.0.1 only (loopback), got {url!r}")
    if not 1 <= n <= MAX_REQUESTS:
        raise ValueError(f"n must be in [1, {MAX_REQUESTS}], got {n}")
    if not rate > 0 or n / rate > MAX_DURATION_S:
        raise ValueError(f"rate must be > 0 and n / rate <= {MAX_DURATION_S:g} s, got {n} requests at {rate}/s")
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be in [1, {MAX_CLIENTS}], got {clients}")
    return parts.hostname, parts.port or 80


def run_load(
    url: str,
    path: str,
    bodies: Sequence[Any] | None = None,
    *,
    method: str = "POST",
    rate: float = 100.0,
    n: int = 1000,
    clients: int = 8,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> LoadResult:
    """Send ``n`` requests to ``url + path`` at ``rate`` per second from a separate process; returns the result.

    ``bodies``: JSON bodies, request ``i`` sends ``bodies[i % len(bodies)]`` (``None`` = no body, e.g. GET).
    ``timeout_s``: kill the client after this long (default: the schedule plus 60 s).
    """
    _check_target(url, rate, n, clients)
    spec = {
        "url": url,
        "path": path,
        "method": method,
        "rate": rate,
        "n": n,
        "clients": clients,
        "headers": dict(headers or {}),
        "bodies": [json.dumps(b) for b in bodies] if bodies else None,
    }
    with tempfile.TemporaryDirectory(prefix="mlref-load-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        limit = timeout_s if timeout_s is not None else n / rate + 60.0
        proc = subprocess.run(
            [sys.executable, "-m", "mlref_testing.probe.load", str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=limit,
            cwd=Path(__file__).resolve().parents[2],
        )
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"load client failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return LoadResult(**json.loads(out_path.read_text()))


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


def client(spec: dict[str, Any]) -> LoadResult:
    """The open-loop client (runs in the child process)."""
    host, port = _check_target(spec["url"], spec["rate"], spec["n"], spec["clients"])
    rate, n, method, path = float(spec["rate"]), int(spec["n"]), spec["method"], spec["path"]
    bodies: list[str] | None = spec.get("bodies")
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    latency = [0.0] * n
    status = [0] * n
    next_i = iter(range(n))
    lock = threading.Lock()
    before = _loadavg()
    t0 = time.perf_counter() + 0.1

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                break
            due = t0 + i / rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            body = bodies[i % len(bodies)] if bodies else None
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status[i] = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
            latency[i] = time.perf_counter() - due
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(int(spec["clients"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ms = sorted(x * 1e3 for x in latency)
    codes = Counter(str(s) for s in status)
    return LoadResult(
        url=spec["url"],
        method=method,
        path=path,
        target_rate_per_s=rate,
        requests=n,
        clients=len(threads),
        duration_s=round(elapsed, 3),
        achieved_rate_per_s=round(n / elapsed, 2),
        p50_ms=round(percentile(ms, 50), 3),
        p95_ms=round(percentile(ms, 95), 3),
        p99_ms=round(percentile(ms, 99), 3),
        max_ms=round(ms[-1], 3),
        errors=sum(not 200 <= s < 300 for s in status),
        statuses=dict(sorted(codes.items())),
        loadavg_before=before,
        loadavg_after=_loadavg(),
        cpu_count=os.cpu_count(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="open-loop load client (used by run_load)")
    parser.add_argument("spec", type=Path, help="JSON spec written by run_load")
    parser.add_argument("out", type=Path, help="where to write the result JSON")
    args = parser.parse_args(argv)
    try:
        result = client(json.loads(args.spec.read_text()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict()))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
