"""The kit every app's scaling bench (``python -m apps.<app> bench --scale``) is built from.

A scaling bench runs one measured step (fit, feature computation, batch scoring...) at growing sizes, each in a
fresh interpreter so its peak memory is its own, and fits how cost grows: ``cost ∝ size^b`` on log-log axes.

- :func:`run_measured` runs a child command, samples the resident memory of its whole process tree (JVMs and Dask
  workers included) every 0.2 s, kills it past a timeout, and returns the child's last JSON line plus
  ``wall_s`` / ``peak_rss_bytes``. A child that refuses its data (it will not fit in memory) exits
  :data:`REFUSED_EXIT` with ``{"refused": "<message naming the memory it needs>"}``.
- :func:`loglog_exponent` / :func:`exponents` fit b per series; :func:`plot_curves` draws the log-log figure.
- :func:`conditions` records the machine's load and CPU beside the figures (a loaded machine gives upper bounds).
- :func:`parse_sizes` reads ``--sizes 1e5,1e6,1e7``.
- :func:`check_memory` is the guard every in-memory path calls before it loads: it refuses (exit 2, one line naming
  the memory needed and what is available, and what to use instead) rather than be killed by the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError

REFUSED_EXIT = 2  # the child's exit code when it refused the data (its message is in the result)
GIB = 2**30


class MemoryRefused(DataError):
    """An in-memory path refused data that will not fit (a user error: exit 2, one line naming the memory)."""


def available_memory() -> int:
    """Bytes this process may still take: ``MemAvailable``, or a cgroup limit's headroom where that is lower.

    ``MLREF_MEMORY_BYTES`` overrides it (to rehearse a smaller machine, and in tests)."""
    if os.environ.get("MLREF_MEMORY_BYTES"):
        return int(float(os.environ["MLREF_MEMORY_BYTES"]))
    import psutil

    avail = int(psutil.virtual_memory().available)
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, max(int(limit) - used, 0))
    return avail


def human_bytes(n: float) -> str:
    """``20_900_000_000`` -> ``"19.5 GiB"``; below a GiB in MiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def check_memory(need: int, *, what: str, instead: str, available: int | None = None) -> None:
    """Raise :class:`MemoryRefused` when ``need`` bytes exceed ``available`` (default :func:`available_memory`).

    The message names ``what`` needs it, how much there is, and ``instead`` (the path that streams or distributes).
    """
    avail = available_memory() if available is None else available
    if need > avail:
        raise MemoryRefused(
            f"{what} needs about {human_bytes(need)} of memory and {human_bytes(avail)} is available: {instead}"
        )


def rss_bytes() -> int:
    """This process's resident memory now (bytes)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_self_bytes() -> int:
    """This process's peak resident memory since its exec (bytes): ``VmHWM`` of /proc/self/status.

    Not ``ru_maxrss``: Linux keeps it across ``execve``, so a child started by a parent that once held 4.7 GB reports
    4.7 GB whatever it uses itself (a measured trap of the scaling benches)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_measured(cmd: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` (a child that prints its result as one JSON line last); measure its process tree.

    Returns the child's JSON plus ``wall_s`` and ``peak_rss_bytes`` (max of the sampled tree and the child's own
    ``peak_rss_self_bytes`` when it reports one); ``{"timed_out": True}`` past ``timeout_s`` (the tree is killed);
    ``{"failed": "exit N: <stderr tail>"}`` when it crashed or printed no JSON (an OOM kill shows as exit -9).
    """
    import psutil

    t0 = time.perf_counter()
    # the child's log goes to a file (a chatty child would block on a full stderr pipe while we only poll)
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                tree = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            if time.perf_counter() - t0 > timeout_s:
                for p in [*ps.children(recursive=True), ps]:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                proc.communicate()
                return {"timed_out": True, "wall_s": time.perf_counter() - t0, "peak_rss_bytes": peak}
            time.sleep(0.2)
        stdout, _ = proc.communicate()
        err.seek(0)
        stderr = err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode not in (0, REFUSED_EXIT) or not lines:
        tail = stderr.strip().splitlines()[-5:]
        return {"failed": f"exit {proc.returncode}: {' | '.join(tail)}", "peak_rss_bytes": peak}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - t0
    result["peak_rss_bytes"] = max(peak, int(result.get("peak_rss_self_bytes", 0)))
    return result


def python_child(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def loglog_exponent(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """Slope b of log(value) = a + b log(size) (least squares); None with fewer than 2 positive points."""
    pts = [(s, v) for s, v in zip(sizes, values, strict=True) if s and v and v > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def exponents(
    results: Sequence[dict[str, Any]], *, series: str, x: str, metrics: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per value of ``results[i][series]``: the sizes it ran at and the fitted exponent of each metric."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r[series] for r in results):
        mine = [r for r in results if r[series] == name]
        row: dict[str, Any] = {"sizes_run": [r[x] for r in mine if all(m in r for m in metrics)]}
        for m in metrics:
            ok = [r for r in mine if m in r and x in r]
            row[f"{m}_exponent"] = loglog_exponent([r[x] for r in ok], [r[m] for r in ok])
        row["not_run"] = [
            {"size": r.get(x), "why": r.get("refused") or ("timed out" if r.get("timed_out") else r.get("failed"))}
            for r in mine
            if "refused" in r or "timed_out" in r or "failed" in r
        ]
        out[str(name)] = row
    return out


def plot_curves(
    results: Sequence[dict[str, Any]],
    path: Path,
    *,
    series: str,
    x: str,
    x_label: str,
    panels: Sequence[tuple[str, str, float]],
    title: str,
) -> Path:
    """One log-log panel per ``(metric, label, divisor)``; one line per series; sizes not run marked on panel 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.reports.files import save_figure

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for name in dict.fromkeys(r[series] for r in results):
        color = None
        for ax, (metric, label, div) in zip(axes[0], panels, strict=True):
            ok = sorted((r for r in results if r[series] == name and metric in r), key=lambda r: r[x])
            if ok:
                xs, ys = [r[x] for r in ok], [r[metric] / div for r in ok]
                (line,) = ax.loglog(xs, ys, "o-", label=str(name), color=color)
                color = line.get_color()
            ax.set(xlabel=x_label, ylabel=label)
        for r in results:
            if r[series] == name and ("refused" in r or "timed_out" in r or "failed" in r):
                axes[0][0].axvline(r[x], color="grey", ls=":", lw=0.8)
                axes[0][0].annotate(f"{name}: {'refused' if 'refused' in r else 'no result'}", (r[x], 1), fontsize=7)
    for ax in axes[0]:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def conditions(t0: float, load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The machine and its load over a run started at ``perf_counter() == t0`` (load taken at the start)."""
    from common.config import machine_info

    end = os.getloadavg()
    busy = max(load_start[0], end[0]) > 1.5
    return {
        "machine": machine_info(),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in end],
        "note": "loaded machine (other jobs running): times are upper bounds" if busy else "quiet machine",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def parse_sizes(text: str, *, minimum: int, what: str) -> list[int]:
    """``"1e5,1e6"`` -> ``[100000, 1000000]``; ValueError naming ``--sizes`` and ``what`` otherwise."""
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--sizes: comma-separated numbers of {what} like 1e5,1e6, got {text!r}") from None
    if not sizes or min(sizes) < minimum:
        raise ValueError(f"--sizes: at least {minimum} {what} each, got {text!r}")
    return sorted(set(sizes))
