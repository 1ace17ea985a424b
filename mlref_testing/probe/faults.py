"""Fault injection for tests, the same for every app: kill -9 mid-work, damaged artifacts and registries, and
commands run concurrently.

Each helper does one fault the way an operator or the machine would (a real ``SIGKILL`` to a real process, real
bytes changed on disk) so that a test can then assert what a user relies on: the old output is intact, the
champion is unchanged, the registry still reads, a damaged file is refused with one line and exit code 2::

    from mlref_testing.probe import faults

    done = faults.run_and_kill(faults.app_cmd("fraud", "batch", "-i", src, "-o", dst),
                               when_path_exists=marker)          # kill -9 once the job reached the marker
    faults.flip_byte(faults.artifact_files(mv)[0])                # tamper with a registered model
    faults.empty_registry()                                       # the 0-byte mlflow.db case
    results = faults.run_concurrently([cmd_a, cmd_b])             # two retrains at once

Subprocesses inherit the current environment (so the test's ``MLREF_HOME``) with the repository on
``PYTHONPATH``; their stdout/stderr go to temporary files (no pipe can fill up and stall them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[2]

Cmd = Sequence[str | os.PathLike]


class FaultNotInjected(AssertionError):
    """The fault could not be injected as asked (e.g. the process finished before the kill): the test proves
    nothing, so it fails loudly instead."""


@dataclass
class Finished:
    """A finished subprocess: its command, exit code (``-9`` when killed by SIGKILL), output and wall seconds."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


# ------------------------------------------------------------------ commands


def env(**extra: str) -> dict[str, str]:
    """The current environment with the repository first on ``PYTHONPATH`` and ``extra`` on top."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p])
    out.update(extra)
    return out


def python_cmd(*args: Any) -> list[str]:
    """``python ARGS`` with this interpreter."""
    return [sys.executable, *map(str, args)]


def app_cmd(app: str, *args: Any) -> list[str]:
    """``python -m apps.<app> ARGS``."""
    return python_cmd("-m", f"apps.{app}", *args)


def script_cmd(directory: Path, source: str, name: str = "job.py") -> list[str]:
    """Write ``source`` to ``directory/name`` and return the command that runs it."""
    path = Path(directory) / name
    path.write_text(source)
    return python_cmd(path)


def _start(cmd: Cmd, environ: Mapping[str, str] | None, cwd: Path | None) -> tuple[subprocess.Popen, Any, Any]:
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - closed by _collect
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd or REPO,
        env=dict(environ or env()),
        stdout=out,
        stderr=err,
        stdin=subprocess.DEVNULL,
    )
    return proc, out, err


def _collect(proc: subprocess.Popen, out: Any, err: Any, t0: float) -> Finished:
    texts = []
    for fh in (out, err):
        fh.seek(0)
        texts.append(fh.read().decode("utf-8", "replace"))
        fh.close()
    return Finished([str(a) for a in proc.args], proc.returncode, texts[0], texts[1], time.monotonic() - t0)


def run(
    cmd: Cmd, *, timeout_s: float = 60.0, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Finished:
    """Run ``cmd`` to the end (killed after ``timeout_s``: then ``FaultNotInjected``)."""
    return run_concurrently([cmd], timeout_s=timeout_s, environ=environ, cwd=cwd)[0]


def run_concurrently(
    cmds: Sequence[Cmd],
    *,
    timeout_s: float = 60.0,
    environ: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    cwd: Path | None = None,
) -> list[Finished]:
    """Start every command at once and wait for all; results in the order given.

    ``environ``: one environment for all, or one per command (e.g. a different ``MLREF_HOME`` each).
    A command still running after ``timeout_s`` is killed and :class:`FaultNotInjected` raised with its output.
    """
    t0 = time.monotonic()
    envs = list(environ) if isinstance(environ, Sequence) else [environ] * len(cmds)
    if len(envs) != len(cmds):
        raise ValueError(f"{len(cmds)} commands but {len(envs)} environments")
    started = [_start(c, e, cwd) for c, e in zip(cmds, envs, strict=True)]
    deadline = t0 + timeout_s
    for proc, _, _ in started:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p, _, _ in started:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            results = [_collect(p, o, e, t0) for p, o, e in started]
            raise FaultNotInjected(
                f"{proc.args} did not finish within {timeout_s} s; outputs: "
                f"{[(r.returncode, r.stderr[-2000:]) for r in results]}"
            ) from None
    return [_collect(p, o, e, t0) for p, o, e in started]


def run_and_kill(
    cmd: Cmd,
    *,
    when_path_exists: str | Path | None = None,
    after: float | None = None,
    timeout_s: float = 60.0,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    sig: int = signal.SIGKILL,
) -> Finished:
    """Start ``cmd``, wait until ``when_path_exists`` exists (the job's own "I am mid-work now" marker) and/or
    ``after`` more seconds, then send ``sig`` (default SIGKILL: no handler, no cleanup, like ``kill -9`` or the
    OOM killer) and wait for it to die.

    Raises :class:`FaultNotInjected` when the process exits on its own first or the marker does not appear
    within ``timeout_s``: a kill that never happened must not pass for a survived one.
    """
    if when_path_exists is None and after is None:
        raise ValueError("give when_path_exists and/or after: when to kill")
    t0 = time.monotonic()
    proc, out, err = _start(cmd, environ, cwd)
    try:
        if when_path_exists is not None:
            marker = Path(when_path_exists)
            while not marker.exists():
                if proc.poll() is not None:
                    res = _collect(proc, out, err, t0)
                    raise FaultNotInjected(
                        f"{res.args} exited ({res.returncode}) before {marker} appeared: {res.stderr[-3000:]}"
                    )
                if time.monotonic() - t0 > timeout_s:
                    raise FaultNotInjected(f"{marker} did not appear within {timeout_s} s")
                time.sleep(0.02)
        if after is not None:
            time.sleep(after)
        if proc.poll() is not None:
            res = _collect(proc, out, err, t0)
            raise FaultNotInjected(
                f"{res.args} finished ({res.returncode}) before it could be killed: {res.stderr[-3000:]}"
            )
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _collect(proc, out, err, t0)


# ------------------------------------------------------------------ damaged files


def flip_byte(path: str | Path, offset: int | None = None) -> int:
    """Invert one byte of ``path`` (default: the middle one) in place; returns its offset."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise FaultNotInjected(f"{path} is empty: no byte to flip")
    offset = size // 2 if offset is None else offset % size
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return offset


def truncate(path: str | Path, keep: float | int = 0) -> int:
    """Cut ``path`` to ``keep`` bytes (an int) or to that share of its size (a float in [0, 1)); returns the new
    size. ``keep=0`` empties it, as a full disk or a botched copy does."""
    path = Path(path)
    size = path.stat().st_size
    new = int(size * keep) if isinstance(keep, float) else int(keep)
    if not 0 <= new < size or (new == 0 and size == 0):
        raise FaultNotInjected(f"cannot truncate {path} ({size} bytes) to {new} bytes")
    os.truncate(path, new)
    return new


def registry_db() -> Path:
    """The local registry's sqlite file (``$MLREF_HOME/mlflow.db``)."""
    from common import tracking

    path = tracking.store_path()
    if path is None:
        raise FaultNotInjected("the tracking store is remote: no local registry file to damage")
    return path


def empty_registry() -> Path:
    """Truncate the registry database to 0 bytes; returns its path."""
    path = registry_db()
    truncate(path, 0)
    return path


def truncate_registry(keep: float = 0.5) -> Path:
    """Keep only the first ``keep`` share of the registry database (a torn copy); returns its path."""
    path = registry_db()
    truncate(path, keep)
    return path


def artifact_files(mv: Any) -> list[Path]:
    """The files of a registered version as the registry stores them (local artifact store only), largest first:
    the bytes that :func:`common.registry.fetch_model_dir` hashes before any loader runs."""
    from common import tracking

    uri = tracking.client(read_only=True).get_run(mv.run_id).info.artifact_uri.rstrip("/") + "/model"
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise FaultNotInjected(f"artifacts of {mv.name} v{mv.version} are not local: {uri}")
    root = Path(unquote(parsed.path))
    files = [p for p in root.rglob("*") if p.is_file()]
    if not files:
        raise FaultNotInjected(f"no artifact files under {root}")
    return sorted(files, key=lambda p: -p.stat().st_size)
