"""Train, test, register, monitor and retrain the assistant on top of ``common/``.

A registered version is a directory holding Rasa's model archive (``model.tar.gz``, hashed with the rest by the
registry), its test results (``evaluation.json``: end-to-end test stories, held-out NLU, cross-validation), the
monitoring reference (``reference.json``: the intent mix of its training data) and its model card
(``model_card.md``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from apps.chatbot import rasa_env
from apps.chatbot.config import APP, MODEL_FILE, PROJECT, REGISTRY_NAME, Config
from apps.chatbot.data import holdout_file, read_labelled, read_rasa_nlu, to_rasa_nlu, training_messages
from apps.chatbot.text import printable
from common import monitoring, registry, reports, retraining
from common.data import DataError, fingerprint
from common.workspace import Workspace

log = logging.getLogger(__name__)
REFERENCE = "reference.json"
EVALUATION = "evaluation.json"
HANDOFF = "handoff"  # what read_tracker calls a bot message carrying a handoff summary
HANDOFF_ACTIONS = ("action_handoff", "action_default_fallback", HANDOFF)
FALLBACK_INTENT = "nlu_fallback"
TRACKER_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Trained:
    """A trained and tested model in its work directory."""

    model: Path
    workdir: Path
    train_s: float
    stories: dict[str, Any]
    holdout: dict[str, Any]
    cross_validation: dict[str, Any] | None = None
    data: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["text", "intent"]))

    def metrics(self) -> dict[str, float]:
        """The registered metrics: test stories, held-out NLU, cross-validation (training time is in the card)."""
        m = {
            "holdout_accuracy": self.holdout["accuracy"],
            "holdout_macro_f1": self.holdout["macro_f1"],
            "test_stories_passed": float(self.stories["passed"]),
            "test_stories_total": float(self.stories["total"]),
        }
        if self.cross_validation:
            m |= {"cv_accuracy": self.cross_validation["accuracy"], "cv_macro_f1": self.cross_validation["macro_f1"]}
        return m


def workdir(kind: str, ws: Workspace | None = None) -> Path:
    """A fresh directory under ``<workspace>/work/chatbot/`` for one run (``ws`` None: the environment's)."""
    root = (ws or Workspace.from_env()).work_dir(APP)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-", dir=root))


def build(
    cfg: Config, *, extra: pd.DataFrame | None = None, validate: bool = True, ws: Workspace | None = None
) -> Trained:
    """Copy the project (plus ``extra`` labelled messages), validate the data, train, run the test stories and the
    held-out NLU test in one ``rasa test``, and cross-validate when ``cfg.cv_folds`` > 1."""
    wd = workdir("train", ws)
    extra_file = None
    if extra is not None and len(extra):
        extra_file = to_rasa_nlu(extra, wd / "added_nlu.yml")
    rasa_env.prepare_workdir(wd, cfg, extra_nlu=extra_file)
    if validate:
        rasa_env.validate_data(wd, cfg)
    model, train_s = rasa_env.train(wd, cfg)
    results = wd / "results"
    rasa_env.run_rasa(
        [
            "test",
            "--model",
            str(model),
            "--stories",
            "tests/test_stories.yml",
            "--nlu",
            "tests/nlu_holdout.yml",
            "--out",
            str(results),
            "--no-plot",
        ],
        cwd=wd,
        cfg=cfg,
        timeout_s=3600,
        log_file=results / "rasa_test.log",
    )
    stories = rasa_env.story_results(results)
    holdout = rasa_env.intent_report(results / "intent_report.json")
    cv = rasa_env.cross_validate(wd, cfg, wd / "cv") if cfg.cv_folds > 1 else None
    return Trained(
        model=model,
        workdir=wd,
        train_s=train_s,
        stories=stories,
        holdout=holdout,
        cross_validation=cv,
        data=training_messages(wd / "data"),
    )


def model_card(trained: Trained, cfg: Config, out_dir: Path, *, version: str | None = None) -> Path:
    """The model card (markdown) of a trained model: test stories, held-out NLU, cross-validation, data."""
    rows = {
        "held-out NLU": {
            "accuracy": trained.holdout["accuracy"],
            "macro_f1": trained.holdout["macro_f1"],
            "n": trained.holdout["n"],
        }
    }
    if trained.cross_validation:
        cv = trained.cross_validation
        rows[f"{cfg.cv_folds}-fold cross-validation"] = {
            "accuracy": cv["accuracy"],
            "macro_f1": cv["macro_f1"],
            "n": cv["n"],
        }
    majority = trained.data["intent"].str.split("/").str[0].value_counts()
    holdout = read_rasa_nlu(holdout_file())
    top = majority.index[0] if len(majority) else ""
    rows["majority intent (baseline)"] = {
        "accuracy": float((holdout["intent"].str.split("/").str[0] == top).mean()) if len(holdout) else 0.0
    }
    s = trained.stories
    failed = "\n".join(f"- {name}" for name in s["failed"]) or "none"
    per_intent = pd.DataFrame(trained.holdout["per_intent"]).T.sort_values("f1")
    sections = {
        "End-to-end test stories": f"{s['passed']} of {s['total']} passed (`rasa test` with user text through NLU)."
        f" Failed:\n{failed}",
        "Held-out NLU, per intent (worst first)": reports.markdown_table(per_intent.reset_index(names="intent")),
        "Pipeline": "```yaml\n" + (trained.workdir / "config.yml").read_text() + "```",
    }
    return reports.write_report(
        out_dir,
        title=f"{REGISTRY_NAME} model card" + (f" (version {version})" if version else ""),
        metrics=rows,
        sections=sections,
        higher_is_better={"accuracy": True, "macro_f1": True},
        baselines=["majority intent (baseline)"],
        model_info={"archive": MODEL_FILE, "train_s": round(trained.train_s, 1), **cfg.to_dict()},
        data={"training messages": len(trained.data), "intents": trained.data["intent"].nunique()},
        intended_use="The Mlref Shop's customer-service assistant: order status, returns/delivery FAQs, product "
        "recommendations (recommender app), unrecognised card charges (fraud app), handoff to humans.",
        limitations="English only; intents are classified from a frozen sentence encoder, so phrasing far from "
        "the training examples falls back to the two-stage fallback and a human.",
    )


def register(trained: Trained, cfg: Config, *, dataset: str, alias: str | None = None) -> registry.ModelVersion:
    """Register the model archive with its test results, monitoring reference and model card."""

    def build_dir(d: Path) -> None:
        import shutil

        shutil.copy2(trained.model, d / MODEL_FILE)
        (d / EVALUATION).write_text(
            json.dumps(
                {
                    "stories": trained.stories,
                    "holdout": trained.holdout,
                    "cross_validation": trained.cross_validation,
                    "config": cfg.to_dict(),
                },
                indent=2,
            )
        )
        intents = pd.DataFrame({"intent": trained.data["intent"].str.split("/").str[0]})
        monitoring.ReferenceProfile.from_frame(intents, categorical=["intent"], top_n=50).save(d / REFERENCE)
        card_dir = Path(tempfile.mkdtemp(dir=trained.workdir))
        shutil.copy2(model_card(trained, cfg, card_dir), d / "model_card.md")

    return registry.register_dir(
        REGISTRY_NAME,
        build_dir,
        metrics=trained.metrics(),
        params=cfg.to_dict(),
        data_fingerprint=fingerprint(trained.data),
        tags={"dataset": dataset},
        alias=alias,
    )


def model_path(ref: str = registry.CHAMPION) -> tuple[Path, registry.ModelVersion]:
    """The (hash-verified) model archive of an alias or version number."""
    mv = registry.get(REGISTRY_NAME, ref)
    return registry.fetch_model_dir(mv) / MODEL_FILE, mv


def tracker_db(ws: Workspace | None = None) -> Path:
    """The SQLite tracker store ``serve`` writes: ``<workspace>/chatbot/tracker.db``."""
    return (ws or Workspace.from_env()).path(APP, "tracker.db")


# ----------------------------------------------------------------------------------------------------- monitor
def read_tracker(db: Path, *, days: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """User messages and executed actions of the SQLite tracker store (the last ``days`` only, when given).

    Returns ``(messages, actions)``: messages ``timestamp, sender_id, text, intent, confidence, top_intent,
    top_confidence``; actions ``timestamp, sender_id, action``.
    """
    if not Path(db).is_file():
        raise DataError(f"{db}: no tracker store (start the assistant with `python -m apps.chatbot serve` first)")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            events = pd.read_sql_query(
                "SELECT sender_id, type_name, timestamp, intent_name, action_name, data FROM events ORDER BY id", con
            )
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise DataError(f"{db}: not a Rasa SQLite tracker store ({exc})") from None
    if days is not None and len(events):
        events = events[events["timestamp"] >= time.time() - days * 86400]
    # every string that reaches a report goes through printable(): a tracker store may hold text no UTF-8 file can
    # (an unpaired surrogate from a client before the gateway normalised messages), or events that are not JSON
    events["sender_id"] = events["sender_id"].map(printable)
    rows = []
    for r in events[events["type_name"] == "user"].itertuples():
        data = _event_data(r.data)
        parse = data.get("parse_data") if isinstance(data.get("parse_data"), dict) else {}
        intent = parse.get("intent") if isinstance(parse.get("intent"), dict) else {}
        ranking = [x for x in parse.get("intent_ranking") or [intent] if isinstance(x, dict)] or [intent]
        top = next((x for x in ranking if x.get("name") != FALLBACK_INTENT), intent)
        verdict = parse.get("out_of_scope") if isinstance(parse.get("out_of_scope"), dict) else {}
        rows.append(
            {
                "timestamp": r.timestamp,
                "sender_id": r.sender_id,
                "text": printable(data.get("text")) if data.get("text") is not None else None,
                "intent": _name(intent.get("name")),
                "confidence": _number(intent.get("confidence")),
                "top_intent": _name(top.get("name")),
                "top_confidence": _number(top.get("confidence")),
                # rejected by the classifier's calibrated out-of-scope threshold (not understood, like a fallback)
                "rejected": verdict.get("rejected") is True,
            }
        )
    columns = ["timestamp", "sender_id", "text", "intent", "confidence", "top_intent", "top_confidence", "rejected"]
    messages = pd.DataFrame(rows, columns=columns)
    messages = messages[~messages["text"].fillna("").str.startswith("/")]  # buttons/payloads are not language
    actions = events[events["type_name"] == "action"][["timestamp", "sender_id", "action_name"]]
    actions = actions.rename(columns={"action_name": "action"})
    actions["action"] = actions["action"].map(_name)
    # a handoff is a bot message marked with the handoff's reference (action_handoff, or action_default_fallback run
    # inside the two-stage fallback, which logs no action event of its own)
    handoffs = [
        {"timestamp": r.timestamp, "sender_id": r.sender_id, "action": HANDOFF}
        for r in events[events["type_name"] == "bot"].itertuples()
        if _is_handoff(_event_data(r.data))
    ]
    if handoffs:
        actions = pd.concat([actions, pd.DataFrame(handoffs)], ignore_index=True)
    return messages.reset_index(drop=True), actions.reset_index(drop=True)


def _event_data(raw: Any) -> dict[str, Any]:
    """An event's JSON ``data`` column; ``{}`` when it is missing or not a JSON object."""
    try:
        data = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _name(value: Any) -> str | None:
    return printable(value) if isinstance(value, str) else None


def _number(value: Any) -> float:
    try:
        x = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return x if x == x else 0.0  # NaN -> 0


def _is_handoff(data: dict[str, Any]) -> bool:
    """A bot message of a handoff: its metadata names the handoff's reference (the summary itself is only in the
    handoff log), or, in conversations stored before that, it carries the summary as a custom payload."""
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    if isinstance(metadata.get("handoff"), str):
        return True
    payload = data.get("data") if isinstance(data.get("data"), dict) else {}
    custom = payload.get("custom")
    return isinstance(custom, dict) and "handoff" in custom


@dataclass
class MonitorResult:
    messages: int
    conversations: int
    fallback_rate: float
    handoff_rate: float | None  # None: the source records no handoffs (a file of messages)
    mean_confidence: float
    low_confidence: int
    intent_drift: bool
    alerts: list[str]
    report: Path
    low_confidence_csv: Path

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def is_tracker_store(path: Path) -> bool:
    """A Rasa SQLite tracker store (by name or by its first bytes), rather than a file of messages."""
    path = Path(path)
    if path.suffix.lower() in TRACKER_SUFFIXES or not path.is_file():
        return True
    with path.open("rb") as fh:
        return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def read_messages(path: Path, model: Path, cfg: Config | None = None) -> pd.DataFrame:
    """Recent messages from a file (CSV or parquet with a ``text`` column; ``sender_id`` and ``timestamp``
    optional), each parsed by the model archive ``model`` -> the messages frame :func:`read_tracker` returns."""
    from apps.chatbot import nlu

    path = Path(path)
    try:
        df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path, dtype=str)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV/parquet file of messages ({exc})") from None
    if "text" not in df.columns:
        raise DataError(f"{path}: no 'text' column (found {list(df.columns)}); or pass a Rasa tracker store (.db)")
    df = df[df["text"].fillna("").astype(str).str.strip() != ""].reset_index(drop=True)
    texts = [printable(t) for t in df["text"].astype(str)]
    with nlu.Parser(model, cfg) as parser:
        parsed = parser.parse(texts) if texts else []
    senders = df["sender_id"].astype(str) if "sender_id" in df.columns else pd.Series([f"row-{i}" for i in df.index])
    timestamps = pd.to_numeric(df["timestamp"], errors="coerce") if "timestamp" in df.columns else time.time()
    messages = pd.DataFrame(
        {
            "timestamp": timestamps,
            "sender_id": senders.map(printable),
            "text": texts,
            "intent": [_name(p.get("intent")) for p in parsed],
            "confidence": [_number(p.get("confidence")) for p in parsed],
            "top_intent": [_name(p.get("top_intent")) for p in parsed],
            "top_confidence": [_number(p.get("top_confidence")) for p in parsed],
            "rejected": [
                isinstance(p.get("out_of_scope"), dict) and p["out_of_scope"].get("rejected") is True for p in parsed
            ],
        },
    )
    return messages[~messages["text"].str.startswith("/")].reset_index(drop=True)


def monitor(
    model_dir: Path,
    source: Path,
    out_dir: Path,
    *,
    days: float | None = None,
    low_confidence: float = 0.6,
    max_fallback_rate: float = 0.15,
    max_handoff_rate: float = 0.2,
    cfg: Config | None = None,
) -> MonitorResult:
    """Intent drift (recent predicted intents vs the training intent mix), fallback and handoff rates, and the
    low-confidence messages as ``text,intent`` CSV (intent = the model's guess, to correct) for labelling.

    ``source``: Rasa's SQLite tracker store (what the assistant said and did), or a file of recent messages that
    the model of ``model_dir`` classifies here (intents and confidences only: a file records no handoffs)."""
    if is_tracker_store(source):
        messages, actions = read_tracker(source, days=days)
    else:
        messages, actions = read_messages(source, model_dir / MODEL_FILE, cfg), None
        if days is not None and len(messages):
            messages = messages[messages["timestamp"] >= time.time() - days * 86400]
    if messages.empty:
        raise DataError(f"{source}: no user messages" + (f" in the last {days:g} days" if days else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    conversations = messages["sender_id"].nunique()
    not_understood = messages["intent"] == FALLBACK_INTENT  # low confidence: the two-stage fallback ...
    if "rejected" in messages.columns:  # ... or rejected by the classifier's out-of-scope threshold
        not_understood |= messages["rejected"].astype(bool)
    fallback_rate = float(not_understood.mean())
    handoff_rate = None
    if actions is not None:
        handed_off = actions.loc[actions["action"].isin(HANDOFF_ACTIONS), "sender_id"].nunique()
        handoff_rate = handed_off / conversations
    low = messages[not_understood | (messages["top_confidence"] < low_confidence)]
    csv = out_dir / "low_confidence.csv"
    reports.write_text(
        csv,
        low.assign(intent=low["top_intent"])[["text", "intent", "top_confidence", "sender_id", "timestamp"]].to_csv(
            index=False
        ),
    )
    reference = monitoring.ReferenceProfile.load(model_dir / REFERENCE)
    current = pd.DataFrame({"intent": messages["top_intent"].fillna("none")})
    drift = monitoring.detect_drift(reference, current)
    alerts = []
    if drift.drift:
        alerts.append("the intent mix drifted from the training data")
    if fallback_rate > max_fallback_rate:
        alerts.append(f"fallback rate {fallback_rate:.1%} > {max_fallback_rate:.0%}")
    if handoff_rate is not None and handoff_rate > max_handoff_rate:
        alerts.append(f"handoff rate {handoff_rate:.1%} > {max_handoff_rate:.0%}")
    drift.save(out_dir, title=f"{REGISTRY_NAME}: recent intents vs training data", alerts=alerts)
    summary = {
        "messages": len(messages),
        "conversations": int(conversations),
        "fallback_rate": fallback_rate,
        "handoff_rate": handoff_rate,
        "mean_confidence": float(messages["top_confidence"].mean()),
        "low_confidence_messages": len(low),
        "alerts": alerts,
    }
    reports.write_json(out_dir / "monitor.json", summary)
    return MonitorResult(
        messages=len(messages),
        conversations=int(conversations),
        fallback_rate=fallback_rate,
        handoff_rate=handoff_rate,
        mean_confidence=summary["mean_confidence"],
        low_confidence=len(low),
        intent_drift=bool(drift.drift),
        alerts=alerts,
        report=out_dir / "drift.md",
        low_confidence_csv=csv,
    )


# ----------------------------------------------------------------------------------------------------- retrain
def _holdout_accuracy(model: Path, cfg: Config, ws: Workspace | None = None) -> float:
    out = workdir("holdout", ws)
    return rasa_env.evaluate_nlu(model, holdout_file(), out, cwd=PROJECT, cfg=cfg)["accuracy"]


def retrain(
    labelled: Path,
    cfg: Config,
    *,
    margin: float = 0.0,
    text_column: str = "text",
    intent_column: str = "intent",
    ws: Workspace | None = None,
) -> dict[str, Any]:
    """Add newly labelled messages, train a challenger, and promote it only if every test story passes and its
    held-out NLU accuracy is at least the champion's plus ``margin`` (so ``margin`` 0 = at least as good)."""
    added = read_labelled(labelled, text_column=text_column, intent_column=intent_column)
    domain_intents = set(_domain_intents())
    unknown = sorted(set(added["intent"].str.split("/").str[0]) - domain_intents)
    if unknown:
        raise DataError(f"{labelled}: intents not in the assistant's domain: {unknown[:5]}")
    held = set(read_rasa_nlu(holdout_file())["text"].str.lower())
    leaked = added["text"].str.lower().isin(held)
    if leaked.any():
        log.warning("dropping %d labelled messages that are in the held-out test set", int(leaked.sum()))
        added = added[~leaked]
    trained = build(cfg, extra=added, ws=ws)
    mv = register(trained, cfg, dataset=str(labelled))
    champion = registry.find(REGISTRY_NAME, registry.CHAMPION)
    if not trained.stories["all_passed"]:
        registry.set_alias(REGISTRY_NAME, registry.CHALLENGER, mv.version)
        d = retraining.Decision(
            app=REGISTRY_NAME,
            champion_version=champion.version if champion else None,
            challenger_version=mv.version,
            metric="holdout_accuracy",
            champion_score=None,
            challenger_score=trained.holdout["accuracy"],
            margin=margin,
            higher_is_better=True,
            promoted=False,
            reason=f"test stories failed: {trained.stories['failed']}",
        )
        retraining.record(d)
        return {**d.to_dict(), "added_messages": len(added)}
    scores = {mv.version: trained.holdout["accuracy"]}

    def evaluate(version: registry.ModelVersion) -> float:
        if version.version not in scores:
            scores[version.version] = _holdout_accuracy(model_path(version.version)[0], cfg, ws)
        return scores[version.version]

    # "at least as good": a tie passes, so the rule's strict "gain > margin" gets margin - epsilon
    d = retraining.champion_vs_challenger(REGISTRY_NAME, mv, evaluate, metric="holdout_accuracy", margin=margin - 1e-9)
    return {**d.to_dict(), "added_messages": len(added)}


def _domain_intents() -> list[str]:
    import yaml

    return list(yaml.safe_load((PROJECT / "domain.yml").read_text())["intents"])


def labelled_from_tracker(db: Path) -> pd.DataFrame:  # pragma: no cover - convenience for notebooks
    return read_tracker(db)[0][["text", "top_intent"]].rename(columns={"top_intent": "intent"})


__all__ = [
    "Trained",
    "build",
    "model_path",
    "monitor",
    "read_labelled",
    "read_tracker",
    "register",
    "retrain",
    "tracker_db",
]
