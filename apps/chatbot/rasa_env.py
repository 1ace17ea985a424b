"""Drive Rasa in ``.venv-chatbot`` from the main environment: subprocesses for ``rasa train/test/data validate``,
and the two servers (``rasa run`` and the action server) as child processes that always get stopped.

Nothing here imports Rasa: the boundary between the environments is the command line, files and HTTP. A training
run works in a copy of the project (``workdir``), so the repository's files are never written and added training
data (``retrain``) stays with its run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from apps.chatbot.config import MODEL_FILE, PROJECT, Config, chatbot_venv
from common.data import DataError

log = logging.getLogger(__name__)
PROJECT_PARTS = (
    "config.yml",
    "domain.yml",
    "credentials.yml",
    "endpoints.yml",
    "data",
    "tests",
    "components",
    "actions",
)


class RasaError(RuntimeError):
    """A Rasa command failed (the message ends with the tail of its output)."""


def rasa_executable() -> Path:
    """``.venv-chatbot/bin/rasa``, or a user error that says how to build it."""
    exe = chatbot_venv() / "bin" / "rasa"
    if not exe.exists():
        raise DataError(
            f"the chatbot's Rasa environment is missing ({exe} not found): run `make setup-chatbot` "
            "(Python 3.10 + requirements/chatbot.txt), or set MLREF_CHATBOT_VENV"
        )
    return exe


def subprocess_env(cfg: Config | None = None, **extra: str) -> dict[str, str]:
    """The environment of every Rasa process: quiet TensorFlow, no telemetry, the project on PYTHONPATH."""
    cfg = cfg or Config()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        {
            "PYTHONPATH": str(PROJECT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "RASA_TELEMETRY_ENABLED": "false",
            "MPLBACKEND": "Agg",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "TF_ENABLE_ONEDNN_OPTS": "0",
            "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS", "1"),
            "PYTHONHASHSEED": str(cfg.seed),
            "MLREF_RECOMMENDER_URL": cfg.recommender_url,
            "MLREF_FRAUD_URL": cfg.fraud_url,
            "MLREF_CHATBOT_HTTP_TIMEOUT_S": str(cfg.http_timeout_s),
        }
    )
    env.update(extra)
    return env


def run_rasa(
    args: list[str],
    *,
    cwd: Path,
    cfg: Config | None = None,
    timeout_s: float = 3600.0,
    log_file: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``rasa ARGS`` in ``cwd``; output to ``log_file`` (and the tail into the error when it fails)."""
    cmd = [str(rasa_executable()), *args]
    log.info("rasa %s (in %s)", " ".join(args), cwd)
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=subprocess_env(cfg),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    output = proc.stdout + proc.stderr
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(output)
    if check and proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise RasaError(f"`rasa {' '.join(args)}` exited {proc.returncode}:\n{tail}")
    return proc


def child_peak_rss_mb() -> float:
    """Peak resident memory of the largest finished child process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------- project copies
def pipeline_config(cfg: Config, *, nlu_only: bool = False) -> dict[str, Any]:
    """The project's config.yml with ``cfg``'s values; ``nlu_only`` keeps the intent pipeline alone (no
    ResponseSelector, no FallbackClassifier, no policies): what ``nlu-bench`` trains on a plain intent dataset."""
    doc = yaml.safe_load((PROJECT / "config.yml").read_text())
    for comp in doc["pipeline"]:
        name = comp["name"]
        if name.endswith("SentenceLogRegClassifier"):
            comp["C"] = "auto" if cfg.classifier_c is None else cfg.classifier_c
        elif name == "ResponseSelector":
            comp["epochs"], comp["random_seed"] = cfg.response_selector_epochs, cfg.seed
        elif name == "FallbackClassifier":
            comp["threshold"] = cfg.fallback_threshold
    for pol in doc.get("policies", []):
        if pol["name"] == "TEDPolicy":
            pol["epochs"], pol["random_seed"] = cfg.ted_epochs, cfg.seed
    if cfg.ted_epochs == 0:  # rules + memoization alone: unseen dialogue paths go to the core fallback
        doc["policies"] = [p for p in doc.get("policies", []) if p["name"] != "TEDPolicy"]
    if nlu_only:
        doc["pipeline"] = [
            c
            for c in doc["pipeline"]
            if c["name"] not in ("ResponseSelector", "FallbackClassifier", "RegexEntityExtractor")
        ]
        doc.pop("policies", None)
    return doc


def prepare_workdir(dest: Path, cfg: Config, *, extra_nlu: Path | None = None) -> Path:
    """A copy of the Rasa project in ``dest`` with ``cfg`` applied (and extra labelled NLU data added)."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        src = PROJECT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    (dest / "config.yml").write_text(yaml.safe_dump(pipeline_config(cfg), sort_keys=False))
    if extra_nlu is not None:
        shutil.copy2(extra_nlu, dest / "data" / "nlu_added.yml")
    return dest


# ------------------------------------------------------------------------------------------------ rasa commands
def validate_data(workdir: Path, cfg: Config | None = None) -> str:
    """``rasa data validate --fail-on-warnings``: raises :class:`RasaError` on any warning; returns the output."""
    proc = run_rasa(
        [
            "data",
            "validate",
            "--fail-on-warnings",
            "--config",
            "config.yml",
            "--domain",
            "domain.yml",
            "--data",
            "data",
        ],
        cwd=workdir,
        cfg=cfg,
        timeout_s=900,
        log_file=workdir / "logs" / "validate.log",
    )
    return proc.stdout + proc.stderr


def train(workdir: Path, cfg: Config, *, out: Path | None = None) -> tuple[Path, float]:
    """``rasa train`` in ``workdir`` -> (the model archive, seconds)."""
    out = out or workdir / "models"
    t0 = time.perf_counter()
    run_rasa(
        [
            "train",
            "--config",
            "config.yml",
            "--domain",
            "domain.yml",
            "--data",
            "data",
            "--out",
            str(out),
            "--fixed-model-name",
            MODEL_FILE.removesuffix(".tar.gz"),
        ],
        cwd=workdir,
        cfg=cfg,
        timeout_s=cfg.train_timeout_s,
        log_file=workdir / "logs" / "train.log",
    )
    model = out / MODEL_FILE
    if not model.exists():
        raise RasaError(f"rasa train finished but wrote no {model}")
    return model, time.perf_counter() - t0


def story_results(out: Path) -> dict[str, Any]:
    """Pass/fail counts of the end-to-end test stories from a ``rasa test`` output folder."""
    report = json.loads((out / "story_report.json").read_text())
    conv = report.get("conversation_accuracy", {})
    failed_file = out / "failed_test_stories.yml"
    failed = []
    if failed_file.exists():
        doc = yaml.safe_load(failed_file.read_text()) or {}
        failed = [s.get("story") for s in (doc.get("stories") or [])]
    total, correct = int(conv.get("total", 0)), int(conv.get("correct", 0))
    return {
        "total": total,
        "passed": correct,
        "failed": failed,
        "all_passed": total > 0 and correct == total,
        "action_accuracy": report.get("accuracy"),
        "action_macro_f1": (report.get("macro avg") or {}).get("f1-score"),
    }


def run_test_stories(workdir: Path, model: Path, out: Path, cfg: Config | None = None) -> dict[str, Any]:
    """``rasa test core`` on the end-to-end test stories (user text through NLU) -> pass/fail counts.

    Explicit paths: a bare ``rasa test`` crashes in 3.6.21. Custom actions are not executed by ``rasa test``; their
    events come from the stories (the action server has its own tests).
    """
    out.mkdir(parents=True, exist_ok=True)
    run_rasa(
        ["test", "core", "--model", str(model), "--stories", "tests/test_stories.yml", "--out", str(out), "--no-plot"],
        cwd=workdir,
        cfg=cfg,
        timeout_s=1800,
        log_file=out / "rasa_test_core.log",
    )
    return story_results(out)


def intent_report(path: Path) -> dict[str, Any]:
    """Accuracy, macro/weighted F1 and per-intent F1 from Rasa's ``intent_report.json``."""
    report = json.loads(path.read_text())
    skip = ("macro avg", "weighted avg", "micro avg")
    return {
        "accuracy": float(report["accuracy"]),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "n": int(report["macro avg"]["support"]),
        "per_intent": {
            k: {"f1": v["f1-score"], "support": v["support"]}
            for k, v in report.items()
            if isinstance(v, dict) and "f1-score" in v and k not in skip
        },
    }


def evaluate_nlu(model: Path, nlu_file: Path, out: Path, *, cwd: Path, cfg: Config | None = None) -> dict[str, Any]:
    """``rasa test nlu`` of ``model`` on labelled messages -> accuracy, macro-F1 (intents)."""
    out.mkdir(parents=True, exist_ok=True)
    run_rasa(
        ["test", "nlu", "--model", str(model), "--nlu", str(nlu_file), "--out", str(out), "--no-plot"],
        cwd=cwd,
        cfg=cfg,
        timeout_s=3600,
        log_file=out / "rasa_test_nlu.log",
    )
    return intent_report(out / "intent_report.json")


def cross_validate(workdir: Path, cfg: Config, out: Path) -> dict[str, Any]:
    """``rasa test nlu --cross-validation`` on the training data (``cfg.cv_folds`` folds) -> test-fold metrics."""
    out.mkdir(parents=True, exist_ok=True)
    run_rasa(
        [
            "test",
            "nlu",
            "--nlu",
            "data",
            "--config",
            "config.yml",
            "--cross-validation",
            "--folds",
            str(cfg.cv_folds),
            "--out",
            str(out),
            "--no-plot",
        ],
        cwd=workdir,
        cfg=cfg,
        timeout_s=3600,
        log_file=out / "rasa_cross_validation.log",
    )
    return intent_report(out / "intent_report.json")


# ------------------------------------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


ACTION_TOKEN_ENV = "MLREF_ACTION_TOKEN"  # project/rasa_sdk_plugins: the action server's shared secret with Rasa
RASA_TOKEN_ENV = "MLREF_RASA_TOKEN"  # project/scripts/rasa_run.py (--auth-token) and project/gateway_channel.py
# secrets one process has no use for are not passed to it
NOT_FOR_RASA = ("MLREF_API_KEY", "MLREF_CHATBOT_SECRET")
NOT_FOR_ACTIONS = (RASA_TOKEN_ENV, "MLREF_CHATBOT_SECRET")


REDIS_URL_ENV = "MLREF_REDIS_URL"  # set: conversations (tracker store) and their locks in Redis
REDIS_PASSWORD_ENV = "MLREF_REDIS_PASSWORD"  # the URL's password, given to Rasa in its environment, not the file
REDIS_KEY_PREFIX = "mlrefchatbot"  # Rasa accepts alphanumeric prefixes only


def redis_endpoint(url: str) -> tuple[dict[str, Any], str | None]:
    """Rasa's Redis store settings (host, port, db, key prefix, TLS) from ``redis[s]://[user:password@]host:port/db``
    and the password (kept out of endpoints.yml); a user error naming the variable for any other URL."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.strip("/") or "0"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or not path.isdigit():
        raise DataError(f"{REDIS_URL_ENV}: expected redis://host:port/db (or rediss://), got {parts.scheme}://...")
    settings: dict[str, Any] = {"url": parts.hostname, "port": parts.port or 6379, "db": int(path)}
    settings["key_prefix"] = REDIS_KEY_PREFIX
    if parts.username:
        settings["username"] = parts.username
    if parts.scheme == "rediss":
        settings["use_ssl"] = True
    if parts.password:
        settings["password"] = f"${{{REDIS_PASSWORD_ENV}}}"
    return settings, parts.password


def write_endpoints(path: Path, *, actions_port: int, tracker_db: Path, redis_url: str | None = None) -> Path:
    """endpoints.yml: the action server on loopback, called with the per-run token (``${MLREF_ACTION_TOKEN}``, read
    from Rasa's environment, so the file holds no secret), and the tracker store: SQLite at ``tracker_db`` by
    default; with ``redis_url`` (default: ``MLREF_REDIS_URL``) the tracker store *and* the lock store in Redis,
    so several Rasa processes serve one conversation consistently (each turn locks it, reads it, writes it)."""
    redis_url = redis_url if redis_url is not None else os.environ.get(REDIS_URL_ENV) or None
    text = (
        "action_endpoint:\n"
        f'  url: "http://127.0.0.1:{actions_port}/webhook"\n'
        "  headers:\n"
        f"    X-Action-Token: ${{{ACTION_TOKEN_ENV}}}\n"  # plain scalar: Rasa expands ${...} only in those
    )
    if redis_url:
        settings, _ = redis_endpoint(redis_url)
        lines = "".join(f"  {k}: {json.dumps(v) if not str(v).startswith('${') else v}\n" for k, v in settings.items())
        text += f"tracker_store:\n  type: redis\n{lines}lock_store:\n  type: redis\n{lines}"
    else:
        tracker_db.parent.mkdir(parents=True, exist_ok=True)
        db = json.dumps(str(tracker_db.resolve()))  # a JSON string is a valid YAML scalar, quotes and all
        text += f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {db}\n"
    path.write_text(text)
    return path


def write_credentials(path: Path) -> Path:
    """credentials.yml: the gateway channel only (``POST /webhooks/gateway/webhook`` with the per-run token)."""
    path.write_text(f"gateway_channel.GatewayInput:\n  token: ${{{RASA_TOKEN_ENV}}}\n")
    return path


@dataclass
class Servers:
    """The running servers: ``url`` is the Rasa server (``token``: its channel and API token), ``actions_url`` the
    action server."""

    url: str
    actions_url: str
    load_s: float  # from starting `rasa run` until it answered with the model loaded
    logs: Path
    token: str = ""


def _spawn(args: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "ab")  # noqa: SIM115 - closed with the process in _stop
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    proc._log_handle = fh  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM to the process group, then SIGKILL if it has not exited within ``timeout_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with_kill = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                with_kill = False
            proc.wait(timeout=10)
            log.warning("%s did not stop on SIGTERM%s", proc.args[1:3], "; killed" if with_kill else "")
    handle = getattr(proc, "_log_handle", None)
    if handle is not None:
        handle.close()


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def _wait(check, *, what: str, timeout_s: float, procs: list[subprocess.Popen], log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RasaError(f"{what}: the process exited with {p.returncode}:\n{_tail(log_path)}")
        if check():
            return
        time.sleep(0.5)
    raise RasaError(f"{what}: not ready after {timeout_s:.0f} s:\n{_tail(log_path)}")


def _rasa_ready(url: str, token: str | None = None) -> bool:
    """``GET /status`` answers with a loaded model (the server binds only once the model is loaded)."""
    try:
        r = httpx.get(f"{url}/status", params={"token": token} if token else None, timeout=2.0)
        return r.status_code == 200 and bool(r.json().get("model_file"))
    except (httpx.HTTPError, ValueError):
        return False


def actions_env(cfg: Config, token: str, **extra: str) -> dict[str, str]:
    """The action server's environment: loopback only (``SANIC_HOST``), the token Rasa must send, the other
    apps' URLs and API key; not Rasa's token or the customer-token secret."""
    env = subprocess_env(cfg, **extra)
    for name in NOT_FOR_ACTIONS:
        env.pop(name, None)
    env.update({ACTION_TOKEN_ENV: token, "SANIC_HOST": "127.0.0.1"})
    return env


def spawn_actions(cfg: Config, port: int, token: str, log_path: Path, **extra: str) -> subprocess.Popen:
    """``rasa run actions`` on 127.0.0.1:``port``, answering only calls with ``token`` (ready once the port is open:
    :func:`wait_for_port`)."""
    return _spawn(
        [str(rasa_executable()), "run", "actions", "--actions", "actions", "--port", str(port)],
        cwd=PROJECT,
        env=actions_env(cfg, token, **extra),
        log_path=log_path,
    )


def wait_for_port(port: int, proc: subprocess.Popen, *, what: str, timeout_s: float, log_path: Path) -> None:
    """Until something listens on 127.0.0.1:``port``; :class:`RasaError` when ``proc`` exits first or time is up."""
    _wait(lambda: port_open("127.0.0.1", port), what=what, timeout_s=timeout_s, procs=[proc], log_path=log_path)


@contextmanager
def servers(
    model: Path,
    run_dir: Path,
    cfg: Config,
    *,
    tracker_db: Path,
    rasa_port: int | None = None,
    actions_port: int | None = None,
    handoff_log: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Servers]:
    """Start the action server and ``rasa run --enable-api`` on ``model``, both on 127.0.0.1 only and each behind
    a random token made for this run (Rasa: ``--auth-token`` for its API and the gateway channel's token; the
    action server: only Rasa's calls); stop both (SIGTERM, then SIGKILL) when the block ends, however it ends."""
    rasa_port = rasa_port or cfg.rasa_port
    actions_port = actions_port or cfg.actions_port
    for port in (rasa_port, actions_port):
        if port_open("127.0.0.1", port):
            raise DataError(
                f"port {port} on 127.0.0.1 is already in use (another server running?); "
                "choose others with --rasa-port/--actions-port"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    endpoints = write_endpoints(run_dir / "endpoints.yml", actions_port=actions_port, tracker_db=tracker_db)
    credentials = write_credentials(run_dir / "credentials.yml")
    rasa_token, action_token = secrets.token_hex(32), secrets.token_hex(32)
    env_extra = {"MLREF_HANDOFF_LOG": str(handoff_log)} if handoff_log else {}
    env_extra |= extra_env or {}
    procs: list[subprocess.Popen] = []
    try:
        actions_log = run_dir / "actions.log"
        procs.append(spawn_actions(cfg, actions_port, action_token, actions_log, **env_extra))
        t0 = time.perf_counter()
        rasa_log = run_dir / "rasa.log"
        env = subprocess_env(cfg, **env_extra)
        for name in NOT_FOR_RASA:
            env.pop(name, None)
        if env.get(REDIS_URL_ENV):
            password = redis_endpoint(env[REDIS_URL_ENV])[1]
            if password:
                env[REDIS_PASSWORD_ENV] = password
        env.update({RASA_TOKEN_ENV: rasa_token, ACTION_TOKEN_ENV: action_token})
        python = rasa_executable().with_name("python")
        args = [
            str(python),
            str(PROJECT / "scripts" / "rasa_run.py"),  # `rasa run ... --auth-token` with the token off the command line
            "run",
            "--enable-api",
            "--model",
            str(model),
            "--endpoints",
            str(endpoints),
            "--credentials",
            str(credentials),
            "--interface",
            "127.0.0.1",
            "--port",
            str(rasa_port),
        ]
        procs.append(_spawn(args, cwd=PROJECT, env=env, log_path=rasa_log))
        url = f"http://127.0.0.1:{rasa_port}"
        wait_for_port(
            actions_port, procs[0], what="the action server", timeout_s=cfg.startup_timeout_s, log_path=actions_log
        )
        _wait(
            lambda: _rasa_ready(url, rasa_token),
            what="rasa run",
            timeout_s=cfg.startup_timeout_s,
            procs=procs[1:],
            log_path=rasa_log,
        )
        yield Servers(
            url=url,
            actions_url=f"http://127.0.0.1:{actions_port}",
            load_s=time.perf_counter() - t0,
            logs=run_dir,
            token=rasa_token,
        )
    finally:
        for p in reversed(procs):
            _stop(p)
