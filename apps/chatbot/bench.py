"""Benchmarks: the NLU pipeline on any intent dataset (``nlu-bench``), and the assistant's serving latency (``bench``).

``nlu-bench`` trains the app's intent pipeline (the project's config.yml without ResponseSelector and
FallbackClassifier: a plain intent dataset has no retrieval intents, and accuracy is measured on the classifier's
own top intent) with ``rasa train nlu`` in .venv-chatbot, then classifies the test CSV through the trained model.
Training seconds are the wall time of ``rasa train nlu`` (including its ~10-30 s of TensorFlow start-up); peak memory
is the largest resident size of a finished child process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from apps.chatbot import identity, lifecycle, nlu, rasa_env, service
from apps.chatbot.config import APP, Config
from apps.chatbot.data import read_labelled, to_rasa_nlu
from common import cli
from common.config import get_settings, machine_info
from common.data import DataError
from common.reports import write_json

log = logging.getLogger(__name__)
REFERENCE_DATASET = "banking77"
PUBLISHED = {  # accuracy on the full test sets, as published
    "banking77": {
        "BERT-large fine-tuned (Casanueva et al. 2020)": {"accuracy": 0.937},
        "USE+ConveRT (Casanueva et al. 2020)": {"accuracy": 0.934},
    },
    "clinc150": {
        "BERT-large, in-scope (Larson et al. 2019)": {"accuracy": 0.969},
        "Rasa, in-scope (Larson et al. 2019)": {"accuracy": 0.915},
    },
}
MODEL_NAME = "MiniLM-L6 sentence embeddings + logistic regression (Rasa NLU)"


def _published(name: str) -> dict[str, Any]:
    key = name.lower().replace("-", "").replace("_", "")
    return next((v for k, v in PUBLISHED.items() if k in key), {})


def run_nlu_bench(
    train_csv: Path,
    test_csv: Path,
    cfg: Config,
    *,
    text_column: str = "text",
    intent_column: str = "intent",
    name: str | None = None,
    output: Path | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Train the intent pipeline on ``train_csv``, score ``test_csv``; returns (and writes) the results document."""
    train_df = read_labelled(train_csv, text_column=text_column, intent_column=intent_column, rename_intents=True)
    test_df = read_labelled(test_csv, text_column=text_column, intent_column=intent_column, rename_intents=True)
    if train_df["intent"].nunique() < 2:
        raise DataError(f"{train_csv}: need at least 2 intents, found {train_df['intent'].nunique()}")
    unseen = sorted(set(test_df["intent"]) - set(train_df["intent"]))
    if unseen:
        log.warning("%d test intents never occur in training (counted as errors): %s", len(unseen), unseen[:5])
    name = name or Path(train_csv).resolve().parent.name
    wd = lifecycle.workdir("nlu-bench")
    to_rasa_nlu(train_df, wd / "data" / "nlu.yml")
    (wd / "config.yml").write_text(yaml.safe_dump(rasa_env.pipeline_config(cfg, nlu_only=True), sort_keys=False))
    t0 = time.perf_counter()
    rasa_env.run_rasa(
        [
            "train",
            "nlu",
            "--config",
            "config.yml",
            "--nlu",
            "data/nlu.yml",
            "--out",
            "models",
            "--fixed-model-name",
            "nlu",
        ],
        cwd=wd,
        cfg=cfg,
        timeout_s=cfg.train_timeout_s,
        log_file=wd / "logs" / "train.log",
    )
    train_s = time.perf_counter() - t0
    peak_mb = rasa_env.child_peak_rss_mb()
    t0 = time.perf_counter()
    with nlu.Parser(wd / "models" / "nlu.tar.gz", cfg) as parser:
        load_s = parser.load_s
        scores, preds = nlu.score_frame(parser, test_df)
    predict_s = time.perf_counter() - t0 - load_s
    preds.to_csv(wd / "predictions.csv", index=False)
    doc = {
        "app": APP,
        "dataset": name,
        "protocol": f"train {Path(train_csv).name} ({len(train_df)} messages, {train_df['intent'].nunique()} "
        f"intents) -> test {Path(test_csv).name} ({len(test_df)}); accuracy and macro-F1 of the top intent",
        "models": {
            MODEL_NAME: {
                "metrics": {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]},
                "train_s": round(train_s, 1),
                "predict_s": round(predict_s, 1),
                "peak_rss_mb": round(peak_mb),
                "model_load_s": round(load_s, 1),
                "parse_ms_median": round(float(preds["parse_ms"].median()), 2),
                "n_train": len(train_df),
                "n_test": len(test_df),
            }
        },
        "published": _published(name),
        "machine": machine_info(),
        "workdir": str(wd),
    }
    if write:
        path = write_json(output or cli.bench_output(f"{APP}-nlu", name, None), doc)
        doc["output"] = str(path)
    return doc


LATENCY_SCRIPT = [
    "hi",
    "what is your return policy?",
    "how much is delivery?",
    "are you a bot?",
    "where is my order?",
    "SH12345",
    "tell me a joke",
    "thanks",
    "bye",
]


def webhook_latency(url: str, n: int, *, warmup: int = 20, token: str | None = None) -> dict[str, float]:
    """p50/p95/max milliseconds of the gateway's ``POST /v1/messages`` (in front of Rasa) over ``n`` messages
    (after ``warmup``), a new conversation per script; ``token``: a customer token sent with each message."""
    times = []
    for i in range(warmup + n):
        text = LATENCY_SCRIPT[i % len(LATENCY_SCRIPT)]
        sender = f"bench-{i // len(LATENCY_SCRIPT)}"
        t0 = time.perf_counter()
        service.say(url, sender, text, token=token)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return _latency_summary(times)


def _latency_summary(times_ms: list[float]) -> dict[str, float]:
    """p50/p95/max/mean milliseconds and the count of ``times_ms``."""
    q = np.percentile(times_ms, [50, 95])
    return {
        "p50_ms": float(q[0]),
        "p95_ms": float(q[1]),
        "max_ms": float(max(times_ms)),
        "mean_ms": statistics.fmean(times_ms),
        "requests": len(times_ms),
    }


def gateway_vs_direct(
    assistant: service.Assistant, n: int, *, warmup: int = 20, customer: str = "alice", secret: bytes
) -> dict[str, dict[str, float]]:
    """The same script sent through the gateway and straight to Rasa's channel (loopback, token), interleaved
    message by message so that load on the machine hits both alike: ``{"gateway": {...}, "direct_to_rasa": {...},
    "p95_ratio": gateway/direct}``. Each path has conversations of its own (same customer)."""
    token = identity.mint_token(customer, secret)
    upstream = service.Upstream(assistant.servers.url, assistant.servers.token)
    times: dict[str, list[float]] = {"gateway": [], "direct_to_rasa": []}
    try:
        for i in range(warmup + n):
            text = LATENCY_SCRIPT[i % len(LATENCY_SCRIPT)]
            conv = f"bench-{i // len(LATENCY_SCRIPT)}"
            for path in ("gateway", "direct_to_rasa") if i % 2 == 0 else ("direct_to_rasa", "gateway"):
                t0 = time.perf_counter()
                if path == "gateway":
                    service.say(assistant.url, conv, text, token=token)
                else:
                    upstream.say(f"{customer}:direct-{conv}", text)
                if i >= warmup:
                    times[path].append((time.perf_counter() - t0) * 1e3)
    finally:
        upstream.client.close()
    out: dict[str, Any] = {path: _latency_summary(t) for path, t in times.items()}
    out["p95_ratio"] = round(out["gateway"]["p95_ms"] / out["direct_to_rasa"]["p95_ms"], 3)
    return out


def run_bench(
    dataset: Path | None,
    *,
    output: Path | None = None,
    intent_column: str = "category",
    latency_requests: int = 200,
    cfg: Config | None = None,
    nlu_from: Path | None = None,
) -> dict[str, Any]:
    """Banking77 (or ``dataset``: a folder with train.csv/test.csv) NLU results + the assistant's reply time
    through the gateway (``POST /v1/messages``, p95 after warm-up) and model load time of the assistant trained with
    ``cfg`` -> ``bench/results/chatbot.json``. ``nlu_from``: an earlier ``nlu-bench`` result file whose NLU part is
    reused (the serving half is measured again)."""
    cfg = cfg or Config(cv_folds=0)
    folder = Path(dataset) if dataset else get_settings().data_path / REFERENCE_DATASET
    if not (folder / "train.csv").is_file() or not (folder / "test.csv").is_file():
        raise DataError(
            f"{folder}: expected train.csv and test.csv (Banking77: set MLREF_DATA_DIR to the folder "
            "holding banking77/)"
        )
    if nlu_from is not None:
        try:
            doc = json.loads(Path(nlu_from).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{nlu_from}: cannot read an nlu-bench result ({exc})") from exc
        if not isinstance(doc, dict) or MODEL_NAME not in doc.get("models", {}) or doc.get("dataset") != folder.name:
            raise DataError(f"{nlu_from}: not an nlu-bench result of {MODEL_NAME!r} on {folder.name}")
        doc["nlu_from"] = str(nlu_from)
        doc["nlu_machine"] = doc.pop("machine", None)  # the NLU half's machine; the serving half's is below
        doc["machine"] = machine_info()
    else:
        doc = run_nlu_bench(
            folder / "train.csv", folder / "test.csv", cfg, intent_column=intent_column, name=folder.name, write=False
        )
    trained = lifecycle.build(cfg, validate=False)
    run_dir = lifecycle.workdir("bench-serve")
    secret = secrets.token_bytes(32)
    with service.running(trained.model, run_dir, cfg, tracker_db=run_dir / "tracker.db", secret=secret) as assistant:
        pair = gateway_vs_direct(assistant, latency_requests, secret=secret)
        latency = pair["gateway"]
        load_s = assistant.servers.load_s
    doc["serving"] = {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "path": "gateway POST /v1/messages -> Rasa (loopback, token) -> action server",
        "gateway_messages": latency,
        "direct_to_rasa": pair["direct_to_rasa"],  # the same messages without the gateway, interleaved
        "gateway_p95_ratio": pair["p95_ratio"],
        "model_load_s": round(load_s, 1),
        "assistant_test_stories": trained.stories,
        "assistant_holdout": {k: trained.holdout[k] for k in ("accuracy", "macro_f1", "n")},
    }
    doc["models"][MODEL_NAME]["metrics"]["rest_p95_ms"] = latency["p95_ms"]  # through the gateway since #17
    doc.pop("workdir", None)
    path = write_json(cli.bench_output(APP, folder.name, REFERENCE_DATASET, output), doc)
    return {**doc, "output": str(path)}
